#include "http/auth.hpp"

#include <atomic>

#include <jwt.h>
#include <openssl/sha.h>
#include <sodium.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <fstream>
#include <iterator>

#include "common/private_file.hpp"
#include "config/yaml_schema.hpp"

namespace cm::http {

namespace {

constexpr size_t max_token_bytes = 8192;

std::string read_key_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw config::config_error(path + ": cannot open key file");
  return std::string{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The HS256 secret: the file's bytes, less the line endings at its end
/// ("\n", "\r\n", as `echo` or an editor leaves them), the rule of every
/// secret file of the service. Spaces and tabs are part of the secret. The
/// file is private like the keyring: whoever reads it can mint sessions.
std::string read_hs256_secret(const std::string& path) {
  std::string text;
  try {
    text = read_private_file(path, "HS256 secret file");
  } catch (const private_file_error& e) {
    throw config::config_error(e.what());
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  return text;
}

/// Whether the token's `aud` names `audience`: RFC 7519 §4.1.3 allows a
/// single string or an array of strings.
bool audience_includes(jwt_t* jwt, const std::string& audience) {
  char* raw = jwt_get_grants_json(jwt, "aud");
  if (raw == nullptr)
    return false;
  auto json = nlohmann::json::parse(raw, nullptr, false);
  free(raw);
  if (json.is_string())
    return json.get_ref<const std::string&>() == audience;
  if (json.is_array())
    for (auto& item : json)
      if (item.is_string() && item.get_ref<const std::string&>() == audience)
        return true;
  return false;
}

caf::error unauthenticated(const char* why) { return make_error(ec::unauthenticated, why); }

/// Decodes base64url without padding; false if malformed.
bool base64url_decode(std::string_view in, std::string& out) {
  out.assign(in.size(), '\0');
  size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), in.data(),
                        in.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
    return false;
  out.resize(len);
  return true;
}

/// The `alg` of a compact JWS header, read before any verification so the
/// key is chosen by configuration, never by the token.
std::string header_alg(const std::string& token) {
  auto dot = token.find('.');
  if (dot == std::string::npos)
    return {};
  std::string header;
  if (!base64url_decode(std::string_view(token).substr(0, dot), header))
    return {};
  auto json = nlohmann::json::parse(header, nullptr, false);
  if (!json.is_object() || !json.contains("alg") || !json["alg"].is_string())
    return {};
  return json["alg"].get<std::string>();
}

struct jwt_deleter {
  void operator()(jwt_t* p) const { jwt_free(p); }
};
using jwt_ptr = std::unique_ptr<jwt_t, jwt_deleter>;

std::vector<std::string> scopes_claim(jwt_t* jwt) {
  std::vector<std::string> scopes;
  char* raw = jwt_get_grants_json(jwt, "scopes");
  if (raw == nullptr)
    return scopes;
  auto json = nlohmann::json::parse(raw, nullptr, false);
  free(raw);
  if (json.is_array()) {
    for (auto& s : json)
      if (s.is_string())
        scopes.push_back(s.get<std::string>());
  } else if (json.is_string()) {
    // Space-separated, as in RFC 8693's `scope`.
    auto text = json.get<std::string>();
    size_t pos = 0;
    while (pos < text.size()) {
      auto end = text.find(' ', pos);
      auto part = text.substr(pos, end - pos);
      if (!part.empty())
        scopes.push_back(part);
      if (end == std::string::npos)
        break;
      pos = end + 1;
    }
  }
  return scopes;
}

} // namespace

bool identity::has_scope(const std::string& scope) const {
  return std::find(scopes.begin(), scopes.end(), scope) != scopes.end();
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (auto b : digest) {
    out.push_back(hex[b >> 4]);
    out.push_back(hex[b & 0xf]);
  }
  return out;
}

void stored_service_tokens::replace(by_digest tokens) {
  std::atomic_store(&current_, std::shared_ptr<const by_digest>(
                                 std::make_shared<const by_digest>(std::move(tokens))));
}

std::shared_ptr<const stored_service_tokens::by_digest> stored_service_tokens::current() const {
  return std::atomic_load(&current_);
}

authenticator::authenticator(const config::auth_config& cfg,
                             std::shared_ptr<const stored_service_tokens> stored)
  : cfg_(cfg), stored_(std::move(stored)) {
  if (!cfg_.hs256_secret_file.empty()) {
    hs256_secret_ = read_hs256_secret(cfg_.hs256_secret_file);
    if (hs256_secret_.size() < 32)
      throw config::config_error(cfg_.hs256_secret_file +
                                 ": the HS256 secret must be at least 32 bytes");
  }
  if (!cfg_.rs256_public_key_file.empty()) {
    rs256_public_key_ = read_key_file(cfg_.rs256_public_key_file);
    if (rs256_public_key_.find("-----BEGIN PUBLIC KEY-----") == std::string::npos)
      throw config::config_error(cfg_.rs256_public_key_file +
                                 ": expected a PEM public key (BEGIN PUBLIC KEY)");
  }
  service_headers_ = {cfg_.service_header, "X-Services-Token", "X-Reeve-Services-Token"};
}

authenticator::~authenticator() {
  if (!hs256_secret_.empty())
    sodium_memzero(hs256_secret_.data(), hs256_secret_.size());
}

caf::expected<identity> authenticator::verify_service_token(const std::string& token) const {
  if (token.empty() || token.size() > max_token_bytes)
    return unauthenticated("invalid service token");
  auto digest = sha256_hex(token);
  const config::service_token_config* found = nullptr;
  // Compare against every entry without stopping early, in constant time.
  for (auto& entry : cfg_.service_tokens) {
    if (entry.sha256_hex.size() == digest.size() &&
        sodium_memcmp(entry.sha256_hex.data(), digest.data(), digest.size()) == 0)
      found = &entry;
  }
  identity who;
  who.type = identity::kind::service;
  if (found != nullptr) {
    who.subject = found->name;
    who.scopes = found->scopes;
    return who;
  }
  // A lookup by the digest: what an attacker controls is the token, not
  // its hash, so the map's timing tells nothing about stored tokens.
  if (stored_) {
    auto tokens = stored_->current();
    if (auto it = tokens->find(digest); it != tokens->end()) {
      who.subject = it->second.name;
      who.scopes = it->second.scopes;
      return who;
    }
  }
  return unauthenticated("invalid service token");
}

caf::expected<identity> authenticator::verify_jwt(const std::string& token) const {
  if (token.empty() || token.size() > max_token_bytes)
    return unauthenticated("invalid bearer token");
  auto alg = header_alg(token);
  const std::string* key = nullptr;
  jwt_alg_t expected_alg = JWT_ALG_INVAL;
  if (alg == "HS256" && !hs256_secret_.empty()) {
    key = &hs256_secret_;
    expected_alg = JWT_ALG_HS256;
  } else if (alg == "RS256" && !rs256_public_key_.empty()) {
    key = &rs256_public_key_;
    expected_alg = JWT_ALG_RS256;
  } else {
    // Covers "none", algorithms we do not accept, and garbage.
    return unauthenticated("invalid bearer token");
  }
  jwt_t* raw = nullptr;
  int rc = jwt_decode(&raw, token.c_str(), reinterpret_cast<const unsigned char*>(key->data()),
                      static_cast<int>(key->size()));
  jwt_ptr jwt{raw};
  if (rc != 0 || !jwt || jwt_get_alg(jwt.get()) != expected_alg)
    return unauthenticated("invalid bearer token");

  auto now = static_cast<long>(std::time(nullptr));
  errno = 0;
  long exp = jwt_get_grant_int(jwt.get(), "exp");
  if (errno != 0 || exp <= 0)
    return unauthenticated("bearer token has no expiry");
  // The leeway moves `now`, not `exp`: a token may carry any 64-bit exp,
  // and exp + leeway overflowed for one near LONG_MAX (fuzz/fuzz_jwt).
  if (now - cfg_.leeway_s > exp)
    return unauthenticated("bearer token expired");
  errno = 0;
  long nbf = jwt_get_grant_int(jwt.get(), "nbf");
  if (errno == 0 && nbf > 0 && now + cfg_.leeway_s < nbf)
    return unauthenticated("bearer token not yet valid");
  if (!cfg_.issuer.empty()) {
    auto iss = jwt_get_grant(jwt.get(), "iss");
    if (iss == nullptr || cfg_.issuer != iss)
      return unauthenticated("bearer token has the wrong issuer");
  }
  // A token another service minted with the same key names that service.
  if (!cfg_.audience.empty() && !audience_includes(jwt.get(), cfg_.audience))
    return unauthenticated("bearer token is for another audience");
  auto claim = [&](const char* name) {
    auto v = jwt_get_grant(jwt.get(), name);
    return v ? std::string{v} : std::string{};
  };
  identity who;
  who.subject = claim("sub");
  who.scopes = scopes_claim(jwt.get());
  if (!who.scopes.empty() && claim("team").empty()) {
    // A service JWT: it acts for no team member; its scopes say what it may do.
    who.type = identity::kind::service;
    if (who.subject.empty())
      who.subject = "jwt-service";
    return who;
  }
  who.type = identity::kind::user;
  who.team = claim("team");
  who.email = claim("email");
  who.role = claim("role");
  if (who.subject.empty() || who.team.empty())
    return unauthenticated("bearer token lacks sub or team");
  if (who.role.empty())
    who.role = "member";
  if (who.role != "admin" && who.role != "member")
    return unauthenticated("bearer token has an unknown role");
  return who;
}

caf::expected<identity> authenticator::authenticate(const request& req) const {
  for (auto& name : service_headers_) {
    auto value = req.header(name);
    if (!value.empty())
      return verify_service_token(value);
  }
  auto authz = req.header("authorization");
  if (authz.empty())
    return unauthenticated("missing credentials");
  static const std::string prefix = "Bearer ";
  if (authz.size() <= prefix.size() ||
      !std::equal(prefix.begin(), prefix.end(), authz.begin(),
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
    return unauthenticated("expected a Bearer token");
  return verify_jwt(authz.substr(prefix.size()));
}

caf::expected<identity> authenticator::authenticate_form(const request& req) const {
  auto type = req.header("content-type");
  if (type.rfind("application/x-www-form-urlencoded", 0) != 0)
    return unauthenticated("expected a form (application/x-www-form-urlencoded) with a session");
  std::map<std::string, std::string> fields;
  if (!parse_query(req.body, fields))
    return unauthenticated("the form is malformed");
  auto session = fields.find("session");
  if (session == fields.end() || session->second.empty())
    return unauthenticated("the form has no session");
  return verify_jwt(session->second);
}

std::string authenticator::mint(const std::string& user, const std::string& team,
                                const std::string& email, const std::string& role,
                                long ttl_seconds) const {
  if (hs256_secret_.empty())
    throw std::runtime_error("minting needs auth.jwt.hs256_secret_file");
  jwt_t* raw = nullptr;
  if (jwt_new(&raw) != 0)
    throw std::runtime_error("jwt_new failed");
  jwt_ptr jwt{raw};
  auto now = static_cast<long>(std::time(nullptr));
  jwt_add_grant(jwt.get(), "sub", user.c_str());
  jwt_add_grant(jwt.get(), "team", team.c_str());
  if (!email.empty())
    jwt_add_grant(jwt.get(), "email", email.c_str());
  jwt_add_grant(jwt.get(), "role", role.c_str());
  jwt_add_grant_int(jwt.get(), "iat", now);
  jwt_add_grant_int(jwt.get(), "exp", now + ttl_seconds);
  if (!cfg_.issuer.empty())
    jwt_add_grant(jwt.get(), "iss", cfg_.issuer.c_str());
  if (!cfg_.audience.empty())
    jwt_add_grant(jwt.get(), "aud", cfg_.audience.c_str());
  if (jwt_set_alg(jwt.get(), JWT_ALG_HS256,
                  reinterpret_cast<const unsigned char*>(hs256_secret_.data()),
                  static_cast<int>(hs256_secret_.size())) != 0)
    throw std::runtime_error("jwt_set_alg failed");
  char* encoded = jwt_encode_str(jwt.get());
  if (encoded == nullptr)
    throw std::runtime_error("jwt_encode_str failed");
  std::string out{encoded};
  free(encoded);
  return out;
}

caf::error require_user(const identity& who) {
  if (!who.is_user())
    return make_error(ec::forbidden, "this route is for users");
  return {};
}

caf::error require_admin(const identity& who) {
  if (!who.is_admin())
    return make_error(ec::forbidden, "this route needs the admin role");
  return {};
}

caf::error require_service(const identity& who, const std::string& scope) {
  if (!who.is_service() || !who.has_scope(scope))
    return make_error(ec::forbidden, "this route needs a service with scope " + scope);
  return {};
}

caf::error require_admin_or_service(const identity& who, const std::string& scope) {
  if (who.is_admin() || (who.is_service() && who.has_scope(scope)))
    return {};
  return make_error(ec::forbidden, "this route needs the admin role or scope " + scope);
}

} // namespace cm::http

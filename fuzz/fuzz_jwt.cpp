// Bearer tokens: http::authenticator (header_alg, libjwt's decode and our
// claim checks in verify_jwt, service tokens, the Authorization header).
// The authenticator is configured as a deployment would be: an HS256
// secret, an RS256 public key, an issuer and two service tokens.
//
// The first input byte picks the mode (seeds use the digits '0'..'2'):
//   '0'  the rest is a raw token: verify_jwt, and authenticate() with it
//        as "Authorization: Bearer <rest>", as "authorization: <rest>" and
//        as a service token header;
//   '1'  the rest is "<header JSON>\n<claims JSON>", signed here with the
//        HS256 secret, so the claim checks see arbitrary claims behind a
//        valid signature;
//   '2'  the same, but HMAC-signed with the RS256 *public key* as secret
//        (the classic algorithm confusion): must never authenticate.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <ctime>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_support.hpp"
#include "http/auth.hpp"

using namespace cm;
using nlohmann::json;

namespace {

const std::string hs_secret = "fuzz-hs256-secret-0123456789abcdef-0123";
const std::string issuer = "https://issuer.fuzz.test";
const std::string service_token = "svc-fuzz-token-with-scope";

struct world {
  std::string public_pem;
  std::unique_ptr<http::authenticator> auth;
};

std::string make_public_pem() {
  EVP_PKEY* key = EVP_RSA_gen(2048);
  if (key == nullptr)
    std::abort();
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, key);
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  std::string pem(p, static_cast<size_t>(n));
  BIO_free(bio);
  EVP_PKEY_free(key);
  return pem;
}

world& the_world() {
  static world w = [] {
    world made;
    made.public_pem = make_public_pem();
    config::auth_config cfg;
    cfg.hs256_secret_file = fuzz::write_scratch_file("hs.secret", hs_secret + "\n");
    cfg.rs256_public_key_file = fuzz::write_scratch_file("rs.pub", made.public_pem);
    cfg.issuer = issuer;
    cfg.service_tokens.push_back({"reporting", http::sha256_hex(service_token), {"FETCH_CONFIG"}});
    cfg.service_tokens.push_back({"metrics", http::sha256_hex("svc-no-scope"), {}});
    made.auth = std::make_unique<http::authenticator>(cfg);
    return made;
  }();
  return w;
}

std::string hmac_token(const std::string& header, const std::string& claims,
                       const std::string& key) {
  auto input = fuzz::base64url(header) + "." + fuzz::base64url(claims);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return input + "." + fuzz::base64url({reinterpret_cast<const char*>(mac), len});
}

/// What any identity the authenticator hands out must look like.
void check_identity(const http::identity& who) {
  if (who.is_service()) {
    CM_FUZZ_CHECK(!who.subject.empty(), "a service has a name");
    CM_FUZZ_CHECK(who.team.empty() && who.role.empty(), "a service is no team member");
    CM_FUZZ_CHECK(!who.scopes.empty() || who.subject == "metrics",
                  "a service JWT only exists with scopes");
    for (auto& s : who.scopes)
      CM_FUZZ_CHECK(!s.empty(), "no empty scope");
    return;
  }
  CM_FUZZ_CHECK(!who.subject.empty() && !who.team.empty(), "a user has sub and team");
  CM_FUZZ_CHECK(who.role == "admin" || who.role == "member", "a user's role is known");
}

void check_refusal(const caf::error& err) {
  CM_FUZZ_CHECK(code_of(err) == ec::unauthenticated, "a refused credential is unauthenticated");
  CM_FUZZ_CHECK(fuzz::printable_ascii(message_of(err)), "the refusal is plain text");
}

/// Checks a verdict on a token this target signed with the HS256 secret.
void check_signed(const caf::expected<http::identity>& got, const std::string& header,
                  const std::string& claims) {
  if (!got) {
    check_refusal(got.error());
    return;
  }
  check_identity(*got);
  // What the token claimed, read independently: only an HS256 header, an
  // unexpired exp and our issuer get in.
  auto h = json::parse(header, nullptr, false);
  auto c = json::parse(claims, nullptr, false);
  CM_FUZZ_CHECK(h.is_object() && h.value("alg", json{}) == "HS256",
                "only an HS256 header authenticates with the HS256 secret");
  CM_FUZZ_CHECK(c.is_object(), "accepted claims are an object");
  auto exp = c.find("exp");
  CM_FUZZ_CHECK(exp != c.end() && exp->is_number(), "an accepted token has a numeric exp");
  CM_FUZZ_CHECK(exp->get<double>() + 30 >= static_cast<double>(std::time(nullptr)),
                "an accepted token has not expired");
  CM_FUZZ_CHECK(c.value("iss", json{}) == issuer, "an accepted token names our issuer");
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  the_world();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  auto& w = the_world();
  auto mode = data[0] % 3;
  auto rest = fuzz::as_text(data + 1, size - 1);

  if (mode == 0) {
    std::string token(rest);
    auto got = w.auth->verify_jwt(token);
    if (got)
      check_identity(*got);
    else
      check_refusal(got.error());

    http::request req;
    req.headers.emplace_back("Authorization", "Bearer " + token);
    auto via_header = w.auth->authenticate(req);
    CM_FUZZ_CHECK(static_cast<bool>(via_header) == static_cast<bool>(got),
                  "a Bearer header means the same as the token");
    req.headers.emplace_back("authorization", token);
    auto raw = w.auth->authenticate(req);
    if (raw)
      check_identity(*raw);
    http::request svc;
    svc.headers.emplace_back("X-Services-Token", token);
    auto as_service = w.auth->authenticate(svc);
    CM_FUZZ_CHECK(static_cast<bool>(as_service) == (token == service_token),
                  "only the configured service token is a service token");
    return 0;
  }

  auto [header, claims] = fuzz::split_line(rest);
  if (mode == 1) {
    auto token = hmac_token(header, claims, hs_secret);
    check_signed(w.auth->verify_jwt(token), header, claims);
    return 0;
  }
  auto token = hmac_token(header, claims, w.public_pem);
  auto got = w.auth->verify_jwt(token);
  CM_FUZZ_CHECK(!got, "a token keyed with the public key never authenticates");
  return 0;
}

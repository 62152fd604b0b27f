#include "provider/oauth_flow.hpp"

#include "provider/credential_scheme.hpp"

#include <algorithm>
#include <cstring>
#include <regex>
#include <set>

#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <sodium.h>

#include "config/template_value.hpp"

namespace cm::oauth {

namespace {

std::string base64url(const unsigned char* data, size_t n) {
  std::string out(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), data, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::string hex(const unsigned char* data, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 0xf]);
  }
  return out;
}

std::string with_query(const std::string& url,
                       const std::vector<std::pair<std::string, std::string>>& fields) {
  if (fields.empty())
    return url;
  return url + (url.find('?') == std::string::npos ? "?" : "&") + form_encode(fields);
}

/// Credentials as the provider names them (TikTok: app_id/secret).
void add_client(std::vector<std::pair<std::string, std::string>>& fields,
                const config::provider_entry& entry, const client_credentials& client,
                bool with_secret) {
  fields.emplace_back(entry.client_id_param, client.client_id);
  if (with_secret)
    fields.emplace_back(entry.client_secret_param, client.client_secret.reveal());
}

std::optional<outbound_request> token_call(const config::provider_entry& entry,
                                           const client_credentials& client,
                                           std::vector<std::pair<std::string, std::string>> fields,
                                           const nlohmann::json& values, int64_t timeout_ms) {
  auto made = provider_request(entry, entry.token_url, values, timeout_ms);
  if (!made)
    return std::nullopt;
  auto req = std::move(*made);
  for (auto& [k, v] : entry.token_params)
    fields.emplace_back(k, v);
  if (entry.client_auth == config::client_auth_style::json) {
    add_client(fields, entry, client, true);
    nlohmann::json body = nlohmann::json::object();
    for (auto& [k, v] : fields)
      body[k] = v;
    req.method = "POST";
    req.body = body.dump();
    req.headers.emplace_back("Content-Type", "application/json");
    return req;
  }
  if (entry.client_auth == config::client_auth_style::basic) {
    req.headers.emplace_back("Authorization", basic_credentials(client));
  } else {
    add_client(fields, entry, client, true);
  }
  if (entry.token_method == "GET") {
    req.method = "GET";
    req.url = with_query(req.url, fields);
  } else {
    req.method = "POST";
    req.body = form_encode(fields);
    req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  }
  return req;
}

} // namespace

std::string new_state() {
  unsigned char raw[32];
  randombytes_buf(raw, sizeof raw);
  return base64url(raw, sizeof raw);
}

namespace {

std::string keyed_state_hash(const storage::keyring& keys, uint32_t key_id,
                             const std::string& state) {
  auto key = keys.subkey(key_id, storage::key_purpose::state_hashing);
  unsigned char out[32];
  crypto_generichash(out, sizeof out, reinterpret_cast<const unsigned char*>(state.data()),
                     state.size(), key, storage::subkey_bytes);
  return hex(out, sizeof out);
}

} // namespace

std::string state_hash(const storage::keyring& keys, const std::string& state) {
  return keyed_state_hash(keys, keys.active_id(), state);
}

std::string state_hash_candidates(const storage::keyring& keys, const std::string& state) {
  auto out = state_hash(keys, state);
  for (auto id : keys.key_ids())
    if (id != keys.active_id())
      out += "," + keyed_state_hash(keys, id, state);
  return out;
}

std::string new_code_verifier() {
  unsigned char raw[48];
  randombytes_buf(raw, sizeof raw);
  return base64url(raw, sizeof raw);
}

std::string code_challenge_s256(const std::string& verifier) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(verifier.data()), verifier.size(), digest);
  return base64url(digest, sizeof digest);
}

std::string normalize_shop(std::string shop) {
  // Shopify sends the shop back in lower case; a member may type it as the
  // admin's address bar shows it.
  std::transform(shop.begin(), shop.end(), shop.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  for (std::string scheme : {"https://", "http://"})
    if (shop.rfind(scheme, 0) == 0)
      shop.erase(0, scheme.size());
  while (!shop.empty() && shop.back() == '/')
    shop.pop_back();
  static const std::string suffix = ".myshopify.com";
  if (shop.size() > suffix.size() &&
      shop.compare(shop.size() - suffix.size(), suffix.size(), suffix) == 0)
    shop.resize(shop.size() - suffix.size());
  return shop;
}

std::optional<nlohmann::json> template_values(const config::provider_entry& entry,
                                              const std::map<std::string, std::string>& given,
                                              std::string& problem) {
  nlohmann::json values = nlohmann::json::object();
  for (auto& [k, v] : entry.template_defaults)
    values[k] = v;
  for (auto& [name, pattern] : entry.template_params) {
    auto it = given.find(name);
    if (it == given.end())
      continue;
    // What the account lookup stores (Atlassian's cloud_id) is the
    // provider's word, never the caller's.
    if (entry.account && entry.account->metadata.count(name) > 0)
      continue;
    auto value = name == "shop" ? normalize_shop(it->second) : it->second;
    if (auto why = config::template_value_problem(value, pattern); !why.empty()) {
      problem = name + " is not valid: it " + why;
      return std::nullopt;
    }
    values[name] = value;
  }
  return values;
}

std::optional<std::string> authorization_url(const config::provider_entry& entry,
                                             const std::string& client_id,
                                             const std::string& callback_uri,
                                             const std::string& state,
                                             const std::string& code_challenge,
                                             const nlohmann::json& values) {
  auto base = expand_url(entry, entry.authorization_url, values);
  if (!base)
    return std::nullopt;
  std::vector<std::pair<std::string, std::string>> fields = {
    {entry.client_id_param, client_id},
    {"redirect_uri", callback_uri},
    {"response_type", "code"},
    {"state", state}};
  if (!entry.scopes.empty()) {
    std::string scope;
    for (auto& s : entry.scopes)
      scope += (scope.empty() ? "" : entry.scope_separator) + s;
    fields.emplace_back("scope", scope);
  }
  if (entry.pkce && !code_challenge.empty()) {
    fields.emplace_back("code_challenge", code_challenge);
    fields.emplace_back("code_challenge_method", "S256");
  }
  for (auto& [k, v] : entry.authorization_params)
    fields.emplace_back(k, v);
  return with_query(*base, fields);
}

std::optional<outbound_request> code_request(const config::provider_entry& entry,
                                             const client_credentials& client,
                                             const std::string& code,
                                             const std::string& callback_uri,
                                             const std::string& code_verifier,
                                             const nlohmann::json& values, int64_t timeout_ms) {
  std::vector<std::pair<std::string, std::string>> fields;
  // TikTok and Meta's manual flow take no grant_type.
  if (entry.token_style == "standard")
    fields.emplace_back("grant_type", "authorization_code");
  fields.emplace_back(entry.code_param, code);
  if (entry.token_style != "tiktok_envelope" && entry.callback_verification != "shopify_hmac")
    fields.emplace_back("redirect_uri", callback_uri);
  if (entry.pkce && !code_verifier.empty())
    fields.emplace_back("code_verifier", code_verifier);
  return token_call(entry, client, std::move(fields), values, timeout_ms);
}

std::optional<outbound_request> long_lived_request(const config::provider_entry& entry,
                                                   const client_credentials& client,
                                                   const secret& access_token,
                                                   const nlohmann::json& values,
                                                   int64_t timeout_ms) {
  std::vector<std::pair<std::string, std::string>> fields = {
    {"grant_type", "fb_exchange_token"}, {"fb_exchange_token", access_token.reveal()}};
  return token_call(entry, client, std::move(fields), values, timeout_ms);
}

std::optional<outbound_request> account_request(const config::provider_entry& entry,
                                                const secret& access_token,
                                                const nlohmann::json& values, int64_t timeout_ms) {
  if (!entry.account)
    return std::nullopt;
  auto made = provider_request(entry, entry.account->url, values, timeout_ms);
  if (!made)
    return std::nullopt;
  auto req = std::move(*made);
  credential::present_token(entry.account->auth, access_token.reveal(), req);
  return req;
}

bool read_account(const config::provider_entry& entry, const outbound_response& res,
                  nlohmann::json& metadata) {
  if (!entry.account || !res.ok())
    return false;
  auto json = nlohmann::json::parse(res.body, nullptr, false);
  if (json.is_discarded())
    return false;
  if (entry.token_style == "tiktok_envelope" && json.is_object() && json.contains("data"))
    json = json["data"];
  auto& lookup = *entry.account;
  if (!lookup.list_pointer.empty()) {
    nlohmann::json::json_pointer list_ptr{lookup.list_pointer == "/" ? "" : lookup.list_pointer};
    auto names = nlohmann::json::array();
    if (json.contains(list_ptr) && json[list_ptr].is_array())
      for (auto& item : json[list_ptr]) {
        nlohmann::json::json_pointer name_ptr{lookup.list_name_pointer};
        if (item.contains(name_ptr) && item[name_ptr].is_string())
          names.push_back(item[name_ptr]);
      }
    metadata["accounts"] = names;
  }
  for (auto& [key, pointer] : lookup.metadata) {
    nlohmann::json::json_pointer at{pointer};
    if (json.contains(at) && (json[at].is_string() || json[at].is_number()))
      metadata[key] = json[at].is_string() ? json[at].get<std::string>() : json[at].dump();
  }
  nlohmann::json::json_pointer ptr{lookup.name_pointer};
  if (!json.contains(ptr))
    return false;
  auto& name = json[ptr];
  metadata["account_name"] = name.is_string() ? name.get<std::string>() : name.dump();
  return true;
}

std::optional<outbound_request> revoke_request(const config::provider_entry& entry,
                                               const client_credentials& client,
                                               const token_record& grant, int64_t timeout_ms) {
  if (entry.revoke_style == "none" || entry.revoke_url.empty())
    return std::nullopt;
  auto values = nlohmann::json::parse(grant.metadata, nullptr, false);
  if (!values.is_object())
    values = nlohmann::json::object();
  values["client_id"] = client.client_id;
  for (auto& [k, v] : entry.template_defaults)
    if (!values.contains(k))
      values[k] = v;
  auto made = provider_request(entry, entry.revoke_url, values, timeout_ms);
  if (!made)
    return std::nullopt;
  auto req = std::move(*made);
  const auto& access = grant.access_token.reveal();
  if (entry.revoke_style == "rfc7009") {
    // Revoking the refresh token ends the whole grant (RFC 7009 §2.1).
    bool refresh = !grant.refresh_token.empty();
    std::vector<std::pair<std::string, std::string>> fields = {
      {"token", refresh ? grant.refresh_token.reveal() : access},
      {"token_type_hint", refresh ? "refresh_token" : "access_token"}};
    if (entry.client_auth == config::client_auth_style::basic) {
      req.headers.emplace_back("Authorization", basic_credentials(client));
    } else {
      fields.emplace_back("client_id", client.client_id);
      fields.emplace_back("client_secret", client.client_secret.reveal());
    }
    req.method = "POST";
    req.body = form_encode(fields);
    req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  } else if (entry.revoke_style == "github_token") {
    req.method = "DELETE";
    req.headers.emplace_back("Authorization", basic_credentials(client));
    req.headers.emplace_back("Content-Type", "application/json");
    req.body = nlohmann::json{{"access_token", access}}.dump();
  } else if (entry.revoke_style == "meta_permissions") {
    req.method = "DELETE";
    req.url = with_query(req.url, {{"access_token", access}});
  } else if (entry.revoke_style == "shopify_uninstall") {
    req.method = "DELETE";
    req.headers.emplace_back("X-Shopify-Access-Token", access);
  } else if (entry.revoke_style == "tiktok") {
    req.method = "POST";
    req.headers.emplace_back("Content-Type", "application/json");
    req.body = nlohmann::json{{entry.client_id_param, client.client_id},
                              {entry.client_secret_param, client.client_secret.reveal()},
                              {"access_token", access}}
                 .dump();
  } else {
    return std::nullopt;
  }
  return req;
}

bool verify_shopify_hmac(const std::map<std::string, std::string>& query,
                         const std::string& client_secret) {
  auto given = query.find("hmac");
  if (given == query.end() || given->second.size() != 64)
    return false;
  std::string message;
  for (auto& [k, v] : query) { // std::map: sorted by key
    if (k == "hmac" || k == "signature")
      continue;
    message += (message.empty() ? "" : "&") + k + "=" + v;
  }
  unsigned char digest[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), client_secret.data(), static_cast<int>(client_secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &len);
  auto expected = hex(digest, len);
  std::string provided = given->second;
  std::transform(provided.begin(), provided.end(), provided.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return sodium_memcmp(expected.data(), provided.data(), expected.size()) == 0;
}

std::vector<std::string> granted_apps(const config::provider_entry& entry,
                                      const std::vector<std::string>& scopes) {
  std::set<std::string> apps;
  for (auto& s : scopes)
    if (auto it = entry.scope_apps.find(s); it != entry.scope_apps.end())
      apps.insert(it->second);
  return {apps.begin(), apps.end()};
}

std::string origin_of(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos)
    return {};
  auto end = url.find_first_of("/?#", scheme + 3);
  return url.substr(0, end);
}

} // namespace cm::oauth

#include "provider/browser_binding.hpp"

#include <sodium.h>

#include <strings.h>

#include "http/exchange.hpp"

namespace cm::oauth {

namespace {

// Keyed with the state-hashing subkey, under a prefix of its own so a
// cookie value is never equal to the state hash the database stores.
constexpr std::string_view binding_domain = "connector-manager browser binding\n";

std::string hex(const unsigned char* data, size_t size) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 15]);
  }
  return out;
}

std::string keyed_value(const storage::keyring& keys, uint32_t key_id, const std::string& state) {
  auto key = keys.subkey(key_id, storage::key_purpose::state_hashing);
  if (key == nullptr)
    return {};
  crypto_generichash_state h;
  crypto_generichash_init(&h, key, storage::subkey_bytes, 32);
  crypto_generichash_update(&h, reinterpret_cast<const unsigned char*>(binding_domain.data()),
                            binding_domain.size());
  crypto_generichash_update(&h, reinterpret_cast<const unsigned char*>(state.data()),
                            state.size());
  unsigned char out[32];
  crypto_generichash_final(&h, out, sizeof out);
  return hex(out, sizeof out);
}

std::string attributes(const binding_cookie& cookie) {
  return "; Path=" + cookie.path + "; HttpOnly; SameSite=Lax" + (cookie.secure ? "; Secure" : "");
}

} // namespace

binding_cookie binding_cookie_for(const std::string& state, const std::string& callback_path,
                                  bool secure) {
  unsigned char out[8];
  crypto_generichash(out, sizeof out, reinterpret_cast<const unsigned char*>(state.data()),
                     state.size(), nullptr, 0);
  auto name = "cm_flow_" + hex(out, sizeof out);
  if (secure)
    return {"__Host-" + name, "/", true};
  return {name, callback_path, false};
}

std::string binding_cookie_value(const storage::keyring& keys, const std::string& state) {
  return keyed_value(keys, keys.active_id(), state);
}

bool binding_cookie_matches(const storage::keyring& keys, const std::string& state,
                            const std::string& value) {
  if (value.size() != 64)
    return false;
  bool match = false;
  for (auto id : keys.key_ids()) {
    auto expected = keyed_value(keys, id, state);
    if (expected.size() == value.size() &&
        sodium_memcmp(expected.data(), value.data(), value.size()) == 0)
      match = true;
  }
  return match;
}

std::string binding_set_cookie(const binding_cookie& cookie, const std::string& value,
                               int max_age_s) {
  return cookie.name + "=" + value + "; Max-Age=" + std::to_string(max_age_s) +
         attributes(cookie);
}

std::string binding_clear_cookie(const binding_cookie& cookie) {
  return cookie.name + "=; Max-Age=0" + attributes(cookie);
}

std::string request_cookie(const http::request& req, const std::string& name) {
  for (auto& [header, value] : req.headers) {
    if (strcasecmp(header.c_str(), "cookie") != 0)
      continue;
    // "a=1; b=2": RFC 6265 §5.4's cookie-string.
    size_t pos = 0;
    while (pos < value.size()) {
      auto end = value.find(';', pos);
      if (end == std::string::npos)
        end = value.size();
      auto pair = std::string_view(value).substr(pos, end - pos);
      while (!pair.empty() && pair.front() == ' ')
        pair.remove_prefix(1);
      auto eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == name)
        return std::string(pair.substr(eq + 1));
      pos = end + 1;
    }
  }
  return {};
}

bool from_browser(const http::request& req) {
  return !req.header("sec-fetch-mode").empty() || !req.header("sec-fetch-site").empty() ||
         !req.header("sec-fetch-dest").empty() || !req.header("upgrade-insecure-requests").empty();
}

} // namespace cm::oauth

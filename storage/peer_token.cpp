#include "storage/peer_token.hpp"

#include <sodium.h>

namespace cm::storage {

namespace {

// Never a state value: those are random and at least 32 bytes of base64url.
constexpr std::string_view label = "connector-manager peer forwarding v1";

std::string token_of(const keyring& keys, uint32_t id) {
  auto* key = keys.subkey(id, key_purpose::state_hashing);
  if (key == nullptr)
    return {};
  unsigned char out[32];
  crypto_generichash(out, sizeof out, reinterpret_cast<const unsigned char*>(label.data()),
                     label.size(), key, subkey_bytes);
  char hex[2 * sizeof out + 1];
  sodium_bin2hex(hex, sizeof hex, out, sizeof out);
  return std::string(hex, 2 * sizeof out);
}

} // namespace

std::string peer_token(const keyring& keys) { return token_of(keys, keys.active_id()); }

std::vector<std::string> accepted_peer_tokens(const keyring& keys) {
  std::vector<std::string> out;
  for (auto id : keys.key_ids())
    if (auto token = token_of(keys, id); !token.empty())
      out.push_back(std::move(token));
  return out;
}

bool is_peer_token(const std::vector<std::string>& accepted, std::string_view candidate) {
  bool match = false;
  for (auto& token : accepted)
    if (token.size() == candidate.size() &&
        sodium_memcmp(token.data(), candidate.data(), token.size()) == 0)
      match = true;
  return match;
}

} // namespace cm::storage

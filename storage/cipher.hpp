// Authenticated encryption of single column values
// (XChaCha20-Poly1305-IETF, a fresh random nonce per write).
//
// A ciphertext is bound to where it lives: the associated data covers the
// table, row id, user, provider and column, plus the format byte and key id
// stored in its header, so a value copied to another row, user or column
// does not decrypt.
//
// Layout: [0x01 format][key id: 4 bytes big-endian][nonce: 24][ciphertext+tag]
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/secret.hpp"
#include "storage/keyring.hpp"

namespace cm::storage {

/// Where a value is stored; every field enters the associated data.
struct cipher_binding {
  std::string_view table;
  std::string_view row_id;
  std::string_view user_id;
  std::string_view provider;
  std::string_view column;
};

class column_cipher {
public:
  explicit column_cipher(std::shared_ptr<const keyring> keys) : keys_(std::move(keys)) {}

  /// Encrypts with the active key.
  std::string encrypt(std::string_view plaintext, const cipher_binding& where) const;

  /// Decrypts; throws crypto_error if the value is malformed, names an
  /// unknown key, or does not authenticate for `where`.
  secret decrypt(std::string_view blob, const cipher_binding& where) const;

  /// The key id a stored value names (for rotation), or 0 if malformed.
  static uint32_t key_id_of(std::string_view blob);

  const keyring& keys() const { return *keys_; }

private:
  std::shared_ptr<const keyring> keys_;
};

} // namespace cm::storage

// Authenticated encryption of single column values
// (XChaCha20-Poly1305-IETF, a fresh random nonce per write).
//
// A ciphertext is bound to where it lives: the associated data covers the
// table, team, row id, user, provider and column, plus the format byte and
// key id stored in its header, so a value copied to another row, team, user
// or column does not decrypt.
//
// Layout: [format][key id: 4 bytes big-endian][nonce: 24][ciphertext+tag]
//
// Format 2 binds the team. Format 1, written before team_id joined the
// binding (issue 16), left it out: a row copied into another team under the
// same id decrypted there. Every write seals format 2; format 1 is read only
// while the deployment's unbound-format policy allows it (until `rekey` has
// re-sealed every format-1 value, storage/unbound_format.hpp), and then it
// is refused like any tampered value.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/secret.hpp"
#include "storage/keyring.hpp"

namespace cm::storage {

/// Where a value is stored; every field enters the associated data. A
/// constructor rather than an aggregate: a binding that forgets a field
/// does not compile.
struct cipher_binding {
  cipher_binding(std::string_view table_, std::string_view team_id_, std::string_view row_id_,
                 std::string_view user_id_, std::string_view provider_, std::string_view column_)
    : table(table_), team_id(team_id_), row_id(row_id_), user_id(user_id_), provider(provider_),
      column(column_) {}

  std::string_view table;
  std::string_view team_id;
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
  /// unknown key, does not authenticate for `where`, or is of format 1 while
  /// the unbound-format policy refuses it.
  secret decrypt(std::string_view blob, const cipher_binding& where) const;

  /// Who decides whether format-1 values may still be read (asked only
  /// when one is met). Without a policy they are refused.
  void set_unbound_policy(std::function<bool()> allowed) { unbound_allowed_ = std::move(allowed); }

  /// Whether team-unbound values (format 1) may be read right now.
  bool unbound_allowed() const { return unbound_allowed_ && unbound_allowed_(); }

  /// The key id a stored value names (for rotation), or 0 if malformed.
  static uint32_t key_id_of(std::string_view blob);

  /// The format byte of a stored value (1: team-unbound, 2: current), or 0
  /// if it is no ciphertext of ours.
  static int format_of(std::string_view blob);

  const keyring& keys() const { return *keys_; }

private:
  std::shared_ptr<const keyring> keys_;
  std::function<bool()> unbound_allowed_;
};

} // namespace cm::storage

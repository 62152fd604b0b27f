// The master keys that protect every secret at rest.
//
// A keyring file (kept outside the database, mode 0600) lists numbered
// master keys and names the active one:
//
//   # connector-manager keyring
//   active 2
//   key 1 <base64 of 32 random bytes>
//   key 2 <base64 of 32 random bytes>
//
// New ciphertexts use the active key; older keys stay decrypt-only until no
// row uses them. Each master key feeds libsodium's crypto_kdf, which derives
// one subkey per purpose, so a key for one purpose never serves another. All
// key material lives in sodium_malloc memory (guarded, locked, wiped).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace cm::storage {

class crypto_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// What a derived subkey is used for.
enum class key_purpose : uint64_t {
  /// Encrypting token and secret columns.
  column_encryption = 1,
  /// Keyed hashing of OAuth state values.
  state_hashing = 2,
};

constexpr size_t master_key_bytes = 32;
constexpr size_t subkey_bytes = 32;

class keyring {
public:
  keyring(const keyring&) = delete;
  keyring& operator=(const keyring&) = delete;
  ~keyring();

  /// Loads a keyring file. Throws crypto_error when the file is missing,
  /// readable by group or others, malformed, or names no usable active key.
  static std::shared_ptr<const keyring> load(const std::string& path);

  /// Parses keyring text (tests). The text buffer is not wiped.
  static std::shared_ptr<const keyring> parse(const std::string& text);

  /// Creates a new keyring file with one fresh active key (mode 0600).
  /// Refuses to overwrite an existing file.
  static void generate_file(const std::string& path);

  /// Adds a fresh key to an existing file (rotation) and, with
  /// `make_active`, makes it active at once. Several instances sharing a
  /// database add it decrypt-only first, restart, and activate it in a second
  /// step (docs/STORAGE.md, "Key rotation"), so no instance ever meets a
  /// ciphertext under a key it does not hold. Returns the new key id. The
  /// file is replaced atomically.
  static uint32_t add_key_to_file(const std::string& path, bool make_active = true);

  /// Makes key `id`, already in the file, the active one.
  static void activate_key_in_file(const std::string& path, uint32_t id);

  /// Removes key `id` from the file; refuses the active key. (Whether any
  /// row still uses it is the caller's check: see `keygen --retire`.)
  static void remove_key_from_file(const std::string& path, uint32_t id);

  /// Every key id in the ring, ascending.
  std::vector<uint32_t> key_ids() const;

  uint32_t active_id() const { return active_id_; }
  bool has_key(uint32_t id) const { return keys_.count(id) != 0; }

  /// The subkey for `purpose` derived from master key `id`, or nullptr if
  /// the keyring has no such key. Points into sodium_malloc memory that
  /// lives as long as the keyring.
  const unsigned char* subkey(uint32_t id, key_purpose purpose) const;

private:
  keyring() = default;
  struct entry {
    unsigned char* column_key = nullptr;
    unsigned char* state_key = nullptr;
  };
  uint32_t active_id_ = 0;
  std::map<uint32_t, entry> keys_;
};

/// Initializes libsodium once; throws if it cannot.
void ensure_sodium();

} // namespace cm::storage

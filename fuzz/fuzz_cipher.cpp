// Stored ciphertext: storage::column_cipher::decrypt and key_id_of on
// whatever a database row holds, with a fixed test keyring (keys 1 and 2).
// Every input is used three ways:
//   * as a stored blob: decrypt must throw crypto_error (nothing else) unless
//     the blob authenticates, and key_id_of must agree with the header;
//   * as a plaintext: encrypt then decrypt gives it back; the same blob with
//     one bit flipped (position chosen by the input), or read for another
//     row, column or user, must not decrypt;
//   * as a keyring file (storage::keyring::parse): loads or throws
//     crypto_error.
#include "fuzz/fuzz_support.hpp"
#include "storage/cipher.hpp"

using namespace cm;
using storage::cipher_binding;
using storage::column_cipher;

namespace {

const cipher_binding here{"connections", "team-1", "0b7e3a4c-1d2f-4e5a-9b8c-7d6e5f4a3b2c",
                          "user-1", "github", "access_token"};

bool decrypts(const column_cipher& c, std::string_view blob, const cipher_binding& where) {
  try {
    (void)c.decrypt(blob, where);
    return true;
  } catch (const storage::crypto_error&) {
    return false;
  }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  fuzz::test_keyring();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto input = fuzz::as_text(data, size);
  column_cipher cipher{fuzz::test_keyring()};
  // Half the inputs read with the team-unbound format 1 still allowed.
  bool unbound_allowed = size % 2 == 1;
  if (unbound_allowed)
    cipher.set_unbound_policy([] { return true; });

  // A stored blob.
  auto id = column_cipher::key_id_of(input);
  if (size >= 5 && (data[0] == 0x01 || data[0] == 0x02)) {
    uint32_t header = (uint32_t{data[1]} << 24) | (uint32_t{data[2]} << 16) |
                      (uint32_t{data[3]} << 8) | uint32_t{data[4]};
    CM_FUZZ_CHECK(id == header, "key_id_of reads the header");
  } else {
    CM_FUZZ_CHECK(id == 0, "key_id_of is 0 for a malformed blob");
  }
  try {
    auto plain = cipher.decrypt(input, here);
    // Only a blob made with one of our keys for this binding can get here.
    CM_FUZZ_CHECK(id == 1 || id == 2, "only a known key decrypts");
    CM_FUZZ_CHECK(unbound_allowed || data[0] == 0x02, "format 1 is read only while allowed");
  } catch (const storage::crypto_error&) {
  }

  // A plaintext.
  auto blob = cipher.encrypt(input, here);
  CM_FUZZ_CHECK(column_cipher::key_id_of(blob) == 2, "new values use the active key");
  auto back = cipher.decrypt(blob, here);
  CM_FUZZ_CHECK(back.view() == input, "decrypt returns what was encrypted");
  auto flipped = blob;
  size_t pos = size == 0 ? 0 : (data[0] * 131u + size) % flipped.size();
  flipped[pos] = static_cast<char>(flipped[pos] ^ (1u << (size % 8)));
  CM_FUZZ_CHECK(!decrypts(cipher, flipped, here), "a flipped bit is detected");
  for (auto other : {cipher_binding{here.table, here.team_id, "another-row", here.user_id,
                                    here.provider, here.column},
                     cipher_binding{here.table, "team-2", here.row_id, here.user_id,
                                    here.provider, here.column},
                     cipher_binding{here.table, here.team_id, here.row_id, "user-2",
                                    here.provider, here.column},
                     cipher_binding{here.table, here.team_id, here.row_id, here.user_id,
                                    here.provider, "refresh_token"}})
    CM_FUZZ_CHECK(!decrypts(cipher, blob, other), "a value read for another place is refused");

  // A keyring file.
  try {
    auto keys = storage::keyring::parse(std::string(input));
    CM_FUZZ_CHECK(keys->has_key(keys->active_id()), "a loaded keyring has its active key");
  } catch (const storage::crypto_error&) {
  }
  return 0;
}

// Column encryption and the keyring: round trips, tampering, ciphertexts
// moved to another place, unknown keys, sizes, key files.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "storage/cipher.hpp"
#include "storage/keyring.hpp"
#include "tests/support/test_env.hpp"
#include "tests/support/unbound_format.hpp"

using namespace cm;
using namespace cm::storage;

namespace {

const std::string key1 = "key 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
const std::string key2 = "key 2 HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=\n";

cipher_binding where(const char* row = "row-1", const char* user = "alice",
                     const char* column = "access_token", const char* provider = "github",
                     const char* table = "connector_tokens", const char* team = "acme") {
  return {table, team, row, user, provider, column};
}

column_cipher make_cipher(const std::string& text = "active 1\n" + key1) {
  return column_cipher{keyring::parse(text)};
}

} // namespace

TEST(Crypto, RoundTrip) {
  auto c = make_cipher();
  auto blob = c.encrypt("gho_token_value", where());
  EXPECT_EQ(c.decrypt(blob, where()).reveal(), "gho_token_value");
  EXPECT_EQ(blob.find("gho_token_value"), std::string::npos);
}

TEST(Crypto, FreshNonceEveryWrite) {
  auto c = make_cipher();
  EXPECT_NE(c.encrypt("same", where()), c.encrypt("same", where()));
}

TEST(Crypto, EveryFlippedByteFails) {
  auto c = make_cipher();
  auto blob = c.encrypt("refresh-token-123", where());
  for (size_t i = 0; i < blob.size(); ++i) {
    auto bad = blob;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    EXPECT_THROW(c.decrypt(bad, where()), crypto_error) << "byte " << i;
  }
}

TEST(Crypto, TruncatedFails) {
  auto c = make_cipher();
  auto blob = c.encrypt("x", where());
  EXPECT_THROW(c.decrypt(blob.substr(0, blob.size() - 1), where()), crypto_error);
  EXPECT_THROW(c.decrypt("", where()), crypto_error);
}

TEST(Crypto, MovedToAnotherRowUserColumnProviderOrTableFails) {
  auto c = make_cipher();
  auto blob = c.encrypt("secret", where());
  EXPECT_THROW(c.decrypt(blob, where("row-2")), crypto_error);
  EXPECT_THROW(c.decrypt(blob, where("row-1", "bob")), crypto_error);
  EXPECT_THROW(c.decrypt(blob, where("row-1", "alice", "refresh_token")), crypto_error);
  EXPECT_THROW(c.decrypt(blob, where("row-1", "alice", "access_token", "google")), crypto_error);
  EXPECT_THROW(c.decrypt(blob, where("row-1", "alice", "access_token", "github", "oauth_states")),
               crypto_error);
  // Length-prefixed fields: shifting a character between fields is caught.
  EXPECT_THROW(c.decrypt(blob, where("row-1a", "lice")), crypto_error);
}

TEST(Crypto, MovedToAnotherTeamUnderTheSameIdFails) {
  // Issue 16: the primary key is (team_id, id), so a row copied into
  // another team keeps its id, user and provider; only the team differs.
  auto c = make_cipher();
  auto blob = c.encrypt("secret", where());
  EXPECT_EQ(column_cipher::format_of(blob), 2);
  EXPECT_THROW(c.decrypt(blob, where("row-1", "alice", "access_token", "github",
                                     "connector_tokens", "globex")),
               crypto_error);
  EXPECT_EQ(c.decrypt(blob, where()).reveal(), "secret");
}

TEST(Crypto, TeamUnboundFormatIsReadOnlyWhileThePolicyAllowsIt) {
  auto c = make_cipher();
  auto legacy = cm::test::seal_unbound(c.keys(), "sealed-before-the-upgrade", where());
  EXPECT_EQ(column_cipher::format_of(legacy), 1);
  EXPECT_EQ(column_cipher::key_id_of(legacy), 1u);
  // Without a policy, and with one that refuses: refused, whatever the team.
  EXPECT_THROW(c.decrypt(legacy, where()), crypto_error);
  bool allowed = false;
  int asked = 0;
  c.set_unbound_policy([&] {
    ++asked;
    return allowed;
  });
  EXPECT_THROW(c.decrypt(legacy, where()), crypto_error);
  EXPECT_EQ(asked, 1);
  allowed = true;
  EXPECT_EQ(c.decrypt(legacy, where()).reveal(), "sealed-before-the-upgrade");
  // Format 1 never bound the team: this is the hole format 2 closes.
  EXPECT_EQ(c.decrypt(legacy, where("row-1", "alice", "access_token", "github",
                                    "connector_tokens", "globex"))
              .reveal(),
            "sealed-before-the-upgrade");
  // The rest of its binding still holds.
  EXPECT_THROW(c.decrypt(legacy, where("row-2")), crypto_error);
  // Current values never ask.
  asked = 0;
  auto current = c.encrypt("x", where());
  EXPECT_EQ(c.decrypt(current, where()).reveal(), "x");
  EXPECT_EQ(asked, 0);
}

TEST(Crypto, UnknownKeyIdFails) {
  auto writer = make_cipher("active 2\n" + key1 + key2);
  auto blob = writer.encrypt("secret", where());
  EXPECT_EQ(column_cipher::key_id_of(blob), 2u);
  auto reader = make_cipher("active 1\n" + key1);
  EXPECT_THROW(reader.decrypt(blob, where()), crypto_error);
}

TEST(Crypto, OldKeysStayDecryptOnlyAfterRotation) {
  auto before = make_cipher("active 1\n" + key1);
  auto old_blob = before.encrypt("old", where());
  auto after = make_cipher("active 2\n" + key1 + key2);
  EXPECT_EQ(after.decrypt(old_blob, where()).reveal(), "old");
  auto new_blob = after.encrypt("new", where());
  EXPECT_EQ(column_cipher::key_id_of(new_blob), 2u);
  EXPECT_THROW(before.decrypt(new_blob, where()), crypto_error);
}

TEST(Crypto, SameIdDifferentKeyMaterialFails) {
  auto a = make_cipher("active 1\n" + key1);
  auto b = make_cipher("active 1\nkey 1 HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=\n");
  EXPECT_THROW(b.decrypt(a.encrypt("x", where()), where()), crypto_error);
}

TEST(Crypto, EmptyAndOneMebibytePlaintexts) {
  auto c = make_cipher();
  EXPECT_EQ(c.decrypt(c.encrypt("", where()), where()).reveal(), "");
  std::string big(1 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>(i * 131 % 251);
  auto blob = c.encrypt(big, where());
  EXPECT_EQ(blob.size(), big.size() + 1 + 4 + 24 + 16);
  EXPECT_EQ(c.decrypt(blob, where()).reveal(), big);
}

TEST(Keyring, RejectsMalformedText) {
  EXPECT_THROW(keyring::parse(""), crypto_error);                       // no active key
  EXPECT_THROW(keyring::parse(key1), crypto_error);                     // no active line
  EXPECT_THROW(keyring::parse("active 2\n" + key1), crypto_error);      // active not present
  EXPECT_THROW(keyring::parse("active 1\nkey 1 c2hvcnQ=\n"), crypto_error); // 5 bytes
  EXPECT_THROW(keyring::parse("active 1\n" + key1 + key1), crypto_error);   // duplicate id
  EXPECT_THROW(keyring::parse("active 1\n" + key1 + "bogus\n"), crypto_error);
  EXPECT_NO_THROW(keyring::parse("# comment\n\nactive 1\n" + key1));
}

TEST(Keyring, SubkeysDifferPerPurposeAndKey) {
  auto keys = keyring::parse("active 1\n" + key1 + key2);
  auto a = keys->subkey(1, key_purpose::column_encryption);
  auto b = keys->subkey(1, key_purpose::state_hashing);
  auto c = keys->subkey(2, key_purpose::column_encryption);
  ASSERT_TRUE(a && b && c);
  EXPECT_NE(std::string(reinterpret_cast<const char*>(a), subkey_bytes),
            std::string(reinterpret_cast<const char*>(b), subkey_bytes));
  EXPECT_NE(std::string(reinterpret_cast<const char*>(a), subkey_bytes),
            std::string(reinterpret_cast<const char*>(c), subkey_bytes));
  EXPECT_EQ(keys->subkey(3, key_purpose::column_encryption), nullptr);
}

TEST(Keyring, GeneratedFileIsPrivateAndNeverOverwritten) {
  cm::test::temp_dir dir;
  auto path = dir.file("master.key");
  keyring::generate_file(path);
  struct stat st{};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto keys = keyring::load(path);
  EXPECT_EQ(keys->active_id(), 1u);
  auto before = cm::test::read_file(path);
  EXPECT_THROW(keyring::generate_file(path), crypto_error);
  EXPECT_EQ(cm::test::read_file(path), before);
}

TEST(Keyring, AddKeyRotatesAndKeepsOldKeys) {
  cm::test::temp_dir dir;
  auto path = dir.file("master.key");
  keyring::generate_file(path);
  column_cipher old_cipher{keyring::load(path)};
  auto blob = old_cipher.encrypt("kept", where());
  EXPECT_EQ(keyring::add_key_to_file(path), 2u);
  auto rotated = keyring::load(path);
  EXPECT_EQ(rotated->active_id(), 2u);
  column_cipher new_cipher{rotated};
  EXPECT_EQ(new_cipher.decrypt(blob, where()).reveal(), "kept");
  struct stat st{};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(Keyring, RefusesFilesOthersCanRead) {
  cm::test::temp_dir dir;
  auto path = dir.file("master.key");
  keyring::generate_file(path);
  chmod(path.c_str(), 0644);
  EXPECT_THROW(keyring::load(path), crypto_error);
  EXPECT_THROW(keyring::load(dir.file("missing.key")), crypto_error);
}

TEST(Secret, NeverPrintsItself) {
  cm::secret s{"canary-secret-value"};
  EXPECT_EQ(to_string(s), "[secret]");
  EXPECT_EQ(s.reveal(), "canary-secret-value");
  cm::secret moved{std::move(s)};
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(moved.reveal(), "canary-secret-value");
}

#include "tests/support/unbound_format.hpp"

#include <sodium.h>

#include <cstdint>
#include <stdexcept>

namespace cm::test {

namespace {

void append_field(std::string& out, std::string_view field) {
  auto n = static_cast<uint32_t>(field.size());
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((n >> shift) & 0xff));
  out.append(field.data(), field.size());
}

} // namespace

std::string seal_unbound(const storage::keyring& keys, std::string_view plaintext,
                         const storage::cipher_binding& where) {
  constexpr size_t header = 5, nonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  auto id = keys.active_id();
  auto key = keys.subkey(id, storage::key_purpose::column_encryption);
  if (key == nullptr)
    throw std::runtime_error("no active key");
  std::string out(header + nonce + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES,
                  '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  bytes[0] = 0x01;
  for (int i = 0; i < 4; ++i)
    bytes[1 + i] = static_cast<unsigned char>((id >> (24 - 8 * i)) & 0xff);
  randombytes_buf(bytes + header, nonce);
  // Format 1's associated data: header, table, row, user, provider, column.
  std::string ad = out.substr(0, header);
  append_field(ad, where.table);
  append_field(ad, where.row_id);
  append_field(ad, where.user_id);
  append_field(ad, where.provider);
  append_field(ad, where.column);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
    bytes + header + nonce, &written, reinterpret_cast<const unsigned char*>(plaintext.data()),
    plaintext.size(), reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr,
    bytes + header, key);
  out.resize(header + nonce + written);
  return out;
}

int make_deployment_before_team_binding(storage::database& db,
                                        const storage::column_cipher& cipher) {
  const auto& keys = cipher.keys();
  int resealed = 0;
  // `empty_is_null`: states of providers without PKCE had no verifier.
  auto reseal = [&](const storage::result& res, int row, int col,
                    const storage::cipher_binding& where,
                    bool empty_is_null = false) -> storage::param {
    if (res.is_null(row, col))
      return storage::param::null();
    auto plain = cipher.decrypt(res.bytes(row, col), where);
    ++resealed;
    if (empty_is_null && plain.empty())
      return storage::param::null();
    return storage::param::bytes(seal_unbound(keys, plain.view(), where));
  };
  storage::database::transaction tx{db};
  auto tokens = db.exec({"test_unbound_tokens",
                         "SELECT team_id, id::text, user_id, provider, access_token, "
                         "refresh_token FROM connector_tokens"});
  for (int i = 0; i < tokens.rows(); ++i) {
    std::string team{tokens.text(i, 0)}, id{tokens.text(i, 1)}, user{tokens.text(i, 2)},
      provider{tokens.text(i, 3)};
    db.exec({"test_unbound_token_write",
             "UPDATE connector_tokens SET access_token = $3, refresh_token = $4 "
             "WHERE team_id = $1 AND id = $2::uuid"},
            {storage::param::text(team), storage::param::text(id),
             reseal(tokens, i, 4, {"connector_tokens", team, id, user, provider, "access_token"}),
             reseal(tokens, i, 5, {"connector_tokens", team, id, user, provider, "refresh_token"})});
  }
  auto configs = db.exec({"test_unbound_configs",
                          "SELECT team_id, connector_name, secrets FROM connector_configs "
                          "WHERE secrets IS NOT NULL"});
  for (int i = 0; i < configs.rows(); ++i) {
    std::string team{configs.text(i, 0)}, name{configs.text(i, 1)};
    db.exec({"test_unbound_config_write",
             "UPDATE connector_configs SET secrets = $3 WHERE team_id = $1 AND connector_name = $2"},
            {storage::param::text(team), storage::param::text(name),
             reseal(configs, i, 2, {"connector_configs", team, team, "", name, "secrets"})});
  }
  auto states = db.exec({"test_unbound_states",
                         "SELECT team_id, encode(state_hash, 'hex'), user_id, provider, "
                         "code_verifier FROM oauth_states WHERE code_verifier IS NOT NULL"});
  for (int i = 0; i < states.rows(); ++i) {
    std::string team{states.text(i, 0)}, hash{states.text(i, 1)}, user{states.text(i, 2)},
      provider{states.text(i, 3)};
    db.exec({"test_unbound_state_write",
             "UPDATE oauth_states SET code_verifier = $3 "
             "WHERE team_id = $1 AND state_hash = decode($2, 'hex')"},
            {storage::param::text(team), storage::param::text(hash),
             reseal(states, i, 4, {"oauth_states", team, hash, user, provider, "code_verifier"},
                    true)});
  }
  db.exec_script("DROP TABLE cipher_formats; DELETE FROM schema_migrations WHERE version = 7");
  tx.commit();
  return resealed;
}

} // namespace cm::test

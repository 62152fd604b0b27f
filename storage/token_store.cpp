#include "storage/token_store.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>
#include <sodium.h>

#include "common/log.hpp"

namespace cm::storage {

namespace {

constexpr const char* table = "connector_tokens";

const statement upsert_token{"tokens_upsert", R"(
INSERT INTO connector_tokens
  (team_id, id, user_id, provider, kind, status, reason, access_token, refresh_token,
   expires_at, scopes, metadata, key_id)
VALUES ($1, $2::uuid, $3, $4, $5, $6, NULLIF($7, ''), $8, $9,
        CASE WHEN $10::bigint = 0 THEN NULL ELSE to_timestamp($10::bigint / 1000.0) END,
        $11::jsonb, $12::jsonb, $13::integer)
ON CONFLICT (team_id, user_id, provider) DO UPDATE SET
  id = EXCLUDED.id, kind = EXCLUDED.kind, status = EXCLUDED.status, reason = EXCLUDED.reason,
  access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token,
  expires_at = EXCLUDED.expires_at, scopes = EXCLUDED.scopes, metadata = EXCLUDED.metadata,
  key_id = EXCLUDED.key_id, version = connector_tokens.version + 1,
  refresh_failures = 0, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
RETURNING version, (extract(epoch from created_at) * 1000)::bigint,
          (extract(epoch from updated_at) * 1000)::bigint)"};

const statement select_token{"tokens_select", R"(
SELECT id::text, kind, status, coalesce(reason, ''), access_token, refresh_token,
       coalesce((extract(epoch from expires_at) * 1000)::bigint, 0), scopes::text,
       metadata::text, version, (extract(epoch from created_at) * 1000)::bigint,
       (extract(epoch from updated_at) * 1000)::bigint
FROM connector_tokens WHERE team_id = $1 AND user_id = $2 AND provider = $3)"};

const statement list_tokens{"tokens_list", R"(
SELECT user_id, provider, kind, status, coalesce(reason, ''),
       coalesce((extract(epoch from expires_at) * 1000)::bigint, 0), scopes::text,
       metadata::text, (extract(epoch from updated_at) * 1000)::bigint
FROM connector_tokens WHERE team_id = $1 AND ($2 = '' OR user_id = $2)
ORDER BY user_id, provider)"};

const statement delete_token{"tokens_delete", R"(
DELETE FROM connector_tokens WHERE team_id = $1 AND user_id = $2 AND provider = $3)"};

cipher_binding binding(const std::string& id, const connection_key& key, const char* column) {
  return {table, id, key.user_id, key.provider, column};
}

std::vector<std::string> parse_scopes(std::string_view text) {
  auto json = nlohmann::json::parse(text, nullptr, false);
  std::vector<std::string> out;
  if (json.is_array())
    for (auto& s : json)
      if (s.is_string())
        out.push_back(s.get<std::string>());
  return out;
}

} // namespace

std::string random_uuid() {
  unsigned char b[16];
  randombytes_buf(b, sizeof b);
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
                b[13], b[14], b[15]);
  return out;
}

token_record token_store::save(token_record record) {
  if (record.id.empty())
    record.id = random_uuid();
  auto encrypt = [&](const secret& value, const char* column) {
    return value.empty() ? param::null()
                         : param::bytes(cipher_.encrypt(value.view(), binding(record.id, record.key, column)));
  };
  auto metadata = nlohmann::json::parse(record.metadata, nullptr, false);
  if (!metadata.is_object())
    throw db_error(ec::bad_request, "", "metadata must be a JSON object");
  auto res = db_.exec(upsert_token,
                      {param::text(record.key.team_id), param::text(record.id),
                       param::text(record.key.user_id), param::text(record.key.provider),
                       param::text(record.kind), param::text(record.status),
                       param::text(record.reason), encrypt(record.access_token, "access_token"),
                       encrypt(record.refresh_token, "refresh_token"),
                       param::text(std::to_string(record.expires_at_ms)),
                       param::text(nlohmann::json(record.scopes).dump()),
                       param::text(metadata.dump()),
                       param::text(std::to_string(cipher_.keys().active_id()))});
  record.version = res.integer(0, 0);
  record.created_at_ms = res.integer(0, 1);
  record.updated_at_ms = res.integer(0, 2);
  return record;
}

std::optional<token_record> token_store::find(const connection_key& key) {
  auto res = db_.exec(select_token, {param::text(key.team_id), param::text(key.user_id),
                                     param::text(key.provider)});
  if (res.rows() == 0)
    return std::nullopt;
  token_record r;
  r.key = key;
  r.id = std::string(res.text(0, 0));
  r.kind = std::string(res.text(0, 1));
  r.status = std::string(res.text(0, 2));
  r.reason = std::string(res.text(0, 3));
  try {
    if (!res.is_null(0, 4))
      r.access_token = cipher_.decrypt(res.bytes(0, 4), binding(r.id, key, "access_token"));
    if (!res.is_null(0, 5))
      r.refresh_token = cipher_.decrypt(res.bytes(0, 5), binding(r.id, key, "refresh_token"));
  } catch (const crypto_error& e) {
    // Tampering, a row copied elsewhere, or a missing key: never serve it.
    log::error("storage", "ALARM: stored ciphertext failed to decrypt",
               {{"team_id", key.team_id}, {"user_id", key.user_id},
                {"provider", key.provider}, {"row_id", r.id}, {"error", e.what()}});
    throw db_error(ec::integrity_failure, "", "stored credentials failed integrity check");
  }
  r.expires_at_ms = res.integer(0, 6);
  r.scopes = parse_scopes(res.text(0, 7));
  r.metadata = std::string(res.text(0, 8));
  r.version = res.integer(0, 9);
  r.created_at_ms = res.integer(0, 10);
  r.updated_at_ms = res.integer(0, 11);
  return r;
}

token_summaries token_store::list(const std::string& team_id, const std::string& user_id) {
  auto res = db_.exec(list_tokens, {param::text(team_id), param::text(user_id)});
  token_summaries out;
  out.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i) {
    token_summary s;
    s.key = {team_id, std::string(res.text(i, 0)), std::string(res.text(i, 1))};
    s.kind = std::string(res.text(i, 2));
    s.status = std::string(res.text(i, 3));
    s.reason = std::string(res.text(i, 4));
    s.expires_at_ms = res.integer(i, 5);
    s.scopes = parse_scopes(res.text(i, 6));
    s.metadata = std::string(res.text(i, 7));
    s.updated_at_ms = res.integer(i, 8);
    out.push_back(std::move(s));
  }
  return out;
}

bool token_store::remove(const connection_key& key) {
  auto res = db_.exec(delete_token, {param::text(key.team_id), param::text(key.user_id),
                                     param::text(key.provider)});
  return res.affected() > 0;
}

} // namespace cm::storage

#include "storage/token_store.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>
#include <sodium.h>

#include "common/log.hpp"
#include "storage/events.hpp"

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
  refresh_failures = 0, lease_owner = NULL, lease_expires_at = NULL, last_refresh_at = NULL,
  updated_at = now()
RETURNING version, (extract(epoch from created_at) * 1000)::bigint,
          (extract(epoch from updated_at) * 1000)::bigint)"};

// Every statement that returns whole rows returns these columns, in this
// order, read by token_store::read_row.
#define CM_TOKEN_COLUMNS                                                                     \
  "team_id, user_id, provider, id::text, kind, status, coalesce(reason, ''), access_token, " \
  "refresh_token, coalesce((extract(epoch from expires_at) * 1000)::bigint, 0), "            \
  "scopes::text, metadata::text, version, (extract(epoch from created_at) * 1000)::bigint, " \
  "(extract(epoch from updated_at) * 1000)::bigint, "                                        \
  "coalesce((extract(epoch from last_refresh_at) * 1000)::bigint, 0)"

const statement select_token{"tokens_select",
  "SELECT " CM_TOKEN_COLUMNS " FROM connector_tokens "
  "WHERE team_id = $1 AND user_id = $2 AND provider = $3"};

// An instance that is joining the cluster, or whose heartbeats have lapsed,
// neither takes a lease nor stores a refresh (migration 0006,
// storage/cluster_view.hpp). Owners without a row (tools, tests that drive
// storage directly) are not fenced.
#define CM_OWNER_IS_ACTIVE(owner)                                                      \
  "NOT EXISTS (SELECT 1 FROM service_instances i WHERE i.instance_id = " owner         \
  " AND (i.active_from > clock_timestamp() OR i.active_until < clock_timestamp()))"

const statement acquire_lease_stmt{"tokens_acquire_lease",
  "UPDATE connector_tokens SET lease_owner = $4, "
  "lease_expires_at = now() + ($5::bigint * interval '1 millisecond'), version = version + 1 "
  "WHERE team_id = $1 AND user_id = $2 AND provider = $3 "
  "AND (lease_owner IS NULL OR lease_expires_at < now() OR lease_owner = $4) "
  "AND " CM_OWNER_IS_ACTIVE("$4") " "
  "RETURNING " CM_TOKEN_COLUMNS};

// A group's leases in one statement: $1 is a JSON array of
// {k_i, k_team, k_user, k_provider, k_owner, k_ms}; each leased row comes
// back with its k_i after the usual columns.
const statement acquire_leases_stmt{"tokens_acquire_leases",
  "UPDATE connector_tokens SET lease_owner = k.k_owner, "
  "lease_expires_at = now() + (k.k_ms * interval '1 millisecond'), version = version + 1 "
  "FROM jsonb_to_recordset($1::jsonb) AS k(k_i integer, k_team text, k_user text, "
  "k_provider text, k_owner text, k_ms bigint) "
  "WHERE team_id = k.k_team AND user_id = k.k_user AND provider = k.k_provider "
  "AND (lease_owner IS NULL OR lease_expires_at < now() OR lease_owner = k.k_owner) "
  "AND " CM_OWNER_IS_ACTIVE("k.k_owner") " "
  "RETURNING " CM_TOKEN_COLUMNS ", k.k_i"};

const statement owner_fenced_stmt{"tokens_owner_fenced",
  "SELECT 1 WHERE NOT " CM_OWNER_IS_ACTIVE("$1")};

const statement select_version{"tokens_select_version",
  "SELECT version FROM connector_tokens WHERE team_id = $1 AND user_id = $2 AND provider = $3"};

const statement complete_refresh_stmt{"tokens_complete_refresh",
  "UPDATE connector_tokens SET access_token = $6, refresh_token = coalesce($7, refresh_token), "
  "expires_at = CASE WHEN $8::bigint = 0 THEN NULL ELSE to_timestamp($8::bigint / 1000.0) END, "
  "scopes = coalesce($9::jsonb, scopes), key_id = $10::integer, status = 'connected', "
  "reason = NULL, version = version + 1, lease_owner = NULL, lease_expires_at = NULL, "
  "refresh_failures = 0, last_refresh_at = now(), updated_at = now() "
  "WHERE team_id = $1 AND user_id = $2 AND provider = $3 AND version = $4 AND lease_owner = $5 "
  "AND " CM_OWNER_IS_ACTIVE("$5") " "
  "RETURNING " CM_TOKEN_COLUMNS};

// What a group's completions need before they seal: each row's id (the
// ciphertexts are bound to it) and its refresh token (sealed again when
// the provider kept it).
const statement completion_rows_stmt{"tokens_completion_rows",
  "SELECT k.k_i, t.id::text, t.refresh_token "
  "FROM jsonb_to_recordset($1::jsonb) AS k(k_i integer, k_team text, k_user text, "
  "k_provider text) "
  "JOIN connector_tokens t ON t.team_id = k.k_team AND t.user_id = k.k_user "
  "AND t.provider = k.k_provider"};

// A group's completions in one statement, each fenced as
// complete_refresh_stmt is; ciphertexts travel hex-encoded in the JSON.
const statement complete_refreshes_stmt{"tokens_complete_refreshes",
  "UPDATE connector_tokens SET access_token = decode(k.k_access, 'hex'), "
  "refresh_token = coalesce(decode(k.k_refresh, 'hex'), refresh_token), "
  "expires_at = CASE WHEN k.k_expires = 0 THEN NULL "
  "ELSE to_timestamp(k.k_expires / 1000.0) END, "
  "scopes = coalesce(k.k_scopes, scopes), key_id = $2::integer, status = 'connected', "
  "reason = NULL, version = version + 1, lease_owner = NULL, lease_expires_at = NULL, "
  "refresh_failures = 0, last_refresh_at = now(), updated_at = now() "
  "FROM jsonb_to_recordset($1::jsonb) AS k(k_i integer, k_team text, k_user text, "
  "k_provider text, k_fence bigint, k_owner text, k_access text, k_refresh text, "
  "k_expires bigint, k_scopes jsonb) "
  "WHERE team_id = k.k_team AND user_id = k.k_user AND provider = k.k_provider "
  "AND version = k.k_fence AND lease_owner = k.k_owner "
  "AND " CM_OWNER_IS_ACTIVE("k.k_owner") " "
  "RETURNING " CM_TOKEN_COLUMNS ", k.k_i"};

const statement release_lease_stmt{"tokens_release_lease",
  "UPDATE connector_tokens SET lease_owner = NULL, lease_expires_at = NULL, "
  "refresh_failures = refresh_failures + CASE WHEN $6 = '' THEN 0 ELSE 1 END, "
  "last_error_at = CASE WHEN $6 = '' THEN last_error_at ELSE now() END "
  "WHERE team_id = $1 AND user_id = $2 AND provider = $3 AND version = $4 AND lease_owner = $5"};

const statement mark_reauth_stmt{"tokens_mark_reauth",
  "UPDATE connector_tokens SET status = 'needs_reauth', reason = $6, version = version + 1, "
  "lease_owner = NULL, lease_expires_at = NULL, last_error_at = now(), updated_at = now() "
  "WHERE team_id = $1 AND user_id = $2 AND provider = $3 AND version = $4 AND lease_owner = $5 "
  "RETURNING " CM_TOKEN_COLUMNS};

const statement load_batch_stmt{"tokens_load_batch",
  "SELECT " CM_TOKEN_COLUMNS " FROM connector_tokens "
  "WHERE (team_id, id) > ($1, $2::uuid) AND status <> 'disconnected' "
  "ORDER BY team_id, id LIMIT $3"};

// Walks connector_tokens_by_shard (shard, team_id, id).
const statement load_shard_batch_stmt{"tokens_load_shard_batch",
  "SELECT " CM_TOKEN_COLUMNS " FROM connector_tokens "
  "WHERE shard = $4::integer AND (team_id, id) > ($1, $2::uuid) AND status <> 'disconnected' "
  "ORDER BY team_id, id LIMIT $3"};

const statement load_shards_batch_stmt{"tokens_load_shards_batch",
  "SELECT " CM_TOKEN_COLUMNS " FROM connector_tokens "
  "WHERE (team_id, id) > ($1, $2::uuid) AND shard = ANY($4::integer[]) "
  "AND status <> 'disconnected' ORDER BY team_id, id LIMIT $3"};

const statement teams_of_stmt{"tokens_teams_of",
  "SELECT team_id FROM connector_tokens WHERE user_id = $1 AND provider = $2 ORDER BY team_id"};

// created_at is taken after the member's lock (clock_timestamp, not the
// transaction's start), so it orders that member's states by insertion.
const statement insert_state_stmt{"states_insert",
  "INSERT INTO oauth_states (team_id, state_hash, user_id, provider, connector_name, "
  "code_verifier, redirect_uri, params, key_id, expires_at, created_at) VALUES ($1, "
  "decode($2, 'hex'), $3, $4, NULLIF($5, ''), $6, $7, $8::jsonb, $9::integer, "
  "to_timestamp($10::bigint / 1000.0), clock_timestamp())"};

// One member's pending states are trimmed under this lock, held until the
// transaction ends. Two-integer keys do not overlap the single-bigint key
// of the migration lock (storage/migrations.cpp); a hash collision between
// two members only makes them wait for each other.
const statement lock_member_states_stmt{"states_lock_member",
  "SELECT pg_advisory_xact_lock(727002, hashtext($1::text || '/' || $2::text))"};

// Keeps the member's newest $3 states (usable ones before expired ones)
// and deletes the rest, making room for one more.
const statement drop_oldest_states_stmt{"states_drop_oldest",
  "DELETE FROM oauth_states WHERE team_id = $1 AND state_hash IN ("
  "SELECT state_hash FROM oauth_states WHERE team_id = $1 AND user_id = $2 "
  "ORDER BY expires_at > now() DESC, created_at DESC, state_hash DESC OFFSET $3::integer)"};

// $1: comma-separated hex hashes, one per key in the ring (a state may have
// been hashed under a key that is no longer active). At most one matches.
const statement take_state_stmt{"states_take",
  "DELETE FROM oauth_states WHERE state_hash IN "
  "(SELECT decode(h, 'hex') FROM unnest(string_to_array($1, ',')) AS h) RETURNING team_id, "
  "user_id, provider, coalesce(connector_name, ''), code_verifier, redirect_uri, params::text, "
  "(extract(epoch from expires_at) * 1000)::bigint, encode(state_hash, 'hex')"};

const statement purge_states_stmt{"states_purge",
  "DELETE FROM oauth_states WHERE expires_at < now() - interval '1 hour'"};

const statement delete_returning_stmt{"tokens_delete_returning",
  "DELETE FROM connector_tokens WHERE team_id = $1 AND user_id = $2 AND provider = $3 "
  "RETURNING " CM_TOKEN_COLUMNS};

const statement insert_audit_stmt{"audit_insert",
  "INSERT INTO audit_log (team_id, actor_type, actor_id, action, target, remote_addr, "
  "request_id, details) VALUES ($1, $2, $3, $4, NULLIF($5, ''), NULLIF($6, ''), "
  "NULLIF($7, ''), $8::jsonb)"};

const statement list_tokens{"tokens_list", R"(
SELECT user_id, provider, kind, status, coalesce(reason, ''),
       coalesce((extract(epoch from expires_at) * 1000)::bigint, 0), scopes::text,
       metadata::text, (extract(epoch from updated_at) * 1000)::bigint, id::text
FROM connector_tokens WHERE team_id = $1 AND ($2 = '' OR user_id = $2)
ORDER BY user_id, provider)"};

const statement search_tokens{"tokens_search", R"(
SELECT user_id, provider, kind, status, coalesce(reason, ''),
       coalesce((extract(epoch from expires_at) * 1000)::bigint, 0), scopes::text,
       metadata::text, (extract(epoch from updated_at) * 1000)::bigint, id::text, team_id
FROM connector_tokens
WHERE ($1 = '' OR team_id = $1) AND ($2 = '' OR user_id = $2) AND ($3 = '' OR provider = $3)
ORDER BY updated_at DESC, team_id, user_id, provider
LIMIT $4)"};

const statement delete_token{"tokens_delete", R"(
DELETE FROM connector_tokens WHERE team_id = $1 AND user_id = $2 AND provider = $3)"};

cipher_binding binding(const std::string& id, const connection_key& key, const char* column) {
  return {table, key.team_id, id, key.user_id, key.provider, column};
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

std::string to_hex(const std::string& bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                 bytes.size());
  out.pop_back();
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
                       param::text(std::string{name_of(record.kind)}),
                       param::text(std::string{name_of(record.status)}),
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

namespace {

// The columns' CHECK constraints allow only the names model/ knows; any
// other text means the schema and this build disagree.
connection_kind kind_column(std::string_view text) {
  if (auto kind = parse_connection_kind(text))
    return *kind;
  throw db_error(ec::internal, "", "unknown connection kind in connector_tokens");
}

grant_status status_column(std::string_view text) {
  if (auto status = parse_grant_status(text))
    return *status;
  throw db_error(ec::internal, "", "unknown connection status in connector_tokens");
}

} // namespace

std::optional<token_record> token_store::find(const connection_key& key) {
  auto res = db_.exec(select_token, {param::text(key.team_id), param::text(key.user_id),
                                     param::text(key.provider)});
  if (res.rows() == 0)
    return std::nullopt;
  return read_row(res, 0);
}

token_record token_store::read_row(const result& res, int row) {
  token_record r;
  r.key = {std::string(res.text(row, 0)), std::string(res.text(row, 1)),
           std::string(res.text(row, 2))};
  r.id = std::string(res.text(row, 3));
  r.kind = kind_column(res.text(row, 4));
  r.status = status_column(res.text(row, 5));
  r.reason = std::string(res.text(row, 6));
  const char* column = "access_token";
  try {
    if (!res.is_null(row, 7))
      r.access_token = cipher_.decrypt(res.bytes(row, 7), binding(r.id, r.key, column));
    column = "refresh_token";
    if (!res.is_null(row, 8))
      r.refresh_token = cipher_.decrypt(res.bytes(row, 8), binding(r.id, r.key, column));
  } catch (const crypto_error& e) {
    // Tampering, a row copied elsewhere, or a missing key: never serve it,
    // not even its other column. The line names the row, never a value.
    log::error("storage", "ALARM: stored ciphertext failed to decrypt",
               {{"team_id", r.key.team_id}, {"user_id", r.key.user_id},
                {"provider", r.key.provider}, {"row_id", r.id}, {"column", column},
                {"error", e.what()}});
    throw db_error(ec::integrity_failure, "", "stored credentials failed integrity check");
  }
  r.expires_at_ms = res.integer(row, 9);
  r.scopes = parse_scopes(res.text(row, 10));
  r.metadata = std::string(res.text(row, 11));
  r.version = res.integer(row, 12);
  r.created_at_ms = res.integer(row, 13);
  r.updated_at_ms = res.integer(row, 14);
  r.refreshed_at_ms = res.integer(row, 15);
  return r;
}

namespace {

/// A row of list_tokens or search_tokens (the same first ten columns).
token_summary read_summary(const result& res, int i, const std::string& team_id) {
  token_summary s;
  s.key = {team_id, std::string(res.text(i, 0)), std::string(res.text(i, 1))};
  s.kind = kind_column(res.text(i, 2));
  s.status = status_column(res.text(i, 3));
  s.reason = std::string(res.text(i, 4));
  s.expires_at_ms = res.integer(i, 5);
  s.scopes = parse_scopes(res.text(i, 6));
  s.metadata = std::string(res.text(i, 7));
  s.updated_at_ms = res.integer(i, 8);
  s.id = std::string(res.text(i, 9));
  return s;
}

} // namespace

token_summaries token_store::list(const std::string& team_id, const std::string& user_id) {
  auto res = db_.exec(list_tokens, {param::text(team_id), param::text(user_id)});
  token_summaries out;
  out.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i)
    out.push_back(read_summary(res, i, team_id));
  return out;
}

token_summaries search_connections(database& db, const connection_filter& filter) {
  auto res = db.exec(search_tokens, {param::text(filter.team_id), param::text(filter.user_id),
                                     param::text(filter.provider),
                                     param::text(std::to_string(filter.limit))});
  token_summaries out;
  out.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i)
    out.push_back(read_summary(res, i, std::string(res.text(i, 10))));
  return out;
}

bool token_store::remove(const connection_key& key) {
  auto res = db_.exec(delete_token, {param::text(key.team_id), param::text(key.user_id),
                                     param::text(key.provider)});
  return res.affected() > 0;
}

std::optional<token_record> token_store::acquire_lease(const connection_key& key,
                                                      const std::string& owner,
                                                      int64_t lease_ms) {
  auto res = db_.exec(acquire_lease_stmt,
                      {param::text(key.team_id), param::text(key.user_id),
                       param::text(key.provider), param::text(owner),
                       param::text(std::to_string(lease_ms))});
  if (res.rows() == 1)
    return read_row(res, 0);
  throw_if_fenced(owner);
  if (!find(key))
    throw db_error(ec::not_found, "", "no such connection");
  return std::nullopt;
}

std::vector<std::optional<token_record>>
token_store::acquire_leases(const std::vector<lease_request>& group) {
  std::vector<std::optional<token_record>> out(group.size());
  auto rows = nlohmann::json::array();
  for (size_t i = 0; i < group.size(); ++i)
    rows.push_back({{"k_i", i}, {"k_team", group[i].key.team_id},
                    {"k_user", group[i].key.user_id}, {"k_provider", group[i].key.provider},
                    {"k_owner", group[i].owner}, {"k_ms", group[i].lease_ms}});
  auto res = db_.exec(acquire_leases_stmt, {param::text(rows.dump())});
  for (int row = 0; row < res.rows(); ++row) {
    auto i = static_cast<size_t>(res.integer(row, 16));
    if (i < out.size())
      out[i] = read_row(res, row);
  }
  return out;
}

void token_store::throw_if_fenced(const std::string& owner) {
  if (db_.exec(owner_fenced_stmt, {param::text(owner)}).rows() == 1)
    throw db_error(ec::unavailable, "",
                   "this instance is joining the cluster or its heartbeats have lapsed");
}

std::optional<int64_t> token_store::version_of(const connection_key& key) {
  auto res = db_.exec(select_version, {param::text(key.team_id), param::text(key.user_id),
                                       param::text(key.provider)});
  if (res.rows() == 0)
    return std::nullopt;
  return res.integer(0, 0);
}

void token_store::insert_event(const std::string& type, const std::string& connection_id,
                               const connection_key& key, const std::string& reason) {
  events_.append(key.team_id, token_event(random_uuid(), type, connection_id, key, reason));
}

token_record token_store::complete_refresh(const connection_key& key, int64_t fence,
                                           const std::string& owner,
                                           const refreshed_tokens& tokens) {
  // The row id binds the ciphertexts; it does not change while leased.
  auto current = find(key);
  if (!current)
    throw db_error(ec::not_found, "", "no such connection");
  auto access = cipher_.encrypt(tokens.access_token.view(),
                                binding(current->id, key, "access_token"));
  // A kept refresh token is sealed again under the active key too, so the
  // row's key_id names the key of every ciphertext in it (key rotation
  // relies on that: docs/STORAGE.md).
  const secret& refresh_plain =
    tokens.refresh_token.empty() ? current->refresh_token : tokens.refresh_token;
  param refresh = param::null();
  if (!refresh_plain.empty())
    refresh = param::bytes(cipher_.encrypt(refresh_plain.view(),
                                           binding(current->id, key, "refresh_token")));
  param scopes = tokens.scopes.empty() ? param::null()
                                       : param::text(nlohmann::json(tokens.scopes).dump());
  database::transaction tx{db_};
  auto res = db_.exec(complete_refresh_stmt,
                      {param::text(key.team_id), param::text(key.user_id),
                       param::text(key.provider), param::text(std::to_string(fence)),
                       param::text(owner), param::bytes(access), refresh,
                       param::text(std::to_string(tokens.expires_at_ms)), scopes,
                       param::text(std::to_string(cipher_.keys().active_id()))});
  if (res.rows() != 1) {
    // Fenced: the caller keeps the tokens and stores them once this
    // instance is active again (nothing the provider issued is lost).
    throw_if_fenced(owner);
    throw db_error(ec::conflict, "", "stale fencing token: the row changed under the lease");
  }
  auto stored = read_row(res, 0);
  insert_event("TOKEN_REFRESHED", stored.id, key, "");
  tx.commit();
  return stored;
}

std::vector<std::optional<token_record>>
token_store::complete_refreshes(const std::vector<completion>& group) {
  std::vector<std::optional<token_record>> out(group.size());
  auto keys = nlohmann::json::array();
  for (size_t i = 0; i < group.size(); ++i)
    keys.push_back({{"k_i", i}, {"k_team", group[i].key.team_id},
                    {"k_user", group[i].key.user_id}, {"k_provider", group[i].key.provider}});
  auto current = db_.exec(completion_rows_stmt, {param::text(keys.dump())});
  auto rows = nlohmann::json::array();
  for (int row = 0; row < current.rows(); ++row) {
    auto i = static_cast<size_t>(current.integer(row, 0));
    if (i >= group.size())
      continue;
    auto& c = group[i];
    std::string id{current.text(row, 1)};
    nlohmann::json item{{"k_i", i}, {"k_team", c.key.team_id}, {"k_user", c.key.user_id},
                        {"k_provider", c.key.provider}, {"k_fence", c.fence},
                        {"k_owner", c.owner}, {"k_expires", c.tokens.expires_at_ms}};
    try {
      item["k_access"] = to_hex(cipher_.encrypt(c.tokens.access_token.view(),
                                                binding(id, c.key, "access_token")));
      // A kept refresh token is sealed again under the active key, as
      // complete_refresh does.
      secret refresh = c.tokens.refresh_token;
      if (refresh.empty() && !current.is_null(row, 2))
        refresh = cipher_.decrypt(current.bytes(row, 2), binding(id, c.key, "refresh_token"));
      if (!refresh.empty())
        item["k_refresh"] =
          to_hex(cipher_.encrypt(refresh.view(), binding(id, c.key, "refresh_token")));
    } catch (const crypto_error&) {
      continue; // complete_refresh on its own raises the alarm
    }
    if (!c.tokens.scopes.empty())
      item["k_scopes"] = c.tokens.scopes;
    rows.push_back(std::move(item));
  }
  if (rows.empty())
    return out;
  auto res = db_.exec(complete_refreshes_stmt,
                      {param::text(rows.dump()),
                       param::text(std::to_string(cipher_.keys().active_id()))});
  std::vector<std::pair<std::string, nlohmann::json>> events;
  for (int row = 0; row < res.rows(); ++row) {
    auto i = static_cast<size_t>(res.integer(row, 16));
    if (i >= out.size())
      continue;
    auto stored = read_row(res, row);
    events.emplace_back(stored.key.team_id, token_event(random_uuid(), "TOKEN_REFRESHED",
                                                        stored.id, stored.key, ""));
    out[i] = std::move(stored);
  }
  events_.append_many(events);
  return out;
}

bool token_store::release_lease(const connection_key& key, int64_t fence,
                                const std::string& owner, const std::string& failure_reason) {
  auto res = db_.exec(release_lease_stmt,
                      {param::text(key.team_id), param::text(key.user_id),
                       param::text(key.provider), param::text(std::to_string(fence)),
                       param::text(owner), param::text(failure_reason)});
  return res.affected() == 1;
}

token_record token_store::mark_needs_reauth(const connection_key& key, int64_t fence,
                                            const std::string& owner, const std::string& reason) {
  database::transaction tx{db_};
  auto res = db_.exec(mark_reauth_stmt,
                      {param::text(key.team_id), param::text(key.user_id),
                       param::text(key.provider), param::text(std::to_string(fence)),
                       param::text(owner), param::text(reason)});
  if (res.rows() != 1)
    throw db_error(ec::conflict, "", "stale fencing token: the row changed under the lease");
  auto stored = read_row(res, 0);
  insert_event("TOKEN_EXPIRED", stored.id, key, reason);
  tx.commit();
  return stored;
}

hydrate_batch token_store::load_batch(const std::string& after_team, const std::string& after_id,
                                      int limit) {
  return read_batch(db_.exec(load_batch_stmt,
                             {param::text(after_team),
                              param::text(after_id.empty() ? "00000000-0000-0000-0000-000000000000"
                                                           : after_id),
                              param::text(std::to_string(limit))}),
                    limit);
}

hydrate_batch token_store::load_shard_batch(int32_t shard, const std::string& after_team,
                                            const std::string& after_id, int limit) {
  return read_batch(db_.exec(load_shard_batch_stmt,
                             {param::text(after_team),
                              param::text(after_id.empty() ? "00000000-0000-0000-0000-000000000000"
                                                           : after_id),
                              param::text(std::to_string(limit)),
                              param::text(std::to_string(shard))}),
                    limit);
}

hydrate_batch token_store::load_shards_batch(const std::vector<int32_t>& shards,
                                             const std::string& after_team,
                                             const std::string& after_id, int limit) {
  std::string set = "{";
  for (size_t i = 0; i < shards.size(); ++i)
    set += (i ? "," : "") + std::to_string(shards[i]);
  set += "}";
  return read_batch(db_.exec(load_shards_batch_stmt,
                             {param::text(after_team),
                              param::text(after_id.empty() ? "00000000-0000-0000-0000-000000000000"
                                                           : after_id),
                              param::text(std::to_string(limit)), param::text(set)}),
                    limit);
}

hydrate_batch token_store::read_batch(const result& res, int limit) {
  hydrate_batch out;
  out.rows.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i) {
    out.last_team = std::string(res.text(i, 0));
    out.last_id = std::string(res.text(i, 3));
    try {
      out.rows.push_back(read_row(res, i));
    } catch (const db_error&) {
      // An integrity alarm was logged; the other rows still load.
    }
  }
  out.done = res.rows() < limit;
  return out;
}

std::vector<std::string> token_store::teams_of(const std::string& user_id,
                                               const std::string& provider) {
  auto res = db_.exec(teams_of_stmt, {param::text(user_id), param::text(provider)});
  std::vector<std::string> teams;
  for (int i = 0; i < res.rows(); ++i)
    teams.emplace_back(res.text(i, 0));
  return teams;
}

void token_store::audit(const audit_entry& e) {
  auto details = nlohmann::json::parse(e.details, nullptr, false);
  if (!details.is_object())
    details = nlohmann::json::object();
  db_.exec(insert_audit_stmt,
           {param::text(e.team_id), param::text(e.actor_type), param::text(e.actor_id),
            param::text(e.action), param::text(e.target), param::text(e.remote_addr),
            param::text(e.request_id), param::text(details.dump())});
}

namespace {

/// Appends `value` as one field of COPY's text format: backslash, tab and
/// line breaks escaped, \N for NULL when `null_if_empty`. A NUL byte or
/// invalid UTF-8 (which the database would refuse, failing the whole
/// batch and every batch after it) becomes '?': a row is never lost to
/// one bad byte.
void append_copy_field(std::string& out, std::string_view value, bool null_if_empty) {
  if (null_if_empty && value.empty()) {
    out += "\\N";
    return;
  }
  for (size_t i = 0; i < value.size(); ++i) {
    auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x80) {
      // The length of a valid sequence starting here, or 0.
      size_t len = (c >= 0xc2 && c <= 0xdf) ? 2 : (c >= 0xe0 && c <= 0xef) ? 3
                   : (c >= 0xf0 && c <= 0xf4) ? 4 : 0;
      bool valid = len > 0 && i + len <= value.size();
      for (size_t k = 1; valid && k < len; ++k)
        valid = (static_cast<unsigned char>(value[i + k]) & 0xc0) == 0x80;
      if (valid && len == 3) {
        auto c1 = static_cast<unsigned char>(value[i + 1]);
        valid = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
      } else if (valid && len == 4) {
        auto c1 = static_cast<unsigned char>(value[i + 1]);
        valid = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
      }
      if (!valid) {
        out.push_back('?');
        continue;
      }
      out.append(value.substr(i, len));
      i += len - 1;
      continue;
    }
    switch (c) {
      case 0: out.push_back('?'); break;
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: out.push_back(static_cast<char>(c));
    }
  }
}

} // namespace

void token_store::audit_batch(const std::vector<audit_entry>& entries) {
  if (entries.empty())
    return;
  // COPY: about half the server's work of INSERT … unnest(arrays) per row,
  // which matters at one row per token read (issue 18). Details are JSON
  // objects made by this service; jsonb checks them, and one that is not
  // an object is stored as {} rather than failing the batch.
  std::string rows;
  rows.reserve(entries.size() * 160);
  for (auto& e : entries) {
    bool object = e.details.size() >= 2 && e.details.front() == '{' && e.details.back() == '}' &&
                  nlohmann::json::accept(e.details);
    // The COPY's columns in order; target, address and request id are
    // NULL when empty.
    const std::pair<std::string_view, bool> fields[] = {
      {e.team_id, false},     {e.actor_type, false}, {e.actor_id, false},
      {e.action, false},      {e.target, true},      {e.remote_addr, true},
      {e.request_id, true},   {object ? std::string_view(e.details) : "{}", false}};
    for (size_t i = 0; i < std::size(fields); ++i) {
      if (i > 0)
        rows.push_back('\t');
      append_copy_field(rows, fields[i].first, fields[i].second);
    }
    rows.push_back('\n');
  }
  db_.copy_in("COPY audit_log (team_id, actor_type, actor_id, action, target, remote_addr, "
              "request_id, details) FROM STDIN",
              rows);
}

int64_t token_store::put_state(const oauth_state_record& st, int32_t max_pending) {
  // Expired states are swept as new ones arrive; the table stays small.
  db_.exec(purge_states_stmt);
  // Sealed even when empty (a provider without PKCE): the ciphertext is
  // what binds the row to its team, user and provider, so a state copied
  // into another team is refused at the callback.
  auto verifier = param::bytes(cipher_.encrypt(
    st.code_verifier.view(),
    {"oauth_states", st.team_id, st.state_hash, st.user_id, st.provider, "code_verifier"}));
  // Count, trim and insert under the member's lock: without it, two
  // instances could each see room for one more and both insert.
  database::transaction tx{db_};
  db_.exec(lock_member_states_stmt, {param::text(st.team_id), param::text(st.user_id)});
  auto dropped = db_.exec(drop_oldest_states_stmt,
                          {param::text(st.team_id), param::text(st.user_id),
                           param::text(std::to_string(std::max<int32_t>(max_pending, 1) - 1))})
                   .affected();
  db_.exec(insert_state_stmt,
           {param::text(st.team_id), param::text(st.state_hash), param::text(st.user_id),
            param::text(st.provider), param::text(st.connector_name), verifier,
            param::text(st.redirect_uri), param::text(st.params),
            param::text(std::to_string(cipher_.keys().active_id())),
            param::text(std::to_string(st.expires_at_ms))});
  tx.commit();
  return dropped;
}

std::optional<oauth_state_record> token_store::take_state(const std::string& state_hashes) {
  auto res = db_.exec(take_state_stmt, {param::text(state_hashes)});
  if (res.rows() == 0)
    return std::nullopt;
  oauth_state_record st;
  // The verifier is bound to the hash it was stored under.
  st.state_hash = std::string(res.text(0, 8));
  st.team_id = std::string(res.text(0, 0));
  st.user_id = std::string(res.text(0, 1));
  st.provider = std::string(res.text(0, 2));
  st.connector_name = std::string(res.text(0, 3));
  {
    try {
      // No verifier at all: a state written before every state was sealed
      // (issue 16), as team-unbound as format 1 and read only while it is.
      if (res.is_null(0, 4)) {
        if (!cipher_.unbound_allowed())
          throw crypto_error("state has no sealed verifier (the retired team-unbound format)");
      } else {
        st.code_verifier = cipher_.decrypt(
          res.bytes(0, 4),
          {"oauth_states", st.team_id, st.state_hash, st.user_id, st.provider, "code_verifier"});
      }
    } catch (const crypto_error& e) {
      log::error("storage", "ALARM: stored OAuth verifier failed to decrypt",
                 {{"team_id", st.team_id}, {"user_id", st.user_id}, {"provider", st.provider},
                  {"error", e.what()}});
      throw db_error(ec::integrity_failure, "", "stored state failed integrity check");
    }
  }
  st.redirect_uri = std::string(res.text(0, 5));
  st.params = std::string(res.text(0, 6));
  st.expires_at_ms = res.integer(0, 7);
  return st;
}

connect_result token_store::connect(token_record record) {
  connect_result out;
  database::transaction tx{db_};
  try {
    if (auto previous = find(record.key)) {
      out.replaced_existing = true;
      out.replaced = std::move(*previous);
    }
  } catch (const db_error& e) {
    // A tampered old row (alarm already logged) must not block replacing
    // it; it just cannot be revoked.
    if (e.code != ec::integrity_failure)
      throw;
  }
  // A new grant is a new row id: ciphertexts of the old grant stop
  // decrypting even if a copy of them survives somewhere.
  record.id = random_uuid();
  out.stored = save(std::move(record));
  insert_event("TOKEN_CREATED", out.stored.id, out.stored.key, "");
  tx.commit();
  return out;
}

token_record token_store::disconnect(const connection_key& key, const std::string& reason) {
  database::transaction tx{db_};
  auto res = db_.exec(delete_returning_stmt, {param::text(key.team_id), param::text(key.user_id),
                                              param::text(key.provider)});
  if (res.rows() == 0)
    throw db_error(ec::not_found, "", "no such connection");
  token_record removed;
  try {
    removed = read_row(res, 0);
  } catch (const db_error& e) {
    // A tampered row is deleted all the same (the alarm was logged).
    if (e.code != ec::integrity_failure)
      throw;
    removed.key = key;
    removed.id = std::string(res.text(0, 3));
  }
  insert_event("TOKEN_REVOKED", removed.id, key, reason);
  tx.commit();
  return removed;
}

} // namespace cm::storage

#include "storage/rekey.hpp"

#include <cstdio>
#include <optional>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "storage/unbound_format.hpp"

namespace cm::storage {

namespace {

constexpr const char* component = "rekey";

// The format is byte 1 of every ciphertext and the key id sits in bytes
// 2..5 (cipher.hpp); these predicates compare them with the current format
// and the active key's 4 bytes ($hdr, hex) without decrypting anything. A
// row also needs work when its key_id column is stale (e.g. written before
// complete_refresh kept it exact).
#define CM_UNBOUND(column) "substring(" column " FROM 1 FOR 1) <> '\\x02'::bytea"
#define CM_STALE(column, hdr)                                                          \
  "(" column " IS NOT NULL AND (substring(" column " FROM 2 FOR 4) <> decode(" hdr ", 'hex')" \
  " OR " CM_UNBOUND(column) "))"

#define CM_TOKENS_NEED_WORK(hdr, active)                                               \
  "(" CM_STALE("access_token", hdr) " OR " CM_STALE("refresh_token", hdr)                \
  " OR key_id <> " active "::integer)"

#define CM_CONFIGS_NEED_WORK(hdr, active) \
  "(" CM_STALE("secrets", hdr) " OR (secrets IS NOT NULL AND key_id IS DISTINCT FROM " active \
  "::integer))"

// Keyset pages in primary-key order, read without locks: a plain SELECT
// never waits for a refresh, and no refresh ever waits for this read.
const statement tokens_batch{"rekey_tokens_batch",
  "SELECT team_id, id::text, user_id, provider, access_token, refresh_token, version "
  "FROM connector_tokens WHERE (team_id, id) > ($1, $2::uuid) AND "
  CM_TOKENS_NEED_WORK("$3", "$4")
  " ORDER BY team_id, id LIMIT $5::integer"};

// The whole batch in one statement, each row only if its version is still
// the one read. Every write that changes a token bumps the version
// (save/connect, lease, refresh, reauth), so an unchanged version means an
// unchanged plaintext: the job can never put an older token over a newer
// one. It keeps the version (and updated_at): a refresh that leased the row
// before (its fence is the version) still completes. Row locks are held
// only while this one statement runs inside PostgreSQL.
const statement tokens_write{"rekey_tokens_write",
  "UPDATE connector_tokens AS t SET access_token = decode(u.access, 'hex'), "
  "refresh_token = decode(u.refresh, 'hex'), key_id = $6::integer "
  "FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::text[], $5::text[]) "
  "AS u(team_id, id, version, access, refresh) "
  "WHERE t.team_id = u.team_id AND t.id = u.id AND t.version = u.version"};

const statement tokens_pending{"rekey_tokens_pending",
  "SELECT count(*) FROM connector_tokens WHERE " CM_TOKENS_NEED_WORK("$1", "$2")};

// OAuth states are not re-encrypted: the key that sealed the verifier also
// keyed the state's hash, and the hash cannot be recomputed without the
// state itself (only the hash is stored). They live minutes: expired ones
// under an old key are deleted here, live ones are reported and expire.
const statement states_expire{"rekey_states_expire",
  "DELETE FROM oauth_states WHERE key_id <> $1::integer AND expires_at < now()"};

const statement states_pending{"rekey_states_pending",
  "SELECT count(*) FROM oauth_states WHERE key_id <> $1::integer"};

// A verifier sealed before team_id joined the binding (format 1), or none
// at all (states of providers without PKCE were not sealed then), is
// sealed again in place: the verifier's own key may change (its header
// names it), the state's hash key (key_id) cannot and does not. Written
// only if the verifier is still the one read (states are never updated
// otherwise; a callback deletes the row).
#define CM_VERIFIER_NEEDS_WORK "(code_verifier IS NULL OR " CM_UNBOUND("code_verifier") ")"

const statement verifiers_batch{"rekey_verifiers_batch",
  "SELECT team_id, encode(state_hash, 'hex'), user_id, provider, code_verifier, "
  "coalesce(encode(code_verifier, 'hex'), '') FROM oauth_states "
  "WHERE (team_id, state_hash) > ($1, decode($2, 'hex')) AND " CM_VERIFIER_NEEDS_WORK
  " ORDER BY team_id, state_hash LIMIT $3::integer"};

const statement verifiers_write{"rekey_verifiers_write",
  "UPDATE oauth_states AS s SET code_verifier = decode(u.verifier, 'hex') "
  "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) "
  "AS u(team_id, state_hash, was, verifier) "
  "WHERE s.team_id = u.team_id AND s.state_hash = decode(u.state_hash, 'hex') "
  "AND s.code_verifier IS NOT DISTINCT FROM nullif(decode(u.was, 'hex'), ''::bytea)"};

const statement verifiers_pending{"rekey_verifiers_pending",
  "SELECT count(*) FROM oauth_states WHERE " CM_VERIFIER_NEEDS_WORK};

const statement configs_batch{"rekey_configs_batch",
  "SELECT team_id, connector_name, secrets, version FROM connector_configs "
  "WHERE (team_id, connector_name) > ($1, $2) AND " CM_CONFIGS_NEED_WORK("$3", "$4")
  " ORDER BY team_id, connector_name LIMIT $5::integer"};

// Every configuration change bumps the version, as for tokens.
const statement configs_write{"rekey_configs_write",
  "UPDATE connector_configs AS c SET secrets = decode(u.secrets, 'hex'), key_id = $5::integer "
  "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) "
  "AS u(team_id, connector_name, version, secrets) "
  "WHERE c.team_id = u.team_id AND c.connector_name = u.connector_name "
  "AND c.version = u.version"};

const statement configs_pending{"rekey_configs_pending",
  "SELECT count(*) FROM connector_configs WHERE " CM_CONFIGS_NEED_WORK("$1", "$2")};

// Every encrypted column by the key its header names, and every OAuth
// state by its key_id (the key of its hash and verifier). CASE evaluates in
// order, so get_byte never runs on a value too short to have a header.
const statement count_by_key{"rekey_count_by_key",
  "SELECT k, count(*) FROM (SELECT CASE WHEN length(c) < 5 THEN 0 "
  "WHEN get_byte(c, 0) NOT IN (1, 2) THEN 0 "
  "ELSE (get_byte(c, 1)::bigint << 24) | (get_byte(c, 2)::bigint << 16) | "
  "(get_byte(c, 3)::bigint << 8) | get_byte(c, 4)::bigint END AS k FROM ("
  "SELECT access_token AS c FROM connector_tokens "
  "UNION ALL SELECT refresh_token FROM connector_tokens "
  "UNION ALL SELECT secrets FROM connector_configs) AS every_column "
  "WHERE c IS NOT NULL "
  "UNION ALL SELECT key_id::bigint FROM oauth_states) AS by_key GROUP BY k ORDER BY k"};

std::string header_hex(uint32_t key_id) {
  char out[9];
  std::snprintf(out, sizeof out, "%08x", key_id);
  return out;
}

/// A row that failed to decrypt: which column, and why (never a value).
struct decrypt_failure {
  std::string column;
  std::string why;
};

/// One array parameter being built: a PostgreSQL array literal of text
/// elements (NULL for a missing value). Elements are hex, numbers, UUIDs
/// or names; quotes and backslashes are escaped all the same.
class text_array {
public:
  void add(const std::optional<std::string>& value) {
    literal_ += literal_.empty() ? "{" : ",";
    if (!value) {
      literal_ += "NULL";
      return;
    }
    literal_ += '"';
    for (char c : *value) {
      if (c == '"' || c == '\\')
        literal_ += '\\';
      literal_ += c;
    }
    literal_ += '"';
  }
  param done() const { return param::text(literal_.empty() ? "{}" : literal_ + "}"); }

private:
  std::string literal_;
};

std::string to_hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

} // namespace

/// How one table is re-encrypted: its statements, where the keyset starts,
/// and how a selected row becomes its entries in the write's array
/// parameters (or a decrypt_failure).
struct rekeyer::table_job {
  std::string table;
  const statement* batch;
  const statement* write;
  const statement* pending;
  std::string first_a, first_b;
  /// Array parameters of the write.
  size_t arrays;
  /// Whether the batch and pending statements take the active key's header
  /// and id, and the write the active key id after its arrays (every job
  /// but OAuth verifiers, whose work is the format alone).
  bool keyed;
  /// Names the row in logs: the row's identity, never a value.
  std::function<nlohmann::json(const result&, int)> describe;
  /// Re-encrypts one row into one entry per array; false (and `failure`)
  /// when a ciphertext does not decrypt.
  std::function<bool(const result&, int, std::vector<std::optional<std::string>>&,
                     decrypt_failure&)>
    rewrite;
};

int64_t rekey_summary::tampered() const {
  int64_t n = 0;
  for (auto& [table, counts] : tables)
    n += counts.tampered;
  return n;
}

bool rekey_summary::complete() const {
  for (auto& [table, rows] : rows_remaining)
    if (rows != 0)
      return false;
  return remaining.empty() && tampered() == 0 && unbound_remaining == 0;
}

std::map<uint32_t, int64_t> ciphertexts_by_key(database& db) {
  auto res = db.exec(count_by_key);
  std::map<uint32_t, int64_t> out;
  for (int i = 0; i < res.rows(); ++i)
    out[static_cast<uint32_t>(res.integer(i, 0))] = res.integer(i, 1);
  return out;
}

int64_t rekeyer::pending(const table_job& job) {
  auto active = cipher_.keys().active_id();
  std::vector<param> params;
  if (job.keyed)
    params = {param::text(header_hex(active)), param::text(std::to_string(active))};
  return db_.exec(*job.pending, params).integer(0, 0);
}

int64_t rekeyer::pass(const table_job& job, rekey_summary& summary, const progress_fn& progress) {
  auto active = cipher_.keys().active_id();
  auto& counts = summary.tables[job.table];
  std::string after_a = job.first_a, after_b = job.first_b;
  int64_t rewritten_now = 0;
  while (true) {
    std::vector<param> batch_params{param::text(after_a), param::text(after_b)};
    if (job.keyed) {
      batch_params.push_back(param::text(header_hex(active)));
      batch_params.push_back(param::text(std::to_string(active)));
    }
    batch_params.push_back(param::text(std::to_string(options_.batch_size)));
    auto res = db_.exec(*job.batch, batch_params);
    int rows = res.rows();
    std::vector<text_array> arrays(job.arrays);
    int64_t ready = 0;
    for (int i = 0; i < rows; ++i) {
      after_a = std::string(res.text(i, 0));
      after_b = std::string(res.text(i, 1));
      std::vector<std::optional<std::string>> values;
      decrypt_failure failure;
      if (!job.rewrite(res, i, values, failure)) {
        auto identity = job.table + "/" + after_a + "/" + after_b;
        if (alarmed_.insert(identity).second) {
          auto fields = job.describe(res, i);
          fields["table"] = job.table;
          fields["column"] = failure.column;
          fields["error"] = failure.why;
          log::error(component,
                     "ALARM: stored ciphertext failed to decrypt; row left under its old key",
                     fields);
          ++counts.tampered;
        }
        continue;
      }
      for (size_t c = 0; c < job.arrays; ++c)
        arrays[c].add(values[c]);
      ++ready;
    }
    if (ready > 0) {
      std::vector<param> params;
      for (auto& a : arrays)
        params.push_back(a.done());
      if (job.keyed)
        params.push_back(param::text(std::to_string(active)));
      auto written = db_.exec(*job.write, params).affected();
      counts.rewritten += written;
      rewritten_now += written;
      // Changed since the read (a refresh, a reconnect): left for a later
      // pass, which finds it already under the active key or not.
      counts.raced += ready - written;
    }
    if (rows == 0)
      break;
    ++counts.batches;
    if (progress)
      progress(job.table, counts);
    if (rows < options_.batch_size)
      break;
    if (options_.pause.count() > 0)
      std::this_thread::sleep_for(options_.pause);
  }
  return rewritten_now;
}

rekey_summary rekeyer::run(const progress_fn& progress) {
  auto& cipher = cipher_;
  // The value sealed again under the active key, as hex (nullopt: NULL).
  auto reseal = [&cipher](const result& res, int row, int col,
                          const cipher_binding& where) -> std::optional<std::string> {
    if (res.is_null(row, col))
      return std::nullopt;
    auto plain = cipher.decrypt(res.bytes(row, col), where);
    return to_hex(cipher.encrypt(plain.view(), where));
  };
  auto active_text = std::to_string(cipher_.keys().active_id());

  std::vector<table_job> jobs;
  jobs.push_back(table_job{
    "connector_tokens", &tokens_batch, &tokens_write, &tokens_pending, "",
    "00000000-0000-0000-0000-000000000000", 5, true,
    [](const result& res, int i) -> nlohmann::json {
      return {{"team_id", std::string(res.text(i, 0))},
              {"row_id", std::string(res.text(i, 1))},
              {"user_id", std::string(res.text(i, 2))},
              {"provider", std::string(res.text(i, 3))}};
    },
    [&](const result& res, int i, std::vector<std::optional<std::string>>& values,
        decrypt_failure& failure) {
      std::string team{res.text(i, 0)}, id{res.text(i, 1)}, user{res.text(i, 2)},
        provider{res.text(i, 3)};
      std::optional<std::string> access, refresh;
      const char* column = "access_token";
      try {
        access = reseal(res, i, 4, {"connector_tokens", team, id, user, provider, column});
        column = "refresh_token";
        refresh = reseal(res, i, 5, {"connector_tokens", team, id, user, provider, column});
      } catch (const crypto_error& e) {
        failure = {column, e.what()};
        return false;
      }
      values = {team, id, std::string(res.text(i, 6)), std::move(access), std::move(refresh)};
      return true;
    }});
  jobs.push_back(table_job{
    "connector_configs", &configs_batch, &configs_write, &configs_pending, "", "", 4, true,
    [](const result& res, int i) -> nlohmann::json {
      return {{"team_id", std::string(res.text(i, 0))},
              {"connector", std::string(res.text(i, 1))}};
    },
    [&](const result& res, int i, std::vector<std::optional<std::string>>& values,
        decrypt_failure& failure) {
      std::string team{res.text(i, 0)}, name{res.text(i, 1)};
      std::optional<std::string> sealed;
      try {
        // Bound like connector_config_store's secrets_binding.
        sealed = reseal(res, i, 2, {"connector_configs", team, team, "", name, "secrets"});
      } catch (const crypto_error& e) {
        failure = {"secrets", e.what()};
        return false;
      }
      values = {team, name, std::string(res.text(i, 3)), std::move(sealed)};
      return true;
    }});
  jobs.push_back(table_job{
    "oauth_states", &verifiers_batch, &verifiers_write, &verifiers_pending, "", "", 4, false,
    [](const result& res, int i) -> nlohmann::json {
      return {{"team_id", std::string(res.text(i, 0))},
              {"user_id", std::string(res.text(i, 2))},
              {"provider", std::string(res.text(i, 3))}};
    },
    [&](const result& res, int i, std::vector<std::optional<std::string>>& values,
        decrypt_failure& failure) {
      std::string team{res.text(i, 0)}, hash{res.text(i, 1)}, user{res.text(i, 2)},
        provider{res.text(i, 3)};
      std::optional<std::string> sealed;
      try {
        // Bound like token_store's put_state; a missing verifier is an
        // empty one, sealed.
        cipher_binding where{"oauth_states", team, hash, user, provider, "code_verifier"};
        if (res.is_null(i, 4)) {
          if (!cipher.unbound_allowed())
            throw crypto_error("state has no sealed verifier (the retired team-unbound format)");
          sealed = to_hex(cipher.encrypt("", where));
        } else {
          sealed = reseal(res, i, 4, where);
        }
      } catch (const crypto_error& e) {
        failure = {"code_verifier", e.what()};
        return false;
      }
      values = {team, hash, std::string(res.text(i, 5)), std::move(sealed)};
      return true;
    }});

  rekey_summary summary;
  summary.active_key = cipher_.keys().active_id();
  for (auto& job : jobs)
    summary.tables[job.table];
  auto states_left = [&] {
    return db_.exec(states_pending, {param::text(active_text)}).integer(0, 0);
  };
  for (int p = 1; p <= options_.max_passes; ++p) {
    summary.passes = p;
    summary.expired_states_deleted +=
      db_.exec(states_expire, {param::text(active_text)}).affected();
    int64_t rewritten = 0;
    for (auto& job : jobs)
      rewritten += pass(job, summary, progress);
    int64_t left = 0;
    for (auto& job : jobs)
      left += pending(job);
    // Only tampered rows left (they never move), or nothing at all. Live
    // OAuth states under an old key only expire: no pass helps them.
    if (left <= static_cast<int64_t>(alarmed_.size()))
      break;
    log::info(component, "rows still need work; another pass",
              {{"pass", p}, {"rewritten", rewritten}, {"left", left}});
    if (rewritten == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto& job : jobs)
    summary.rows_remaining[job.table] = pending(job);
  // Verifiers still of format 1, and states under an old key.
  summary.live_states_under_old_keys = states_left();
  summary.rows_remaining["oauth_states"] += summary.live_states_under_old_keys;
  // The last format-1 value is gone: from now on one can only be a copy.
  summary.unbound_remaining = unbound_values(db_);
  if (summary.unbound_remaining == 0) {
    refuse_unbound_format(db_);
    summary.unbound_refused = true;
  }
  for (auto& [key, count] : ciphertexts_by_key(db_))
    if (key != summary.active_key)
      summary.remaining[key] = count;
  return summary;
}

} // namespace cm::storage

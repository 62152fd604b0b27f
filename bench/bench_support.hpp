// What the database benches share: the database they run against, a fixed
// key ring, and bulk rows. write_connections puts many OAuth connections
// straight into connector_tokens, encrypted exactly as the service writes
// them, in multi-row INSERTs (the service's own path, one row per
// transaction, would take minutes for a million).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>

#include "storage/cipher.hpp"
#include "storage/database.hpp"

namespace cm::bench {

/// A fixed key ring: bench rows are throwaway.
inline const char* key_ring_text =
  "active 1\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";

/// CONNECTOR_BENCH_DATABASE_URL, or exits with 2 saying so.
inline const char* database_url() {
  const char* url = std::getenv("CONNECTOR_BENCH_DATABASE_URL");
  if (url == nullptr) {
    std::fprintf(stderr, "set CONNECTOR_BENCH_DATABASE_URL (scripts/bench does)\n");
    std::exit(2);
  }
  return url;
}

/// Connection n: team-(n / 1000), user-(n % 1000).
inline std::string team_of(int64_t n) { return "team-" + std::to_string(n / 1000); }
inline std::string user_of(int64_t n) { return "user-" + std::to_string(n % 1000); }

inline std::string random_token(std::mt19937_64& rng, size_t n) {
  static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string s(n, ' ');
  for (auto& c : s)
    c = alphabet[rng() % 64];
  return s;
}

inline std::string uuid_of(int64_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012llx",
                static_cast<unsigned long long>(n) % 1000000000000ULL);
  return buf;
}

/// A PostgreSQL array literal element for a bytea value: "\\x…".
inline void append_bytea(std::string& out, const std::string& bytes) {
  static const char hex[] = "0123456789abcdef";
  out += "\"\\\\x";
  for (unsigned char c : bytes) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  out += '"';
}

struct connection_rows {
  int64_t count = 0;
  std::string provider = "google-ads";
  /// The refresh token of connection n.
  std::function<std::string(int64_t)> refresh_token;
  /// Its expiry, unix seconds.
  std::function<int64_t(int64_t)> expires_at_s;
  /// How long ago the tokens were issued (updated_at).
  int64_t issued_ago_s = 0;
};

/// Replaces connector_tokens' content with `rows` (access tokens of 165
/// random characters, as Google's are), in INSERTs of 5,000, then VACUUM
/// ANALYZE as a long-running database would be.
inline void write_connections(storage::database& db, const storage::column_cipher& cipher,
                              const connection_rows& rows) {
  db.exec_script("TRUNCATE connector_tokens");
  std::mt19937_64 rng(42);
  const storage::statement insert{"bench_bulk_insert", R"(
INSERT INTO connector_tokens (team_id, id, user_id, provider, kind, access_token, refresh_token,
                              expires_at, scopes, key_id, updated_at)
SELECT t, i, u, p, 'oauth', a, r, to_timestamp(e), '["https://www.googleapis.com/auth/adwords"]',
       1, now() - make_interval(secs => $8::bigint)
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bytea[], $5::bytea[], $6::bigint[])
  AS x(t, i, u, a, r, e), (SELECT $7::text AS p) AS provider)"};
  const int64_t batch = 5000;
  for (int64_t start = 0; start < rows.count; start += batch) {
    std::string teams = "{", ids = "{", users = "{", access = "{", refresh = "{", expiry = "{";
    for (int64_t n = start; n < std::min(rows.count, start + batch); ++n) {
      auto team = team_of(n);
      auto id = uuid_of(n);
      auto user = user_of(n);
      storage::cipher_binding a{"connector_tokens", team, id, user, rows.provider, "access_token"};
      storage::cipher_binding r{"connector_tokens", team, id, user, rows.provider, "refresh_token"};
      const char* sep = n == start ? "" : ",";
      teams += sep + team;
      ids += sep + id;
      users += sep + user;
      access += sep;
      append_bytea(access, cipher.encrypt("ya29." + random_token(rng, 160), a));
      refresh += sep;
      append_bytea(refresh, cipher.encrypt(rows.refresh_token(n), r));
      expiry += sep + std::to_string(rows.expires_at_s(n));
    }
    for (auto* s : {&teams, &ids, &users, &access, &refresh, &expiry})
      *s += '}';
    db.exec(insert, {storage::param::text(teams), storage::param::text(ids),
                     storage::param::text(users), storage::param::text(access),
                     storage::param::text(refresh), storage::param::text(expiry),
                     storage::param::text(rows.provider),
                     storage::param::text(std::to_string(rows.issued_ago_s))});
  }
  db.exec_script("VACUUM ANALYZE connector_tokens");
}

} // namespace cm::bench

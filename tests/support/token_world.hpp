// A database with a shared master key, the fake provider, and server
// options pointing at both: the setting of the token and fault tests.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tests/support/child_process.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/test_env.hpp"

namespace cm::test {

/// Service tokens every token_world server accepts.
extern const std::string world_service_token; // scope FETCH_CONFIG
extern const std::string world_weak_token;    // no scope

struct token_world {
  /// A fresh database in the shared cluster, or `database_url` if given.
  explicit token_world(std::string database_url = {});

  temp_dir dir;
  std::string db;
  std::string key_file = dir.file("master.key");
  fake_provider_process fake;

  /// Server options: github pointed at the fake, plus `extra_refresh`
  /// lines under `refresh:` (each indented two spaces).
  server_options options(const std::string& extra_refresh = "") const;

  /// Stores connections the way the OAuth flow would (provider github,
  /// refresh token "rt-seed-<user>", access token "at-seed-<user>") and
  /// seeds the fake provider with the same token families.
  void seed(const std::string& user, int64_t expires_in_ms, const std::string& team = "acme");
  void seed_many(const std::vector<std::string>& users, int64_t expires_in_ms,
                 const std::string& team = "acme");

  /// Stores one row of any provider and kind as its connect would,
  /// without seeding the fake (`metadata`: JSON object text; `refresh`
  /// may be empty).
  void store(const std::string& team, const std::string& user, const std::string& provider,
             const std::string& access, const std::string& refresh, const std::string& metadata,
             bool api_key = false, int64_t expires_in_ms = 3600 * 1000);

  /// The decrypted refresh token stored for a user ("" if none).
  std::string stored_refresh(const std::string& user, const std::string& team = "acme");
  /// The same for many users, read through one storage actor.
  std::map<std::string, std::string> stored_refreshes(const std::vector<std::string>& users,
                                                      const std::string& team = "acme");

  /// Makes a seeded token look issued an hour ago (its lifetime, and so its
  /// refresh margin, is then not capped by a short life).
  void backdate(const std::string& user);
  void backdate_all();

  int64_t count(const std::string& sql) { return psql_int(db, sql); }
};

} // namespace cm::test

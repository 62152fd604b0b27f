#include "storage/migrations.hpp"

#include <algorithm>

#include "common/log.hpp"
#include "storage/database.hpp"

namespace cm::storage {

namespace {

// An arbitrary constant that names "connector-manager migrations".
constexpr const char* lock_sql = "SELECT pg_advisory_lock(727001)";
constexpr const char* unlock_sql = "SELECT pg_advisory_unlock(727001)";

constexpr const char* create_table_sql = R"(
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
))";

const statement select_applied{"migrations_select_applied",
                               "SELECT version FROM schema_migrations ORDER BY version"};
// Read by migration 0008 when it creates shard_settings.
const statement set_shard_count{"migrations_set_shard_count",
                                "SELECT set_config('cm.shard_count', $1, false)"};
const statement select_shard_count{"migrations_select_shard_count",
                                   "SELECT shard_count FROM shard_settings"};

const statement insert_applied{"migrations_insert_applied",
                               "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"};

} // namespace

std::vector<int> applied_migrations(database& db) {
  db.exec_script(create_table_sql);
  auto res = db.exec(select_applied);
  std::vector<int> versions;
  for (int i = 0; i < res.rows(); ++i)
    versions.push_back(static_cast<int>(res.integer(i, 0)));
  return versions;
}

int32_t stored_shard_count(database& db) {
  auto res = db.exec(select_shard_count);
  return static_cast<int32_t>(res.integer(0, 0));
}

int apply_migrations(database& db, int32_t shard_count) {
  db.exec_script(lock_sql);
  int applied = 0;
  try {
    db.exec(set_shard_count, {param::text(std::to_string(shard_count))});
    auto done = applied_migrations(db);
    for (auto& m : embedded_migrations()) {
      if (std::find(done.begin(), done.end(), m.version) != done.end())
        continue;
      database::transaction tx{db};
      db.exec_script(m.sql);
      db.exec(insert_applied, {param::text(std::to_string(m.version)), param::text(m.name)});
      tx.commit();
      log::info("storage", "applied migration", {{"version", m.version}, {"name", m.name}});
      ++applied;
    }
  } catch (...) {
    if (db.connected())
      db.exec_script(unlock_sql);
    throw;
  }
  db.exec_script(unlock_sql);
  if (auto stored = stored_shard_count(db); stored != shard_count)
    log::warn("storage", "cluster.shards differs from the deployment's shard count; the stored "
                         "count stays",
              {{"configured", shard_count}, {"stored", stored}});
  return applied;
}

} // namespace cm::storage

// Versioned SQL migrations (storage/migrations/NNNN_name.sql), embedded at
// build time and applied in order at start-up or by `connector-manager
// migrate`. Applying twice is a no-op; several instances starting at once
// serialize on an advisory lock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "storage/shards.hpp"

namespace cm::storage {

class database;

struct migration {
  int version;
  const char* name;
  const char* sql;
};

/// Every migration file, in version order (generated source).
const std::vector<migration>& embedded_migrations();

/// Applies the missing migrations; returns how many were applied.
/// `shard_count` (`cluster.shards`) is stored by the migration that creates
/// the shards (0008) and ignored, with a warning, once a count is stored.
/// Throws db_error.
int apply_migrations(database& db, int32_t shard_count = default_shard_count);

/// The deployment's shard count (migration 0008 must have run).
int32_t stored_shard_count(database& db);

/// Versions recorded as applied, ascending.
std::vector<int> applied_migrations(database& db);

} // namespace cm::storage

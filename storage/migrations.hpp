// Versioned SQL migrations (storage/migrations/NNNN_name.sql), embedded at
// build time and applied in order at start-up or by `connector-manager
// migrate`. Applying twice is a no-op; several instances starting at once
// serialize on an advisory lock.
#pragma once

#include <string>
#include <vector>

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
/// Throws db_error.
int apply_migrations(database& db);

/// Versions recorded as applied, ascending.
std::vector<int> applied_migrations(database& db);

} // namespace cm::storage

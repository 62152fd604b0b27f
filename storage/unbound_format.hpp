// Whether ciphertexts of the team-unbound format 1 may still be read
// (storage/cipher.hpp, migration 0007).
//
// The answer lives in the database (cipher_formats), so every instance and
// the tools agree: format 1 is read while rows sealed before the upgrade
// may remain, and refused once `rekey` has re-sealed the last of them. An
// instance asks only when it meets a format-1 value, remembers "refused"
// for good and "allowed" for a few seconds, so a rekey that completes
// under running servers takes effect everywhere without a restart.
#pragma once

#include <chrono>
#include <cstdint>

#include "storage/database.hpp"

namespace cm::storage {

class unbound_format_policy {
public:
  explicit unbound_format_policy(database& db,
                                 std::chrono::milliseconds recheck = std::chrono::seconds(5))
    : db_(db), recheck_(recheck) {}

  /// True while format 1 may be read. Throws db_error when the database
  /// cannot say (the read that met the value fails as unavailable, rather
  /// than serving or alarming on a guess).
  bool allowed();

private:
  database& db_;
  std::chrono::milliseconds recheck_;
  bool refused_ = false;
  std::chrono::steady_clock::time_point allowed_until_{};
};

/// Stored values of format 1 (tokens, team secrets, OAuth verifiers).
int64_t unbound_values(database& db);

/// Records that no format-1 value remains: from now on every reader
/// refuses them. Idempotent (keeps the first time).
void refuse_unbound_format(database& db);

} // namespace cm::storage

// Where a connection actor is in its life. The actor derives it from its
// state in one place (actors/connection_actor.cpp, `phase_of`) and acts on
// it; tests and diagnostics read it from `connection_status`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cm {

enum class connection_phase : uint8_t {
  /// The row is being read; requests wait for it.
  loading,
  /// Holding a usable grant (or one that cannot be refreshed); requests are
  /// answered from memory.
  serving,
  /// Waiting for a refresh-gate slot, or between taking the lease and
  /// storing the outcome; requests that need the new token wait for it.
  refreshing,
  /// A refresh failed; none starts before the backoff ends, and the token
  /// is served while it is still valid.
  backing_off,
  /// The grant is not connected (refused by the provider, given up after
  /// repeated failures, disconnected): requests get `needs_reauth`.
  needs_reauth,
  /// The row could not be read (gone, tampered, storage down): requests get
  /// that error until the actor stops moments later.
  load_failed,
};

constexpr std::string_view name_of(connection_phase phase) {
  switch (phase) {
    case connection_phase::loading:
      return "loading";
    case connection_phase::serving:
      return "serving";
    case connection_phase::refreshing:
      return "refreshing";
    case connection_phase::backing_off:
      return "backing_off";
    case connection_phase::needs_reauth:
      return "needs_reauth";
    case connection_phase::load_failed:
      return "load_failed";
  }
  return "loading";
}

/// For CAF's message rendering (logs, test failures).
inline std::string to_string(connection_phase phase) { return std::string{name_of(phase)}; }

} // namespace cm

// Shutdown without losing refresh tokens.
//
// Between taking its lease and recording the outcome, a connection may hold
// the only copy of a refresh token the provider has just issued (the old one
// may already be revoked). A SIGKILL there loses it (docs/RELIABILITY.md,
// "Crashes and rotating refresh tokens"); a SIGTERM must not. So the server,
// on SIGTERM, first stops every connection from starting a refresh, then
// waits until none is in progress (bounded by refresh.shutdown_grace_ms),
// and only then stops its actors.
//
// The count is process-wide: connection actors flip a counted_refresh_flag
// (their `refreshing`), and the shutdown code in app/commands.cpp reads it.
#pragma once

#include <chrono>
#include <cstdint>

namespace cm {

/// A bool that keeps a process-wide count of how many are true; an object
/// destroyed while true (its actor stopped mid-refresh) leaves the count.
class counted_refresh_flag {
public:
  counted_refresh_flag() = default;
  counted_refresh_flag(const counted_refresh_flag&) = delete;
  counted_refresh_flag& operator=(const counted_refresh_flag&) = delete;
  ~counted_refresh_flag();

  counted_refresh_flag& operator=(bool on);
  operator bool() const { return on_; }

private:
  bool on_ = false;
};

/// Connections between taking a refresh lease and recording its outcome
/// (provider answer stored, failure recorded or lease released).
int64_t refreshes_in_progress();

/// From now on no connection starts a refresh (or a key re-validation):
/// requests that would need one get 503 "shutting down". Not undone; the
/// next process plans every refresh again at hydration.
void stop_starting_refreshes();
bool refreshes_stopped();

struct drain_result {
  /// Refreshes in progress when the drain began, and still at its end.
  int64_t in_progress_at_start = 0;
  int64_t left = 0;
  std::chrono::milliseconds waited{0};
};

/// stop_starting_refreshes(), then waits until refreshes_in_progress() is 0
/// or `grace` has passed.
drain_result drain_refreshes(std::chrono::milliseconds grace);

} // namespace cm

// Coarse timers for refresh plans far ahead. A CAF timer costs about 240
// bytes (a queued message and an entry in the clock's map, under its
// lock); a connection whose refresh is an hour away does not need one yet.
// It files (its address, timer generation) in the wheel instead, 16 bytes,
// and the wheel's driver wakes it with an ordinary tick shortly before the
// plan; the connection then arms a precise CAF timer for the last stretch.
// A stale entry (the connection re-armed since, or stopped) is harmless:
// its generation no longer matches, or the address no longer resolves.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <caf/actor_addr.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/fwd.hpp"

namespace cm {

class refresh_wheel {
public:
  struct entry {
    caf::actor_addr connection;
    uint64_t generation = 0;
  };

  /// `resolution_ms`: the width of a bucket, and how often the driver looks.
  explicit refresh_wheel(int64_t resolution_ms = 1000) : resolution_ms_(resolution_ms) {}

  int64_t resolution_ms() const { return resolution_ms_; }

  /// Plans on the wheel must be at least this far ahead; nearer ones get a
  /// precise timer at once.
  int64_t horizon_ms() const { return 60 * resolution_ms_; }

  /// Wakes `connection` with `generation` around `wake_at_ms` (unix ms):
  /// with the bucket holding it, so up to one resolution early and, as the
  /// driver looks once per resolution, up to one late. Callers file plans
  /// well ahead and re-check the time when woken.
  void add(int64_t wake_at_ms, caf::actor_addr connection, uint64_t generation);

  /// Removes and returns every entry due at `now_ms`.
  std::vector<entry> take_due(int64_t now_ms);

  size_t size() const;

private:
  int64_t resolution_ms_;
  mutable std::mutex mutex_;
  std::map<int64_t, std::vector<entry>> buckets_;
  size_t size_ = 0;
};

using refresh_wheel_ptr = std::shared_ptr<refresh_wheel>;

/// Looks at the wheel every resolution and sends `tick(generation)` to the
/// connections due.
using refresh_wheel_driver = caf::typed_actor<caf::reacts_to<tick_atom>>;

/// `wall_offset_ms`: unix ms = actor clock ms + this (as for connections).
refresh_wheel_driver::behavior_type
refresh_wheel_drive(refresh_wheel_driver::pointer self, refresh_wheel_ptr wheel,
                    int64_t wall_offset_ms);

} // namespace cm

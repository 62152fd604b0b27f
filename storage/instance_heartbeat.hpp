// Announces this instance in `service_instances` (migration 0006) every
// `interval`, on a database connection and thread of its own, and keeps the
// shared cluster_view current: whether any other instance is live.
//
// The timing, all multiples of the interval (docs/DECISIONS.md, "The
// newest token across instances"):
// - trust (2×): how long a beat that saw nobody else lets this instance
//   serve tokens from memory without a version check;
// - grace (3×): how long an instance that joins while others are active
//   waits before it may take a refresh lease; longer than trust, so every
//   other instance has lost its "alone" view by then;
// - active (5×): a beat keeps the instance allowed to lease and store
//   refreshes this long; after that it is fenced until it beats again (and,
//   with others active, waits the grace again);
// - settle (10×): an instance whose activity ended less than this ago still
//   counts as present, so the others have read the events of its last
//   writes before they trust their memory alone again.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "config/service_config.hpp"
#include "storage/cluster_view.hpp"

namespace cm::storage {

struct heartbeat_timing {
  std::chrono::milliseconds interval{1000};
  std::chrono::milliseconds trust() const { return 2 * interval; }
  std::chrono::milliseconds grace() const { return 3 * interval; }
  std::chrono::milliseconds active() const { return 5 * interval; }
  std::chrono::milliseconds settle() const { return 10 * interval; }
};

/// What one beat learned.
struct beat_result {
  /// Other instances active now or recently.
  int64_t others = 0;
  /// Whether this instance may take leases now (false while it waits out
  /// its grace).
  bool active = false;
};

class instance_heartbeat {
public:
  instance_heartbeat(config::database_config db, std::string instance_id, heartbeat_timing timing,
                     cluster_view_ptr view);
  ~instance_heartbeat();
  instance_heartbeat(const instance_heartbeat&) = delete;
  instance_heartbeat& operator=(const instance_heartbeat&) = delete;

  /// Announces the instance and waits (up to `limit`) until it is active:
  /// at once when no other instance is, after the grace otherwise. Then
  /// beats on its own thread. False when the database never answered.
  bool join(std::chrono::milliseconds limit);

  /// Stops beating and ends this instance's activity at once (it takes no
  /// lease and stores no refresh from now on). Also done by the destructor.
  void leave();

  /// One beat on the caller's connection (tests).
  beat_result beat_once();

private:
  void run();

  config::database_config db_cfg_;
  std::string instance_id_;
  heartbeat_timing timing_;
  cluster_view_ptr view_;
  struct connection;
  std::unique_ptr<connection> conn_;
  std::atomic<bool> stopping_{false};
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

} // namespace cm::storage

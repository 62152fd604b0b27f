// What the Kafka relay says about itself, read by other threads: the
// health route (api/system_routes.cpp) and each metrics scrape. The relay
// thread writes it; nothing here blocks.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace cm::kafka {

struct relay_status {
  /// This instance holds the relay's lock (exactly one instance does while
  /// the database answers).
  std::atomic<bool> leading{false};
  /// The database or the producer failed; the relay retries every poll.
  std::atomic<bool> paused{false};
  /// librdkafka says every broker is down (cleared by the next
  /// acknowledgement).
  std::atomic<bool> brokers_down{false};
  /// Acknowledged and parked by this instance since it started, and how
  /// often it produced again from the cursor (a retriable report, a lost
  /// lock, a failed producer).
  std::atomic<int64_t> relayed{0};
  std::atomic<int64_t> parked{0};
  std::atomic<int64_t> restarts{0};
  /// Parked events re-queued by an operator and acknowledged this time.
  std::atomic<int64_t> requeued{0};
  /// Read by the leader every few seconds (0 elsewhere): outbox events
  /// after the cursor, the age of the oldest of them, and events parked
  /// and not re-queued, across instances.
  std::atomic<int64_t> backlog{0};
  std::atomic<int64_t> oldest_waiting_ms{0};
  std::atomic<int64_t> parked_stored{0};
};

using relay_status_ptr = std::shared_ptr<const relay_status>;

} // namespace cm::kafka

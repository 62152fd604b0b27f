// The Kafka relay: every outbox event produced to its topic, in commit
// order, keyed so one connection's (or connector's) events stay in order on
// one partition, and marked relayed (the cursor) only once the brokers
// acknowledged it, or parked it when they refused it for good.
//
// It runs on a thread and a database connection of its own. One instance
// relays at a time: the holder of the relay's advisory lock
// (storage/kafka_relay_store.hpp); the others wait for it. A crash between
// produce and acknowledge produces those events again: at least once.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "config/service_config.hpp"
#include "kafka/producer.hpp"
#include "storage/database.hpp"
#include "storage/records.hpp"

namespace cm::kafka {

/// The message key of an outbox event: its connectionId (token events) or
/// team and connectorName (entity events), so one connection's events keep
/// their order on one partition.
std::string key_of(const outbox_event& e);

class relay {
public:
  /// Starts the thread. `settings` come from kafka/settings.hpp.
  relay(config::database_config db, config::kafka_config cfg, producer_settings settings,
        std::chrono::milliseconds poll);
  ~relay();
  relay(const relay&) = delete;
  relay& operator=(const relay&) = delete;

  /// A new event was committed (NOTIFY): look now instead of at the next
  /// poll.
  void wake();

  /// Events acknowledged, and parked, by this instance since it started.
  int64_t relayed() const { return relayed_.load(); }
  int64_t parked() const { return parked_.load(); }
  /// Whether this instance holds the relay's lock now.
  bool leading() const { return leading_.load(); }

private:
  struct in_flight {
    outbox_position at;
    std::string team_id;
    std::string event_id;
    std::string topic;
    bool done = false;
  };

  void run();
  /// One round: lead, produce what fits, read reports, move the cursor.
  /// Returns whether there was anything to do.
  bool step();
  void restart_from_cursor(const char* why);

  config::database_config db_cfg_;
  config::kafka_config cfg_;
  producer_settings settings_;
  std::chrono::milliseconds poll_;
  std::unique_ptr<storage::database> db_;
  std::unique_ptr<producer> producer_;
  /// Produced and not yet settled, by the id given to produce(), and their
  /// order (the outbox's).
  std::map<uint64_t, in_flight> pending_;
  std::deque<uint64_t> order_;
  uint64_t next_id_ = 1;
  /// The last event handed to the producer, and the cursor as stored.
  outbox_position produced_{};
  outbox_position cursor_{};
  std::chrono::steady_clock::time_point lock_checked_{};

  std::atomic<int64_t> relayed_{0};
  std::atomic<int64_t> parked_{0};
  std::atomic<bool> leading_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread thread_;
};

} // namespace cm::kafka

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
#include <set>
#include <string>
#include <thread>

#include "config/service_config.hpp"
#include "kafka/producer.hpp"
#include "kafka/relay_status.hpp"
#include "storage/database.hpp"
#include "storage/kafka_relay_store.hpp"
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
  int64_t relayed() const { return status_->relayed.load(); }
  int64_t parked() const { return status_->parked.load(); }
  /// Whether this instance holds the relay's lock now.
  bool leading() const { return status_->leading.load(); }
  /// For the health route and the metrics; lives as long as its holders.
  relay_status_ptr status() const { return status_; }

private:
  struct in_flight {
    outbox_position at;
    std::string team_id;
    std::string event_id;
    std::string topic;
    bool done = false;
    /// A parked event an operator re-queued: outside the cursor's order;
    /// its parked row goes once acknowledged.
    bool requeued = false;
    std::string requeued_at;
  };

  void run();
  /// One round: lead, produce what fits, read reports, move the cursor.
  /// Returns whether there was anything to do.
  bool step();
  void restart_from_cursor(const char* why);
  /// Produces parked events an operator re-queued (not yet in flight).
  bool produce_requeued(storage::kafka_relay_store& store);
  /// The leader's lag figures, every few seconds.
  void measure_backlog(storage::kafka_relay_store& store);
  void park(storage::kafka_relay_store& store, const in_flight& e, const std::string& reason);
  std::string topic_of(const outbox_event& e) const;
  producer::queued produce(const outbox_event& e, const std::string& topic, uint64_t id,
                           std::string& problem);

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
  std::chrono::steady_clock::time_point backlog_measured_{};
  std::chrono::steady_clock::time_point requeue_checked_{};
  /// Re-queued events in flight, by team and event id.
  std::set<std::pair<std::string, std::string>> requeued_in_flight_;

  std::shared_ptr<relay_status> status_ = std::make_shared<relay_status>();
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread thread_;
};

} // namespace cm::kafka

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
#include <unordered_map>

#include "config/service_config.hpp"
#include "kafka/outbox_reader.hpp"
#include "kafka/producer.hpp"
#include "kafka/relay_status.hpp"
#include "storage/database.hpp"
#include "storage/kafka_relay_store.hpp"
#include "storage/records.hpp"

namespace cm::kafka {

/// The message key of an outbox event: its connectionId (token events) or
/// team and connectorName (entity events), so one connection's events keep
/// their order on one partition. The relay reads the same key from the
/// jsonb in SQL (storage/kafka_relay_store.cpp, CM_KAFKA_KEY), which
/// costs no parse per event; this is the rule in C++ (the bench's
/// baseline uses it).
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
    /// A parked event an operator re-queued (outside the cursor's order):
    /// when it was re-queued, the fence of its parked row's removal.
    std::string requeued_at;
  };

  void run();
  /// Wakes this relay's thread only (the reader's callback).
  void wake_thread();
  /// A new producer, told what the last one knew of the brokers.
  void make_producer();
  /// One round: lead, produce what fits, read reports, move the cursor.
  /// Returns whether there was anything to do.
  bool step();
  void restart_from_cursor(const char* why);
  /// Produces parked events an operator re-queued (not yet in flight).
  bool produce_requeued(storage::kafka_relay_store& store);
  /// The leader's lag figures, every few seconds; a failure to count
  /// leaves the last figures and never pauses the relay.
  void measure_backlog(storage::kafka_relay_store& store);
  /// Whether this instance still leads in the session that took the lock.
  bool same_session() const { return db_->sessions() == lead_session_; }
  void lose_lead(const char* why);
  void forget_figures();
  void park(storage::kafka_relay_store& store, const in_flight& e, const std::string& reason);
  std::string topic_of(const outbox_event& e) const;
  producer::queued produce(const outbox_event& e, const std::string& key,
                           const std::string& topic, uint64_t id, std::string& problem);

  config::database_config db_cfg_;
  config::kafka_config cfg_;
  producer_settings settings_;
  std::chrono::milliseconds poll_;
  std::unique_ptr<storage::database> db_;
  /// Reads the outbox ahead, from produced_ on, while this thread
  /// produces.
  std::unique_ptr<outbox_reader> reader_;
  std::unique_ptr<producer> producer_;
  /// Outbox events produced and not yet settled, in outbox order: the
  /// front's produce() id is window_base_, each next one's one more, so a
  /// report finds its event by subtraction.
  std::deque<in_flight> window_;
  uint64_t window_base_ = 1;
  uint64_t next_id_ = 1;
  /// Re-queued events in flight, by their produce() id (requeue_bit set).
  std::unordered_map<uint64_t, in_flight> requeued_pending_;
  uint64_t next_requeue_id_ = 1;
  /// Drops everything in flight (a restart, a pause).
  void forget_in_flight();
  /// The last event handed to the producer, and the cursor as stored.
  outbox_position produced_{};
  outbox_position cursor_{};
  std::chrono::steady_clock::time_point lock_checked_{};
  std::chrono::steady_clock::time_point backlog_measured_{};
  std::chrono::steady_clock::time_point requeue_checked_{};
  std::chrono::steady_clock::time_point brokers_probed_{};
  /// The database session that took the lock: another session (a silent
  /// reconnect) holds none of it.
  uint64_t lead_session_ = 0;
  /// This producer refused a message for good: librdkafka may keep
  /// refusing its topic at once (an authorization error sticks until the
  /// next metadata refresh), so re-queued events get a fresh producer.
  bool producer_refused_ = false;
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

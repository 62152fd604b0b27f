// SQL for the Kafka relay (migration 0012): who relays (an advisory lock
// held on the relay's own connection), how far the brokers acknowledged
// the outbox (the cursor), and what they refused for good (parked).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "storage/database.hpp"
#include "storage/records.hpp"

namespace cm::storage {

class kafka_relay_store {
public:
  explicit kafka_relay_store(database& db) : db_(db) {}

  /// Takes the relay's advisory lock for this connection's session if no
  /// other session holds it; true when this session holds it (again).
  bool try_lead();
  /// Whether this session still holds it (a reconnect loses it).
  bool leading();
  void step_down();

  /// The position up to which every event was acknowledged or parked
  /// ({0, 0} before the first).
  outbox_position cursor();
  /// Moves the cursor forward to `to`, only while this session holds the
  /// lock; false (nothing written) otherwise, or when `to` is not ahead.
  bool advance(const outbox_position& to);

  /// Records an event the brokers refused for good (once; a re-queued
  /// event refused again is parked again with its new reason).
  void park(const std::string& team_id, const std::string& event_id, const std::string& topic,
            const std::string& reason);
  /// Every parked row, re-queued or not.
  int64_t parked();

  /// Outbox events after `cursor` (counted up to 100,000) and the age of
  /// the oldest, in ms (the relay's lag), and parked events not
  /// re-queued.
  struct backlog_figures {
    int64_t events = 0;
    int64_t oldest_ms = 0;
    int64_t parked_waiting = 0;
  };
  backlog_figures backlog(const outbox_position& cursor);

  /// An outbox event with its message key (kafka/relay.hpp, key_of).
  struct keyed_event {
    outbox_event event;
    std::string key;
  };
  /// The committed outbox after `after`, in commit order, at most `limit`
  /// (created_at_ms is not read).
  std::vector<keyed_event> events_after(const outbox_position& after, int limit);

  /// Parked events an operator re-queued, oldest request first, with
  /// their outbox rows; `requeued_at` fences requeue_done() against the
  /// row being parked and re-queued again meanwhile.
  struct requeued_event {
    outbox_event event;
    std::string key;
    std::string requeued_at;
  };
  std::vector<requeued_event> requeued(int limit);
  /// A re-queued event was acknowledged: its parked row goes (unless it
  /// was re-queued again since).
  void requeue_done(const requeued_event& r);

  /// The operator's view: parked rows, newest first.
  struct parked_row {
    std::string team_id;
    std::string event_id;
    std::string topic;
    std::string event_type; // "" when the outbox row was pruned
    std::string reason;
    std::string parked_at;
    std::string requeued_at; // "" when waiting for an operator
  };
  std::vector<parked_row> list_parked(int limit);
  /// Re-queues parked events: one (`event_id`) or all (""); how many.
  /// Events whose outbox row was pruned cannot be sent again.
  int64_t requeue(const std::string& event_id);

private:
  database& db_;
};

} // namespace cm::storage

// SQL for the Kafka relay (migration 0012): who relays (an advisory lock
// held on the relay's own connection), how far the brokers acknowledged
// the outbox (the cursor), and what they refused for good (parked).
#pragma once

#include <cstdint>
#include <string>

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

  /// Records an event the brokers refused for good (kept once).
  void park(const std::string& team_id, const std::string& event_id, const std::string& topic,
            const std::string& reason);
  int64_t parked();

private:
  database& db_;
};

} // namespace cm::storage

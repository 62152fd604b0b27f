// The event hub: delivers outbox events to this instance's Server-Sent
// Events subscribers (GET /api/v1/events).
//
// Every instance reads the shared outbox in sequence order, woken by
// PostgreSQL NOTIFY (storage/notify_listener.hpp) and by a polling timer,
// so a subscriber sees events written by any instance. The SSE `id` is the
// outbox sequence number: a client that reconnects with Last-Event-ID gets
// every event of its team after that one, replayed from the table.
//
// Sequence numbers are taken when a transaction inserts, not when it
// commits, so a smaller number can appear after a larger one. The hub
// delivers in order and waits up to `events.gap_timeout_ms` at a gap for
// the missing event; a gap older than that is a rolled-back transaction.
//
// The hub also tells the registry about TOKEN_CREATED, TOKEN_EXPIRED and
// TOKEN_REVOKED events, so a reconnect or disconnect made through another
// instance reaches this instance's connection actors within a poll.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/fwd.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "config/service_config.hpp"
#include "http/event_stream.hpp"

namespace cm {

using event_hub_actor = caf::typed_actor<
  // A new subscriber: the request to answer with a stream, its team (""
  // for a service that sees every team), topics, and the last event id it
  // saw (-1: none, start with new events).
  caf::reacts_to<subscribe_atom, exchange_ptr, std::string, std::vector<std::string>, int64_t>,
  // New events may be in the outbox.
  caf::reacts_to<tick_atom>,
  // Internal: the polling timer.
  caf::reacts_to<tick_atom, bool>,
  // Internal: the heartbeat timer.
  caf::reacts_to<ping_atom>,
  // The subscriber count (tests, health).
  caf::replies_to<status_atom>::with<int64_t>>;

struct event_subscriber {
  http::event_stream_ptr stream;
  std::string team;
  std::set<std::string> topics;
  /// The highest seq this subscriber has been sent (or skipped past).
  int64_t sent_seq = 0;
  /// False while its Last-Event-ID replay runs.
  bool live = false;
};

struct event_hub_state {
  storage_actor storage;
  /// Told about connections created, revoked or expired by any instance,
  /// so this instance's connection actors follow at once.
  registry_actor registry;
  config::events_config cfg;
  std::map<uint64_t, event_subscriber> subscribers;
  uint64_t next_id = 1;
  /// Every event up to here has been fanned out; -1 until read at start.
  int64_t cursor = -1;
  bool polling = false;
  bool poll_again = false;
  /// A gap right after the cursor, first seen at this time (unix ms).
  int64_t gap_seen_ms = 0;
  static inline const char* name = "event-hub";
};

event_hub_actor::behavior_type event_hub(event_hub_actor::stateful_pointer<event_hub_state> self,
                                         storage_actor storage, registry_actor registry,
                                         config::events_config cfg);

} // namespace cm

// The event hub: delivers outbox events to this instance's Server-Sent
// Events subscribers (GET /api/v1/events).
//
// Every instance reads the shared outbox in delivery order, woken by
// PostgreSQL NOTIFY (storage/notify_listener.hpp) and by a polling timer,
// so a subscriber sees events written by any instance. Delivery order is
// (transaction id, seq), read only below the oldest running transaction
// (migration 0004), so no event can commit behind a position already
// passed. The SSE `id` is that position, "txid.seq": a client that
// reconnects with Last-Event-ID gets every event of its team after it,
// replayed from the table.
//
// Streams are a shared pool (events.max_subscribers) with quotas, so one
// tenant cannot take them all (issue 16): a team's admins together hold at
// most max_subscribers_per_team, a service max_subscribers_per_service,
// and reserved_service_subscribers of the pool are left to services. A
// stream over its owner's quota is refused with 429, one that finds the
// pool (or the admins' share of it) full with 503; both carry Retry-After.
// Streams whose client hung up are found with a peek and stop counting at
// the next subscription, not only when a heartbeat fails.
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
#include "storage/cluster_view.hpp"

namespace cm {

using event_hub_actor = caf::typed_actor<
  // A new subscriber: the request to answer with a stream, its team (""
  // for a service that sees every team), topics, the last event it saw
  // (txid -1: none, start with new events), and the service holding it (""
  // for an admin, whose stream counts against the team's quota).
  caf::reacts_to<subscribe_atom, exchange_ptr, std::string, std::vector<std::string>,
                 outbox_position, std::string>,
  // New events may be in the outbox.
  caf::reacts_to<tick_atom>,
  // Internal: the polling timer.
  caf::reacts_to<tick_atom, bool>,
  // Internal: the heartbeat timer.
  caf::reacts_to<ping_atom>,
  // The subscriber count, streams whose client left excluded (tests, health).
  caf::replies_to<status_atom>::with<int64_t>,
  // Whether the start position has been read, so subscribers are served
  // (start-up waits for it before logging "ready").
  caf::replies_to<head_atom>::with<bool>>;

struct event_subscriber {
  http::event_stream_ptr stream;
  /// The team whose events it gets ("" for all).
  std::string team;
  /// The service holding the stream; "" for an admin (quota: `team`).
  std::string service;
  std::set<std::string> topics;
  /// The last position this subscriber has been sent (or skipped past).
  outbox_position sent;
  /// False while its Last-Event-ID replay runs.
  bool live = false;
};

struct event_hub_state {
  event_store_actor storage;
  /// Told about connections created, revoked or expired by any instance,
  /// so this instance's connection actors follow at once.
  registry_actor registry;
  /// Whether other instances are live; only then are TOKEN_REFRESHED
  /// events passed on (alone, every refresh was this instance's own).
  storage::cluster_view_ptr cluster;
  config::events_config cfg;
  std::map<uint64_t, event_subscriber> subscribers;
  uint64_t next_id = 1;
  /// Every event up to here has been fanned out.
  outbox_position cursor;
  /// False until the start position was read.
  bool started = false;
  bool starting = false;
  bool polling = false;
  bool poll_again = false;
  /// Re-poll delay while unreadable rows wait for older transactions.
  int64_t pending_delay_ms = 0;
  static inline const char* name = "event-hub";
};

/// The SSE id of a position ("txid.seq") and back; false on anything else.
std::string sse_id(const outbox_position& at);
bool parse_sse_id(const std::string& text, outbox_position& out);

event_hub_actor::behavior_type event_hub(event_hub_actor::stateful_pointer<event_hub_state> self,
                                         event_store_actor storage, registry_actor registry,
                                         config::events_config cfg,
                                         storage::cluster_view_ptr cluster);

} // namespace cm

// The webhook dispatcher: posts outbox events to the webhooks configured
// under `events.webhooks`, signed, at least once.
//
// Delivery rows are written in the event's own transaction (storage/
// outbox.hpp), so an event is never lost between commit and delivery. Any
// instance may claim due rows (SKIP LOCKED plus a lease), post them, and
// record the outcome; a failure is retried with exponential backoff and
// jitter until `webhook_max_attempts`.
//
// Each request carries:
//   X-Connector-Event-Id: <eventId>        stable across retries: dedupe on it
//   X-Connector-Timestamp: <unix seconds>
//   X-Connector-Signature: t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
#pragma once

#include <memory>
#include <random>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/fwd.hpp"
#include "actors/provider_client_actor.hpp"
#include "actors/storage_actor.hpp"
#include "common/secret.hpp"
#include "config/service_config.hpp"

namespace cm {

/// One webhook with its signing key loaded.
struct webhook_endpoint {
  std::string name;
  std::string url;
  secret key;
  std::vector<std::string> topics;
};

/// What the dispatcher works with; replaced as a whole on reload.
struct webhook_settings {
  config::events_config params;
  std::vector<webhook_endpoint> endpoints;
};

/// Reads each webhook's secret (file or inline). Throws config_error.
webhook_settings_ptr load_webhook_settings(const config::events_config& cfg);

/// The names and topics storage enqueues deliveries for.
webhook_targets webhook_targets_of(const webhook_settings& settings);

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<unix seconds>.<body>")>`.
std::string webhook_signature(const secret& key, int64_t unix_seconds, const std::string& body);

using webhook_dispatcher_actor = caf::typed_actor<
  // Due deliveries may exist (new events, or the polling timer).
  caf::reacts_to<tick_atom>,
  // Internal: the polling timer.
  caf::reacts_to<tick_atom, bool>,
  // New settings (configuration reload).
  caf::reacts_to<configure_atom, webhook_settings_ptr>>;

struct webhook_dispatcher_state {
  event_store_actor storage;
  provider_client_actor http;
  webhook_settings_ptr settings;
  /// Deliveries claimed and not yet recorded.
  int32_t in_flight = 0;
  bool tick_again = false;
  /// When the backlog gauge is next refreshed (at start: the first poll).
  std::chrono::steady_clock::time_point next_backlog_count{};
  std::minstd_rand rng{std::random_device{}()};
  static inline const char* name = "webhook-dispatcher";
};

webhook_dispatcher_actor::behavior_type
webhook_dispatcher(webhook_dispatcher_actor::stateful_pointer<webhook_dispatcher_state> self,
                   event_store_actor storage, provider_client_actor http,
                   webhook_settings_ptr settings);

} // namespace cm

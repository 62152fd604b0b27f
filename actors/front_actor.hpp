// The HTTP front actor: receives each request from a Pistache thread as an
// `exchange`, authenticates it, checks the route's guard and runs the
// handler, which talks to other actors and replies asynchronously. Several
// front actors may run side by side; they share one immutable context.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/event_hub.hpp"
#include "actors/fwd.hpp"
#include "storage/audit_queue.hpp"
#include "storage/shard_ownership.hpp"
#include "storage/team_lookup_cache.hpp"
#include "actors/key_signer_actor.hpp"
#include "actors/provider_client_actor.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "config/provider_catalog.hpp"
#include "config/service_config.hpp"
#include "http/auth.hpp"
#include "http/rate_limiter.hpp"
#include "kafka/relay_status.hpp"
#include "provider/curl_engine.hpp"
#include "proxy/team_in_flight.hpp"
#include "http/router.hpp"

namespace cm {

using front_actor = caf::typed_actor<
  // Handles one HTTP request; the reply goes through the exchange.
  caf::reacts_to<http_atom, exchange_ptr>,
  // Internal: another attempt of a service-triggered refresh (attempt no.).
  caf::reacts_to<retry_atom, exchange_ptr, connection_key, int32_t>,
  // A reloaded configuration for requests from now on.
  caf::reacts_to<configure_atom, front_context_ptr>,
  // Internal: a provider answered a call this actor proxied.
  caf::reacts_to<proxied_atom, proxy_answer_ptr>>;

class config_reloader;

/// What every front actor reads; never mutated after start-up.
struct front_context {
  config::service_config cfg;
  config::provider_catalog catalog;
  std::shared_ptr<const http::authenticator> auth;
  /// Connections: listing, connecting, disconnecting, team lookups.
  storage_actor storage;
  /// Pending OAuth authorizations, and connector configurations with the
  /// audit log: on a storage actor and connection of their own, so the
  /// admin and OAuth routes never queue behind a refresh storm.
  oauth_state_store_actor states;
  connector_config_store_actor configs;
  registry_actor registry;
  provider_client_actor provider_client;
  /// Checks service-account keys and signs their grants off the workers.
  key_signer_actor key_signer;
  /// Keys for hashing OAuth states.
  std::shared_ptr<const storage::keyring> keys;
  /// This deployment's OAuth apps by provider.
  std::map<std::string, std::shared_ptr<const oauth::client_credentials>> clients;
  /// Delivers events to SSE subscribers (null: no event stream).
  event_hub_actor events;
  /// Applies POST /updateAppConfig. Owned by the serve command, which
  /// outlives every actor; null where reloading is not offered (tests).
  config_reloader* reloader = nullptr;
  /// The callers' token buckets of this instance: shared by every front
  /// actor and kept across reloads (a reload copies the context), so only
  /// `cfg.rate_limit` changes. Internally synchronized.
  std::shared_ptr<http::rate_limiter> limiter = std::make_shared<http::rate_limiter>();
  /// Proxied calls each team has open, shared and kept across reloads like
  /// the limiter (null: no bound).
  std::shared_ptr<proxy::team_in_flight> proxy_calls = std::make_shared<proxy::team_in_flight>();
  /// The proxy's calls to providers: an engine (libcurl multi thread) of
  /// its own, so services' proxied traffic never queues before refreshes
  /// in the provider client, and its answers go back to the caller from
  /// the engine's thread without an actor hop (api/proxy_routes.cpp).
  /// Owned by whoever wires the front (serve, benches), which destroys it
  /// only once every actor is done; null: the proxy answers 503.
  curl_engine* proxy_engine = nullptr;
  /// The shards this instance owns, reported by the health route (null:
  /// no shard ownership, as in tests).
  storage::shard_set_ptr shards;
  /// Requests sent to other instances as owners (null: no forwarding).
  std::shared_ptr<const forwarding_stats> forwarding;
  /// Snapshots of tokens their actors published (null: every token read
  /// asks the registry). Held by whoever stores a connection's row.
  token_board_ptr board;
  /// Audit rows of token reads, written by `configs` (null: each row is
  /// sent to `configs` as a message).
  storage::audit_queue_ptr audit;
  /// The teams of (user, provider) for token reads without team_id (null:
  /// asked of storage each time).
  std::shared_ptr<storage::team_lookup_cache> teams;
  /// The Kafka relay's state for the health route and the metrics (null:
  /// events.kafka is off).
  kafka::relay_status_ptr kafka;
};

struct front_state {
  front_context_ptr ctx;
  static inline const char* name = "http-front";
};

front_actor::behavior_type front(front_actor::stateful_pointer<front_state> self,
                                 std::shared_ptr<const front_context> ctx);

/// The shape of one HTTP route: who may call it and with which scope.
struct route_shape {
  std::string method;
  std::string pattern;
  http::access who;
  std::string scope;
  http::metering cost;
};

/// Every route the front serves, in matching order, without handlers: the
/// authorization tests enumerate it so a new route cannot go untested.
std::vector<route_shape> route_table();

} // namespace cm

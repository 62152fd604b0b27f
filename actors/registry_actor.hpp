// The registry: maps (team, user, provider) to its connection actor,
// spawning one on demand (it loads its own row) and, at start-up, for every
// live connection, streamed from storage in keyset pages. Monitors its
// actors and forgets those that go down.
#pragma once

#include <map>
#include <set>
#include <unordered_map>
#include <memory>
#include <string>

#include <caf/actor_addr.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/connection_actor.hpp"
#include "actors/fwd.hpp"
#include "actors/owner_forwarder.hpp"
#include "actors/provider_client_actor.hpp"
#include "actors/refresh_wheel.hpp"
#include "actors/storage_actor.hpp"
#include "config/provider_catalog.hpp"
#include "config/service_config.hpp"
#include "storage/shard_ownership.hpp"
#include "storage/team_lookup_cache.hpp"

namespace cm {

using registry_actor = caf::typed_actor<
  // A valid token for a connection (force: refresh first).
  caf::replies_to<get_token_atom, connection_key, bool>::with<token_grant>,
  // The same, asked by another instance as the owner's: served only while
  // this instance owns the connection's shard (`unavailable` otherwise).
  caf::replies_to<forward_atom, connection_key, bool>::with<token_grant>,
  // The connection actor's status (spawning it if needed).
  caf::replies_to<status_atom, connection_key>::with<connection_status>,
  // A connection was created, replaced or changed: (re)load its actor.
  caf::reacts_to<reload_atom, connection_key>,
  // A connection was deleted: stop its actor.
  caf::reacts_to<remove_atom, connection_key>,
  // Spawns an actor for every live connection; answers how many (an
  // instance without shard ownership: tools, tests, benches).
  caf::replies_to<hydrate_atom>::with<int64_t>,
  // These shards are owned here now: loads their connections (owner
  // actors, guests already running are promoted); answers how many loaded.
  caf::replies_to<own_atom, std::vector<int32_t>>::with<int64_t>,
  // Internal: stops guests idle for `guest_idle_ms` (a handover to nobody:
  // the owner elsewhere serves them), then checks again later.
  caf::reacts_to<handover_atom>,
  // These shards go elsewhere: their actors stop once their refresh in
  // flight is stored; answers how many stopped.
  caf::replies_to<handover_atom, std::vector<int32_t>>::with<int64_t>,
  // A configuration reload: providers, OAuth apps and refresh settings for
  // new and running connection actors.
  caf::reacts_to<configure_atom, registry_deps_ptr>>;

/// What the registry hands each connection actor.
struct registry_deps {
  storage_actor storage;
  provider_client_actor provider_client;
  key_signer_actor key_signer;
  std::map<std::string, std::shared_ptr<const config::provider_entry>> providers;
  std::map<std::string, std::shared_ptr<const oauth::client_credentials>> clients;
  std::string instance_id;
  refresh_settings settings;
  int64_t wall_offset_ms = 0;
  uint64_t seed = 0;
  int32_t hydrate_page = 1000;
  /// Other instances, as the heartbeat sees them (null: alone), and the
  /// storage actor that answers version checks (unset: `storage`).
  storage::cluster_view_ptr cluster;
  token_repository_actor freshness;
  /// The shards this instance owns (null: it owns every connection, as a
  /// tool or test that runs alone). A connection outside them gets a guest
  /// actor, which serves requests but leaves proactive refreshes to the
  /// owner (connection_deps::owner).
  storage::shard_set_ptr shards;
  /// Storage actors that load owned shards in parallel, each on its own
  /// connection (empty: `storage`).
  std::vector<storage_actor> loaders;
  /// Guests that serve nothing for this long stop (0: never), so an
  /// instance keeps resident only its own shards and what it is asked for.
  int64_t guest_idle_ms = 0;
  /// Sends requests for connections owned elsewhere to their owner (null:
  /// every request is served here, by a guest when owned elsewhere).
  owner_forwarder_actor forwarder;
  /// Snapshots of served tokens, shared with the HTTP fast path (null:
  /// every request reaches its connection actor).
  token_board_ptr board;
  /// Forgotten for a (user, provider) whenever one of its connections is
  /// created, replaced or removed (null: no cache).
  std::shared_ptr<storage::team_lookup_cache> teams;
  /// The forwarder's budget per request; the registry waits a little
  /// longer, then serves the request itself.
  int64_t forward_timeout_ms = 1000;
  /// Filled by the registry when it forwards a reload to its connection
  /// actors: the new shared dependencies of each provider's running actors
  /// (a provider the new catalog dropped keeps its old entry there, so a
  /// refresh in flight can finish).
  std::map<std::string, connection_deps_ptr> running_connection_deps;
};

/// Builds the provider and client maps from the configuration.
registry_deps make_registry_deps(const config::service_config& cfg,
                                 const config::provider_catalog& catalog);

struct registry_state {
  registry_deps deps;
  std::map<connection_key, connection_actor> connections;
  /// The key of each live actor, for its down message. Points into
  /// `connections` (std::map nodes do not move); erased with the entry.
  std::map<caf::actor_addr, const connection_key*> keys;
  /// One shared dependency set per provider for actors spawned from now on,
  /// for owners and for guests.
  std::map<std::string, connection_deps_ptr> connection_deps;
  std::map<std::string, connection_deps_ptr> guest_deps;
  /// Coarse timers of this registry's connections, and their driver.
  refresh_wheel_ptr wheel;
  refresh_wheel_driver wheel_driver;
  /// Bounds this instance's refreshes in flight (refresh.max_in_flight).
  refresh_gate_actor gate;
  /// Actors handed over and about to stop: requests for them go through
  /// the registry (not delegated) so one that meets a stopped actor is
  /// asked again of a fresh one instead of failing.
  std::set<caf::actor_addr> leaving;
  /// When each guest last served a request (actor clock, ms).
  std::unordered_map<caf::actor_addr, int64_t> guest_used_ms;
  /// Actors spawned by the hydration in progress.
  int64_t hydrated = 0;
  static inline const char* name = "registry";
};

registry_actor::behavior_type registry(registry_actor::stateful_pointer<registry_state> self,
                                       registry_deps deps);

/// Wall-clock offset for the real actor clock: unix ms minus steady ms.
int64_t steady_to_wall_offset_ms();

/// A random name for this process in lease rows.
std::string new_instance_id();

} // namespace cm

// The connection actor: one per (team, user, provider). Holds the decrypted
// token state in memory, serves get_token from it, and refreshes ahead of
// expiry on a timer of the actor clock (so tests drive it deterministically).
//
// Refresh protocol, safe across instances sharing one PostgreSQL:
//   1. take the row's lease (bumps the version, which becomes the fence) and
//      re-read the row; if another instance already refreshed, adopt its
//      tokens instead of calling the provider;
//   2. call the provider's token endpoint;
//   3. store the new tokens under the fence, with TOKEN_REFRESHED, in one
//      transaction, and only then answer every waiting requester.
// invalid_grant re-reads the row first (another instance may have rotated
// it) and only then marks needs_reauth with TOKEN_EXPIRED. Transient
// failures back off exponentially with full jitter, honouring Retry-After;
// after `max_failures` the connection is marked needs_reauth and stops
// calling the provider. An answer lost after the request was sent may mean
// the refresh token was consumed: exactly one guarded retry, under the same
// lease, never two in parallel.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/fwd.hpp"
#include "actors/key_signer_actor.hpp"
#include "actors/provider_client_actor.hpp"
#include "actors/refresh_drain.hpp"
#include "actors/refresh_gate.hpp"
#include "actors/refresh_plan.hpp"
#include "actors/refresh_wheel.hpp"
#include "actors/storage_actor.hpp"
#include "actors/team_app.hpp"
#include "actors/token_board.hpp"
#include "config/provider_catalog.hpp"
#include "config/service_config.hpp"
#include "provider/oauth_protocol.hpp"
#include "storage/cluster_view.hpp"

namespace cm {

/// Tunables of refreshing, from the service file's `refresh` section.
using refresh_settings = config::refresh_config;

/// Everything a connection actor talks to.
struct connection_deps {
  token_repository_actor repository;
  provider_client_actor provider_client;
  /// Checks service-account keys and signs their grants off the workers
  /// (null where no connection uses a service account, as in actor tests).
  key_signer_actor key_signer;
  /// Null when the catalog no longer knows the provider (tokens are still
  /// served until they expire, but never refreshed).
  std::shared_ptr<const config::provider_entry> provider;
  /// Null when no OAuth app is configured for the provider.
  std::shared_ptr<const oauth::client_credentials> client;
  /// Names this process in lease rows.
  std::string instance_id;
  refresh_settings settings;
  /// Wall clock (unix ms) = actor clock (ms since its epoch) + this offset.
  int64_t wall_offset_ms = 0;
  /// Seeds the jitter generator (tests pin it).
  uint64_t seed = 0;
  /// Holds plans further ahead than its horizon; null: every plan gets a
  /// precise CAF timer at once.
  refresh_wheel_ptr wheel;
  /// Whether other instances share the database. Null: this instance is
  /// alone (tests, tools). With others live, a token held in memory is
  /// served only after `freshness` confirms no newer version is stored.
  storage::cluster_view_ptr cluster;
  /// Answers version checks on a database connection of its own, so they
  /// never queue behind hydration or a refresh storm. Unset: `repository`.
  token_repository_actor freshness;
  /// Whether actors spawned with these deps belong to a shard this instance
  /// owns (storage/shard_ownership.hpp). An owner refreshes ahead of expiry
  /// on its timer; a guest, spawned for a request to a connection another
  /// instance owns, refreshes only when a request finds its token inside
  /// the refresh window, under the same lease and fence.
  bool owner = true;
  /// Bounds the refreshes in flight (actors/refresh_gate.hpp); null: no
  /// bound (actor tests that do not test it).
  refresh_gate_actor gate;
  /// Where snapshots of served tokens go for the HTTP fast path and the
  /// registry (actors/token_board.hpp); null: the actor keeps its own only.
  token_board_ptr board;
};

/// Shared by every connection actor of one provider: a copy per actor would
/// cost a few hundred bytes each, at a million connections.
using connection_deps_ptr = std::shared_ptr<const connection_deps>;

using connection_actor = caf::typed_actor<
  // A valid token (force: refresh first), never older than the newest
  // stored: while other instances are live, a token held in memory is
  // checked against the stored version first. Errors: needs_reauth,
  // not_found, provider_failed, unavailable.
  caf::replies_to<get_token_atom, bool>::with<token_grant>,
  // The actor's view of itself: status, planned refresh time, failures.
  caf::replies_to<status_atom>::with<connection_status>,
  // Re-read the row (created, replaced or changed elsewhere).
  caf::reacts_to<reload_atom>,
  // Internal: stop if the row is still missing.
  caf::reacts_to<remove_atom>,
  // A configuration reload (the registry's new providers, apps, settings).
  caf::reacts_to<configure_atom, registry_deps_ptr>,
  // Internal: a refresh timer fired (its generation).
  caf::reacts_to<tick_atom, uint64_t>,
  // Internal: requests have waited long enough for a gate slot.
  caf::reacts_to<claim_atom>,
  // Internal: try the lease again (force, polls so far).
  caf::reacts_to<retry_atom, bool, int32_t>,
  // Internal: store refreshed tokens again after a database hiccup.
  caf::reacts_to<complete_atom, refreshed_tokens, int64_t, int32_t>,
  // Its shard is now owned here: refresh ahead of expiry from now on.
  caf::reacts_to<own_atom>,
  // Its shard goes to another instance: stop once the refresh in flight
  // (if any) has stored its outcome; answers just before stopping.
  caf::replies_to<handover_atom>::with<bool>>;

/// What a connection actor keeps of its row: what serving and planning
/// need, and no more, since a million of them stay resident. The refresh
/// token is not among it: a refresh reads it from the row under its lease,
/// so it stays encrypted in PostgreSQL between refreshes. The key lives in
/// the actor's state, the row id only in storage.
struct resident_token {
  connection_kind kind = connection_kind::oauth;
  grant_status status = grant_status::connected;
  bool has_refresh_token = false;
  /// Issued by the team's own OAuth app (actors/team_app.hpp): read from
  /// the metadata once per row version, not per request.
  bool team_app = false;
  std::string reason;
  secret access_token;
  int64_t expires_at_ms = 0;
  std::vector<std::string> scopes;
  std::string metadata = "{}";
  int64_t version = 0;
  int64_t updated_at_ms = 0;
  int64_t refreshed_at_ms = 0;

  resident_token() = default;
  // Implicit: a row read from storage becomes the resident copy.
  resident_token(token_record row)
    : kind(row.kind), status(row.status), has_refresh_token(!row.refresh_token.empty()),
      // Most grants never mention an app: no JSON parse for them.
      team_app(row.metadata.find(oauth_app_key) != std::string::npos &&
               issued_by_team_app(row.metadata)),
      reason(std::move(row.reason)), access_token(std::move(row.access_token)),
      expires_at_ms(row.expires_at_ms), scopes(std::move(row.scopes)),
      metadata(std::move(row.metadata)), version(row.version),
      updated_at_ms(row.updated_at_ms), refreshed_at_ms(row.refreshed_at_ms) {}
};

// Fields are grouped by size (8-byte ones, then 4, then flags), so a
// million of these carry no padding between them.
struct connection_state {
  /// Counted for GET /metrics from construction to destruction, which CAF
  /// ties to the actor's life whichever way it ends (no member: a
  /// connection's memory is counted in bytes).
  connection_state();
  ~connection_state();
  connection_state(const connection_state&) = delete;
  connection_state& operator=(const connection_state&) = delete;

  connection_key key;
  connection_deps_ptr deps;
  /// nullopt until loaded from storage.
  std::optional<resident_token> record;
  std::vector<caf::typed_response_promise<token_grant>> waiters;
  /// Requests waiting for the version check of a token held in memory
  /// (other instances are live); one check serves all of them.
  std::vector<caf::typed_response_promise<token_grant>> confirming;
  /// Handover requests, answered when the refresh in flight ends.
  std::vector<caf::typed_response_promise<bool>> handovers;
  /// What this actor last served from memory, until its state changes
  /// (also on the board, when there is one). Null for idle connections.
  served_token_ptr published;
  /// The gate the held slot came from (a reload may bring new deps).
  refresh_gate_actor slot_from;
  /// Loading the row failed (not found, failed its integrity check,
  /// storage down): requests get that error until the actor stops.
  caf::error load_failure;
  /// When the wait for a gate slot began (unix ms).
  int64_t awaiting_since_ms = 0;
  /// After a failure, no refresh starts before this (unix ms), whatever the
  /// request volume; valid tokens are still served meanwhile.
  int64_t retry_not_before_ms = 0;
  int64_t next_refresh_at_ms = 0;
  uint64_t timer_generation = 0;
  /// Consecutive failures of the provider (storage trouble does not count).
  int32_t failures = 0;
  /// Hash of the key: with the deps' seed, it makes the actor's random
  /// draws (plan jitter, backoff) pure functions (actors/refresh_plan.hpp).
  /// 32 bits are plenty to mix from, and pack beside `failures`.
  uint32_t key_hash = 0;
  /// The board's fence for the key when the row in memory was read.
  uint32_t board_fence = 0;
  /// Between taking a refresh lease and recording the outcome; counted
  /// process-wide, so shutdown can wait for it (actors/refresh_drain.hpp).
  counted_refresh_flag refreshing;
  /// Waiting for a slot at the refresh gate (not refreshing yet: a
  /// handover or shutdown does not wait for it).
  bool awaiting_slot = false;
  /// The row in memory was read by this actor after reading the board's
  /// fence (false for a row handed over at spawn: read again before it is
  /// published).
  bool fence_known = false;
  /// A read of the row is on its way because the board refused a
  /// publication; requests meanwhile wait for it instead of reading too.
  bool reading_for_board = false;
  /// An urgent claim is among those waiting (see claim_slot).
  bool awaiting_urgent = false;
  /// The refresh in flight was asked for explicitly (force).
  bool forced = false;
  bool force_requested = false;
  /// A reload arrived while a refresh ran; done when it ends.
  bool reload_pending = false;
  /// Refreshes ahead of expiry (its shard is owned here); see
  /// connection_deps::owner.
  bool owned = true;
  static inline const char* name = "connection";
};

connection_actor::behavior_type
connection(connection_actor::stateful_pointer<connection_state> self, connection_key key,
           std::optional<token_record> initial, connection_deps_ptr deps);

/// How many connection actors started with a hydrated record have armed
/// their first timer, process-wide. Hydration waits on it, so "ready"
/// means every timer is armed (actors initialise on their first run, not at
/// spawn).
int64_t hydrated_connections_armed();

} // namespace cm

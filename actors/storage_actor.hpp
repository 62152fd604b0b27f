// The storage actor: owns the PostgreSQL connection, encrypts and decrypts
// secret columns, and is the only code that speaks SQL. It runs detached
// (its own thread) because libpq blocks. When PostgreSQL goes away every
// call fails at once with `ec::unavailable`; the actor reconnects with
// backoff and later calls succeed again.
#pragma once

#include <functional>
#include <memory>
#include <vector>
#include <string>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/fwd.hpp"
#include "config/service_config.hpp"
#include "storage/audit_queue.hpp"
#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/connector_config_store.hpp"
#include "storage/outbox.hpp"
#include "storage/token_store.hpp"
#include "storage/unbound_format.hpp"

namespace cm {

/// What a connection actor needs from storage: its row, the refresh lease
/// and fenced writes. Tests implement this subset in memory.
using token_repository_actor = caf::typed_actor<
  // Loads one connection with decrypted secrets; not_found if absent.
  caf::replies_to<find_atom, connection_key>::with<token_record>,
  // The stored version of one connection, to check that a token held in
  // memory is still the newest; not_found if absent.
  caf::replies_to<version_atom, connection_key>::with<int64_t>,
  // Takes the refresh lease (owner, lease ms); answers the row with its new
  // version (the fence). conflict: another owner holds a live lease;
  // unavailable: this instance is fenced out of the cluster for now.
  caf::replies_to<lease_atom, connection_key, std::string, int64_t>::with<token_record>,
  // Writes refreshed tokens under (fence, owner) plus TOKEN_REFRESHED, in
  // one transaction. conflict: stale fence.
  caf::replies_to<complete_atom, connection_key, int64_t, std::string, refreshed_tokens>::with<
    token_record>,
  // Releases the lease (fence, owner, failure reason or "").
  caf::replies_to<release_atom, connection_key, int64_t, std::string, std::string>::with<bool>,
  // Marks needs_reauth (fence, owner, reason) plus TOKEN_EXPIRED.
  caf::replies_to<reauth_atom, connection_key, int64_t, std::string, std::string>::with<
    token_record>,
  // A team's configuration of a connector (defaults when never set); a
  // grant issued by the team's own OAuth app refreshes with it.
  caf::replies_to<config_get_atom, std::string, std::string>::with<connector_config_record>>;

/// The outbox and webhook deliveries, as the event hub and the webhook
/// dispatcher read them (on a storage actor and connection of their own).
using event_store_actor = caf::typed_actor<
  // Outbox events after a position (team, or "" for all), at most `limit`.
  caf::replies_to<outbox_atom, outbox_position, std::string, int32_t>::with<outbox_page>,
  // The outbox's last readable position.
  caf::replies_to<head_atom>::with<outbox_position>,
  // Claims due webhook deliveries (limit, lease ms).
  caf::replies_to<claim_atom, int32_t, int64_t>::with<webhook_jobs>,
  // Webhook deliveries waiting (not delivered, not given up), for /metrics.
  caf::replies_to<backlog_atom>::with<int64_t>,
  // Records a delivery attempt (status, error, retry in ms or -1: done).
  caf::replies_to<delivered_atom, webhook_job, int32_t, std::string, int64_t>::with<bool>>;

/// Pending OAuth authorizations, as the OAuth routes use them.
using oauth_state_store_actor = caf::typed_actor<
  // Stores a pending OAuth authorization.
  caf::replies_to<state_put_atom, oauth_state_record, int32_t>::with<bool>,
  // Consumes a state by its hash (exactly once); not_found if unknown.
  caf::replies_to<state_take_atom, std::string>::with<oauth_state_record>>;

/// Team connector configurations and the audit log, as the admin routes
/// use them.
using connector_config_store_actor = caf::typed_actor<
  // A team's configuration of a connector (defaults when never set).
  caf::replies_to<config_get_atom, std::string, std::string>::with<connector_config_record>,
  // Every connector a team configured or toggled.
  caf::replies_to<config_list_atom, std::string>::with<connector_config_records>,
  // An admin's change, with its audit row (and event for a toggle).
  caf::replies_to<config_change_atom, connector_change>::with<connector_config_record>,
  // Stores an admin's grant and enables the connector, atomically.
  caf::replies_to<code_connect_atom, token_record, connector_change>::with<connect_result>,
  // Appends to the audit log, batched (see storage_actor).
  caf::reacts_to<audit_atom, audit_entry>,
  // Rows wait in its audit queue (storage/audit_queue.hpp): write them.
  caf::reacts_to<audit_atom>,
  // A page of a team's audit log (before seq, limit), newest first.
  caf::replies_to<audit_page_atom, std::string, int64_t, int32_t>::with<audit_rows>>;

/// Every role in one actor. The service runs several, each on a database
/// connection of its own, and hands each user the narrow role it needs
/// (docs/DECISIONS.md, "Storage as a pool of roles").
using storage_actor = token_repository_actor::extend<
  // Round trip to PostgreSQL; answers the latency in microseconds.
  caf::replies_to<ping_atom>::with<int64_t>,
  // Inserts or replaces a connection (secrets encrypted); answers the
  // stored record with its id, version and timestamps.
  caf::replies_to<save_atom, token_record>::with<token_record>,
  // Lists the connections of (team, user), or of the team for user "".
  caf::replies_to<list_atom, std::string, std::string>::with<token_summaries>,
  // Deletes one connection; answers whether it existed.
  caf::replies_to<remove_atom, connection_key>::with<bool>,
  // One page of live connections after (team, id), at most `limit`.
  caf::replies_to<hydrate_atom, std::string, std::string, int32_t>::with<hydrate_batch>,
  // The same within one shard (shard, after team, after id, limit).
  caf::replies_to<hydrate_atom, int32_t, std::string, std::string, int32_t>::with<hydrate_batch>,
  // The same within a set of shards, in key order (a large share of them).
  caf::replies_to<hydrate_atom, std::vector<int32_t>, std::string, std::string,
                  int32_t>::with<hydrate_batch>,
  // Teams in which (user, provider) has a connection.
  caf::replies_to<teams_atom, std::string, std::string>::with<std::vector<std::string>>,
  // Appends to the audit log through the actor's audit queue, written in
  // batches of up to 500 rows per statement; rows stay queued until
  // written (a failure retries every second; nothing is dropped).
  caf::reacts_to<audit_atom, audit_entry>,
  // Writes the rows waiting in its audit queue (sent by whoever queued
  // the first row while the writer was idle).
  caf::reacts_to<audit_atom>,
  // Internal: commits the grouped leases and completions.
  caf::reacts_to<flush_atom>,
  // Stores a pending OAuth authorization.
  caf::replies_to<state_put_atom, oauth_state_record, int32_t>::with<bool>,
  // Consumes a state by its hash (exactly once); not_found if unknown.
  caf::replies_to<state_take_atom, std::string>::with<oauth_state_record>,
  // Stores a new grant plus TOKEN_CREATED; answers what it replaced.
  caf::replies_to<connect_atom, token_record>::with<connect_result>,
  // Deletes a connection plus TOKEN_REVOKED (reason); answers the row.
  caf::replies_to<disconnect_atom, connection_key, std::string>::with<token_record>,
  // Outbox events after a position (team, or "" for all), at most `limit`.
  caf::replies_to<outbox_atom, outbox_position, std::string, int32_t>::with<outbox_page>,
  // The outbox's last readable position.
  caf::replies_to<head_atom>::with<outbox_position>,
  // Claims due webhook deliveries (limit, lease ms).
  caf::replies_to<claim_atom, int32_t, int64_t>::with<webhook_jobs>,
  // Webhook deliveries waiting (not delivered, not given up), for /metrics.
  caf::replies_to<backlog_atom>::with<int64_t>,
  // Records a delivery attempt (status, error, retry in ms or -1: done).
  caf::replies_to<delivered_atom, webhook_job, int32_t, std::string, int64_t>::with<bool>,
  // The webhooks new events are enqueued for (configuration reload).
  caf::reacts_to<webhooks_atom, webhook_targets>,
  // Every connector a team configured or toggled.
  caf::replies_to<config_list_atom, std::string>::with<connector_config_records>,
  // An admin's change, with its audit row (and event for a toggle).
  caf::replies_to<config_change_atom, connector_change>::with<connector_config_record>,
  // Stores an admin's grant and enables the connector, atomically.
  caf::replies_to<code_connect_atom, token_record, connector_change>::with<connect_result>,
  // A page of a team's audit log (before seq, limit), newest first.
  caf::replies_to<audit_page_atom, std::string, int64_t, int32_t>::with<audit_rows>>;

struct storage_state {
  // CAF 0.17 default-constructs state; the behavior function fills it in.
  std::unique_ptr<storage::database> db;
  std::unique_ptr<storage::unbound_format_policy> unbound;
  std::unique_ptr<storage::column_cipher> cipher;
  std::unique_ptr<storage::outbox> events;
  std::unique_ptr<storage::token_store> tokens;
  std::unique_ptr<storage::connector_config_store> configs;
  /// Leases and completions waiting for the next group commit
  /// (actors/storage_actor.cpp, "Group commit").
  struct grouped_write {
    /// The write on its own: after the group's statement left it out (to
    /// learn why), or after the group was rolled back.
    std::function<token_record()> run;
    caf::typed_response_promise<token_record> promise;
    /// What the group's one statement for all leases, or for all
    /// completions, takes from this write (exactly one is set).
    std::optional<storage::token_store::lease_request> lease;
    std::optional<storage::token_store::completion> completion;
  };
  std::vector<grouped_write> grouped;
  bool group_armed = false;
  /// Audit rows not yet written, shared with whoever records token reads
  /// (storage/audit_queue.hpp).
  storage::audit_queue_ptr audit;
  static inline const char* name = "storage";
};

storage_actor::behavior_type
storage_behavior(storage_actor::stateful_pointer<storage_state> self, config::database_config cfg,
        std::shared_ptr<const storage::keyring> keys, webhook_targets webhooks,
        storage::audit_queue_ptr audit);

/// Rows an audit queue made by spawn_storage holds before token reads are
/// refused.
constexpr size_t default_audit_queue_rows = 100000;

/// Spawns the storage actor detached. Fails if the key ring is missing.
/// It writes the rows of `audit` (a queue of its own when null).
caf::expected<storage_actor> spawn_storage(caf::actor_system& sys,
                                           const config::database_config& cfg,
                                           std::shared_ptr<const storage::keyring> keys,
                                           webhook_targets webhooks = {},
                                           storage::audit_queue_ptr audit = nullptr);

} // namespace cm

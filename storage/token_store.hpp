// SQL for connector_tokens: stores and loads connections, encrypting and
// decrypting the secret columns on the way. Called only by the storage actor.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/outbox.hpp"
#include "storage/records.hpp"

namespace cm::storage {

class token_store {
public:
  token_store(database& db, const column_cipher& cipher, outbox& events)
    : db_(db), cipher_(cipher), events_(events) {}

  /// Inserts or replaces the connection for record.key. A replacement gets
  /// the record's (new) id, so ciphertexts bound to the old row are gone.
  /// Fills id (if empty), version and timestamps. Throws db_error.
  token_record save(token_record record);

  /// Loads and decrypts one connection. A ciphertext that does not
  /// authenticate raises db_error(integrity_failure) and logs an alarm.
  std::optional<token_record> find(const connection_key& key);

  /// Connections of one user (user_id non-empty) or of the whole team.
  token_summaries list(const std::string& team_id, const std::string& user_id);

  /// Deletes one connection; false when there was none.
  bool remove(const connection_key& key);

  /// Takes the refresh lease for `owner` when it is free, expired or already
  /// ours, bumping the version (the fencing token), and returns the row as
  /// it is now. nullopt: another owner holds a live lease. Throws
  /// db_error(not_found) when there is no such connection.
  std::optional<token_record> acquire_lease(const connection_key& key, const std::string& owner,
                                            int64_t lease_ms);

  /// One lease of a group (actors/storage_actor.cpp commits a storm's
  /// leases and completions in groups).
  struct lease_request {
    connection_key key;
    std::string owner;
    int64_t lease_ms = 0;
  };
  /// Takes many leases in one statement, each as acquire_lease would. An
  /// entry is nullopt where the statement leased nothing (held elsewhere, a
  /// fenced owner, no such row, the same key twice): acquire_lease on that
  /// one alone says why. Runs in the caller's transaction.
  std::vector<std::optional<token_record>> acquire_leases(const std::vector<lease_request>& group);

  /// The stored version of one connection (every write bumps it); nullopt
  /// when there is none. Reads no secret, so it is cheap.
  std::optional<int64_t> version_of(const connection_key& key);

  /// Stores refreshed tokens if the row still carries `fence` and `owner`'s
  /// lease, and writes TOKEN_REFRESHED to the outbox in the same
  /// transaction. A rotated refresh token replaces the old one; none keeps
  /// it. Throws db_error(conflict) on a stale fence, db_error(unavailable)
  /// while `owner` is fenced out of the cluster (joining, or its heartbeats
  /// lapsed), as acquire_lease does.
  token_record complete_refresh(const connection_key& key, int64_t fence, const std::string& owner,
                                const refreshed_tokens& tokens);

  /// One completion of a group.
  struct completion {
    connection_key key;
    int64_t fence = 0;
    std::string owner;
    refreshed_tokens tokens;
  };
  /// Stores many refreshes as complete_refresh would, in one UPDATE, with
  /// their TOKEN_REFRESHED events in one INSERT, in the caller's
  /// transaction. An entry is nullopt where nothing was stored (a stale
  /// fence, a fenced owner, no such row, a ciphertext that fails to
  /// decrypt): complete_refresh on that one alone says why.
  std::vector<std::optional<token_record>> complete_refreshes(const std::vector<completion>& group);

  /// Releases `owner`'s lease after an attempt; a non-empty reason counts a
  /// failure. False when the fence is stale.
  bool release_lease(const connection_key& key, int64_t fence, const std::string& owner,
                     const std::string& failure_reason);

  /// Marks the connection needs_reauth with a reason and writes
  /// TOKEN_EXPIRED in the same transaction. Throws db_error(conflict) on a
  /// stale fence.
  token_record mark_needs_reauth(const connection_key& key, int64_t fence,
                                 const std::string& owner, const std::string& reason);

  /// Live connections after (team_id, id) in key order, at most `limit`:
  /// start-up hydration streams the table in such batches.
  hydrate_batch load_batch(const std::string& after_team, const std::string& after_id, int limit);
  /// The same, within one shard (migration 0008): an owner loads its shards.
  hydrate_batch load_shard_batch(int32_t shard, const std::string& after_team,
                                 const std::string& after_id, int limit);
  /// The same within a set of shards, walking the primary key and
  /// filtering: for a large share of the shards this reads the heap in
  /// key order, where one walk per shard would visit every heap page once
  /// per shard in it (about ten times slower on a million rows).
  hydrate_batch load_shards_batch(const std::vector<int32_t>& shards,
                                  const std::string& after_team, const std::string& after_id,
                                  int limit);

  /// Teams in which `user_id` has a connection to `provider` (for callers
  /// that do not name the team).
  std::vector<std::string> teams_of(const std::string& user_id, const std::string& provider);

  void audit(const audit_entry& entry);

  /// Appends many audit rows in one statement.
  void audit_batch(const std::vector<audit_entry>& entries);

  /// Stores a pending authorization (verifier encrypted), keeping at most
  /// `max_pending` states of its member (team, user): the oldest go first,
  /// expired ones before any still usable. Concurrent calls for one member,
  /// from any instance, serialize on a transaction-scoped advisory lock, so
  /// the cap holds at every commit. Returns how many states were dropped.
  int64_t put_state(const oauth_state_record& state, int32_t max_pending);

  /// Consumes a state atomically: exactly one caller gets it, expired or
  /// not (the caller checks expires_at_ms). nullopt when unknown or used.
  /// `state_hashes`: the state's hash under each key in the ring, comma-
  /// separated (oauth::state_hash_candidates), or a single hash.
  std::optional<oauth_state_record> take_state(const std::string& state_hashes);

  /// Stores a newly authorized grant (inserting or replacing) and writes
  /// TOKEN_CREATED in the same transaction; returns the grant it replaced.
  connect_result connect(token_record record);

  /// Deletes a connection and writes TOKEN_REVOKED in the same transaction;
  /// the row (with secrets) is returned for the record. not_found if absent.
  token_record disconnect(const connection_key& key, const std::string& reason);

private:
  /// Throws db_error(unavailable) when `owner` may not write refreshes now.
  void throw_if_fenced(const std::string& owner);

  token_record read_row(const result& res, int row);
  hydrate_batch read_batch(const result& res, int limit);
  void insert_event(const std::string& type, const std::string& connection_id,
                    const connection_key& key, const std::string& reason);

  database& db_;
  const column_cipher& cipher_;
  outbox& events_;
};

/// A fresh random UUID (version 4) in canonical text form.
std::string random_uuid();

/// What the operator's listing (`connector-manager connections list`)
/// selects; an empty field matches every value.
struct connection_filter {
  std::string team_id;
  std::string user_id;
  std::string provider;
  int32_t limit = 100;
};

/// Connections across teams, most recently changed first; no secret
/// column is read. For the operator only: every query the service runs
/// names its team.
token_summaries search_connections(database& db, const connection_filter& filter);

} // namespace cm::storage

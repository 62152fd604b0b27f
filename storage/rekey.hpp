// Re-encryption after a key rotation (`connector-manager rekey`).
//
// Every stored ciphertext names the key that sealed it (cipher.hpp). The
// job walks each encrypted table in primary-key order and rewrites, under
// the keyring's active key, every row whose ciphertexts (or key_id column)
// name another key. Each batch is committed on its own, so the job is
// resumable by construction: the rows still under an old key are exactly the
// remaining work, a killed run loses nothing, and a rerun continues.
//
// It runs beside live servers that refresh the same rows, optimistically:
// a batch is read without locks, re-encrypted in this process, and written
// back in ONE statement that updates each row only if its `version` is
// still the one read. Every write that changes a token or secret bumps the
// version, so an unchanged version means an unchanged plaintext: the job
// never puts an older token over a newer one, and a row that changed is
// simply left for the next pass. The version itself is NOT bumped: a
// refresh that leased the row earlier (its fence is the version) still
// completes, and actors holding the row in memory have nothing to learn.
// Row locks are held only while that one statement runs inside PostgreSQL
// (milliseconds), never across a round trip or while this process is
// descheduled, so a refresh waits at most that long. (A first version held
// SELECT … FOR UPDATE locks for the whole batch; on a loaded machine a
// descheduled job then stalled the servers' single storage connections for
// seconds and refreshes timed out.) Any pause happens between batches.
//
// Values sealed before team_id joined the binding (format 1, cipher.hpp)
// need work too, whatever their key: the job re-seals them in format 2,
// OAuth verifiers included (in place: their hash key does not change). When
// no format-1 value is left, it records so (unbound_format.hpp) and every
// instance refuses format 1 from then on.
//
// OAuth states are the exception for keys: the key that sealed a state's verifier
// also keyed its hash, which cannot be recomputed without the state (only
// the hash is stored). They live state_ttl (10 minutes): the job deletes
// expired ones under an old key and reports live ones as remaining until
// they expire; callbacks meanwhile look a state up under every key in the
// ring.
//
// A row that does not decrypt (tampered, copied, or under a key this keyring
// lacks) is never rewritten: it is logged as an ALARM (table and row, never
// a value), counted, and left under its old key, so it keeps the old key
// from being retired until someone looks at it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "storage/cipher.hpp"
#include "storage/database.hpp"

namespace cm::storage {

struct rekey_options {
  /// Rows per batch (one read, one write).
  int batch_size = 500;
  /// Sleep between batches (outside any transaction): throttles the job on
  /// a busy database, and lets tests land a kill halfway.
  std::chrono::milliseconds pause{0};
  /// Walks over every table at most this often; later passes pick up rows
  /// that changed under a batch or were written meanwhile by an instance
  /// still encrypting with the old key.
  int max_passes = 10;
};

/// What happened to one table.
struct rekey_table_counts {
  int64_t rewritten = 0;
  /// Rows that failed to decrypt and were left alone (alarmed).
  int64_t tampered = 0;
  /// Rows that changed between read and write (a refresh, a reconnect):
  /// left for the next pass.
  int64_t raced = 0;
  int64_t batches = 0;
};

struct rekey_summary {
  uint32_t active_key = 0;
  std::map<std::string, rekey_table_counts> tables;
  /// Uses (ciphertexts, OAuth states) of keys other than the active one,
  /// by key id (0: a header that names no key, i.e. malformed).
  std::map<uint32_t, int64_t> remaining;
  /// Rows still needing work (including tampered ones and live OAuth
  /// states under an old key), by table.
  std::map<std::string, int64_t> rows_remaining;
  /// Expired OAuth states under an old key, deleted.
  int64_t expired_states_deleted = 0;
  /// Live OAuth states whose hash is under an old key (they expire).
  int64_t live_states_under_old_keys = 0;
  /// Stored values still of the team-unbound format 1 (tampered ones
  /// included); when 0, the format is refused from now on.
  int64_t unbound_remaining = 0;
  bool unbound_refused = false;
  int passes = 0;

  int64_t tampered() const;
  /// No ciphertext under an old key, no row left, nothing tampered.
  bool complete() const;
};

/// Uses of each key: ciphertexts in every encrypted column by the key id
/// their header names (0: malformed), plus OAuth states by their key_id.
/// What `rekey` reports and what retiring a key checks.
std::map<uint32_t, int64_t> ciphertexts_by_key(database& db);

class rekeyer {
public:
  /// Called after every batch (table name, that table's counts so far).
  using progress_fn = std::function<void(const std::string&, const rekey_table_counts&)>;

  rekeyer(database& db, const column_cipher& cipher, rekey_options options)
    : db_(db), cipher_(cipher), options_(options) {}

  /// Runs passes until nothing is left to rewrite (or max_passes). Throws
  /// db_error when the database fails; whatever was committed stays done.
  rekey_summary run(const progress_fn& progress = {});

private:
  struct table_job;
  /// One pass over one table; returns rows rewritten.
  int64_t pass(const table_job& job, rekey_summary& summary, const progress_fn& progress);
  /// Rows of `job` that still need work.
  int64_t pending(const table_job& job);

  database& db_;
  const column_cipher& cipher_;
  rekey_options options_;
  /// Tampered rows already alarmed (table/row), so passes count them once.
  std::set<std::string> alarmed_;
};

} // namespace cm::storage

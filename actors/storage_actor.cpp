#include "actors/storage_actor.hpp"

#include <chrono>

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/error.hpp"
#include "common/log.hpp"

namespace cm {

namespace {

/// Maps a database failure to an error a caller may see: the code and a
/// fixed text. The SQLSTATE and server message were logged by the database.
caf::error to_caller_error(const storage::db_error& e) {
  switch (e.code) {
    case ec::unavailable: return make_error(ec::unavailable, "database unavailable");
    case ec::conflict: return make_error(ec::conflict, "conflicting update; retry");
    case ec::integrity_failure:
      return make_error(ec::integrity_failure, "stored credentials failed integrity check");
    case ec::bad_request: return make_error(ec::bad_request, e.what());
    case ec::not_found: return make_error(ec::not_found, "no such connection");
    default: return make_error(ec::internal, "storage error");
  }
}

/// Runs `f`, turning storage exceptions into CAF errors.
template <class F>
auto guarded(F&& f) -> caf::result<decltype(f())> {
  try {
    return f();
  } catch (const storage::db_error& e) {
    return to_caller_error(e);
  } catch (const storage::crypto_error&) {
    return make_error(ec::internal, "encryption failed");
  } catch (const std::exception&) {
    return make_error(ec::internal, "storage error");
  }
}

constexpr size_t audit_batch_rows = 4000;

using storage_self = storage_actor::stateful_pointer<storage_state>;

/// Writes the oldest queued audit rows, one batch in one statement; false
/// when the database refused them (they stay queued).
bool write_audit_batch(storage_self self) {
  auto& st = self->state;
  auto batch = st.audit->take(audit_batch_rows);
  if (batch.empty())
    return true;
  try {
    st.tokens->audit_batch(batch);
    st.audit->written(batch.size());
    return true;
  } catch (const std::exception&) {
    st.audit->put_back(std::move(batch));
    log::error("storage", "could not write audit rows; will retry",
               {{"pending", st.audit->size()}});
    return false;
  }
}

/// How long the writer lets rows gather after a batch that left fewer than
/// a full batch waiting: each COPY costs a parse, a round trip and a
/// commit, so at thousands of token reads a second, batches of tens of
/// rows spent more on those than on the rows (issue 18).
constexpr auto audit_gather_delay = std::chrono::milliseconds(50);

/// The writer's loop: a batch per message, so other requests interleave,
/// until the queue is empty; after a failure, again in a second.
void drain_audit(storage_self self) {
  if (!write_audit_batch(self)) {
    self->delayed_send(self, std::chrono::seconds(1), audit_atom_v);
    return;
  }
  if (!self->state.audit->keep_writing())
    return;
  if (self->state.audit->size() >= audit_batch_rows)
    self->send(self, audit_atom_v);
  else
    self->delayed_send(self, audit_gather_delay, audit_atom_v);
}

// Group commit. A refresh storm sends leases and completions faster than
// one transaction each can commit (each commit waits for the WAL flush).
// They are queued, and a flush message the actor sends itself runs every
// write that arrived before it in one transaction: one commit for all,
// with the leases in one statement and the completions in another
// (run_as_sets). Nobody is answered before that commit. A write that its own code refuses
// (a stale fence, a lease held elsewhere, a fenced instance) throws before
// it changes anything, so it is answered with its error and the others go
// on. An SQL error aborts the whole transaction: it is rolled back and each
// write runs again on its own, as without grouping.
constexpr size_t group_limit = 256;

void enqueue_grouped(storage_self self, storage_state::grouped_write write) {
  auto& st = self->state;
  st.grouped.push_back(std::move(write));
  if (!st.group_armed) {
    st.group_armed = true;
    self->send(self, flush_atom_v);
  }
}

/// One grouped write on its own (after its group was rolled back).
void run_alone(storage_state::grouped_write& w) {
  try {
    w.promise.deliver(w.run());
  } catch (const storage::db_error& e) {
    w.promise.deliver(to_caller_error(e));
  } catch (const storage::crypto_error&) {
    w.promise.deliver(make_error(ec::internal, "encryption failed"));
  } catch (const std::exception&) {
    w.promise.deliver(make_error(ec::internal, "storage error"));
  }
}

/// The group's leases in one statement and its completions in another
/// (with one INSERT for their events): a storm's writes cost a few
/// statements per group instead of three or four each. Whatever a
/// statement left out runs on its own afterwards, to learn why.
void run_as_sets(storage_state& st, std::vector<storage_state::grouped_write>& batch,
                 std::vector<std::optional<token_record>>& results) {
  std::vector<size_t> lease_at, completion_at;
  std::vector<storage::token_store::lease_request> leases;
  std::vector<storage::token_store::completion> completions;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].lease) {
      lease_at.push_back(i);
      leases.push_back(*batch[i].lease);
    } else if (batch[i].completion) {
      completion_at.push_back(i);
      completions.push_back(*batch[i].completion);
    }
  }
  if (leases.size() > 1) {
    auto leased = st.tokens->acquire_leases(leases);
    for (size_t j = 0; j < leased.size(); ++j)
      results[lease_at[j]] = std::move(leased[j]);
  }
  if (completions.size() > 1) {
    auto stored = st.tokens->complete_refreshes(completions);
    for (size_t j = 0; j < stored.size(); ++j)
      results[completion_at[j]] = std::move(stored[j]);
  }
}

void flush_grouped(storage_self self) {
  auto& st = self->state;
  st.group_armed = false;
  std::vector<storage_state::grouped_write> batch;
  if (st.grouped.size() <= group_limit) {
    batch = std::move(st.grouped);
    st.grouped.clear();
  } else {
    auto cut = st.grouped.begin() + static_cast<std::ptrdiff_t>(group_limit);
    batch.assign(std::make_move_iterator(st.grouped.begin()), std::make_move_iterator(cut));
    st.grouped.erase(st.grouped.begin(), cut);
    st.group_armed = true;
    self->send(self, flush_atom_v);
  }
  if (batch.size() == 1) {
    run_alone(batch.front());
    return;
  }
  std::vector<std::optional<token_record>> results(batch.size());
  std::vector<caf::error> refusals(batch.size());
  bool aborted = false;
  try {
    storage::database::transaction tx{*st.db};
    run_as_sets(st, batch, results);
    for (size_t i = 0; i < batch.size() && !aborted; ++i) {
      if (results[i])
        continue;
      try {
        results[i] = batch[i].run();
      } catch (const storage::db_error& e) {
        // Refused by our own checks, before any write: only this one fails.
        if (e.sqlstate.empty() && st.db->connected())
          refusals[i] = to_caller_error(e);
        else
          aborted = true;
      } catch (const storage::crypto_error&) {
        refusals[i] = make_error(ec::internal, "encryption failed");
      }
    }
    if (!aborted)
      tx.commit();
  } catch (const std::exception&) {
    aborted = true;
  }
  if (aborted) {
    if (!st.db->connected()) {
      // Nothing was committed; each caller keeps what it has and retries.
      for (auto& w : batch)
        w.promise.deliver(make_error(ec::unavailable, "the database is unavailable"));
      return;
    }
    for (auto& w : batch)
      run_alone(w);
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (results[i])
      batch[i].promise.deliver(std::move(*results[i]));
    else
      batch[i].promise.deliver(refusals[i]);
  }
}

} // namespace

storage_actor::behavior_type
storage_behavior(storage_actor::stateful_pointer<storage_state> self, config::database_config cfg,
        std::shared_ptr<const storage::keyring> keys, webhook_targets webhooks,
        storage::audit_queue_ptr audit) {
  auto& st = self->state;
  st.db = std::make_unique<storage::database>(std::move(cfg));
  st.cipher = std::make_unique<storage::column_cipher>(std::move(keys));
  // Format-1 values (sealed before team_id joined the binding) are read
  // only while the deployment allows them (storage/unbound_format.hpp).
  st.unbound = std::make_unique<storage::unbound_format_policy>(*st.db);
  st.cipher->set_unbound_policy([unbound = st.unbound.get()] { return unbound->allowed(); });
  st.events = std::make_unique<storage::outbox>(*st.db);
  st.events->set_webhooks(std::move(webhooks));
  st.audit = std::move(audit);
  st.tokens = std::make_unique<storage::token_store>(*st.db, *st.cipher, *st.events);
  st.configs =
    std::make_unique<storage::connector_config_store>(*st.db, *st.cipher, *st.events, *st.tokens);
  // Pending audit rows are written before the actor goes.
  self->set_exit_handler([=](caf::exit_msg& msg) {
    // Leases and completions already received are committed and answered.
    while (!self->state.grouped.empty())
      flush_grouped(self);
    while (self->state.audit->size() > 0 && write_audit_batch(self)) {
    }
    if (auto left = self->state.audit->size(); left > 0)
      log::error("storage", "ALARM: audit rows not written at shutdown (database unavailable)",
                 {{"rows", left}});
    self->quit(msg.reason);
  });
  // Try to connect right away so the first request does not pay for it; a
  // failure here is fine: calls report `unavailable` until it works.
  try {
    self->state.db->ensure_connected();
  } catch (const storage::db_error&) {
  }
  return {
    [=](ping_atom) -> caf::result<int64_t> {
      return guarded([&] {
        auto start = std::chrono::steady_clock::now();
        self->state.db->exec({"ping", "SELECT 1"});
        return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                      std::chrono::steady_clock::now() - start)
                                      .count());
      });
    },
    [=](save_atom, token_record& record) -> caf::result<token_record> {
      return guarded([&] { return self->state.tokens->save(std::move(record)); });
    },
    [=](find_atom, const connection_key& key) -> caf::result<token_record> {
      try {
        auto found = self->state.tokens->find(key);
        if (!found)
          return make_error(ec::not_found, "no such connection");
        return std::move(*found);
      } catch (const storage::db_error& e) {
        return to_caller_error(e);
      }
    },
    [=](version_atom, const connection_key& key) -> caf::result<int64_t> {
      try {
        auto version = self->state.tokens->version_of(key);
        if (!version)
          return make_error(ec::not_found, "no such connection");
        return *version;
      } catch (const storage::db_error& e) {
        return to_caller_error(e);
      }
    },
    [=](list_atom, const std::string& team, const std::string& user)
      -> caf::result<token_summaries> {
      return guarded([&] { return self->state.tokens->list(team, user); });
    },
    [=](remove_atom, const connection_key& key) -> caf::result<bool> {
      return guarded([&] { return self->state.tokens->remove(key); });
    },
    [=](lease_atom, const connection_key& key, const std::string& owner,
        int64_t lease_ms) -> caf::result<token_record> {
      auto promise = self->make_response_promise<token_record>();
      auto* tokens = self->state.tokens.get();
      storage_state::grouped_write write;
      write.run = [tokens, key, owner, lease_ms] {
        auto leased = tokens->acquire_lease(key, owner, lease_ms);
        if (!leased)
          throw storage::db_error(ec::conflict, "", "refresh lease held by another instance");
        return std::move(*leased);
      };
      write.promise = promise;
      write.lease = storage::token_store::lease_request{key, owner, lease_ms};
      enqueue_grouped(self, std::move(write));
      return promise;
    },
    [=](complete_atom, const connection_key& key, int64_t fence, const std::string& owner,
        const refreshed_tokens& tokens) -> caf::result<token_record> {
      auto promise = self->make_response_promise<token_record>();
      auto* store = self->state.tokens.get();
      storage_state::grouped_write write;
      write.run = [store, key, fence, owner, tokens] {
        return store->complete_refresh(key, fence, owner, tokens);
      };
      write.promise = promise;
      write.completion = storage::token_store::completion{key, fence, owner, tokens};
      enqueue_grouped(self, std::move(write));
      return promise;
    },
    [=](flush_atom) { flush_grouped(self); },
    [=](release_atom, const connection_key& key, int64_t fence, const std::string& owner,
        const std::string& reason) -> caf::result<bool> {
      return guarded([&] { return self->state.tokens->release_lease(key, fence, owner, reason); });
    },
    [=](reauth_atom, const connection_key& key, int64_t fence, const std::string& owner,
        const std::string& reason) -> caf::result<token_record> {
      return guarded([&] { return self->state.tokens->mark_needs_reauth(key, fence, owner, reason); });
    },
    [=](hydrate_atom, const std::string& after_team, const std::string& after_id,
        int32_t limit) -> caf::result<hydrate_batch> {
      return guarded([&] { return self->state.tokens->load_batch(after_team, after_id, limit); });
    },
    [=](hydrate_atom, int32_t shard, const std::string& after_team, const std::string& after_id,
        int32_t limit) -> caf::result<hydrate_batch> {
      return guarded(
        [&] { return self->state.tokens->load_shard_batch(shard, after_team, after_id, limit); });
    },
    [=](hydrate_atom, const std::vector<int32_t>& shards, const std::string& after_team,
        const std::string& after_id, int32_t limit) -> caf::result<hydrate_batch> {
      return guarded(
        [&] { return self->state.tokens->load_shards_batch(shards, after_team, after_id, limit); });
    },
    [=](teams_atom, const std::string& user, const std::string& provider)
      -> caf::result<std::vector<std::string>> {
      return guarded([&] { return self->state.tokens->teams_of(user, provider); });
    },
    [=](state_put_atom, const oauth_state_record& st, int32_t max_pending) -> caf::result<bool> {
      return guarded([&] {
        if (auto dropped = self->state.tokens->put_state(st, max_pending))
          log::debug("storage", "oldest pending OAuth states dropped",
                     {{"team_id", st.team_id}, {"user_id", st.user_id}, {"dropped", dropped}});
        return true;
      });
    },
    [=](state_take_atom, const std::string& hash) -> caf::result<oauth_state_record> {
      try {
        auto st = self->state.tokens->take_state(hash);
        if (!st)
          return make_error(ec::bad_request, "unknown or already used state");
        return std::move(*st);
      } catch (const storage::db_error& e) {
        return to_caller_error(e);
      }
    },
    [=](connect_atom, token_record& record) -> caf::result<connect_result> {
      return guarded([&] { return self->state.tokens->connect(std::move(record)); });
    },
    [=](disconnect_atom, const connection_key& key, const std::string& reason)
      -> caf::result<token_record> {
      return guarded([&] { return self->state.tokens->disconnect(key, reason); });
    },
    [=](outbox_atom, const outbox_position& after, const std::string& team, int32_t limit)
      -> caf::result<outbox_page> {
      return guarded([&] {
        outbox_page page;
        page.events = self->state.events->after(after, team, limit);
        if (page.events.size() < static_cast<size_t>(limit))
          page.pending = self->state.events->pending();
        return page;
      });
    },
    [=](head_atom) -> caf::result<outbox_position> {
      return guarded([&] { return self->state.events->head(); });
    },
    [=](claim_atom, int32_t limit, int64_t lease_ms) -> caf::result<webhook_jobs> {
      return guarded([&] { return self->state.events->claim_due(limit, lease_ms); });
    },
    [=](backlog_atom) -> caf::result<int64_t> {
      return guarded([&] { return self->state.events->waiting_deliveries(); });
    },
    [=](delivered_atom, const webhook_job& job, int32_t status, const std::string& error,
        int64_t retry_in_ms) -> caf::result<bool> {
      return guarded([&] {
        self->state.events->finish(job, status, error, retry_in_ms);
        return true;
      });
    },
    [=](webhooks_atom, webhook_targets& targets) {
      self->state.events->set_webhooks(std::move(targets));
    },
    [=](config_get_atom, const std::string& team, const std::string& connector)
      -> caf::result<connector_config_record> {
      return guarded([&] { return self->state.configs->get(team, connector); });
    },
    [=](config_list_atom, const std::string& team) -> caf::result<connector_config_records> {
      return guarded([&] { return self->state.configs->list(team); });
    },
    [=](config_change_atom, const connector_change& change)
      -> caf::result<connector_config_record> {
      return guarded([&] { return self->state.configs->apply(change); });
    },
    [=](code_connect_atom, token_record& grant, const connector_change& enable)
      -> caf::result<connect_result> {
      return guarded([&] { return self->state.configs->connect_and_enable(std::move(grant), enable); });
    },
    [=](audit_page_atom, const std::string& team, int64_t before, int32_t limit)
      -> caf::result<audit_rows> {
      return guarded([&] { return self->state.configs->audit_page(team, before, limit); });
    },
    [=](audit_atom, audit_entry& entry) {
      // A change already made: its row is taken whatever the queue holds.
      if (self->state.audit->push(std::move(entry)) == storage::audit_queue::pushed::queued_wake)
        self->send(self, audit_atom_v);
    },
    [=](audit_atom) { drain_audit(self); },
  };
}

caf::expected<storage_actor> spawn_storage(caf::actor_system& sys,
                                           const config::database_config& cfg,
                                           std::shared_ptr<const storage::keyring> keys,
                                           webhook_targets webhooks,
                                           storage::audit_queue_ptr audit) {
  if (!keys)
    return make_error(ec::internal, "no key ring");
  if (cfg.url.empty())
    return make_error(ec::internal, "no database url");
  if (!audit)
    audit = std::make_shared<storage::audit_queue>(default_audit_queue_rows);
  return sys.spawn<caf::detached>(storage_behavior, cfg, std::move(keys), std::move(webhooks),
                                  std::move(audit));
}

} // namespace cm

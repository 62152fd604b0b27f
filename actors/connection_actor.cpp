#include "actors/connection_actor.hpp"

#include "actors/registry_actor.hpp"
#include "actors/team_app.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/error.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "provider/api_key_check.hpp"

namespace cm {

connection_state::connection_state() { metrics::connection_actor_started(); }

connection_state::~connection_state() { metrics::connection_actor_stopped(); }

namespace {

using self_ptr = connection_actor::stateful_pointer<connection_state>;
using ms = std::chrono::milliseconds;

constexpr const char* component = "connection";

/// What a refresh attempt is for.
enum class mode { refresh, force, expire };

int64_t now_ms(self_ptr self) {
  auto since_epoch = self->clock().now().time_since_epoch();
  return std::chrono::duration_cast<ms>(since_epoch).count() + self->state.deps->wall_offset_ms;
}

const refresh_settings& settings(self_ptr self) { return self->state.deps->settings; }

ms storage_timeout(self_ptr self) { return ms{settings(self).storage_timeout_ms}; }

nlohmann::json log_fields(self_ptr self) {
  auto& k = self->state.key;
  return {{"team_id", k.team_id}, {"user_id", k.user_id}, {"provider", k.provider}};
}

int64_t margin_ms(self_ptr self) {
  auto& s = self->state;
  if (s.deps->settings.margin_override_ms >= 0)
    return s.deps->settings.margin_override_ms;
  if (s.deps->provider)
    return int64_t{s.deps->provider->refresh_margin_s} * 1000;
  return 300000;
}

/// Whether this service can refresh the connection at all.
bool can_refresh(self_ptr self) {
  auto& s = self->state;
  // Service-account keys mint their own tokens; OAuth needs the app.
  return s.record && s.record->kind == connection_kind::oauth && s.record->has_refresh_token &&
         s.deps->provider &&
         (s.deps->client || s.deps->provider->mode == config::auth_mode::service_account ||
          s.record->team_app);
}

/// A draw for this connection and `salt` (actors/refresh_plan.hpp).
uint32_t draw(self_ptr self, uint64_t salt) {
  return mixed_draw(self->state.key_hash, self->state.deps->seed, salt);
}

/// The facts of the grant in memory that the plan depends on.
refresh_plan_input plan_input(self_ptr self) {
  auto& s = self->state;
  auto& r = *s.record;
  refresh_plan_input in;
  in.kind = r.kind;
  in.status = r.status;
  in.expires_at_ms = r.expires_at_ms;
  // A refresh stored here or elsewhere sets both.
  in.issued_at_ms = std::max(r.updated_at_ms, r.refreshed_at_ms);
  in.now_ms = now_ms(self);
  if (r.kind == connection_kind::oauth) {
    in.refreshable = can_refresh(self);
    in.margin_ms = margin_ms(self);
    // One draw per expiry: re-arming for the same token keeps the plan.
    in.jitter_draw = draw(self, static_cast<uint64_t>(r.expires_at_ms));
  } else if (s.deps->provider && s.deps->provider->api_key) {
    in.revalidation_ms = s.deps->settings.key_revalidation_ms;
    // Drawn from the time: every re-validation lands somewhere else.
    in.jitter_draw = draw(self, static_cast<uint64_t>(in.now_ms) ^ 0x5245u);
  }
  return in;
}

/// The plan for the grant in memory (actors/refresh_plan.hpp).
refresh_plan current_plan(self_ptr self) {
  if (!self->state.record)
    return {};
  return plan_refresh(plan_input(self));
}

void schedule_tick(self_ptr self, int64_t at_ms) {
  auto& s = self->state;
  ++s.timer_generation;
  s.next_refresh_at_ms = at_ms;
  // A guest plans but arms nothing: the owner of its shard refreshes.
  if (at_ms <= 0 || !s.owned)
    return;
  auto delay = std::max<int64_t>(at_ms - now_ms(self), 0);
  if (auto& wheel = s.deps->wheel; wheel && delay > wheel->horizon_ms()) {
    // Far ahead: a coarse wake-up half a horizon early, then a precise timer.
    wheel->add(at_ms - wheel->horizon_ms() / 2, self->address(), s.timer_generation);
    return;
  }
  self->delayed_send(self, ms{delay}, tick_atom_v, s.timer_generation);
}

void arm_timer(self_ptr self) { schedule_tick(self, current_plan(self).at_ms); }

bool usable(self_ptr self) {
  auto& s = self->state;
  return s.record && s.record->status == grant_status::connected &&
         (s.record->expires_at_ms == 0 || now_ms(self) < s.record->expires_at_ms);
}

/// After a failure, no refresh starts before the backoff ends, whatever
/// the request volume; a valid token is still served meanwhile.
bool backing_off(self_ptr self) { return now_ms(self) < self->state.retry_not_before_ms; }

/// The actor's phase (model/connection_phase.hpp), derived from its state
/// in this one place. A grant that is not connected answers needs_reauth
/// even while a refresh in flight (a reload raced it) is still ending.
connection_phase phase_of(self_ptr self) {
  auto& s = self->state;
  if (s.load_failure)
    return connection_phase::load_failed;
  if (!s.record)
    return connection_phase::loading;
  if (s.record->status != grant_status::connected)
    return connection_phase::needs_reauth;
  if (s.refreshing || s.awaiting_slot)
    return connection_phase::refreshing;
  if (backing_off(self))
    return connection_phase::backing_off;
  return connection_phase::serving;
}

/// Whether the grant was last refreshed (on any instance: the time is the
/// row's) less than `refresh.min_forced_interval_ms` ago. A forced refresh
/// then answers with that refresh's tokens: the provider would only issue
/// others of the same age.
bool recently_refreshed(self_ptr self, int64_t refreshed_at_ms) {
  auto interval = settings(self).min_forced_interval_ms;
  return interval > 0 && refreshed_at_ms > 0 && now_ms(self) - refreshed_at_ms < interval;
}

bool in_refresh_window(self_ptr self) {
  return cm::in_refresh_window(current_plan(self), now_ms(self));
}

token_grant make_grant(self_ptr self) {
  auto& r = *self->state.record;
  token_grant g;
  g.key = self->state.key;
  g.kind = r.kind;
  g.access_token = r.access_token;
  g.token_type = r.kind == connection_kind::api_key ? "api_key" : "Bearer";
  g.expires_at_ms = r.expires_at_ms;
  g.scopes = r.scopes;
  g.metadata = r.metadata;
  return g;
}

/// Drops the snapshot this actor handed out, here and on the board: its
/// state is about to change (actors/token_board.hpp).
void unpublish(self_ptr self) {
  auto& s = self->state;
  if (!s.published)
    return;
  s.published.reset();
  if (s.deps->board)
    s.deps->board->withdraw(s.key);
}

/// Every change of the row in memory goes through here, so no snapshot
/// of the old one outlives it.
template <class Row>
void set_record(self_ptr self, Row&& row) {
  unpublish(self);
  self->state.record = std::forward<Row>(row);
}

/// Until when the token in memory may be served without the actor: the
/// start of its refresh window or its expiry, whichever is first.
int64_t serve_until_ms(self_ptr self) {
  auto& r = *self->state.record;
  constexpr auto never = std::numeric_limits<int64_t>::max();
  if (r.kind != connection_kind::oauth)
    return never; // keys are served whatever their re-validation plan
  auto until = r.expires_at_ms > 0 ? r.expires_at_ms : never;
  auto plan = current_plan(self);
  bool oauth_plan =
    plan.purpose == timer_purpose::refresh || plan.purpose == timer_purpose::mark_expired;
  if (oauth_plan && plan.at_ms > 0)
    until = std::min(until, plan.at_ms);
  return until;
}

caf::error not_connected_error(self_ptr self) {
  auto& r = *self->state.record;
  return make_error(ec::needs_reauth, "connection needs re-authorization" +
                                        (r.reason.empty() ? std::string{} : ": " + r.reason));
}

void finish_handover_if_idle(self_ptr self);

void answer_waiters(self_ptr self) {
  auto waiters = std::move(self->state.waiters);
  self->state.waiters.clear();
  if (usable(self)) {
    auto grant = make_grant(self);
    for (auto& w : waiters)
      w.deliver(grant);
  } else {
    auto err = self->state.record && self->state.record->status != grant_status::connected
                 ? not_connected_error(self)
                 : make_error(ec::provider_failed, "token expired and could not be refreshed");
    for (auto& w : waiters)
      w.deliver(err);
  }
  finish_handover_if_idle(self);
}

/// Whether a token held in memory may be served without asking the
/// database: no other instance can have stored a newer one.
bool alone(self_ptr self) {
  auto& cluster = self->state.deps->cluster;
  return !cluster || cluster->alone();
}

void serve_waiters(self_ptr self);
void load(self_ptr self);

/// Serves the token held in memory once the stored version is known not to
/// be newer (another instance may have refreshed or replaced it). Requests
/// arriving meanwhile share the check.
void check_version(self_ptr self) {
  auto& s = self->state;
  auto& source = s.deps->freshness ? s.deps->freshness : s.deps->repository;
  self->request(source, storage_timeout(self), version_atom_v, s.key)
    .then(
      [=](int64_t stored) {
        auto& st = self->state;
        auto confirming = std::move(st.confirming);
        st.confirming.clear();
        for (auto& p : confirming)
          st.waiters.push_back(std::move(p));
        if (!st.record || stored > st.record->version) {
          // Newer elsewhere: load it; the load answers the waiters (or the
          // refresh in progress does).
          load(self);
          return;
        }
        serve_waiters(self);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        auto confirming = std::move(st.confirming);
        st.confirming.clear();
        for (auto& p : confirming)
          st.waiters.push_back(std::move(p));
        if (code_of(err) == ec::not_found) {
          // Disconnected elsewhere: the load reports it and stops the actor.
          load(self);
          return;
        }
        // The database cannot be asked (outage): nobody can store a newer
        // token without it either, so the one in memory is served
        // (docs/DECISIONS.md, "The newest token across instances").
        if (st.record)
          serve_waiters(self);
      });
}

/// Reads the row again under the board's current fence: after a writer
/// held the key (requests wait for it), or to publish a row handed over at
/// spawn. Unlike a load, a failure is not the connection's: a database
/// that cannot be asked cannot have stored anything newer either, so the
/// waiters are served from memory as before (docs/DECISIONS.md, "The
/// newest token across instances"); a row that is gone goes the load's way.
void read_for_board(self_ptr self) {
  auto& s = self->state;
  if (s.reading_for_board)
    return;
  s.reading_for_board = true;
  uint32_t fence = s.deps->board->fence(s.key);
  self->request(s.deps->repository, storage_timeout(self), find_atom_v, s.key)
    .then(
      [=](token_record& row) {
        auto& st = self->state;
        st.reading_for_board = false;
        // A refresh meanwhile holds the newer truth and answers the
        // waiters itself; the fence is learnt next time.
        if (st.refreshing || st.awaiting_slot)
          return;
        if (!st.record || row.version >= st.record->version)
          set_record(self, std::move(row));
        st.board_fence = fence;
        st.fence_known = true;
        arm_timer(self);
        serve_waiters(self);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        st.reading_for_board = false;
        if (code_of(err) == ec::not_found) {
          load(self);
          return;
        }
        if (st.record && !st.refreshing && !st.awaiting_slot)
          serve_waiters(self);
      });
}

/// The token in memory, kept as this actor's snapshot and put on the
/// board when nothing is about to change it (phase serving), so the next
/// requests are answered without a message to this actor. Nothing when
/// the board refuses it: the row was written since this actor read it (a
/// connect or disconnect held the key), so it must be read again first.
std::optional<token_grant> publish(self_ptr self) {
  auto& s = self->state;
  // Without a board (a guest: holds never reach it), nothing is kept.
  if (phase_of(self) != connection_phase::serving || !s.deps->board)
    return make_grant(self);
  // A row handed over by the registry was read before this actor could
  // read the fence: it may predate a hold, so it is not published before
  // it was read again; meanwhile it is served as it always was.
  if (!s.fence_known) {
    read_for_board(self);
    return make_grant(self);
  }
  auto snapshot = std::make_shared<served_token>();
  snapshot->grant = make_grant(self);
  snapshot->serve_until_ms = serve_until_ms(self);
  snapshot->version = s.record->version;
  snapshot->crowded = s.deps->board->crowded();
  if (!s.deps->board->publish(s.key, snapshot, s.board_fence))
    return std::nullopt;
  s.published = snapshot;
  return snapshot->grant;
}

/// A token from memory: at once when this instance is alone, otherwise
/// after the version check.
caf::result<token_grant> serve_newest(self_ptr self) {
  auto& s = self->state;
  if (alone(self)) {
    if (auto grant = publish(self))
      return std::move(*grant);
    // Written since it was read: serve what a fresh read finds. Requests
    // meanwhile wait for the same read.
    s.waiters.push_back(self->make_response_promise<token_grant>());
    auto promise = s.waiters.back();
    read_for_board(self);
    return promise;
  }
  s.confirming.push_back(self->make_response_promise<token_grant>());
  auto promise = s.confirming.back();
  if (s.confirming.size() == 1)
    check_version(self);
  return promise;
}

void fail_waiters(self_ptr self, const caf::error& err) {
  auto waiters = std::move(self->state.waiters);
  self->state.waiters.clear();
  for (auto& w : waiters)
    w.deliver(err);
  finish_handover_if_idle(self);
}

/// A handed-over actor stops once no refresh is in flight and nobody is
/// waiting for an answer (a load, a version check): requests that reached
/// it are answered by it, not dropped.
void finish_handover_if_idle(self_ptr self) {
  auto& s = self->state;
  if (s.handovers.empty() || s.refreshing || !s.waiters.empty() || !s.confirming.empty())
    return;
  for (auto& p : s.handovers)
    p.deliver(true);
  s.handovers.clear();
  unpublish(self);
  self->quit();
}


/// Runs a reload that arrived while a refresh was in flight.
void after_refresh(self_ptr self) {
  if (!self->state.handovers.empty()) {
    // Handed over: the outcome is stored, the new owner loads it.
    finish_handover_if_idle(self);
    return;
  }
  if (self->state.reload_pending) {
    self->state.reload_pending = false;
    load(self);
  }
}

/// The refresh (or key re-validation) is over: its gate slot, if any, is
/// free for the next connection.
void end_refresh(self_ptr self) {
  auto& s = self->state;
  s.refreshing = false;
  if (s.slot_from) {
    self->send(s.slot_from, release_atom_v);
    s.slot_from = nullptr;
  }
}

void finish(self_ptr self) {
  // A forced request that joined this refresh is served by its result.
  end_refresh(self);
  self->state.force_requested = false;
  self->state.retry_not_before_ms = 0;
  answer_waiters(self);
  arm_timer(self);
  after_refresh(self);
}

void start_refresh(self_ptr self, mode m);
void transient_failure(self_ptr self, const std::string& reason, int64_t retry_after_s,
                       std::optional<int64_t> fence, ec cause = ec::provider_failed);

/// A transient failure: count it, back off, and answer waiters with the
/// old token while it is still valid.
void give_up(self_ptr self, int64_t fence, const std::string& reason);

void transient_failure(self_ptr self, const std::string& reason, int64_t retry_after_s,
                       std::optional<int64_t> fence, ec cause) {
  auto& s = self->state;
  // Only the provider's failures count towards giving up; a database
  // outage says nothing about the grant. A row failing its integrity check
  // (alarmed by storage) backs off the same way, so a tampered row alarms
  // at a falling rate instead of every backoff_base_ms.
  if (cause == ec::provider_failed || cause == ec::integrity_failure)
    ++s.failures;
  metrics::refresh_done(s.key.provider, "transient_failure");
  auto fields = log_fields(self);
  fields["reason"] = reason;
  fields["failures"] = s.failures;
  log::warn(component, "refresh failed", fields);
  auto& cfg = settings(self);
  if (s.failures >= cfg.max_failures && fence) {
    // Stop hammering the provider; the refresh token is kept, so a manual
    // refresh can revive the connection without a new consent.
    give_up(self, *fence, "refresh failing: " + reason);
    return;
  }
  if (fence)
    self->request(s.deps->repository, storage_timeout(self), release_atom_v, s.key, *fence,
                  s.deps->instance_id, reason)
      .then([](bool) {}, [](caf::error&) {});
  auto bound = backoff_bound_ms(std::max(s.failures, 1), cfg.backoff_base_ms, cfg.backoff_cap_ms);
  // Full jitter in [0, bound], drawn afresh for each failure.
  auto jitter = scaled_draw(draw(self, (static_cast<uint64_t>(s.failures) << 48) ^
                                         static_cast<uint64_t>(now_ms(self))),
                            bound + 1);
  auto delay = std::max(jitter, retry_after_s * 1000);
  end_refresh(self);
  if (s.forced || s.force_requested) {
    // Whoever asked for a refresh now learns that it failed, rather than
    // silently getting the old token.
    fail_waiters(self, make_error(cause, "refresh failed: " + reason));
  } else {
    answer_waiters(self);
  }
  s.force_requested = false;
  // A forced refresh that failed early, outside the refresh window, is not
  // retried before the regular plan: nothing is urgent yet.
  // (An API key's plan is its next re-validation, not a deadline.)
  auto plan = current_plan(self);
  auto planned = plan.purpose == timer_purpose::revalidate ? 0 : plan.at_ms;
  auto next = std::max(now_ms(self) + std::max<int64_t>(delay, 1), planned);
  s.retry_not_before_ms = next;
  schedule_tick(self, next);
  after_refresh(self);
}

/// Marks the row needs_reauth (with TOKEN_EXPIRED) under our fence and
/// tells every waiter; no timer stays armed.
void give_up(self_ptr self, int64_t fence, const std::string& reason) {
  auto& s = self->state;
  auto fields = log_fields(self);
  fields["reason"] = reason;
  log::warn(component, "connection needs re-authorization", fields);
  self->request(s.deps->repository, storage_timeout(self), reauth_atom_v, s.key, fence,
                s.deps->instance_id, reason)
    .then(
      [=](token_record& stored) {
        set_record(self, std::move(stored));
        end_refresh(self);
        fail_waiters(self, not_connected_error(self));
        schedule_tick(self, 0);
        after_refresh(self);
      },
      [=](caf::error& err) {
        transient_failure(self, message_of(err), 0, std::nullopt, code_of(err));
      });
}

/// The provider says the grant is dead. Another instance may have rotated
/// the refresh token since we read it: re-read before concluding.
void handle_invalid_grant(self_ptr self, const token_record& leased, int64_t fence,
                          const std::string& reason) {
  auto& s = self->state;
  metrics::refresh_done(s.key.provider, "invalid_grant");
  self->request(s.deps->repository, storage_timeout(self), find_atom_v, s.key)
    .then(
      [=](token_record& row) {
        if (row.refresh_token != leased.refresh_token) {
          // Rotated elsewhere: our attempt used a stale token. Adopt.
          set_record(self, std::move(row));
          finish(self);
          return;
        }
        give_up(self, fence, reason);
      },
      [=](caf::error& err) { transient_failure(self, message_of(err), 0, fence, code_of(err)); });
}

/// Writes refreshed tokens. The provider may already have retired the old
/// refresh token, so while the database is unreachable the write is retried
/// (capped backoff) for as long as it takes; nothing else refreshes
/// meanwhile and nobody gets the new tokens before they are stored.
void store_tokens(self_ptr self, refreshed_tokens tokens, int64_t fence, int32_t attempt) {
  auto& s = self->state;
  self->request(s.deps->repository, storage_timeout(self), complete_atom_v, s.key, fence,
                s.deps->instance_id, tokens)
    .then(
      [=](token_record& stored) {
        set_record(self, std::move(stored));
        self->state.failures = 0;
        metrics::refresh_done(self->state.key.provider, "refreshed");
        log::info(component, "token refreshed", log_fields(self));
        finish(self);
      },
      [=](caf::error& err) {
        auto code = code_of(err);
        if (code == ec::unavailable || code == ec::internal) {
          if (attempt == 0) {
            auto fields = log_fields(self);
            fields["error"] = message_of(err);
            log::error(component, "refreshed tokens not stored yet; retrying", fields);
            // Those waiting now get an answer; later requesters queue.
            fail_waiters(self, make_error(ec::unavailable, "the refreshed token is not stored yet"));
          }
          auto delay = std::min<int64_t>(200LL << std::min(attempt, 5), 5000);
          self->delayed_send(self, ms{delay}, complete_atom_v, tokens, fence, attempt + 1);
          return;
        }
        if (code == ec::not_found) {
          // Disconnected meanwhile: the tokens belong to nobody now.
          end_refresh(self);
          fail_waiters(self, make_error(ec::not_found, "no such connection"));
          unpublish(self);
          self->quit();
          return;
        }
        auto fields = log_fields(self);
        fields["error"] = message_of(err);
        metrics::refresh_done(self->state.key.provider, "store_failed");
        log::error(component, "refreshed tokens could not be stored", fields);
        // Our lease was lost and another writer changed the row: its tokens
        // are the stored truth. Adopt them; never hand out ours.
        auto& st = self->state;
        self->request(st.deps->repository, storage_timeout(self), find_atom_v, st.key)
          .then(
            [=](token_record& row) {
              set_record(self, std::move(row));
              finish(self);
            },
            [=](caf::error& e) {
              transient_failure(self, message_of(e), 0, std::nullopt, code_of(e));
            });
      });
}

/// Calls the token endpoint with a refresh (or JWT-bearer) request and acts
/// on the answer.
void send_token_request(self_ptr self, token_record leased, int64_t fence, bool retried,
                        outbound_request req) {
  auto& s = self->state;
  auto budget = ms{settings(self).provider_timeout_ms + 2000};
  if (req.provider.empty()) // a service account's signed grant
    req.provider = s.key.provider;
  self->request(s.deps->provider_client, budget, req)
    .then(
      [=](outbound_response& res) {
        auto& st = self->state;
        auto answer = oauth::read_token_answer(*st.deps->provider, res);
        switch (answer.result) {
          case oauth::outcome::ok: {
            refreshed_tokens tokens;
            tokens.access_token = std::move(answer.access_token);
            tokens.refresh_token = std::move(answer.refresh_token);
            tokens.expires_at_ms = now_ms(self) + answer.expires_in_s * 1000;
            tokens.scopes = std::move(answer.scopes);
            store_tokens(self, std::move(tokens), fence, 0);
            return;
          }
          case oauth::outcome::invalid_grant:
            handle_invalid_grant(self, leased, fence, answer.reason);
            return;
          case oauth::outcome::possibly_consumed:
            if (!retried) {
              // The provider may have rotated the token without telling us.
              // One retry with the same request, still under our lease.
              send_token_request(self, leased, fence, true, req);
              return;
            }
            [[fallthrough]];
          default:
            transient_failure(self, answer.reason, answer.retry_after_s, fence);
            return;
        }
      },
      [=](caf::error& err) { transient_failure(self, message_of(err), 0, fence); });
}

/// A service account's refresh: the stored credential is the key file and
/// a refresh is a JWT-bearer grant. The key was stored before its checks
/// may have existed, so it goes through the key signer like a new one (the
/// check and the signature run off the workers). A key that is refused can
/// never sign: the connection needs re-authorization.
void sign_service_account_grant(self_ptr self, token_record leased, int64_t fence) {
  auto& s = self->state;
  std::string problem;
  auto key = oauth::parse_service_account(leased.refresh_token.reveal(), problem);
  if (!key) {
    give_up(self, fence, "the stored service-account key is refused: " + problem);
    return;
  }
  if (!s.deps->key_signer) {
    transient_failure(self, "no key signer to sign the service-account grant", 0, fence);
    return;
  }
  auto grant = oauth::service_account_grant(*s.deps->provider, std::move(*key), now_ms(self) / 1000,
                                            settings(self).provider_timeout_ms);
  // A full queue answers at once; a queued signing takes well under this.
  auto budget = ms{settings(self).provider_timeout_ms + 2000};
  self->request(s.deps->key_signer, budget, std::move(grant))
    .then(
      [=](outbound_request& req) {
        send_token_request(self, leased, fence, false, std::move(req));
      },
      [=](caf::error& err) {
        if (code_of(err) == ec::bad_request) {
          give_up(self, fence, "the stored service-account key is refused: " + message_of(err));
          return;
        }
        // Too many signings waiting: back off like any transient failure.
        transient_failure(self, message_of(err), 0, fence, code_of(err));
      });
}

/// An OAuth refresh with `client`'s credentials.
void send_refresh(self_ptr self, token_record leased, int64_t fence,
                  std::shared_ptr<const oauth::client_credentials> client) {
  auto& s = self->state;
  auto metadata = nlohmann::json::parse(leased.metadata, nullptr, false);
  std::optional<outbound_request> req;
  if (client)
    req = oauth::refresh_request(*s.deps->provider, *client, leased.refresh_token,
                                 metadata, settings(self).provider_timeout_ms);
  if (!req) {
    transient_failure(self, "refresh URL cannot be built from the connection", 0, fence);
    return;
  }
  send_token_request(self, std::move(leased), fence, false, std::move(*req));
}

/// Refreshes with the key file of a service account, or with the app that
/// issued the grant: the team's own (read from its connector
/// configuration) or the deployment's.
void call_provider(self_ptr self, token_record leased, int64_t fence) {
  auto& s = self->state;
  if (s.deps->provider->mode == config::auth_mode::service_account) {
    sign_service_account_grant(self, std::move(leased), fence);
    return;
  }
  if (!issued_by_team_app(leased.metadata)) {
    send_refresh(self, std::move(leased), fence, s.deps->client);
    return;
  }
  self->request(s.deps->repository, storage_timeout(self), config_get_atom_v, s.key.team_id,
                s.key.provider)
    .then(
      [=](const connector_config_record& cfg) {
        auto client = team_client(cfg);
        if (!client) {
          transient_failure(self, "the team's OAuth app is no longer configured", 0, fence);
          return;
        }
        send_refresh(self, leased, fence, std::move(client));
      },
      [=](caf::error& err) { transient_failure(self, message_of(err), 0, fence, code_of(err)); });
}

void take_lease(self_ptr self, mode m, int32_t polls) {
  auto& s = self->state;
  self->request(s.deps->repository, storage_timeout(self), lease_atom_v, s.key, s.deps->instance_id,
                settings(self).lease_ms)
    .then(
      [=](token_record& leased) {
        auto& st = self->state;
        auto fence = leased.version;
        auto previous_expiry = st.record ? st.record->expires_at_ms : 0;
        bool newer = leased.expires_at_ms > previous_expiry ||
                     leased.status != grant_status::connected;
        // A forced refresh coalesces with one that another instance
        // completed moments ago.
        bool coalesce = m == mode::force && recently_refreshed(self, leased.refreshed_at_ms);
        if ((m != mode::force && newer) || coalesce || leased.status != grant_status::connected) {
          // Another instance refreshed (or re-connected, or gave up) while
          // we waited: adopt the row, give the lease back.
          set_record(self, std::move(leased));
          self->request(st.deps->repository, storage_timeout(self), release_atom_v, st.key, fence,
                        st.deps->instance_id, std::string{})
            .then([](bool) {}, [](caf::error&) {});
          finish(self);
          return;
        }
        set_record(self, leased);
        if (m == mode::expire || !can_refresh(self)) {
          give_up(self, fence, "token expired; the provider issued no refresh token");
          return;
        }
        call_provider(self, std::move(leased), fence);
      },
      [=](caf::error& err) {
        auto code = code_of(err);
        if (code == ec::conflict) {
          // Another instance is refreshing: wait for its outcome instead of
          // refreshing again, for at most about two lease lengths.
          auto& cfg = settings(self);
          if (polls * cfg.lease_poll_ms < 2 * cfg.lease_ms) {
            self->delayed_send(self, ms{cfg.lease_poll_ms}, retry_atom_v, m == mode::force,
                               polls + 1);
            return;
          }
          transient_failure(self, "refresh lease never became free", 0, std::nullopt,
                            ec::unavailable);
          return;
        }
        if (code == ec::not_found) {
          fail_waiters(self, make_error(ec::not_found, "no such connection"));
          unpublish(self);
          self->quit();
          return;
        }
        transient_failure(self, message_of(err), 0, std::nullopt, code_of(err));
      });
}

/// Checks a stored API key with the provider again. Only a clear refusal
/// marks it needs_reauth; anything transient leaves it alone.
void revalidate(self_ptr self) {
  auto& s = self->state;
  auto fields = nlohmann::json::parse(s.record->metadata, nullptr, false);
  auto req = api_key::validation_request(*s.deps->provider, s.record->access_token.reveal(), fields,
                                         settings(self).provider_timeout_ms);
  if (!req)
    return;
  s.refreshing = true;
  self->request(s.deps->provider_client, ms{settings(self).provider_timeout_ms + 2000}, std::move(*req))
    .then(
      [=](outbound_response& res) {
        auto verdict = api_key::read_validation(*self->state.deps->provider, res);
        if (verdict.result != api_key::verdict::rejected) {
          if (verdict.result == api_key::verdict::unavailable) {
            auto fields = log_fields(self);
            fields["reason"] = verdict.reason;
            log::warn(component, "key re-validation inconclusive", fields);
          }
          end_refresh(self);
          arm_timer(self);
          return;
        }
        auto reason = "the provider rejected the key (" + verdict.reason + ")";
        // Before the lease: from here on the row may say needs_reauth.
        unpublish(self);
        auto& st = self->state;
        self->request(st.deps->repository, storage_timeout(self), lease_atom_v, st.key,
                      st.deps->instance_id, settings(self).lease_ms)
          .then([=](token_record& leased) { give_up(self, leased.version, reason); },
                [=](caf::error&) {
                  end_refresh(self);
                  arm_timer(self);
                });
      },
      [=](caf::error&) {
        end_refresh(self);
        arm_timer(self);
      });
}

caf::error shutting_down_error() {
  return make_error(ec::unavailable, "the service is shutting down");
}

/// How long a request for a still-valid token waits for a refresh that is
/// queued at the refresh gate before it gets the token it has.
constexpr ms slot_patience{100};

/// Takes the lease and refreshes, holding a gate slot (or none: no gate).
void begin_refresh(self_ptr self, mode m) {
  auto& s = self->state;
  if (refreshes_stopped()) {
    // Shutting down: a refresh started now might be answered after the
    // process is gone. The next process plans it again.
    end_refresh(self);
    fail_waiters(self, shutting_down_error());
    return;
  }
  // A forced request that arrived while this one waited for its slot is
  // served by it: it starts after that request.
  if (s.force_requested && m == mode::refresh) {
    m = mode::force;
    s.force_requested = false;
  }
  s.refreshing = true;
  s.forced = m == mode::force;
  take_lease(self, m, 0);
}

/// Asks the refresh gate for a slot; the refresh begins once it comes. A
/// second, urgent claim may overtake a planned one: whichever slot comes
/// second is given back at once.
void claim_slot(self_ptr self, mode m, bool urgent) {
  auto& s = self->state;
  s.awaiting_slot = true;
  s.awaiting_urgent = s.awaiting_urgent || urgent;
  auto gate = s.deps->gate;
  // Planned refreshes are admitted earliest expiry first.
  int64_t expires_at_ms = s.record ? s.record->expires_at_ms : 0;
  self->request(gate, caf::infinite, claim_atom_v, urgent, expires_at_ms)
    .then(
      [=](bool) {
        auto& st = self->state;
        if (!st.awaiting_slot) {
          self->send(gate, release_atom_v);
          return;
        }
        st.awaiting_slot = false;
        st.awaiting_urgent = false;
        st.slot_from = gate;
        begin_refresh(self, m);
      },
      [=](caf::error&) {
        // The gate is gone (the process is stopping): no bound to keep.
        auto& st = self->state;
        if (!st.awaiting_slot)
          return;
        st.awaiting_slot = false;
        st.awaiting_urgent = false;
        begin_refresh(self, m);
      });
}

/// While a planned refresh waits for its gate slot, requests for a token
/// that is still valid may get it after the patience; not while somebody
/// asked for a refresh (forced, or the token expired): that request must
/// not get the old token, and whoever waits beside it gets the new one
/// soon, since its claim goes to the front.
bool may_serve_while_queued(self_ptr self) {
  auto& s = self->state;
  return s.awaiting_slot && !s.awaiting_urgent && !s.force_requested && usable(self) &&
         now_ms(self) - s.awaiting_since_ms >= slot_patience.count();
}

void start_refresh(self_ptr self, mode m) {
  auto& s = self->state;
  // Before the lease: from here on a newer token may be stored at any time.
  unpublish(self);
  if (s.refreshing || s.awaiting_slot) {
    if (m == mode::force)
      s.force_requested = true;
    if (s.awaiting_slot) {
      if (m == mode::force || !usable(self)) {
        // Somebody waits for this refresh now: it goes ahead of the
        // planned ones.
        if (!s.awaiting_urgent && !refreshes_stopped())
          claim_slot(self, m, true);
      } else if (may_serve_while_queued(self)) {
        answer_waiters(self); // still valid: nobody waits in line for it
      }
    }
    return;
  }
  if (refreshes_stopped()) {
    fail_waiters(self, shutting_down_error());
    return;
  }
  if (!s.deps->gate) {
    begin_refresh(self, m);
    return;
  }
  // Back-pressure (actors/refresh_gate.hpp): wait in line for a slot.
  // While the token is still valid, requests that would wait for this
  // refresh get it after a short patience and the refresh waits its turn;
  // a forced one, or one for an expired token, has somebody waiting and
  // goes first.
  bool urgent = m == mode::force || !usable(self);
  s.awaiting_since_ms = now_ms(self);
  if (!urgent)
    self->delayed_send(self, slot_patience, claim_atom_v);
  claim_slot(self, m, urgent);
}

/// Called once the record is known: serve or refresh for queued requesters.
void serve_waiters(self_ptr self) {
  auto& s = self->state;
  if (s.waiters.empty())
    return;
  if (s.record->status != grant_status::connected) {
    fail_waiters(self, not_connected_error(self));
    return;
  }
  bool force = s.force_requested;
  s.force_requested = false;
  if (!force && usable(self) && !in_refresh_window(self)) {
    answer_waiters(self);
    return;
  }
  start_refresh(self, force ? mode::force : mode::refresh);
}

void load(self_ptr self) {
  auto& s = self->state;
  // Read before the row, adopted with it: a writer that holds the key
  // after this point makes the board refuse what this load brings, and
  // until it arrives the record in memory keeps its own, older fence
  // (actors/token_board.hpp).
  uint32_t fence = s.deps->board ? s.deps->board->fence(s.key) : 0;
  self->request(s.deps->repository, storage_timeout(self), find_atom_v, s.key)
    .then(
      [=](token_record& row) {
        // A read that started before a refresh we have since stored must
        // not bring the old tokens back: every write bumps the version.
        // Either way, what is in memory now is at least as new as the row
        // read under `fence`.
        auto& current = self->state.record;
        if (!current || row.version >= current->version)
          set_record(self, std::move(row));
        self->state.board_fence = fence;
        self->state.fence_known = true;
        // A refresh running or waiting for its gate slot meanwhile answers
        // the waiters and re-arms the timer itself; answering here would
        // hand out the old token (to a forced request, too: its flag went
        // to the refresh when an earlier load started it).
        if (self->state.refreshing || self->state.awaiting_slot)
          return;
        arm_timer(self);
        serve_waiters(self);
      },
      [=](caf::error& err) {
        // A refresh running or queued meanwhile (a reload raced a tick)
        // owns the record and answers the waiters; stopping under it could
        // lose the refresh token it is storing.
        if (self->state.refreshing || self->state.awaiting_slot)
          return;
        fail_waiters(self, err);
        // Deleted or never there, failing its integrity check, or storage
        // down. Requests may already be on their way here (the registry
        // delegates to this actor): answer them with the same error for a
        // moment instead of vanishing under them (they would get 503),
        // then stop; the registry spawns afresh next time.
        unpublish(self);
        self->state.record.reset();
        self->state.load_failure = err;
        self->delayed_send(self, std::chrono::seconds(1), remove_atom_v);
      });
}

std::atomic<int64_t> armed_after_hydration{0};

} // namespace

int64_t hydrated_connections_armed() {
  return armed_after_hydration.load(std::memory_order_relaxed);
}

connection_actor::behavior_type
connection(connection_actor::stateful_pointer<connection_state> self, connection_key key,
           std::optional<token_record> initial, connection_deps_ptr deps) {
  auto& s = self->state;
  s.key = std::move(key);
  std::hash<std::string> hash;
  auto h = hash(s.key.team_id) ^ (hash(s.key.user_id) * 31) ^ (hash(s.key.provider) * 961);
  s.key_hash = static_cast<uint32_t>(h ^ (h >> 32));
  s.deps = std::move(deps);
  s.owned = s.deps->owner;
  // Stopped (disconnected, shutting down): nobody is left waiting forever.
  self->set_exit_handler([=](caf::exit_msg& msg) {
    unpublish(self);
    for (auto& p : self->state.confirming)
      self->state.waiters.push_back(std::move(p));
    self->state.confirming.clear();
    fail_waiters(self, make_error(ec::not_found, "the connection was removed"));
    self->quit(msg.reason);
  });
  if (initial) {
    s.record = std::move(initial);
    arm_timer(self);
    armed_after_hydration.fetch_add(1, std::memory_order_relaxed);
  } else {
    load(self);
  }
  return {
    [=](get_token_atom, bool force) -> caf::result<token_grant> {
      auto& st = self->state;
      // The snapshot is dropped by every change of state here; the clock,
      // other instances and a writer's hold on the board retire it too.
      if (!force && st.published && now_ms(self) < st.published->serve_until_ms &&
          !st.published->withdrawn.load(std::memory_order_acquire) && st.deps->board &&
          st.deps->board->current(*st.published))
        return st.published->grant;
      switch (phase_of(self)) {
        case connection_phase::load_failed:
          return st.load_failure;
        case connection_phase::loading:
          // Wait for the row with everyone else.
          st.force_requested = st.force_requested || force;
          st.waiters.push_back(self->make_response_promise<token_grant>());
          return st.waiters.back();
        case connection_phase::needs_reauth:
          return not_connected_error(self);
        case connection_phase::serving:
        case connection_phase::refreshing:
        case connection_phase::backing_off:
          break;
      }
      if (st.record->kind != connection_kind::oauth)
        return serve_newest(self);
      if (!force && usable(self) && !in_refresh_window(self))
        return serve_newest(self);
      if (force && !st.refreshing && usable(self) && recently_refreshed(self, st.record->refreshed_at_ms))
        // Coalesced with the refresh that issued these tokens moments ago;
        // a refresh in flight is joined instead (below).
        return serve_newest(self);
      if (!force && backing_off(self)) {
        // Backing off after a failure: the valid token is served, otherwise
        // the request waits for the armed retry instead of starting one.
        if (usable(self))
          return serve_newest(self);
        st.waiters.push_back(self->make_response_promise<token_grant>());
        return st.waiters.back();
      }
      if (!force && !can_refresh(self)) {
        if (usable(self))
          return serve_newest(self);
        // Expired and not refreshable: mark it (once) and report.
        if (refreshes_stopped())
          return shutting_down_error();
        // start_refresh may answer the waiters at once: keep our promise.
        auto promise = self->make_response_promise<token_grant>();
        st.waiters.push_back(promise);
        start_refresh(self, mode::expire);
        return promise;
      }
      if (force && !can_refresh(self))
        return make_error(ec::bad_request, "this connection cannot be refreshed");
      if (refreshes_stopped())
        return shutting_down_error();
      // start_refresh may answer the waiters at once (a still-valid token
      // whose refresh waits at the gate): keep our promise.
      auto promise = self->make_response_promise<token_grant>();
      st.waiters.push_back(promise);
      start_refresh(self, force ? mode::force : mode::refresh);
      return promise;
    },
    [=](status_atom) -> connection_status {
      auto& st = self->state;
      connection_status out;
      out.phase = phase_of(self);
      if (st.record) {
        out.status = st.record->status;
        out.reason = st.record->reason;
        out.expires_at_ms = st.record->expires_at_ms;
        out.version = st.record->version;
      }
      out.next_refresh_at_ms = st.next_refresh_at_ms;
      out.failures = st.failures;
      out.refreshing = st.refreshing;
      return out;
    },
    [=](configure_atom, const registry_deps_ptr& deps) {
      // A configuration reload: new catalog entry, app and tunables, built
      // by the registry once per provider.
      // New settings may move the refresh window.
      unpublish(self);
      auto it = deps->running_connection_deps.find(self->state.key.provider);
      if (it != deps->running_connection_deps.end())
        self->state.deps = it->second;
      if (self->state.record && !self->state.refreshing)
        arm_timer(self);
    },
    [=](remove_atom) {
      // The pause after a failed load is over (unless a reload since then
      // found the row).
      if (self->state.load_failure) {
        unpublish(self);
        self->quit();
      }
    },
    [=](reload_atom) {
      // Written elsewhere: nothing from memory until it is read again.
      unpublish(self);
      self->state.load_failure = caf::error{};
      if (self->state.refreshing) {
        self->state.reload_pending = true;
        return;
      }
      self->state.failures = 0;
      self->state.retry_not_before_ms = 0;
      load(self);
    },
    [=](tick_atom, uint64_t generation) {
      auto& st = self->state;
      if (generation != st.timer_generation || st.refreshing || !st.record)
        return;
      if (st.next_refresh_at_ms > now_ms(self)) {
        // The wheel's early wake-up: now the precise timer.
        schedule_tick(self, st.next_refresh_at_ms);
        return;
      }
      if (st.record->status != grant_status::connected)
        return;
      if (st.record->kind == connection_kind::api_key) {
        if (!refreshes_stopped())
          revalidate(self);
        return;
      }
      start_refresh(self, can_refresh(self) ? mode::refresh : mode::expire);
    },
    [=](claim_atom) {
      // The patience for a gate slot is over: requests for a token that is
      // still valid get it now.
      if (may_serve_while_queued(self))
        answer_waiters(self);
    },
    [=](retry_atom, bool force, int32_t polls) {
      take_lease(self, force ? mode::force : mode::refresh, polls);
    },
    [=](complete_atom, refreshed_tokens& tokens, int64_t fence, int32_t attempt) {
      store_tokens(self, std::move(tokens), fence, attempt);
    },
    [=](own_atom) {
      auto& st = self->state;
      if (st.owned)
        return;
      st.owned = true;
      if (st.record && !st.refreshing)
        arm_timer(self);
    },
    [=](handover_atom) -> caf::result<bool> {
      auto& st = self->state;
      unpublish(self);
      st.owned = false;
      ++st.timer_generation;
      st.handovers.push_back(self->make_response_promise<bool>());
      auto promise = st.handovers.back();
      finish_handover_if_idle(self);
      return promise;
    },
  };
}

} // namespace cm

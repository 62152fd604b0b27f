#include "actors/webhook_dispatcher.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <sodium.h>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/time.hpp"
#include "config/yaml_schema.hpp"

namespace cm {

namespace {

using self_ptr = webhook_dispatcher_actor::stateful_pointer<webhook_dispatcher_state>;

constexpr int32_t batch_size = 16;
/// retry_in_ms values understood by storage::outbox::finish.
constexpr int64_t delivered = -1;
constexpr int64_t given_up = -2;

const webhook_endpoint* find_endpoint(const webhook_settings& s, const std::string& name) {
  for (auto& e : s.endpoints)
    if (e.name == name)
      return &e;
  return nullptr;
}

/// min(cap, base * 2^(attempts-1)), scaled by a random factor in [0.5, 1].
int64_t retry_delay_ms(self_ptr self, int32_t attempts) {
  auto& p = self->state.settings->params;
  int64_t bound = p.webhook_retry_base_ms;
  for (int32_t i = 1; i < attempts && bound < p.webhook_retry_cap_ms; ++i)
    bound *= 2;
  bound = std::min(bound, p.webhook_retry_cap_ms);
  std::uniform_int_distribution<int64_t> half(bound / 2, bound);
  return half(self->state.rng);
}

void tick(self_ptr self);

void record(self_ptr self, const webhook_job& job, int32_t status, const std::string& error,
            int64_t retry_in_ms) {
  metrics::webhook_attempt(retry_in_ms == delivered  ? "delivered"
                           : retry_in_ms == given_up ? "given_up"
                                                     : "failed");
  self->request(self->state.storage, std::chrono::seconds(10), delivered_atom_v, job, status,
                error, retry_in_ms)
    .then([](bool) {},
          [job](const caf::error&) {
            // The claim lease runs out and the delivery is attempted again:
            // at least once, never lost.
            log::warn("events", "could not record a webhook attempt",
                      {{"webhook", job.webhook}, {"event_id", job.event_id}});
          });
  if (--self->state.in_flight == 0 && self->state.tick_again)
    tick(self);
}

void attempt(self_ptr self, const webhook_job& job) {
  auto settings = self->state.settings;
  auto* endpoint = find_endpoint(*settings, job.webhook);
  if (endpoint == nullptr) {
    // Removed by a reload after the claim: another instance (or this one,
    // should the webhook come back) takes it when the claim runs out.
    if (--self->state.in_flight == 0 && self->state.tick_again)
      tick(self);
    return;
  }
  auto now_s = unix_now_ms() / 1000;
  outbound_request req;
  req.method = "POST";
  req.url = endpoint->url;
  req.body = job.payload;
  req.timeout_ms = settings->params.webhook_timeout_ms;
  req.max_response_bytes = 64 * 1024;
  req.provider = "webhook";
  req.headers = {{"Content-Type", "application/json"},
                 {"User-Agent", "connector-manager-webhooks"},
                 {"X-Connector-Event-Id", job.event_id},
                 {"X-Connector-Timestamp", std::to_string(now_s)},
                 {"X-Connector-Delivery-Attempt", std::to_string(job.attempts + 1)},
                 {"X-Connector-Signature", webhook_signature(endpoint->key, now_s, job.payload)}};
  auto max_attempts = settings->params.webhook_max_attempts;
  auto on_failure = [self, job, max_attempts](int32_t status, const std::string& error) {
    auto attempts = job.attempts + 1;
    bool last = attempts >= max_attempts;
    auto retry_in = last ? given_up : retry_delay_ms(self, attempts);
    log::warn("events", last ? "webhook delivery given up" : "webhook delivery failed; will retry",
              {{"webhook", job.webhook}, {"event_id", job.event_id}, {"status", status},
               {"attempts", attempts}, {"retry_in_ms", retry_in}});
    record(self, job, status, error, retry_in);
  };
  self->request(self->state.http, std::chrono::milliseconds(req.timeout_ms + 5000), std::move(req))
    .then(
      [self, job, on_failure](const outbound_response& res) {
        if (res.ok()) {
          log::info("events", "webhook delivered",
                    {{"webhook", job.webhook}, {"event_id", job.event_id},
                     {"attempts", job.attempts + 1}});
          record(self, job, static_cast<int32_t>(res.status), "", delivered);
        } else {
          on_failure(static_cast<int32_t>(res.status),
                     res.error != transport_error::none ? to_string(res.error) : "http status");
        }
      },
      [on_failure](const caf::error&) { on_failure(0, "no answer"); });
}

/// Counts the deliveries waiting for GET /metrics, at most every 10 s:
/// one indexed count, not one per poll.
void count_backlog(self_ptr self) {
  auto now = std::chrono::steady_clock::now();
  if (now < self->state.next_backlog_count)
    return;
  self->state.next_backlog_count = now + std::chrono::seconds(10);
  self->request(self->state.storage, std::chrono::seconds(10), backlog_atom_v)
    .then([](int64_t waiting) { metrics::set_webhook_backlog(waiting); },
          [](const caf::error&) {});
}

void tick(self_ptr self) {
  auto& st = self->state;
  if (st.settings->endpoints.empty())
    return;
  if (st.in_flight > 0) {
    st.tick_again = true;
    return;
  }
  st.tick_again = false;
  // The claim outlasts the attempt, so no other instance posts it meanwhile.
  auto lease_ms = st.settings->params.webhook_timeout_ms * 2 + 5000;
  st.in_flight = 1; // the claim itself
  self->request(st.storage, std::chrono::seconds(10), claim_atom_v, batch_size, lease_ms)
    .then(
      [self](const webhook_jobs& jobs) {
        auto& st = self->state;
        st.in_flight = static_cast<int32_t>(jobs.size());
        if (jobs.size() == static_cast<size_t>(batch_size))
          st.tick_again = true;
        for (auto& job : jobs)
          attempt(self, job);
        if (st.in_flight == 0 && st.tick_again && !jobs.empty())
          tick(self);
      },
      [self](const caf::error&) { self->state.in_flight = 0; });
}

} // namespace

webhook_settings_ptr load_webhook_settings(const config::events_config& cfg) {
  auto out = std::make_shared<webhook_settings>();
  out->params = cfg;
  for (auto& hook : cfg.webhooks) {
    webhook_endpoint e;
    e.name = hook.name;
    e.url = hook.url;
    e.topics = hook.topics;
    if (!hook.secret_file.empty()) {
      std::ifstream in(hook.secret_file, std::ios::binary);
      if (!in)
        throw config::config_error(hook.secret_file + ": cannot open webhook secret file");
      std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
      while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
        text.pop_back();
      e.key = secret(std::move(text));
    } else {
      e.key = secret(hook.secret);
    }
    if (e.key.size() < 16)
      throw config::config_error("events.webhooks." + hook.name +
                                 ": the secret must be at least 16 bytes");
    out->endpoints.push_back(std::move(e));
  }
  // The copy in params keeps no secret.
  for (auto& hook : out->params.webhooks)
    hook.secret.clear();
  return out;
}

webhook_targets webhook_targets_of(const webhook_settings& settings) {
  webhook_targets out;
  for (auto& e : settings.endpoints)
    out.push_back({e.name, e.topics});
  return out;
}

std::string webhook_signature(const secret& key, int64_t unix_seconds, const std::string& body) {
  auto ts = std::to_string(unix_seconds);
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(key.view().data()),
                              key.view().size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(ts.data()),
                                ts.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>("."), 1);
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(body.data()),
                                body.size());
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_final(&state, mac);
  char hex[2 * sizeof mac + 1];
  sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
  return "t=" + ts + ",v1=" + hex;
}

webhook_dispatcher_actor::behavior_type
webhook_dispatcher(webhook_dispatcher_actor::stateful_pointer<webhook_dispatcher_state> self,
                   event_store_actor storage, provider_client_actor http,
                   webhook_settings_ptr settings) {
  self->state.storage = std::move(storage);
  self->state.http = std::move(http);
  self->state.settings = std::move(settings);
  self->delayed_send(self, std::chrono::milliseconds(self->state.settings->params.poll_ms),
                     tick_atom_v, true);
  return {
    [=](tick_atom) { tick(self); },
    [=](tick_atom, bool) {
      tick(self);
      count_backlog(self);
      self->delayed_send(self, std::chrono::milliseconds(self->state.settings->params.poll_ms),
                         tick_atom_v, true);
    },
    [=](configure_atom, webhook_settings_ptr& settings) {
      self->state.settings = std::move(settings);
    },
  };
}

} // namespace cm

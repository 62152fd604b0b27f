#include "common/metrics.hpp"

#include <memory>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace cm::metrics {

namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

/// The process's registry and its families, made on first use and kept to
/// the end of the process (actors stopping late still find them).
struct all_metrics {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& refreshes =
    BuildCounter()
      .Name("cm_refreshes_total")
      .Help("Token refreshes that ended, by provider and outcome (refreshed, invalid_grant, "
            "transient_failure, store_failed)")
      .Register(*registry);
  prometheus::Family<prometheus::Histogram>& provider_calls =
    BuildHistogram()
      .Name("cm_provider_request_duration_seconds")
      .Help("Calls to providers and webhook endpoints, by provider and result (2xx, 3xx, 4xx, "
            "5xx, transport_error)")
      .Register(*registry);
  prometheus::Family<prometheus::Counter>& token_reads =
    BuildCounter()
      .Name("cm_token_reads_total")
      .Help("Tokens handed to services, by how they were answered (snapshot: the fast lane; "
            "actor: through the connection actor; message: the token service)")
      .Register(*registry);
  prometheus::Counter& reads_snapshot = token_reads.Add({{"via", "snapshot"}});
  prometheus::Counter& reads_actor = token_reads.Add({{"via", "actor"}});
  prometheus::Counter& reads_message = token_reads.Add({{"via", "message"}});
  prometheus::Family<prometheus::Histogram>& http =
    BuildHistogram()
      .Name("cm_http_request_duration_seconds")
      .Help("HTTP requests from arrival to answer, by route pattern, method and status")
      .Register(*registry);
  prometheus::Family<prometheus::Counter>& webhook_attempts =
    BuildCounter()
      .Name("cm_webhook_attempts_total")
      .Help("Webhook delivery attempts, by outcome (delivered, failed, given_up)")
      .Register(*registry);
  prometheus::Gauge& webhook_backlog =
    BuildGauge()
      .Name("cm_webhook_backlog")
      .Help("Webhook deliveries waiting in the outbox (not delivered, not given up)")
      .Register(*registry)
      .Add({});
  prometheus::Gauge& connection_actors =
    BuildGauge()
      .Name("cm_connection_actors")
      .Help("Connection actors alive in this instance")
      .Register(*registry)
      .Add({});
  prometheus::Family<prometheus::Gauge>& shard_family =
    BuildGauge()
      .Name("cm_shards")
      .Help("Shards of the deployment (state=total) and those this instance owns (state=owned)")
      .Register(*registry);
  prometheus::Gauge& shards_owned = shard_family.Add({{"state", "owned"}});
  prometheus::Gauge& shards_total = shard_family.Add({{"state", "total"}});
  prometheus::Gauge& audit_waiting =
    BuildGauge()
      .Name("cm_audit_rows_waiting")
      .Help("Audit rows of token reads not written yet")
      .Register(*registry)
      .Add({});
  prometheus::Family<prometheus::Counter>& proxy_calls =
    BuildCounter()
      .Name("cm_proxy_requests_total")
      .Help("Calls services made through the proxy, by provider and outcome (the provider's "
            "status class 2xx..5xx; refused: turned away before any call; timeout, "
            "unreachable, too_large: no usable answer)")
      .Register(*registry);
  prometheus::Family<prometheus::Counter>& proxy_refreshes =
    BuildCounter()
      .Name("cm_proxy_token_refreshes_total")
      .Help("Forced refreshes after a provider answered a proxied call with 401, by provider")
      .Register(*registry);
  prometheus::Family<prometheus::Counter>& kafka_events =
    BuildCounter()
      .Name("cm_kafka_events_total")
      .Help("Outbox events the Kafka relay settled, by outcome (relayed: acknowledged; parked: "
            "refused for good; requeued: a parked event sent again and acknowledged)")
      .Register(*registry);
  prometheus::Counter& kafka_restarts =
    BuildCounter()
      .Name("cm_kafka_relay_restarts_total")
      .Help("Times the Kafka relay produced again from its cursor (a message timed out, the "
            "producer failed, the lock was lost)")
      .Register(*registry)
      .Add({});
  prometheus::Gauge& kafka_leading =
    BuildGauge()
      .Name("cm_kafka_relay_leading")
      .Help("1 when this instance relays the outbox to Kafka (one instance does)")
      .Register(*registry)
      .Add({});
  prometheus::Gauge& kafka_backlog =
    BuildGauge()
      .Name("cm_kafka_relay_backlog_events")
      .Help("Outbox events not yet acknowledged by Kafka (reported by the relaying instance)")
      .Register(*registry)
      .Add({});
  prometheus::Gauge& kafka_oldest =
    BuildGauge()
      .Name("cm_kafka_relay_oldest_waiting_seconds")
      .Help("Age of the oldest outbox event not yet acknowledged by Kafka (reported by the "
            "relaying instance)")
      .Register(*registry)
      .Add({});
  prometheus::Gauge& kafka_parked =
    BuildGauge()
      .Name("cm_kafka_parked_events")
      .Help("Events Kafka refused for good, waiting for an operator (connector-manager kafka "
            "requeue); reported by the relaying instance")
      .Register(*registry)
      .Add({});
  prometheus::Gauge& kafka_brokers_down =
    BuildGauge()
      .Name("cm_kafka_brokers_down")
      .Help("1 when librdkafka reports every broker down and nothing was acknowledged since")
      .Register(*registry)
      .Add({});
  prometheus::Gauge& audit_refused =
    BuildGauge()
      .Name("cm_token_reads_refused")
      .Help("Token reads refused since start because the audit queue was full")
      .Register(*registry)
      .Add({});
};

all_metrics& m() {
  static auto* instance = new all_metrics();
  return *instance;
}

const prometheus::Histogram::BucketBoundaries& provider_buckets() {
  static const prometheus::Histogram::BucketBoundaries b = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                            1,    2.5,   5,    10,  30};
  return b;
}

const prometheus::Histogram::BucketBoundaries& http_buckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return b;
}

/// Children by their joined label values, per thread: the family's own
/// lookup builds a label map and takes a lock on every call. Each caller
/// starts its key with a letter of its own, so families sharing a metric
/// type never share a key.
template <class Metric, class Make>
Metric& cached(std::string key, Make make) {
  thread_local std::unordered_map<std::string, Metric*> children;
  auto it = children.find(key);
  if (it != children.end())
    return *it->second;
  auto& made = make();
  children.emplace(std::move(key), &made);
  return made;
}

} // namespace

void refresh_done(std::string_view provider, std::string_view outcome) {
  std::string key = "r";
  key.append(provider).push_back('\0');
  key.append(outcome);
  cached<prometheus::Counter>(std::move(key), [&]() -> prometheus::Counter& {
    return m().refreshes.Add({{"provider", std::string(provider)},
                              {"outcome", std::string(outcome)}});
  }).Increment();
}

void provider_call(std::string_view provider, std::string_view result, double seconds) {
  std::string key = "p";
  key.append(provider).push_back('\0');
  key.append(result);
  cached<prometheus::Histogram>(std::move(key), [&]() -> prometheus::Histogram& {
    return m().provider_calls.Add(
      {{"provider", provider.empty() ? std::string("other") : std::string(provider)},
       {"result", std::string(result)}},
      provider_buckets());
  }).Observe(seconds);
}

void token_read(token_read_via via) {
  switch (via) {
    case token_read_via::snapshot: m().reads_snapshot.Increment(); return;
    case token_read_via::actor: m().reads_actor.Increment(); return;
    case token_read_via::message: m().reads_message.Increment(); return;
  }
}

void http_request(std::string_view route, std::string_view method, int status, double seconds) {
  std::string key = "h";
  key.reserve(route.size() + method.size() + 7);
  key.append(route).push_back('\0');
  key.append(method).push_back('\0');
  key.append(std::to_string(status));
  cached<prometheus::Histogram>(std::move(key), [&]() -> prometheus::Histogram& {
    return m().http.Add({{"route", std::string(route)},
                         {"method", std::string(method)},
                         {"status", std::to_string(status)}},
                        http_buckets());
  }).Observe(seconds);
}

void webhook_attempt(std::string_view outcome) {
  cached<prometheus::Counter>("w" + std::string(outcome), [&]() -> prometheus::Counter& {
    return m().webhook_attempts.Add({{"outcome", std::string(outcome)}});
  }).Increment();
}

void kafka_event(std::string_view outcome) {
  cached<prometheus::Counter>("k" + std::string(outcome), [&]() -> prometheus::Counter& {
    return m().kafka_events.Add({{"outcome", std::string(outcome)}});
  }).Increment();
}

void proxy_call(std::string_view provider, std::string_view outcome) {
  std::string key = "x";
  key.append(provider).push_back('\0');
  key.append(outcome);
  cached<prometheus::Counter>(std::move(key), [&]() -> prometheus::Counter& {
    return m().proxy_calls.Add({{"provider", std::string(provider)},
                                {"outcome", std::string(outcome)}});
  }).Increment();
}

void proxy_refresh(std::string_view provider) {
  cached<prometheus::Counter>("X" + std::string(provider), [&]() -> prometheus::Counter& {
    return m().proxy_refreshes.Add({{"provider", std::string(provider)}});
  }).Increment();
}

void kafka_restart() { m().kafka_restarts.Increment(); }

void set_kafka(bool leading, int64_t backlog, double oldest_waiting_seconds,
               int64_t parked_waiting, bool brokers_down) {
  auto& all = m();
  all.kafka_leading.Set(leading ? 1 : 0);
  all.kafka_backlog.Set(static_cast<double>(backlog));
  all.kafka_oldest.Set(oldest_waiting_seconds);
  all.kafka_parked.Set(static_cast<double>(parked_waiting));
  all.kafka_brokers_down.Set(brokers_down ? 1 : 0);
}

void set_webhook_backlog(int64_t waiting) { m().webhook_backlog.Set(static_cast<double>(waiting)); }

void connection_actor_started() { m().connection_actors.Increment(); }

void connection_actor_stopped() { m().connection_actors.Decrement(); }

void set_shards(int64_t owned, int64_t total) {
  m().shards_owned.Set(static_cast<double>(owned));
  m().shards_total.Set(static_cast<double>(total));
}

void set_audit(int64_t waiting, int64_t refused) {
  m().audit_waiting.Set(static_cast<double>(waiting));
  m().audit_refused.Set(static_cast<double>(refused));
}

std::string render() {
  std::ostringstream out;
  prometheus::TextSerializer{}.Serialize(out, m().registry->Collect());
  return out.str();
}

} // namespace cm::metrics

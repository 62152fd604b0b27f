#include "api/system_routes.hpp"

#include "api/openapi.hpp"
#include "api/schemas.hpp"
#include "common/metrics.hpp"

namespace cm {

namespace {

nlohmann::json kafka_health(const kafka::relay_status& k) {
  const char* state = k.paused ? "paused" : !k.leading ? "standby"
                                           : k.brokers_down ? "brokers_down"
                                                            : "relaying";
  nlohmann::json out = {{"status", state},
                        {"relayed", k.relayed.load()},
                        {"parked", k.parked.load()},
                        {"requeued", k.requeued.load()},
                        {"restarts", k.restarts.load()}};
  if (k.leading)
    out.update({{"backlog", k.backlog.load()},
                {"oldest_waiting_s", static_cast<double>(k.oldest_waiting_ms.load()) / 1000.0},
                {"parked_waiting", k.parked_stored.load()}});
  return out;
}

/// GET /api/v1/health: reachability and latency of every dependency.
void health(const call& c) {
  auto ex = c.ex;
  auto shards = c.ctx().shards;
  auto forwarding = c.ctx().forwarding;
  auto board = c.ctx().board;
  auto audit = c.ctx().audit;
  auto kafka = c.ctx().kafka;
  c.self->request(c.ctx().storage, std::min(budget(c), std::chrono::milliseconds{3000}),
                  ping_atom_v)
    .then(
      [ex, shards, forwarding, board, audit, kafka](int64_t latency_us) {
        nlohmann::json body = {
          {"status", "healthy"},
          {"checks", {{"postgres", {{"status", "up"}, {"latency_ms", latency_us / 1000.0}}}}}};
        // How the work is split (docs/DECISIONS.md, "Shards and their owners").
        if (shards) {
          body["shards"] = {{"owned", shards->owned_count()},
                            {"total", shards->shard_count()},
                            {"instances", shards->members()}};
          // Requests for other instances' shards: answered by the owner,
          // or served here after the owner did not answer in time.
          if (forwarding)
            body["shards"]["forwarded"] = {
              {"answered", forwarding->forwarded.load(std::memory_order_relaxed)},
              {"served_here", forwarding->fallbacks.load(std::memory_order_relaxed)}};
        }
        // Token reads served from snapshots, and their audit rows waiting
        // to be written (docs/DECISIONS.md, "The token route at wire speed").
        if (board && audit)
          body["tokens"] = {{"served_from_snapshots", board->served()},
                            {"audit_waiting", audit->size()},
                            {"audit_refused", audit->refused()}};
        // The Kafka relay (docs/DECISIONS.md, "Kafka topics from the
        // outbox"): brokers away keep the service healthy, the events wait
        // in the outbox; the backlog says how long.
        if (kafka)
          body["kafka"] = kafka_health(*kafka);
        ex->reply_json(200, body);
      },
      [ex](const caf::error& err) {
        auto res = http::json_response(
          503, {{"status", "unhealthy"},
                {"checks", {{"postgres", {{"status", "down"}, {"error", message_of(err)}}}}}});
        res.headers.emplace_back("Retry-After", "1");
        ex->reply(std::move(res));
      });
}


/// GET /api/v1/openapi.json: the API as OpenAPI 3.1, built from the route
/// table (api/openapi.hpp) once per configuration.
void openapi(const call& c) {
  c.ex->reply_json(200, api::openapi_document(c.ctx().cfg.oauth.public_base_url,
                                              c.ctx().cfg.auth.service_header));
}

/// The gauges read at each scrape.
void refresh_scrape_gauges(const front_context& ctx) {
  if (ctx.shards)
    metrics::set_shards(static_cast<int64_t>(ctx.shards->owned_count()),
                        static_cast<int64_t>(ctx.shards->shard_count()));
  if (ctx.audit)
    metrics::set_audit(static_cast<int64_t>(ctx.audit->size()),
                       static_cast<int64_t>(ctx.audit->refused()));
  if (ctx.kafka)
    metrics::set_kafka(ctx.kafka->leading, ctx.kafka->backlog,
                       static_cast<double>(ctx.kafka->oldest_waiting_ms) / 1000.0,
                       ctx.kafka->parked_stored, ctx.kafka->brokers_down);
}

http::response scrape(const front_context& ctx) {
  refresh_scrape_gauges(ctx);
  http::response res;
  res.content_type = metrics::content_type;
  res.body = metrics::render();
  return res;
}

/// GET /metrics (services with METRICS).
void metrics_route(const call& c) {
  if (!c.ctx().cfg.metrics.enabled) {
    c.ex->reply_error(ec::not_found, "metrics are turned off (metrics.enabled)");
    return;
  }
  c.ex->reply(scrape(c.ctx()));
}

} // namespace

bool metrics_lane::answer(const http::request& req, http::response& out, const char*& caller) {
  if (req.method != "GET" || req.path != "/metrics")
    return false;
  caller = "anonymous";
  out = scrape(*ctx_);
  return true;
}

std::vector<api::route> system_routes() {
  using http::access;
  constexpr auto unmetered = http::metering::unmetered;
  auto dependency = api::object_of({{"status", {{"type", "string"}, {"enum", {"up", "down"}}}},
                                    {"latency_ms", {{"type", "number"}}},
                                    {"error", {{"type", "string"}}}},
                                   {"status"});
  auto health_body = api::object_of(
    {{"status", {{"type", "string"}, {"enum", {"healthy", "unhealthy"}}}},
     {"checks", api::object_of({{"postgres", dependency}})},
     {"shards", {{"type", "object"},
                 {"description", "owned, total, instances, and forwarded.{answered,served_here}"}}},
     {"tokens", api::object_of({{"served_from_snapshots", {{"type", "integer"}}},
                                {"audit_waiting", {{"type", "integer"}}},
                                {"audit_refused", {{"type", "integer"}}}})},
     {"kafka",
      api::object_of(
        {{"status", {{"type", "string"},
                     {"enum", {"relaying", "standby", "brokers_down", "paused"}},
                     {"description", "relaying: this instance holds the relay's lock; standby: "
                                     "another one does; brokers_down: librdkafka reports every "
                                     "broker down (events wait in the outbox); paused: the "
                                     "database (for the relay or its outbox reader) or the "
                                     "producer failed, retried every poll"}}},
         {"relayed", {{"type", "integer"}}},
         {"parked", {{"type", "integer"}}},
         {"requeued", {{"type", "integer"}}},
         {"restarts", {{"type", "integer"}}},
         {"backlog", {{"type", "integer"}, {"description", "relaying instance only"}}},
         {"oldest_waiting_s", {{"type", "number"}, {"description", "relaying instance only"}}},
         {"parked_waiting", {{"type", "integer"}, {"description", "relaying instance only"}}}},
        {"status", "relayed", "parked", "requeued", "restarts"})}},
    {"status", "checks"});
  return {
    {"GET", "/api/v1/health", access::open, "", health, unmetered,
     {"getHealth", "system", "Reachability of every dependency",
      "No authentication. 200 while PostgreSQL answers, else 503 with Retry-After; also "
      "reports the shards this instance owns, its token reads and the Kafka relay "
      "(when events.kafka is set; brokers that are down do not make it unhealthy).",
      {}, nullptr,
      {{200, "healthy", health_body},
       {503, "a dependency is down", health_body, "application/json",
        {{"Retry-After", "seconds to wait"}}}}}},
    {"GET", "/metrics", access::service, http::scope_metrics, metrics_route, unmetered,
     {"getMetrics", "system", "Metrics in the Prometheus text format",
      "Refreshes by provider and outcome, provider call latency, token reads, HTTP latency by "
      "route and status, the webhook backlog and attempts, live connection actors, shards "
      "owned, the audit queue, the Kafka relay. Also served without a token on "
      "metrics.address:metrics.port when that is set. 404 when metrics.enabled is false.",
      {}, nullptr,
      {{200, "the metrics", {{"type", "string"}}, "text/plain"}},
      {404}}},
    {"GET", "/api/v1/openapi.json", access::open, "", openapi, unmetered,
     {"getOpenApi", "system", "This API as OpenAPI 3.1",
      "Generated from the route table, so every route the service answers is here.",
      {}, nullptr,
      {{200, "the OpenAPI document", {{"type", "object"}}}}}},
  };
}

} // namespace cm

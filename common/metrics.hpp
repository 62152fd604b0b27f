// What GET /metrics reports (Prometheus text format, prometheus-cpp):
// refreshes by provider and outcome, provider call latency, token reads,
// HTTP latency by route and status, the webhook backlog and attempts, live
// connection actors, shards owned, the audit queue, the Kafka relay. One registry per
// process; every function here is thread-safe and cheap enough for the
// token route (the children a hot path uses are looked up once).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cm::metrics {

/// A refresh of `provider`'s connection ended: "refreshed",
/// "invalid_grant" (needs_reauth), "transient_failure" (backs off) or
/// "store_failed".
void refresh_done(std::string_view provider, std::string_view outcome);

/// A call to a provider (or a webhook endpoint) took `seconds`; `result`
/// is "2xx", "3xx", "4xx", "5xx" or "transport_error".
void provider_call(std::string_view provider, std::string_view result, double seconds);

/// How a token read was answered: "snapshot" (the fast lane), "actor"
/// (through the connection actor over HTTP) or "message" (the token
/// service).
enum class token_read_via { snapshot, actor, message };
void token_read(token_read_via via);

/// One HTTP answer: the route's pattern ("unmatched" when none), its
/// method and status, and how long from the request's arrival.
void http_request(std::string_view route, std::string_view method, int status, double seconds);

/// A webhook delivery attempt: "delivered", "failed" (retried) or
/// "given_up".
void webhook_attempt(std::string_view outcome);

/// Webhook deliveries waiting (not delivered, not given up).
void set_webhook_backlog(int64_t waiting);

/// A connection actor started or stopped.
void connection_actor_started();
void connection_actor_stopped();

/// Shards this instance owns, of how many; audit rows waiting and token
/// reads refused because of them. Set at each scrape.
void set_shards(int64_t owned, int64_t total);
void set_audit(int64_t waiting, int64_t refused);

/// A call through the proxy ended: the provider's status class ("2xx" ..
/// "5xx"), or "refused", "timeout", "unreachable", "too_large",
/// "client_gone" (a streamed answer whose caller hung up); and a
/// forced refresh after the provider's 401.
void proxy_call(std::string_view provider, std::string_view outcome);
void proxy_refresh(std::string_view provider);

/// The Kafka relay (kafka/relay.hpp): an event acknowledged
/// ("relayed"), refused for good ("parked"), or re-queued by an operator
/// and acknowledged ("requeued"); and a restart from the cursor.
void kafka_event(std::string_view outcome);
void kafka_restart();
/// Its state, set at each scrape: whether this instance relays, and the
/// leader's backlog (events after the cursor, the oldest one's age) and
/// parked events waiting for an operator; whether every broker is down.
void set_kafka(bool leading, int64_t backlog, double oldest_waiting_seconds,
               int64_t parked_waiting, bool brokers_down);

/// Everything, in the Prometheus text exposition format (version 0.0.4).
std::string render();

/// The content type of render()'s text.
inline constexpr const char* content_type = "text/plain; version=0.0.4; charset=utf-8";

} // namespace cm::metrics

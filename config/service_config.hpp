// The service file: where to listen, which database, which keys, who may
// call. Loaded once at start-up (and again by a hot reload), validated
// strictly, and overridable key by key from `CM_` environment variables.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/log.hpp"

namespace cm::config {

struct listen_config {
  std::string address = "127.0.0.1";
  uint16_t port = 8080;
  int threads = 2;
  size_t max_request_bytes = 1 << 20;
  std::chrono::milliseconds request_timeout{10000};
  /// Request line plus headers (http/request_guard.hpp).
  size_t max_header_bytes = 16 * 1024;
  /// From a request's first byte to the end of its headers.
  std::chrono::milliseconds header_timeout{10000};
  /// From the end of the headers to the last body byte.
  std::chrono::milliseconds body_timeout{30000};
};

struct database_config {
  /// libpq connection string or URI.
  std::string url;
  int connect_timeout_s = 3;
  int statement_timeout_ms = 5000;
  std::chrono::milliseconds reconnect_min_backoff{100};
  std::chrono::milliseconds reconnect_max_backoff{2000};
};

struct service_token_config {
  std::string name;
  /// Lower-case hex SHA-256 of the token; the token itself is never stored.
  std::string sha256_hex;
  std::vector<std::string> scopes;
};

struct auth_config {
  std::string hs256_secret_file;
  std::string rs256_public_key_file;
  /// When set, a token's `iss` must equal it (and mint-token sets it).
  std::string issuer;
  /// When set, a token's `aud` (a string, or an array per RFC 7519 §4.1.3)
  /// must name it (and mint-token sets it): a token minted with the same
  /// key for another service is refused.
  std::string audience;
  int leeway_s = 30;
  std::string service_header = "X-Services-Token";
  std::vector<service_token_config> service_tokens;
  /// How often the service tokens an operator stored in the database
  /// (`connector-manager service-tokens`) are read again.
  int service_token_poll_ms = 2000;
};

struct oauth_config {
  std::string public_base_url = "http://127.0.0.1:8080";
  std::vector<std::string> allowed_redirect_uris;
  int state_ttl_s = 600;
  /// Pending states kept per member (team, user), both flow families
  /// together: a new one drops that member's oldest (storage/token_store.hpp).
  int max_pending_states = 20;
  /// Which callbacks must come back with the cookie the flow's start gave
  /// the starting browser (provider/browser_binding.hpp).
  enum class binding {
    /// Every callback a browser makes (the default). A program that runs
    /// the flow itself, without a browser, completes it as before.
    browsers,
    /// Every callback: a program must bring the cookie, or the session of
    /// the member who started the flow.
    always,
    /// None: for deployments whose users finish the consent in another
    /// browser than the one that started it (a CLI printing the URL).
    off,
  };
  binding browser_binding = binding::browsers;
};

/// Browsers on these origins may call the API from their pages (CORS,
/// http/cors.hpp). Origins are compared exactly ("https://app.example",
/// scheme, host and port as the browser sends them in `Origin`).
struct cors_config {
  std::vector<std::string> allowed_origins;
  /// How long a browser may cache a preflight's answer.
  int max_age_s = 600;
};

/// GET /metrics (Prometheus): on the main port for services holding the
/// scope METRICS, and, when `port` is set, without a token on a listener
/// of its own that serves nothing else (bind it where only the scraper
/// reaches).
struct metrics_config {
  bool enabled = true;
  /// The metrics-only listener's address: loopback unless the scraper is
  /// elsewhere (it answers without a token).
  std::string address = "127.0.0.1";
  /// 0: no metrics-only listener.
  uint16_t port = 0;
};

/// Per-caller token buckets on the routes that write or call providers
/// (http/rate_limiter.hpp). Services get larger buckets: one service acts
/// for every member of every team.
struct rate_limit_config {
  bool enabled = true;
  /// A member's bucket, keyed by (team, user).
  int64_t user_burst = 30;
  int64_t user_per_minute = 300;
  /// A service's bucket, keyed by its token's name or its JWT's subject.
  int64_t service_burst = 120;
  int64_t service_per_minute = 1200;
};

/// The proxy (/api/proxy/{provider}/{path…}): calls a provider's API with
/// a connection's credential for services holding scope PROXY.
struct proxy_config {
  bool enabled = true;
  /// A proxied call from its arrival to the provider's last byte, every
  /// attempt included; past it: 504. At most listen.request_timeout_ms:
  /// Pistache answers 408 for any request not answered within that plus
  /// 5 s, and that bound also closes silent half-sent requests.
  int64_t timeout_ms = 10000;
  /// A provider's answer larger than this is not passed on (502): with
  /// `team_in_flight`, what bounds the memory one team's calls can hold.
  int64_t max_response_bytes = 8 << 20;
  /// An answer is held whole up to this size (and then passed on with its
  /// length, the connection kept); a larger one is streamed to the caller
  /// as it comes (chunked), with at most about this much of it waiting in
  /// memory while the caller reads: a slow reader pauses the provider. At
  /// most max_response_bytes.
  int64_t stream_after_bytes = 256 << 10;
  /// Calls one team may have waiting on providers at once; more: 429.
  int64_t team_in_flight = 16;
  /// Each (service, team) pair's token bucket: one team's traffic through
  /// a busy service never empties another team's.
  int64_t burst = 300;
  int64_t per_minute = 6000;
};

struct scheduler_config {
  /// "stealing" or "sharing" (CAF scheduler.policy). Sharing: CAF 0.17's
  /// work stealing finds a queue's tail by walking it, so loading a million
  /// connections (each spawn queued on the registry's worker) took minutes
  /// and a shutdown over a minute; stealing is about 2x faster only on the
  /// token-by-message micro-bench (docs/DECISIONS.md).
  std::string policy = "sharing";
  int max_threads = 2;
};

/// How connections refresh (see actors/connection_actor.hpp).
struct refresh_config {
  /// Overrides every provider's refresh_margin_s when >= 0.
  int64_t margin_override_ms = -1;
  /// Lease length; must outlast two provider calls (the guarded retry).
  int64_t lease_ms = 30000;
  int64_t provider_timeout_ms = 10000;
  /// Consecutive transient failures before a connection is marked
  /// needs_reauth and stops calling the provider.
  int32_t max_failures = 8;
  int64_t backoff_base_ms = 1000;
  int64_t backoff_cap_ms = 300000;
  /// How often a requester re-checks while another instance holds the lease.
  int64_t lease_poll_ms = 100;
  /// Budget for storage calls made by connection actors.
  int64_t storage_timeout_ms = 10000;
  /// How often a stored API key is checked again with the provider (plus up
  /// to a tenth of it as jitter); 0 turns re-validation off.
  int64_t key_revalidation_ms = 86400000;
  /// On SIGTERM, how long to wait for refreshes in progress to store what
  /// the provider answered before the process stops (actors/refresh_drain.hpp).
  int64_t shutdown_grace_ms = 25000;
  /// A forced refresh this soon after the last successful refresh (on any
  /// instance) is answered with that refresh's tokens instead of calling
  /// the provider: one member's refresh loop must not spend the
  /// deployment's OAuth-app rate limit or flood event consumers.
  int64_t min_forced_interval_ms = 10000;
  /// Refreshes in flight at once (from the lease to the stored outcome);
  /// more wait in line (actors/refresh_gate.hpp), so a storm is late by
  /// queueing rather than by timeouts and retries.
  int64_t max_in_flight = 512;
};

/// Instances sharing one database (storage/instance_heartbeat.hpp).
struct cluster_config {
  /// How often this instance announces itself; the join grace, the
  /// "alone" trust and the activity window are multiples of it.
  int64_t heartbeat_ms = 1000;
  /// Shards of a new deployment; stored at its first migration and fixed
  /// from then on (migration 0008).
  int32_t shards = 256;
  /// Database connections that load owned shards in parallel at start-up
  /// and on takeover, each its own storage actor.
  int32_t loaders = 2;
  /// A guest actor (a connection of a shard owned elsewhere, spawned for
  /// a request) that has served nothing for this long is stopped, so an
  /// instance keeps resident only its own shards and what it is asked for.
  int64_t guest_idle_ms = 300000;
  /// Requests for a connection whose shard another instance owns go to
  /// that instance's token service (actors/owner_forwarder.hpp); off, or
  /// without a token service here, they are served here from the database.
  bool forward = true;
  /// How long a forwarded request (connecting included) may take before it
  /// is served here instead.
  int64_t forward_timeout_ms = 1000;
  /// The host the other instances dial to reach this one's token service;
  /// empty: `token_service.address` (a wildcard address advertises
  /// nothing). Set it when instances run on different machines.
  std::string advertise_address;
};

/// The token service published to other CAF programs, and the bounds its
/// port puts on every peer (actors/token_port_gate.hpp).
struct token_service_config {
  bool enabled = true;
  std::string address = "127.0.0.1";
  /// 0 picks a free port (logged in the `ready` line).
  uint16_t port = 8081;
  /// Peers connected at once; more are closed at accept.
  int max_peers = 64;
  /// Longest BASP message payload a peer may announce (a token request is
  /// well under 1 KiB); a longer one closes the connection.
  int64_t max_message_bytes = 65536;
  /// A new peer must send its handshake within this.
  int64_t handshake_timeout_ms = 10000;
  /// A message must arrive, and what the peer is sent be read, within this.
  int64_t stall_timeout_ms = 10000;
  /// A peer that sends nothing for this long is dropped (clients built on
  /// actor_config send a heartbeat every 60 s).
  int64_t idle_timeout_ms = 300000;
};

/// Checking and signing with service-account keys, on threads of their own
/// (actors/key_signer_actor.hpp).
struct key_signing_config {
  int threads = 1;
  /// Signings waiting for a thread; one more is refused (503, Retry-After).
  int max_queued = 16;
};

/// Per-provider settings of this deployment: OAuth app credentials and URL
/// overrides (tests point these at loopback fakes).
struct provider_settings {
  std::string client_id;
  std::string client_secret;
  std::string client_secret_file;
  /// Keys such as token_url, authorization_url; values replace the catalog's.
  std::map<std::string, std::string> urls;
};

/// A webhook endpoint that receives signed lifecycle events.
struct webhook_config {
  std::string name;
  std::string url;
  /// HMAC-SHA256 key, from `secret_file` (or CM_ override of `secret`).
  std::string secret;
  std::string secret_file;
  std::vector<std::string> topics = {"token-events", "entity-events"};
};

/// Event delivery: SSE subscribers, webhooks, polling of the outbox.
/// The Kafka relay (kafka/relay): every outbox event produced to its topic,
/// off while `brokers` is empty. Secrets come from files, read at start.
struct kafka_config {
  /// bootstrap.servers ("host:port,host:port"); empty: no relay.
  std::string brokers;
  std::string token_events_topic = "token-events";
  std::string entity_events_topic = "entity-events";
  /// plaintext | ssl | sasl_plaintext | sasl_ssl
  std::string security_protocol = "plaintext";
  /// PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (sasl_* protocols).
  std::string sasl_mechanism;
  std::string sasl_username;
  std::string sasl_password_file;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_key_password_file;
  /// How long librdkafka retries one message before the relay starts
  /// again from its cursor.
  int64_t delivery_timeout_ms = 120000;
  /// Events produced and not yet acknowledged, at most.
  int32_t max_in_flight = 10000;

  bool enabled() const { return !brokers.empty(); }
};

struct events_config {
  /// How often the outbox is polled besides NOTIFY wake-ups.
  int64_t poll_ms = 1000;
  /// SSE comment lines keep idle streams (and proxies) alive.
  int64_t heartbeat_ms = 15000;
  /// SSE streams per instance (the pool).
  int32_t max_subscribers = 256;
  /// Streams one team's admins may hold together on one instance.
  int32_t max_subscribers_per_team = 16;
  /// Streams one service may hold on one instance.
  int32_t max_subscribers_per_service = 16;
  /// Streams of the pool only services may take, so admins filling the
  /// rest cannot cut the services off.
  int32_t reserved_service_subscribers = 32;
  int64_t webhook_timeout_ms = 5000;
  int64_t webhook_retry_base_ms = 1000;
  int64_t webhook_retry_cap_ms = 600000;
  /// Attempts before a delivery is given up (kept in webhook_deliveries).
  int32_t webhook_max_attempts = 15;
  std::vector<webhook_config> webhooks;
  kafka_config kafka;
};

struct service_config {
  /// The file this was loaded from (empty for defaults).
  std::string source_file;
  listen_config listen;
  database_config database;
  std::string key_file;
  auth_config auth;
  oauth_config oauth;
  cors_config cors;
  metrics_config metrics;
  rate_limit_config rate_limit;
  proxy_config proxy;
  log::level log_level = log::level::info;
  /// Audit rows of token reads waiting to be written; a token read that
  /// finds this many waiting is refused with 503 (storage/audit_queue.hpp).
  int64_t audit_queue_rows = 100000;
  scheduler_config scheduler;
  refresh_config refresh;
  token_service_config token_service;
  cluster_config cluster;
  key_signing_config key_signing;
  events_config events;
  std::string providers_file;
  std::map<std::string, provider_settings> providers;
};

/// URL keys a provider override may set.
const std::vector<std::string>& provider_url_keys();

/// Loads `path`, applies `CM_*` overrides from `env` (pass `environ`), and
/// validates. Relative paths inside the file are resolved against the
/// file's directory. Throws config_error naming file, line and key.
service_config load_service_config(const std::string& path, char** env);

/// Same, from an in-memory document (used by tests); `name` is reported as
/// the file in errors.
service_config parse_service_config(const std::string& text, const std::string& name,
                                    char** env);

/// The environment variable that names the service file.
inline constexpr const char* config_path_variable = "CM_CONFIG";

} // namespace cm::config

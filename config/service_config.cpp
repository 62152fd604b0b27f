#include "config/service_config.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>

#include "config/yaml_schema.hpp"

namespace cm::config {

namespace {

namespace fs = std::filesystem;

const char* env_prefix = "CM_";

/// Splits CM_DATABASE__URL into {"database", "url"}.
std::vector<std::string> env_path(std::string_view name) {
  std::vector<std::string> parts;
  std::string_view rest = name.substr(std::strlen(env_prefix));
  while (true) {
    auto pos = rest.find("__");
    std::string part(rest.substr(0, pos));
    std::transform(part.begin(), part.end(), part.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    parts.push_back(part);
    if (pos == std::string_view::npos)
      break;
    rest = rest.substr(pos + 2);
  }
  return parts;
}

/// Applies every CM_* variable to the document, creating maps as needed.
void apply_environment(YAML::Node& root, yaml_reader& reader, char** env) {
  if (env == nullptr)
    return;
  for (char** it = env; *it != nullptr; ++it) {
    std::string_view entry{*it};
    if (entry.rfind(env_prefix, 0) != 0)
      continue;
    auto eq = entry.find('=');
    if (eq == std::string_view::npos)
      continue;
    auto name = entry.substr(0, eq);
    auto value = std::string(entry.substr(eq + 1));
    if (name == config_path_variable)
      continue;
    auto parts = env_path(name);
    if (std::any_of(parts.begin(), parts.end(), [](auto& p) { return p.empty(); }))
      throw config_error("environment variable " + std::string(name) +
                         ": malformed name (use CM_SECTION__KEY)");
    // Provider names use hyphens, which environment names cannot carry.
    if (parts.size() >= 2 && parts[0] == "providers")
      std::replace(parts[1].begin(), parts[1].end(), '_', '-');
    YAML::Node parsed;
    if (!value.empty() && (value.front() == '[' || value.front() == '{')) {
      try {
        parsed = YAML::Load(value);
      } catch (const YAML::Exception& e) {
        throw config_error("environment variable " + std::string(name) + ": " + e.msg);
      }
    } else {
      parsed = YAML::Node(value);
    }
    // Walk with fresh handles: yaml-cpp Node assignment would alias nodes.
    std::vector<YAML::Node> chain{root};
    std::string path;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      path = join_path(path, parts[i]);
      YAML::Node child = chain.back()[parts[i]];
      if (child && !child.IsNull() && !child.IsMap())
        throw config_error("environment variable " + std::string(name) + ": '" + path +
                           "' is not a mapping");
      if (!child || child.IsNull()) {
        chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
        child = chain.back()[parts[i]];
      }
      chain.push_back(child);
    }
    chain.back()[parts.back()] = parsed;
    reader.note_override(join_path(path, parts.back()), std::string(name));
  }
}

std::string resolve_path(const std::string& base_dir, const std::string& value) {
  if (value.empty() || base_dir.empty() || fs::path(value).is_absolute())
    return value;
  return (fs::path(base_dir) / value).lexically_normal().string();
}

bool is_hex_sha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
           return std::isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

/// "http://host" or "https://host:port": what a browser sends as Origin.
bool is_origin(const std::string& s) {
  auto scheme_end = s.find("://");
  if (scheme_end == std::string::npos)
    return false;
  auto scheme = s.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https")
    return false;
  auto rest = s.substr(scheme_end + 3);
  return !rest.empty() && rest.find_first_of("/?#@ ") == std::string::npos;
}

bool kafka_name(const std::string& s) {
  return !s.empty() && s.size() <= 249 &&
         s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
           std::string::npos;
}

void read_kafka(yaml_reader& reader, YAML::Node node, const std::string& base_dir,
                kafka_config& k) {
  const std::string path = "events.kafka";
  reader.expect_keys(node, path, {"brokers", "topics", "security_protocol", "sasl", "tls",
                                  "delivery_timeout_ms", "max_in_flight"});
  k.brokers = reader.get_string(node, path, "brokers", "");
  auto topics = node["topics"];
  reader.expect_keys(topics, path + ".topics", {"token_events", "entity_events"});
  k.token_events_topic =
    reader.get_string(topics, path + ".topics", "token_events", k.token_events_topic);
  k.entity_events_topic =
    reader.get_string(topics, path + ".topics", "entity_events", k.entity_events_topic);
  for (auto [key, value] : {std::pair{"token_events", &k.token_events_topic},
                            std::pair{"entity_events", &k.entity_events_topic}})
    if (!kafka_name(*value))
      reader.fail(topics[key], path + ".topics." + key, "expected 1 to 249 of [A-Za-z0-9._-]");
  if (k.token_events_topic == k.entity_events_topic)
    reader.fail(topics, path + ".topics", "token_events and entity_events must differ");
  k.security_protocol = reader.get_string(node, path, "security_protocol", k.security_protocol);
  static const std::vector<std::string> protocols = {"plaintext", "ssl", "sasl_plaintext",
                                                     "sasl_ssl"};
  if (std::find(protocols.begin(), protocols.end(), k.security_protocol) == protocols.end())
    reader.fail(node["security_protocol"], path + ".security_protocol",
                "expected plaintext, ssl, sasl_plaintext or sasl_ssl");
  auto sasl = node["sasl"];
  reader.expect_keys(sasl, path + ".sasl", {"mechanism", "username", "password_file"});
  k.sasl_mechanism = reader.get_string(sasl, path + ".sasl", "mechanism", "");
  k.sasl_username = reader.get_string(sasl, path + ".sasl", "username", "");
  k.sasl_password_file =
    resolve_path(base_dir, reader.get_string(sasl, path + ".sasl", "password_file", ""));
  bool uses_sasl = k.security_protocol.rfind("sasl_", 0) == 0;
  if (uses_sasl) {
    static const std::vector<std::string> mechanisms = {"PLAIN", "SCRAM-SHA-256",
                                                        "SCRAM-SHA-512"};
    if (std::find(mechanisms.begin(), mechanisms.end(), k.sasl_mechanism) == mechanisms.end())
      reader.fail(sasl, path + ".sasl.mechanism", "expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512");
    if (k.sasl_username.empty() || k.sasl_password_file.empty())
      reader.fail(sasl, path + ".sasl", "set username and password_file");
  } else if (!k.sasl_mechanism.empty() || !k.sasl_username.empty() ||
             !k.sasl_password_file.empty()) {
    reader.fail(sasl, path + ".sasl", "needs security_protocol sasl_plaintext or sasl_ssl");
  }
  auto tls = node["tls"];
  reader.expect_keys(tls, path + ".tls", {"ca_file", "cert_file", "key_file",
                                          "key_password_file"});
  k.tls_ca_file = resolve_path(base_dir, reader.get_string(tls, path + ".tls", "ca_file", ""));
  k.tls_cert_file =
    resolve_path(base_dir, reader.get_string(tls, path + ".tls", "cert_file", ""));
  k.tls_key_file = resolve_path(base_dir, reader.get_string(tls, path + ".tls", "key_file", ""));
  k.tls_key_password_file =
    resolve_path(base_dir, reader.get_string(tls, path + ".tls", "key_password_file", ""));
  bool uses_tls = k.security_protocol == "ssl" || k.security_protocol == "sasl_ssl";
  if (!uses_tls && (!k.tls_ca_file.empty() || !k.tls_cert_file.empty() ||
                    !k.tls_key_file.empty() || !k.tls_key_password_file.empty()))
    reader.fail(tls, path + ".tls", "needs security_protocol ssl or sasl_ssl");
  if (k.tls_cert_file.empty() != k.tls_key_file.empty())
    reader.fail(tls, path + ".tls", "set cert_file and key_file together");
  k.delivery_timeout_ms =
    reader.get_int(node, path, "delivery_timeout_ms", k.delivery_timeout_ms, 1000, 3600000);
  k.max_in_flight = static_cast<int32_t>(
    reader.get_int(node, path, "max_in_flight", k.max_in_flight, 1, 1000000));
}

service_config build(YAML::Node root, yaml_reader& reader, const std::string& base_dir) {
  service_config cfg;
  if (root.IsNull())
    root = YAML::Node(YAML::NodeType::Map);
  reader.expect_keys(root, "", {"listen", "database", "crypto", "auth", "oauth", "rate_limit",
                                "proxy", "log", "scheduler", "refresh", "token_service", "key_signing",
                                "cluster", "events", "audit", "cors", "metrics",
                                "providers_file", "providers"});

  // listen
  auto listen = root["listen"];
  reader.expect_keys(listen, "listen", {"address", "port", "threads", "max_request_bytes",
                                        "request_timeout_ms", "max_header_bytes",
                                        "header_timeout_ms", "body_timeout_ms"});
  cfg.listen.address = reader.get_string(listen, "listen", "address", cfg.listen.address);
  cfg.listen.port = static_cast<uint16_t>(reader.get_int(listen, "listen", "port", 8080, 0, 65535));
  cfg.listen.threads = static_cast<int>(reader.get_int(listen, "listen", "threads", 2, 1, 256));
  cfg.listen.max_request_bytes = static_cast<size_t>(
    reader.get_int(listen, "listen", "max_request_bytes", 1 << 20, 1024, 64 << 20));
  cfg.listen.request_timeout = std::chrono::milliseconds(
    reader.get_int(listen, "listen", "request_timeout_ms", 10000, 100, 600000));
  cfg.listen.max_header_bytes = static_cast<size_t>(
    reader.get_int(listen, "listen", "max_header_bytes", 16 * 1024, 1024, 1 << 20));
  cfg.listen.header_timeout = std::chrono::milliseconds(
    reader.get_int(listen, "listen", "header_timeout_ms", 10000, 100, 600000));
  cfg.listen.body_timeout = std::chrono::milliseconds(
    reader.get_int(listen, "listen", "body_timeout_ms", 30000, 100, 600000));

  // database
  auto db = root["database"];
  reader.expect_keys(db, "database", {"url", "connect_timeout_s", "statement_timeout_ms",
                                      "reconnect_min_backoff_ms", "reconnect_max_backoff_ms"});
  cfg.database.url = reader.require_string(db, "database", "url");
  cfg.database.connect_timeout_s =
    static_cast<int>(reader.get_int(db, "database", "connect_timeout_s", 3, 1, 60));
  cfg.database.statement_timeout_ms =
    static_cast<int>(reader.get_int(db, "database", "statement_timeout_ms", 5000, 100, 600000));
  cfg.database.reconnect_min_backoff = std::chrono::milliseconds(
    reader.get_int(db, "database", "reconnect_min_backoff_ms", 100, 1, 60000));
  cfg.database.reconnect_max_backoff = std::chrono::milliseconds(
    reader.get_int(db, "database", "reconnect_max_backoff_ms", 2000, 1, 600000));
  if (cfg.database.reconnect_max_backoff < cfg.database.reconnect_min_backoff)
    reader.fail(db["reconnect_max_backoff_ms"], "database.reconnect_max_backoff_ms",
                "must not be smaller than reconnect_min_backoff_ms");

  // crypto
  auto crypto = root["crypto"];
  reader.expect_keys(crypto, "crypto", {"key_file"});
  cfg.key_file = resolve_path(base_dir, reader.require_string(crypto, "crypto", "key_file"));

  // auth
  auto auth = root["auth"];
  reader.expect_keys(auth, "auth", {"jwt", "service_header", "service_tokens",
                                    "service_token_poll_ms"});
  cfg.auth.service_token_poll_ms = static_cast<int>(reader.get_int(
    auth, "auth", "service_token_poll_ms", cfg.auth.service_token_poll_ms, 100, 600000));
  auto jwt = auth["jwt"];
  reader.expect_keys(jwt, "auth.jwt", {"hs256_secret_file", "rs256_public_key_file",
                                       "issuer", "audience", "leeway_s"});
  cfg.auth.hs256_secret_file =
    resolve_path(base_dir, reader.get_string(jwt, "auth.jwt", "hs256_secret_file", ""));
  cfg.auth.rs256_public_key_file =
    resolve_path(base_dir, reader.get_string(jwt, "auth.jwt", "rs256_public_key_file", ""));
  if (cfg.auth.hs256_secret_file.empty() && cfg.auth.rs256_public_key_file.empty())
    reader.fail(jwt, "auth.jwt", "set hs256_secret_file or rs256_public_key_file");
  cfg.auth.issuer = reader.get_string(jwt, "auth.jwt", "issuer", "");
  cfg.auth.audience = reader.get_string(jwt, "auth.jwt", "audience", "");
  cfg.auth.leeway_s = static_cast<int>(reader.get_int(jwt, "auth.jwt", "leeway_s", 30, 0, 600));
  cfg.auth.service_header =
    reader.get_string(auth, "auth", "service_header", cfg.auth.service_header);
  auto tokens = auth["service_tokens"];
  if (tokens && !tokens.IsNull()) {
    if (!tokens.IsSequence())
      reader.fail(tokens, "auth.service_tokens", "expected a list");
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto path = "auth.service_tokens[" + std::to_string(i) + "]";
      auto entry = tokens[i];
      reader.expect_keys(entry, path, {"name", "sha256", "scopes"});
      service_token_config token;
      token.name = reader.require_string(entry, path, "name");
      token.sha256_hex = reader.require_string(entry, path, "sha256");
      if (!is_hex_sha256(token.sha256_hex))
        reader.fail(entry["sha256"], path + ".sha256",
                    "expected 64 lower-case hex digits (connector-manager hash-token)");
      token.scopes = reader.get_string_list(entry, path, "scopes");
      cfg.auth.service_tokens.push_back(std::move(token));
    }
  }

  // oauth
  auto oauth = root["oauth"];
  reader.expect_keys(oauth, "oauth", {"public_base_url", "allowed_redirect_uris", "state_ttl_s",
                                      "max_pending_states", "browser_binding"});
  cfg.oauth.public_base_url =
    reader.get_string(oauth, "oauth", "public_base_url", cfg.oauth.public_base_url);
  cfg.oauth.allowed_redirect_uris = reader.get_string_list(oauth, "oauth", "allowed_redirect_uris");
  cfg.oauth.state_ttl_s =
    static_cast<int>(reader.get_int(oauth, "oauth", "state_ttl_s", 600, 30, 3600));
  cfg.oauth.max_pending_states = static_cast<int>(reader.get_int(
    oauth, "oauth", "max_pending_states", cfg.oauth.max_pending_states, 1, 1000));
  auto binding = reader.get_string(oauth, "oauth", "browser_binding", "browsers");
  if (binding == "browsers")
    cfg.oauth.browser_binding = oauth_config::binding::browsers;
  else if (binding == "always")
    cfg.oauth.browser_binding = oauth_config::binding::always;
  else if (binding == "off")
    cfg.oauth.browser_binding = oauth_config::binding::off;
  else
    reader.fail(oauth["browser_binding"], "oauth.browser_binding",
                "expected browsers, always or off");

  // cors
  auto cors = root["cors"];
  reader.expect_keys(cors, "cors", {"allowed_origins", "max_age_s"});
  cfg.cors.allowed_origins = reader.get_string_list(cors, "cors", "allowed_origins");
  for (size_t i = 0; i < cfg.cors.allowed_origins.size(); ++i)
    if (!is_origin(cfg.cors.allowed_origins[i]))
      reader.fail(cors["allowed_origins"][i], "cors.allowed_origins[" + std::to_string(i) + "]",
                  "expected an origin such as https://app.example (scheme, host and an optional "
                  "port; no path, no trailing slash)");
  cfg.cors.max_age_s =
    static_cast<int>(reader.get_int(cors, "cors", "max_age_s", cfg.cors.max_age_s, 0, 86400));

  // metrics
  auto metrics = root["metrics"];
  reader.expect_keys(metrics, "metrics", {"enabled", "address", "port"});
  cfg.metrics.enabled = reader.get_bool(metrics, "metrics", "enabled", cfg.metrics.enabled);
  cfg.metrics.address = reader.get_string(metrics, "metrics", "address", cfg.metrics.address);
  cfg.metrics.port = static_cast<uint16_t>(reader.get_int(metrics, "metrics", "port", 0, 0, 65535));
  if (cfg.metrics.address.empty())
    reader.fail(metrics["address"], "metrics.address", "must not be empty");

  // rate_limit
  auto limits = root["rate_limit"];
  reader.expect_keys(limits, "rate_limit", {"enabled", "user_burst", "user_per_minute",
                                            "service_burst", "service_per_minute"});
  auto& rl = cfg.rate_limit;
  rl.enabled = reader.get_bool(limits, "rate_limit", "enabled", rl.enabled);
  rl.user_burst = reader.get_int(limits, "rate_limit", "user_burst", rl.user_burst, 1, 100000);
  rl.user_per_minute =
    reader.get_int(limits, "rate_limit", "user_per_minute", rl.user_per_minute, 1, 6000000);
  rl.service_burst =
    reader.get_int(limits, "rate_limit", "service_burst", rl.service_burst, 1, 100000);
  rl.service_per_minute = reader.get_int(limits, "rate_limit", "service_per_minute",
                                         rl.service_per_minute, 1, 6000000);

  // proxy
  auto proxy = root["proxy"];
  reader.expect_keys(proxy, "proxy", {"enabled", "timeout_ms", "max_response_bytes",
                                      "stream_after_bytes", "team_in_flight", "burst",
                                      "per_minute"});
  auto& px = cfg.proxy;
  px.enabled = reader.get_bool(proxy, "proxy", "enabled", px.enabled);
  // By default as long as the listener lets a request take.
  px.timeout_ms = reader.get_int(proxy, "proxy", "timeout_ms",
                                 std::min<int64_t>(px.timeout_ms, cfg.listen.request_timeout.count()),
                                 100, 600000);
  px.max_response_bytes = reader.get_int(proxy, "proxy", "max_response_bytes",
                                         px.max_response_bytes, 1024, int64_t{1} << 30);
  px.stream_after_bytes = reader.get_int(proxy, "proxy", "stream_after_bytes",
                                         std::min(px.stream_after_bytes, px.max_response_bytes),
                                         1024, px.max_response_bytes);
  px.team_in_flight =
    reader.get_int(proxy, "proxy", "team_in_flight", px.team_in_flight, 1, 10000);
  px.burst = reader.get_int(proxy, "proxy", "burst", px.burst, 1, 1000000);
  px.per_minute = reader.get_int(proxy, "proxy", "per_minute", px.per_minute, 1, 60000000);
  // Pistache answers 408 for a request not answered within
  // request_timeout + 5 s; a proxied call must be answered (504) first.
  if (std::chrono::milliseconds(px.timeout_ms) > cfg.listen.request_timeout)
    reader.fail(proxy["timeout_ms"], "proxy.timeout_ms",
                "must not exceed listen.request_timeout_ms (" +
                  std::to_string(cfg.listen.request_timeout.count()) + ")");

  // log
  auto log_node = root["log"];
  reader.expect_keys(log_node, "log", {"level"});
  auto level_text = reader.get_string(log_node, "log", "level", "info");
  if (!log::parse_level(level_text, cfg.log_level))
    reader.fail(log_node["level"], "log.level", "expected debug, info, warn or error");

  // audit
  auto audit = root["audit"];
  reader.expect_keys(audit, "audit", {"queue_rows"});
  cfg.audit_queue_rows =
    reader.get_int(audit, "audit", "queue_rows", cfg.audit_queue_rows, 1, 10'000'000);

  // scheduler
  auto sched = root["scheduler"];
  reader.expect_keys(sched, "scheduler", {"policy", "max_threads"});
  cfg.scheduler.policy = reader.get_string(sched, "scheduler", "policy", cfg.scheduler.policy);
  if (cfg.scheduler.policy != "stealing" && cfg.scheduler.policy != "sharing")
    reader.fail(sched["policy"], "scheduler.policy", "expected stealing or sharing");
  cfg.scheduler.max_threads =
    static_cast<int>(reader.get_int(sched, "scheduler", "max_threads", 2, 1, 256));

  // refresh
  auto refresh = root["refresh"];
  reader.expect_keys(refresh, "refresh", {"margin_s", "lease_ms", "provider_timeout_ms",
                                          "max_failures", "backoff_base_ms", "backoff_cap_ms",
                                          "lease_poll_ms", "storage_timeout_ms",
                                          "key_revalidation_s", "shutdown_grace_ms",
                                          "min_forced_interval_ms", "max_in_flight"});
  auto& r = cfg.refresh;
  auto margin_s = reader.get_int(refresh, "refresh", "margin_s", -1, -1, 86400);
  r.margin_override_ms = margin_s < 0 ? -1 : margin_s * 1000;
  r.provider_timeout_ms =
    reader.get_int(refresh, "refresh", "provider_timeout_ms", r.provider_timeout_ms, 100, 120000);
  r.lease_ms = reader.get_int(refresh, "refresh", "lease_ms", r.lease_ms, 1000, 600000);
  if (r.lease_ms < 2 * r.provider_timeout_ms + 2000)
    reader.fail(refresh["lease_ms"] ? refresh["lease_ms"] : refresh, "refresh.lease_ms",
                "must be at least 2 * provider_timeout_ms + 2000 (the guarded retry runs "
                "under the same lease)");
  r.max_failures =
    static_cast<int32_t>(reader.get_int(refresh, "refresh", "max_failures", r.max_failures, 1, 1000));
  r.backoff_base_ms =
    reader.get_int(refresh, "refresh", "backoff_base_ms", r.backoff_base_ms, 1, 3600000);
  r.backoff_cap_ms =
    reader.get_int(refresh, "refresh", "backoff_cap_ms", r.backoff_cap_ms, 1, 86400000);
  r.lease_poll_ms = reader.get_int(refresh, "refresh", "lease_poll_ms", r.lease_poll_ms, 10, 10000);
  r.storage_timeout_ms =
    reader.get_int(refresh, "refresh", "storage_timeout_ms", r.storage_timeout_ms, 100, 120000);
  r.key_revalidation_ms =
    reader.get_int(refresh, "refresh", "key_revalidation_s", 86400, 0, 30 * 86400) * 1000;
  r.shutdown_grace_ms =
    reader.get_int(refresh, "refresh", "shutdown_grace_ms", r.shutdown_grace_ms, 0, 600000);
  r.min_forced_interval_ms = reader.get_int(refresh, "refresh", "min_forced_interval_ms",
                                            r.min_forced_interval_ms, 0, 3600000);
  r.max_in_flight =
    reader.get_int(refresh, "refresh", "max_in_flight", r.max_in_flight, 1, 1000000);

  // cluster
  auto cluster = root["cluster"];
  reader.expect_keys(cluster, "cluster", {"heartbeat_ms", "shards", "loaders", "guest_idle_ms",
                                          "forward", "forward_timeout_ms", "advertise_address"});
  cfg.cluster.heartbeat_ms =
    reader.get_int(cluster, "cluster", "heartbeat_ms", cfg.cluster.heartbeat_ms, 50, 60000);
  cfg.cluster.shards =
    static_cast<int32_t>(reader.get_int(cluster, "cluster", "shards", cfg.cluster.shards, 1, 16384));
  cfg.cluster.loaders =
    static_cast<int32_t>(reader.get_int(cluster, "cluster", "loaders", cfg.cluster.loaders, 1, 16));
  cfg.cluster.guest_idle_ms = reader.get_int(cluster, "cluster", "guest_idle_ms",
                                             cfg.cluster.guest_idle_ms, 1000, 86400000);
  cfg.cluster.forward = reader.get_bool(cluster, "cluster", "forward", cfg.cluster.forward);
  cfg.cluster.forward_timeout_ms = reader.get_int(cluster, "cluster", "forward_timeout_ms",
                                                  cfg.cluster.forward_timeout_ms, 10, 60000);
  cfg.cluster.advertise_address =
    reader.get_string(cluster, "cluster", "advertise_address", cfg.cluster.advertise_address);
  // A host name or an IP address (IPv6 with or without brackets), nothing
  // that could carry a port, a path or spaces into host:port.
  for (char c : cfg.cluster.advertise_address)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
          c == '[' || c == ']') ||
        cfg.cluster.advertise_address.size() > 253) {
      reader.fail(cluster["advertise_address"], "cluster.advertise_address",
                  "expected a host name or an IP address");
      break;
    }

  // token_service
  auto ts = root["token_service"];
  reader.expect_keys(ts, "token_service", {"enabled", "address", "port", "max_peers",
                                           "max_message_bytes", "handshake_timeout_ms",
                                           "stall_timeout_ms", "idle_timeout_ms"});
  auto& tsc = cfg.token_service;
  tsc.enabled = reader.get_bool(ts, "token_service", "enabled", true);
  tsc.address = reader.get_string(ts, "token_service", "address", tsc.address);
  tsc.port = static_cast<uint16_t>(reader.get_int(ts, "token_service", "port", 8081, 0, 65535));
  tsc.max_peers =
    static_cast<int>(reader.get_int(ts, "token_service", "max_peers", tsc.max_peers, 1, 10000));
  tsc.max_message_bytes = reader.get_int(ts, "token_service", "max_message_bytes",
                                         tsc.max_message_bytes, 1024, 16 << 20);
  tsc.handshake_timeout_ms = reader.get_int(ts, "token_service", "handshake_timeout_ms",
                                            tsc.handshake_timeout_ms, 100, 600000);
  tsc.stall_timeout_ms = reader.get_int(ts, "token_service", "stall_timeout_ms",
                                        tsc.stall_timeout_ms, 100, 600000);
  tsc.idle_timeout_ms = reader.get_int(ts, "token_service", "idle_timeout_ms",
                                       tsc.idle_timeout_ms, 1000, 86400000);

  // key_signing
  auto signing = root["key_signing"];
  reader.expect_keys(signing, "key_signing", {"threads", "max_queued"});
  cfg.key_signing.threads = static_cast<int>(
    reader.get_int(signing, "key_signing", "threads", cfg.key_signing.threads, 1, 16));
  cfg.key_signing.max_queued = static_cast<int>(
    reader.get_int(signing, "key_signing", "max_queued", cfg.key_signing.max_queued, 1, 1024));

  cfg.providers_file = resolve_path(
    base_dir, reader.get_string(root, "", "providers_file", "providers.yaml"));

  // events
  auto events = root["events"];
  reader.expect_keys(events, "events", {"poll_ms", "heartbeat_ms", "max_subscribers",
                                        "max_subscribers_per_team",
                                        "max_subscribers_per_service",
                                        "reserved_service_subscribers", "webhook_timeout_ms",
                                        "webhook_retry_base_ms", "webhook_retry_cap_ms",
                                        "webhook_max_attempts", "webhooks", "kafka"});
  auto& ev = cfg.events;
  ev.poll_ms = reader.get_int(events, "events", "poll_ms", ev.poll_ms, 10, 60000);
  ev.heartbeat_ms = reader.get_int(events, "events", "heartbeat_ms", ev.heartbeat_ms, 100, 600000);
  ev.max_subscribers = static_cast<int32_t>(
    reader.get_int(events, "events", "max_subscribers", ev.max_subscribers, 1, 100000));
  // Quotas default to shares of the pool that fit whatever its size; set
  // explicitly, they must fit it.
  ev.reserved_service_subscribers = static_cast<int32_t>(
    reader.get_int(events, "events", "reserved_service_subscribers", ev.max_subscribers / 8, 0,
                   ev.max_subscribers - 1));
  ev.max_subscribers_per_team = static_cast<int32_t>(reader.get_int(
    events, "events", "max_subscribers_per_team",
    std::min(ev.max_subscribers_per_team, ev.max_subscribers - ev.reserved_service_subscribers),
    1, ev.max_subscribers - ev.reserved_service_subscribers));
  ev.max_subscribers_per_service = static_cast<int32_t>(
    reader.get_int(events, "events", "max_subscribers_per_service",
                   std::min(ev.max_subscribers_per_service, ev.max_subscribers), 1,
                   ev.max_subscribers));
  ev.webhook_timeout_ms =
    reader.get_int(events, "events", "webhook_timeout_ms", ev.webhook_timeout_ms, 100, 120000);
  ev.webhook_retry_base_ms = reader.get_int(events, "events", "webhook_retry_base_ms",
                                            ev.webhook_retry_base_ms, 10, 3600000);
  ev.webhook_retry_cap_ms = reader.get_int(events, "events", "webhook_retry_cap_ms",
                                           ev.webhook_retry_cap_ms, 10, 86400000);
  ev.webhook_max_attempts = static_cast<int32_t>(reader.get_int(
    events, "events", "webhook_max_attempts", ev.webhook_max_attempts, 1, 1000));
  read_kafka(reader, events["kafka"], base_dir, ev.kafka);
  auto hooks = events["webhooks"];
  if (hooks && !hooks.IsNull()) {
    if (!hooks.IsSequence())
      reader.fail(hooks, "events.webhooks", "expected a list");
    for (size_t i = 0; i < hooks.size(); ++i) {
      auto path = "events.webhooks[" + std::to_string(i) + "]";
      auto entry = hooks[i];
      reader.expect_keys(entry, path, {"name", "url", "secret", "secret_file", "topics"});
      webhook_config hook;
      hook.name = reader.require_string(entry, path, "name");
      if (hook.name.empty() || hook.name.size() > 64 ||
          hook.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789_.-") != std::string::npos)
        reader.fail(entry["name"], path + ".name", "expected 1 to 64 of [A-Za-z0-9_.-]");
      for (auto& other : ev.webhooks)
        if (other.name == hook.name)
          reader.fail(entry["name"], path + ".name", "duplicate webhook name");
      hook.url = reader.require_string(entry, path, "url");
      if (hook.url.rfind("http://", 0) != 0 && hook.url.rfind("https://", 0) != 0)
        reader.fail(entry["url"], path + ".url", "expected an http:// or https:// URL");
      hook.secret = reader.get_string(entry, path, "secret", "");
      hook.secret_file = resolve_path(base_dir, reader.get_string(entry, path, "secret_file", ""));
      if (hook.secret.empty() && hook.secret_file.empty())
        reader.fail(entry, path, "set secret_file (or secret): webhooks are always signed");
      if (entry["topics"])
        hook.topics = reader.get_string_list(entry, path, "topics");
      for (auto& topic : hook.topics)
        if (topic != "token-events" && topic != "entity-events")
          reader.fail(entry["topics"], path + ".topics",
                      "expected token-events and/or entity-events");
      ev.webhooks.push_back(std::move(hook));
    }
  }

  // providers: per-deployment credentials and URL overrides
  auto providers = root["providers"];
  reader.expect_map(providers, "providers");
  if (providers && providers.IsMap()) {
    for (auto it = providers.begin(); it != providers.end(); ++it) {
      auto name = it->first.Scalar();
      std::replace(name.begin(), name.end(), '_', '-');
      auto path = join_path("providers", name);
      const auto& url_keys = provider_url_keys();
      auto node = it->second;
      reader.expect_map(node, path);
      provider_settings settings;
      if (node.IsMap()) {
        for (auto kv = node.begin(); kv != node.end(); ++kv) {
          auto key = kv->first.Scalar();
          auto key_path = join_path(path, key);
          bool is_url = std::find(url_keys.begin(), url_keys.end(), key) != url_keys.end();
          if (!is_url && key != "client_id" && key != "client_secret" &&
              key != "client_secret_file")
            reader.fail(kv->first, key_path,
                        "unknown key (known keys: client_id, client_secret, "
                        "client_secret_file and the catalog's *_url keys)");
          if (!kv->second.IsScalar())
            reader.fail(kv->second, key_path, "expected a string");
          auto value = kv->second.Scalar();
          if (is_url)
            settings.urls[key] = value;
          else if (key == "client_id")
            settings.client_id = value;
          else if (key == "client_secret")
            settings.client_secret = value;
          else
            settings.client_secret_file = resolve_path(base_dir, value);
        }
      }
      cfg.providers[name] = std::move(settings);
    }
  }
  // The metrics-only listener shares no port with the others.
  if (cfg.metrics.port != 0 &&
      (cfg.metrics.port == cfg.listen.port ||
       (cfg.token_service.enabled && cfg.metrics.port == cfg.token_service.port)))
    reader.fail(metrics["port"], "metrics.port",
                "must differ from listen.port and token_service.port");
  return cfg;
}

} // namespace

const std::vector<std::string>& provider_url_keys() {
  static const std::vector<std::string> keys = {
    "authorization_url", "token_url", "refresh_url", "revoke_url",
    "account_url", "validate_url", "jwks_url", "api_base_url"};
  return keys;
}

namespace {

service_config from_root(YAML::Node root, const std::string& name, char** env) {
  yaml_reader reader{name};
  if (root.IsNull())
    root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap())
    throw config_error(name + ": the document must be a mapping");
  apply_environment(root, reader, env);
  auto cfg = build(root, reader, fs::path(name).parent_path().string());
  cfg.source_file = name;
  return cfg;
}

} // namespace

service_config parse_service_config(const std::string& text, const std::string& name,
                                    char** env) {
  auto root = parse_yaml(text, name);
  return from_root(root, name, env);
}

service_config load_service_config(const std::string& path, char** env) {
  return from_root(load_yaml_file(path), path, env);
}

} // namespace cm::config

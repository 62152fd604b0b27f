// The service file and providers catalog: strict keys, positions in every
// error, environment overrides, and the files shipped in config/.
#include <gtest/gtest.h>

#include "config/provider_catalog.hpp"
#include "config/service_config.hpp"
#include "config/yaml_schema.hpp"
#include "tests/support/test_env.hpp"

using namespace cm::config;

namespace {

const std::string minimal = R"(database:
  url: "dbname=x"
crypto:
  key_file: keys/master.key
auth:
  jwt:
    hs256_secret_file: /etc/cm/jwt.secret
)";

std::string error_of(const std::string& text, std::vector<std::string> env = {},
                     const std::string& name = "/etc/cm/service.yaml") {
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  try {
    parse_service_config(text, name, envp.data());
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

service_config parse(const std::string& text, std::vector<std::string> env = {}) {
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  return parse_service_config(text, "/etc/cm/service.yaml", envp.data());
}

std::string catalog_error(const std::string& text) {
  try {
    parse_provider_catalog(text, "providers.yaml");
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST(ServiceConfig, MinimalFileGetsDocumentedDefaults) {
  auto cfg = parse(minimal);
  EXPECT_EQ(cfg.listen.address, "127.0.0.1");
  EXPECT_EQ(cfg.listen.port, 8080);
  EXPECT_EQ(cfg.listen.max_request_bytes, 1u << 20);
  EXPECT_EQ(cfg.listen.max_header_bytes, 16u * 1024);
  EXPECT_EQ(cfg.listen.header_timeout, std::chrono::milliseconds(10000));
  EXPECT_EQ(cfg.listen.body_timeout, std::chrono::milliseconds(30000));
  EXPECT_EQ(cfg.database.url, "dbname=x");
  EXPECT_EQ(cfg.oauth.state_ttl_s, 600);
  EXPECT_EQ(cfg.auth.service_header, "X-Services-Token");
  EXPECT_EQ(cfg.scheduler.policy, "sharing");
  // Relative paths resolve against the file's directory.
  EXPECT_EQ(cfg.key_file, "/etc/cm/keys/master.key");
  EXPECT_EQ(cfg.providers_file, "/etc/cm/providers.yaml");
}

TEST(ServiceConfig, CorsMetricsAndStoredTokenSettingsHaveDefaultsAndLimits) {
  auto cfg = parse(minimal);
  EXPECT_TRUE(cfg.cors.allowed_origins.empty());
  EXPECT_EQ(cfg.cors.max_age_s, 600);
  EXPECT_TRUE(cfg.metrics.enabled);
  EXPECT_EQ(cfg.metrics.address, "127.0.0.1");
  EXPECT_EQ(cfg.metrics.port, 0);
  EXPECT_EQ(cfg.auth.service_token_poll_ms, 2000);
  auto set = parse(minimal + "cors:\n  allowed_origins: [https://app.example, http://127.0.0.1:3000]\n"
                             "metrics:\n  port: 9464\n");
  EXPECT_EQ(set.cors.allowed_origins.size(), 2u);
  EXPECT_EQ(set.metrics.port, 9464);
  // An origin is scheme, host and port: no path, no wildcard.
  for (auto bad : {"https://app.example/", "https://app.example/path", "*", "app.example",
                   "ftp://app.example"})
    EXPECT_NE(error_of(minimal + "cors:\n  allowed_origins: [\"" + bad + "\"]\n")
                .find("cors.allowed_origins[0]"),
              std::string::npos)
      << bad;
  // The metrics-only listener shares no port.
  EXPECT_NE(error_of(minimal + "metrics:\n  port: 8080\n").find("metrics.port"), std::string::npos);
  EXPECT_NE(error_of(minimal + "metrics:\n  port: 8081\n").find("metrics.port"), std::string::npos);
  const std::string poll = "database:\n  url: \"dbname=x\"\ncrypto:\n  key_file: k\n"
                           "auth:\n  jwt:\n    hs256_secret_file: /x\n"
                           "  service_token_poll_ms: 10\n";
  EXPECT_NE(error_of(poll).find("service_token_poll_ms"), std::string::npos) << poll;
}

TEST(ServiceConfig, UnknownKeyIsRejectedWithFileLineAndKey) {
  auto err = error_of(minimal + "listen:\n  prot: 80\n");
  EXPECT_NE(err.find("/etc/cm/service.yaml:9:3"), std::string::npos) << err;
  EXPECT_NE(err.find("listen.prot"), std::string::npos) << err;
  EXPECT_NE(err.find("unknown key"), std::string::npos) << err;
  auto top = error_of(minimal + "colour: blue\n");
  EXPECT_NE(top.find(":8:1"), std::string::npos) << top;
  EXPECT_NE(top.find("'colour'"), std::string::npos) << top;
}

TEST(ServiceConfig, WrongTypesAndRangesNameTheKey) {
  auto err = error_of(minimal + "listen:\n  port: eighty\n");
  EXPECT_NE(err.find(":9:9"), std::string::npos) << err;
  EXPECT_NE(err.find("listen.port"), std::string::npos) << err;
  EXPECT_NE(error_of(minimal + "listen:\n  port: 70000\n").find("between 0 and 65535"),
            std::string::npos);
  EXPECT_NE(error_of(minimal + "log:\n  level: chatty\n").find("log.level"), std::string::npos);
  EXPECT_NE(error_of(minimal + "oauth:\n  allowed_redirect_uris: http://x\n")
              .find("oauth.allowed_redirect_uris"),
            std::string::npos);
}

TEST(ServiceConfig, MissingRequiredKeysAreNamed) {
  auto err = error_of("crypto:\n  key_file: k\nauth:\n  jwt:\n    hs256_secret_file: s\n");
  EXPECT_NE(err.find("database.url"), std::string::npos) << err;
  auto no_jwt = error_of("database:\n  url: x\ncrypto:\n  key_file: k\n");
  EXPECT_NE(no_jwt.find("auth.jwt"), std::string::npos) << no_jwt;
}

TEST(ServiceConfig, SyntaxErrorsCarryThePosition) {
  auto err = error_of("listen:\n  port: [1, 2\n");
  EXPECT_NE(err.find("/etc/cm/service.yaml:"), std::string::npos) << err;
}

TEST(ServiceConfig, EnvironmentOverridesAnyKey) {
  auto cfg = parse(minimal, {"CM_LISTEN__PORT=9999", "CM_DATABASE__URL=host=/tmp dbname=y",
                             "CM_OAUTH__ALLOWED_REDIRECT_URIS=[https://a.example/done, https://b.example/x]",
                             "CM_PROVIDERS__GOOGLE_WORKSPACE__TOKEN_URL=http://127.0.0.1:9/token",
                             "CM_CONFIG=/ignored.yaml", "OTHER=1"});
  EXPECT_EQ(cfg.listen.port, 9999);
  EXPECT_EQ(cfg.database.url, "host=/tmp dbname=y");
  ASSERT_EQ(cfg.oauth.allowed_redirect_uris.size(), 2u);
  EXPECT_EQ(cfg.oauth.allowed_redirect_uris[1], "https://b.example/x");
  ASSERT_EQ(cfg.providers.count("google-workspace"), 1u);
  EXPECT_EQ(cfg.providers["google-workspace"].urls["token_url"], "http://127.0.0.1:9/token");
}

TEST(ServiceConfig, BadEnvironmentOverridesNameTheVariable) {
  auto unknown = error_of(minimal, {"CM_LISTEN__PROT=1"});
  EXPECT_NE(unknown.find("environment variable CM_LISTEN__PROT"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("unknown key"), std::string::npos) << unknown;
  auto bad = error_of(minimal, {"CM_LISTEN__PORT=abc"});
  EXPECT_NE(bad.find("environment variable CM_LISTEN__PORT"), std::string::npos) << bad;
  auto shape = error_of(minimal, {"CM_DATABASE__URL__X=1"});
  EXPECT_NE(shape.find("CM_DATABASE__URL__X"), std::string::npos) << shape;
}

TEST(ServiceConfig, KeySigningIsParsedStrictly) {
  auto defaults = parse(minimal);
  EXPECT_EQ(defaults.key_signing.threads, 1);
  EXPECT_EQ(defaults.key_signing.max_queued, 16);
  auto set = parse(minimal + "key_signing:\n  threads: 2\n  max_queued: 4\n",
                   {"CM_KEY_SIGNING__MAX_QUEUED=8"});
  EXPECT_EQ(set.key_signing.threads, 2);
  EXPECT_EQ(set.key_signing.max_queued, 8);
  auto none = error_of(minimal + "key_signing:\n  threads: 0\n");
  EXPECT_NE(none.find("key_signing.threads"), std::string::npos) << none;
  auto unbounded = error_of(minimal + "key_signing:\n  max_queued: 0\n");
  EXPECT_NE(unbounded.find("key_signing.max_queued"), std::string::npos) << unbounded;
  auto unknown = error_of(minimal + "key_signing:\n  queue: 4\n");
  EXPECT_NE(unknown.find("key_signing.queue"), std::string::npos) << unknown;
}

TEST(ServiceConfig, TokenPortBoundsAreParsedStrictly) {
  auto defaults = parse(minimal).token_service;
  EXPECT_EQ(defaults.max_peers, 64);
  EXPECT_EQ(defaults.max_message_bytes, 65536);
  EXPECT_EQ(defaults.handshake_timeout_ms, 10000);
  EXPECT_EQ(defaults.stall_timeout_ms, 10000);
  EXPECT_EQ(defaults.idle_timeout_ms, 300000);
  auto set = parse(minimal + "token_service:\n  max_peers: 8\n  max_message_bytes: 4096\n"
                             "  handshake_timeout_ms: 2000\n  stall_timeout_ms: 3000\n"
                             "  idle_timeout_ms: 60000\n",
                   {"CM_TOKEN_SERVICE__MAX_PEERS=9"})
               .token_service;
  EXPECT_EQ(set.max_peers, 9);
  EXPECT_EQ(set.max_message_bytes, 4096);
  EXPECT_EQ(set.handshake_timeout_ms, 2000);
  EXPECT_EQ(set.stall_timeout_ms, 3000);
  EXPECT_EQ(set.idle_timeout_ms, 60000);
  for (auto bad : {"max_peers: 0", "max_message_bytes: 100", "max_message_bytes: 1073741824",
                   "handshake_timeout_ms: 0", "stall_timeout_ms: 0", "idle_timeout_ms: 0"}) {
    auto err = error_of(minimal + "token_service:\n  " + bad + "\n");
    auto key = std::string(bad).substr(0, std::string(bad).find(':'));
    EXPECT_NE(err.find("token_service." + key), std::string::npos) << bad << ": " << err;
  }
  auto unknown = error_of(minimal + "token_service:\n  max_connections: 4\n");
  EXPECT_NE(unknown.find("token_service.max_connections"), std::string::npos) << unknown;
}

TEST(ServiceConfig, ForwardingToTheOwnerIsOnByDefaultAndParsedStrictly) {
  auto defaults = parse(minimal).cluster;
  EXPECT_TRUE(defaults.forward);
  EXPECT_EQ(defaults.forward_timeout_ms, 1000);
  EXPECT_EQ(defaults.advertise_address, "");
  auto set = parse(minimal + "cluster:\n  forward: false\n  forward_timeout_ms: 250\n"
                             "  advertise_address: 10.0.0.7\n")
               .cluster;
  EXPECT_FALSE(set.forward);
  EXPECT_EQ(set.forward_timeout_ms, 250);
  EXPECT_EQ(set.advertise_address, "10.0.0.7");
  for (auto bad : {"forward_timeout_ms: 0", "forward_timeout_ms: 600000", "forward: maybe",
                   "advertise_address: \"10.0.0.7:9000/x\"", "advertise_address: \"a b\""}) {
    auto err = error_of(minimal + "cluster:\n  " + bad + "\n");
    auto key = std::string(bad).substr(0, std::string(bad).find(':'));
    EXPECT_NE(err.find("cluster." + key), std::string::npos) << bad << ": " << err;
  }
}

TEST(ServiceConfig, ServiceTokensNeedAHexSha256) {
  auto err = error_of(minimal.substr(0, minimal.size()) +
                      "  service_tokens:\n    - name: reporting\n      sha256: nothex\n");
  EXPECT_NE(err.find("auth.service_tokens[0].sha256"), std::string::npos) << err;
  auto cfg = parse(minimal + "  service_tokens:\n    - name: r\n      sha256: " +
                   std::string(64, 'a') + "\n      scopes: [FETCH_CONFIG]\n");
  ASSERT_EQ(cfg.auth.service_tokens.size(), 1u);
  EXPECT_EQ(cfg.auth.service_tokens[0].scopes.at(0), "FETCH_CONFIG");
}

TEST(ServiceConfig, TenantLimitsHaveDefaultsAndAreCheckedAgainstThePool) {
  auto cfg = parse(minimal);
  EXPECT_EQ(cfg.oauth.max_pending_states, 20);
  EXPECT_TRUE(cfg.rate_limit.enabled);
  EXPECT_EQ(cfg.rate_limit.user_burst, 30);
  EXPECT_EQ(cfg.rate_limit.user_per_minute, 300);
  EXPECT_EQ(cfg.rate_limit.service_burst, 120);
  EXPECT_EQ(cfg.rate_limit.service_per_minute, 1200);
  EXPECT_EQ(cfg.events.max_subscribers, 256);
  EXPECT_EQ(cfg.events.max_subscribers_per_team, 16);
  EXPECT_EQ(cfg.events.max_subscribers_per_service, 16);
  EXPECT_EQ(cfg.events.reserved_service_subscribers, 32);
  // Unset quotas follow a small pool instead of refusing it.
  auto small = parse(minimal + "events:\n  max_subscribers: 8\n");
  EXPECT_EQ(small.events.reserved_service_subscribers, 1);
  EXPECT_EQ(small.events.max_subscribers_per_team, 7);
  EXPECT_EQ(small.events.max_subscribers_per_service, 8);
  auto set = parse(minimal + "rate_limit:\n  enabled: false\n  user_burst: 5\n"
                             "  user_per_minute: 1\noauth:\n  max_pending_states: 3\n",
                   {"CM_RATE_LIMIT__SERVICE_BURST=7"});
  EXPECT_FALSE(set.rate_limit.enabled);
  EXPECT_EQ(set.rate_limit.user_burst, 5);
  EXPECT_EQ(set.rate_limit.user_per_minute, 1);
  EXPECT_EQ(set.rate_limit.service_burst, 7);
  EXPECT_EQ(set.oauth.max_pending_states, 3);

  EXPECT_NE(error_of(minimal + "rate_limit:\n  user_burst: 0\n").find("rate_limit.user_burst"),
            std::string::npos);
  EXPECT_NE(error_of(minimal + "rate_limit:\n  enabled: sometimes\n").find("rate_limit.enabled"),
            std::string::npos);
  EXPECT_NE(error_of(minimal + "rate_limit:\n  per_second: 5\n").find("unknown key"),
            std::string::npos);
  EXPECT_NE(
    error_of(minimal + "oauth:\n  max_pending_states: 0\n").find("oauth.max_pending_states"),
    std::string::npos);
  auto quota = error_of(minimal + "events:\n  max_subscribers: 10\n"
                                  "  reserved_service_subscribers: 4\n"
                                  "  max_subscribers_per_team: 7\n");
  EXPECT_NE(quota.find("events.max_subscribers_per_team"), std::string::npos) << quota;
  EXPECT_NE(quota.find("between 1 and 6"), std::string::npos) << quota;
  EXPECT_NE(error_of(minimal + "events:\n  max_subscribers: 10\n"
                                "  reserved_service_subscribers: 10\n")
              .find("events.reserved_service_subscribers"),
            std::string::npos);
  EXPECT_NE(error_of(minimal + "events:\n  max_subscribers_per_service: 300\n")
              .find("events.max_subscribers_per_service"),
            std::string::npos);
}

// The proxy streams answers past stream_after_bytes, which follows a
// smaller max_response_bytes and may never exceed it.
TEST(ServiceConfig, TheProxysStreamingThresholdStaysWithinTheSizeCap) {
  auto cfg = parse(minimal);
  EXPECT_EQ(cfg.proxy.max_response_bytes, 8 << 20);
  EXPECT_EQ(cfg.proxy.stream_after_bytes, 256 << 10);
  auto small = parse(minimal + "proxy:\n  max_response_bytes: 65536\n");
  EXPECT_EQ(small.proxy.stream_after_bytes, 65536);
  auto set = parse(minimal + "proxy:\n  stream_after_bytes: 4096\n");
  EXPECT_EQ(set.proxy.stream_after_bytes, 4096);
  auto over = error_of(minimal + "proxy:\n  max_response_bytes: 65536\n"
                                 "  stream_after_bytes: 131072\n");
  EXPECT_NE(over.find("proxy.stream_after_bytes"), std::string::npos) << over;
  EXPECT_NE(error_of(minimal + "proxy:\n  stream_after_bytes: 10\n").find("proxy.stream_after_bytes"),
            std::string::npos);
}

TEST(ServiceConfig, ShippedServiceFileLoads) {
  char* env[] = {nullptr};
  auto cfg = load_service_config(cm::test::source_dir() + "/config/connector-manager.yaml", env);
  EXPECT_EQ(cfg.listen.address, "127.0.0.1");
  EXPECT_EQ(cfg.listen.port, 8080);
  auto catalog = load_provider_catalog(cfg.providers_file);
  apply_provider_settings(catalog, cfg.providers);
  EXPECT_NE(catalog.find("github"), nullptr);
}

TEST(ProviderCatalog, ShippedCatalogLoadsWithItsEntries) {
  auto catalog = load_provider_catalog(cm::test::source_dir() + "/config/providers.yaml");
  auto github = catalog.find("github");
  ASSERT_NE(github, nullptr);
  EXPECT_EQ(github->mode, auth_mode::oauth2);
  EXPECT_TRUE(github->pkce);
  ASSERT_TRUE(github->account.has_value());
  EXPECT_EQ(github->account->name_pointer, "/login");
  auto stripe = catalog.find("stripe");
  ASSERT_NE(stripe, nullptr);
  ASSERT_TRUE(stripe->api_key.has_value());
  EXPECT_EQ(stripe->api_key->scheme, "bearer");
  auto workspace = catalog.find("google-workspace");
  ASSERT_NE(workspace, nullptr);
  EXPECT_EQ(workspace->authorization_params.at("access_type"), "offline");
  EXPECT_EQ(workspace->scope_apps.at("https://www.googleapis.com/auth/drive.readonly"), "drive");
}

TEST(ProviderCatalog, SchemaErrorsNameFileLineAndKey) {
  auto unknown = catalog_error("providers:\n  x:\n    auth_mode: oauth2\n    colour: red\n");
  EXPECT_NE(unknown.find("providers.yaml:4:5"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("providers.x.colour"), std::string::npos) << unknown;
  auto mode = catalog_error("providers:\n  x:\n    auth_mode: magic\n");
  EXPECT_NE(mode.find("providers.x.auth_mode"), std::string::npos) << mode;
  auto missing = catalog_error(
    "providers:\n  x:\n    auth_mode: oauth2\n    authorization_url: https://a/\n");
  EXPECT_NE(missing.find("providers.x.token_url"), std::string::npos) << missing;
  auto placeholder = catalog_error(
    "providers:\n  x:\n    auth_mode: oauth2\n    authorization_url: https://{shop}.a/\n"
    "    token_url: https://a/t\n");
  EXPECT_NE(placeholder.find("{shop}"), std::string::npos) << placeholder;
  auto key = catalog_error("providers:\n  x:\n    auth_mode: api_key\n");
  EXPECT_NE(key.find("providers.x.api_key"), std::string::npos) << key;
  auto name = catalog_error("providers:\n  Bad_Name:\n    auth_mode: api_key\n");
  EXPECT_NE(name.find("lower-case"), std::string::npos) << name;
  auto scheme = catalog_error("providers:\n  x:\n    auth_mode: api_key\n    api_key:\n"
                              "      validate_url: https://a/\n      scheme: telepathy\n");
  EXPECT_NE(scheme.find("providers.x.api_key.scheme"), std::string::npos) << scheme;
}

// libstdc++'s regex parser overflows an int on a huge repetition count or
// back-reference (fuzz_provider_catalog found it) and expands a count into
// that many states: patterns are checked before it sees them.
TEST(ProviderCatalog, TemplatePatternsWithHugeCountsOrLengthsAreRefused) {
  auto with_pattern = [](const std::string& pattern) {
    return catalog_error("providers:\n  x:\n    auth_mode: api_key\n    template_params:\n"
                         "      p: '" + pattern + "'\n");
  };
  for (const std::string& refused :
       std::vector<std::string>{"a{0999999999999999999,}", "a{1,99999999999}", "a{1001}",
                                "(a)\\99999999999", std::string(300, 'a')}) {
    auto error = with_pattern(refused);
    EXPECT_NE(error.find("providers.x.template_params.p"), std::string::npos)
      << refused << ": " << error;
    EXPECT_NE(error.find("pattern"), std::string::npos) << error;
  }
  // Ordinary patterns, a count of 1000, an escaped brace before a long
  // literal number, and an escaped backslash before digits all pass this
  // check (the entry then fails later, for its missing api_key).
  for (const std::string& accepted :
       std::vector<std::string>{"^[a-z]{1,1000}$", "^(us|eu)\\.posthog\\.com$",
                                "^v\\{20240101$", "^a\\\\123456$"}) {
    auto error = with_pattern(accepted);
    EXPECT_EQ(error.find("template_params"), std::string::npos) << accepted << ": " << error;
    EXPECT_NE(error.find("providers.x.api_key"), std::string::npos) << accepted << ": " << error;
  }
}

TEST(ProviderCatalog, DeploymentOverridesReplaceUrls) {
  auto catalog = load_provider_catalog(cm::test::source_dir() + "/config/providers.yaml");
  std::map<std::string, provider_settings> settings;
  settings["github"].urls["token_url"] = "http://127.0.0.1:1234/token";
  settings["stripe"].urls["validate_url"] = "http://127.0.0.1:1234/v1/balance";
  apply_provider_settings(catalog, settings);
  EXPECT_EQ(catalog.find("github")->token_url, "http://127.0.0.1:1234/token");
  EXPECT_EQ(catalog.find("stripe")->api_key->validate_url, "http://127.0.0.1:1234/v1/balance");
  std::map<std::string, provider_settings> unknown;
  unknown["nope"].urls["token_url"] = "http://127.0.0.1/";
  EXPECT_THROW(apply_provider_settings(catalog, unknown), config_error);
  std::map<std::string, provider_settings> wrong_kind;
  wrong_kind["stripe"].urls["token_url"] = "http://127.0.0.1/";
  EXPECT_THROW(apply_provider_settings(catalog, wrong_kind), config_error);
}

// Issue 16: every value that fills a URL placeholder keeps the URL's shape,
// including the catalog's own defaults and this deployment's client id
// (GitHub's revocation path holds {client_id}).
TEST(ProviderCatalog, TemplateDefaultsAndDeploymentClientIdsKeepTheUrlsShape) {
  auto with_default = [](const std::string& value) {
    return catalog_error("providers:\n  x:\n    auth_mode: oauth2\n    template_params:\n"
                         "      tenant: '^.*$'\n    template_defaults:\n      tenant: '" +
                         value + "'\n    authorization_url: https://login.test/{tenant}/a\n"
                         "    token_url: https://login.test/{tenant}/t\n");
  };
  EXPECT_EQ(with_default("common"), "");
  for (auto refused : {"..", ".", "a/b", "%2e%2e", "a?b", "a#b"}) {
    auto error = with_default(refused);
    EXPECT_NE(error.find("providers.x.template_defaults.tenant"), std::string::npos)
      << refused << ": " << error;
  }
  auto empty_pattern = catalog_error(
    "providers:\n  x:\n    auth_mode: oauth2\n    template_params:\n      tenant: ''\n"
    "    authorization_url: https://login.test/{tenant}/a\n    token_url: https://login.test/t\n");
  EXPECT_NE(empty_pattern.find("providers.x.template_params.tenant"), std::string::npos)
    << empty_pattern;

  auto catalog = load_provider_catalog(cm::test::source_dir() + "/config/providers.yaml");
  for (auto provider : {"github", "microsoft", "shopify"}) {
    for (auto refused : {"..", ".", "app/../x", "a%2F", "a b"}) {
      std::map<std::string, provider_settings> settings;
      settings[provider].client_id = refused;
      try {
        apply_provider_settings(catalog, settings);
        ADD_FAILURE() << provider << " accepted client_id " << refused;
      } catch (const config_error& e) {
        EXPECT_NE(std::string(e.what()).find(std::string("providers.") + provider + ".client_id"),
                  std::string::npos)
          << e.what();
      }
    }
    std::map<std::string, provider_settings> fine;
    fine[provider].client_id = "Iv1.0123abcd_-";
    EXPECT_NO_THROW(apply_provider_settings(catalog, fine)) << provider;
  }
}

TEST(ServiceConfig, KafkaIsOffByDefaultAndItsSecuritySettingsAreChecked) {
  auto cfg = parse(minimal);
  EXPECT_FALSE(cfg.events.kafka.enabled());
  EXPECT_EQ(cfg.events.kafka.token_events_topic, "token-events");
  EXPECT_EQ(cfg.events.kafka.entity_events_topic, "entity-events");
  auto set = parse(minimal + R"(events:
  kafka:
    brokers: "k1:9092,k2:9092"
    topics: {token_events: cm.tokens, entity_events: cm.entities}
    security_protocol: sasl_ssl
    sasl: {mechanism: SCRAM-SHA-512, username: cm, password_file: secrets/kafka.password}
    tls: {ca_file: /etc/ssl/kafka-ca.pem}
)");
  auto& k = set.events.kafka;
  EXPECT_TRUE(k.enabled());
  EXPECT_EQ(k.token_events_topic, "cm.tokens");
  EXPECT_EQ(k.sasl_password_file, "/etc/cm/secrets/kafka.password");
  EXPECT_EQ(k.tls_ca_file, "/etc/ssl/kafka-ca.pem");
  auto kafka = [](const std::string& body) { return minimal + "events:\n  kafka:\n" + body; };
  EXPECT_NE(error_of(kafka("    security_protocol: tls\n")).find("events.kafka.security_protocol"),
            std::string::npos);
  EXPECT_NE(error_of(kafka("    security_protocol: sasl_ssl\n    sasl: {mechanism: PLAIN}\n"))
              .find("events.kafka.sasl"),
            std::string::npos);
  EXPECT_NE(error_of(kafka("    sasl: {username: cm}\n")).find("needs security_protocol"),
            std::string::npos);
  EXPECT_NE(error_of(kafka("    tls: {ca_file: /x}\n")).find("needs security_protocol"),
            std::string::npos);
  EXPECT_NE(error_of(kafka("    topics: {token_events: \"a b\"}\n")).find("events.kafka.topics"),
            std::string::npos);
  EXPECT_NE(error_of(kafka("    topics: {token_events: x, entity_events: x}\n"))
              .find("must differ"),
            std::string::npos);
  EXPECT_NE(error_of(kafka("    password: x\n")).find("password"), std::string::npos);
}

// API-key connectors end to end: POST /api/connectors/connect against the
// fake provider, whose endpoints accept exactly the header shape each real
// provider requires. Nothing is stored unless the provider accepted the key.
#include <chrono>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/outbox.hpp"
#include "storage/token_store.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/hostile_keys.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/rsa_test_key.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/stripe_mock.hpp"

using namespace cm;
using namespace cm::test;

namespace {

const std::string service_token = "svc-token-api-keys-0001";

struct key_world {
  std::string db = fresh_database("apikeys");
  fake_provider_process fake;
  std::unique_ptr<server_process> server;
  std::string alice;

  key_world() {
    server_options o{db};
    o.log_level = "info";
    o.service_tokens.push_back({"reporting", service_token, {"FETCH_CONFIG"}});
    auto base = "http://127.0.0.1:" + std::to_string(fake.port());
    auto url = [&](const std::string& provider, const std::string& path) {
      return "  " + provider + ":\n    validate_url: " + base + path + "\n";
    };
    o.extra_yaml = "refresh:\n  provider_timeout_ms: 1000\n  lease_ms: 5000\nproviders:\n" +
                   url("stripe", "/v1/balance") + url("posthog", "/api/users/@me/") +
                   url("klaviyo", "/api/accounts/") + url("gorgias", "/{domain}/api/account") +
                   url("zendesk", "/{subdomain}/api/v2/users/me.json") + url("vercel", "/v2/user") +
                   url("railway", "/graphql/v2") + url("figma", "/v1/me") +
                   url("google-analytics", "/v1beta/properties/{property_id}/metadata") +
                   "    token_url: " + base + "/token\n";
    server = std::make_unique<server_process>(o);
    if (!server->wait_ready())
      throw std::runtime_error("server did not start: " + server->log());
    alice = "Bearer " + server->mint("alice", "acme");
  }

  http_reply connect(const nlohmann::json& body) {
    return http_call(server->port(), "POST", "/api/connectors/connect",
                     {{"Authorization", alice}, {"Content-Type", "application/json"}}, body.dump());
  }
  int64_t rows() {
    return psql_int(db, "SELECT count(*) FROM connector_tokens");
  }
  /// Every row a connect could write, as text.
  std::string tables() {
    std::string out;
    for (auto table : {"connector_tokens", "event_outbox", "webhook_deliveries", "audit_log"})
      out += psql(db, std::string("SELECT row_to_json(t)::text FROM ") + table + " t ORDER BY 1");
    return out;
  }
};

void expect_error(const http_reply& r, int status, const std::string& code,
                  const std::string& fragment = "") {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(r.json()["error"]["code"], code) << r.body;
  if (!fragment.empty()) {
    EXPECT_NE(r.json()["error"]["message"].get<std::string>().find(fragment), std::string::npos)
      << r.body;
  }
}

} // namespace

TEST(ApiKeys, EachProvidersHeaderShapeIsAccepted) {
  key_world w;
  struct good {
    nlohmann::json body;
    std::string account;
  };
  std::vector<good> cases = {
    {{{"provider", "stripe"}, {"api_key", "sk_test_good"}}, ""},
    {{{"provider", "posthog"}, {"api_key", "phx_good"}}, "ops@acme.test"},
    {{{"provider", "klaviyo"}, {"api_key", "pk_good"}}, "Acme"},
    {{{"provider", "gorgias"}, {"api_key", "gorgias_good"}, {"domain", "acme"}, {"email", "ops@acme.test"}},
     "acme"},
    {{{"provider", "zendesk"}, {"api_key", "zd_good"}, {"subdomain", "acme"}, {"email", "ops@acme.test"}},
     "Ops Agent"},
    {{{"provider", "vercel"}, {"api_key", "vcp_good"}}, "acme-vercel"},
    {{{"provider", "railway"}, {"api_key", "rw_good"}}, "Acme Ops"},
    {{{"provider", "figma"}, {"api_key", "figd_good"}}, "acme-figma"},
  };
  for (auto& c : cases) {
    auto r = w.connect(c.body);
    EXPECT_EQ(r.status, 200) << c.body["provider"] << ": " << r.body;
    EXPECT_EQ(r.json()["account_name"], c.account) << c.body["provider"];
    EXPECT_EQ(r.raw.find(c.body["api_key"].get<std::string>()), std::string::npos);
  }
  EXPECT_EQ(w.rows(), static_cast<int64_t>(cases.size()));
  auto list = http_call(w.server->port(), "GET", "/api/connectors/list", {{"Authorization", w.alice}});
  ASSERT_EQ(list.json()["connections"].size(), cases.size());
  // Keep the parsed body alive: ranging over a member of a temporary
  // would read freed memory.
  auto listed = list.json();
  for (auto& c : listed["connections"])
    EXPECT_EQ(c["type"], "api_key");
  auto token = http_call(w.server->port(), "GET", "/api/internal/tokens/zendesk?user_id=alice",
                         {{"X-Services-Token", service_token}});
  ASSERT_EQ(token.status, 200) << token.body;
  EXPECT_EQ(token.json()["access_token"], "zd_good");
  EXPECT_EQ(token.json()["token_type"], "api_key");
  EXPECT_EQ(token.json()["metadata"]["subdomain"], "acme");
  auto del = http_call(w.server->port(), "DELETE", "/api/connectors/zendesk", {{"Authorization", w.alice}});
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(del.json()["revoked"], false);
  EXPECT_EQ(w.rows(), static_cast<int64_t>(cases.size()) - 1);
  EXPECT_EQ(psql_int(w.db, "SELECT count(*) FROM event_outbox WHERE event_type = 'TOKEN_CREATED'"),
            static_cast<int64_t>(cases.size()));
}

TEST(ApiKeys, RejectedKeysAre422AndNothingIsStored) {
  key_world w;
  expect_error(w.connect({{"provider", "stripe"}, {"api_key", "sk_test_revoked"}}), 422,
               "invalid_credentials", "HTTP 401");
  expect_error(w.connect({{"provider", "figma"}, {"api_key", "figd_revoked"}}), 422,
               "invalid_credentials");
  expect_error(w.connect({{"provider", "railway"}, {"api_key", "rw_revoked"}}), 422,
               "invalid_credentials", "GraphQL");
  expect_error(w.connect({{"provider", "zendesk"}, {"api_key", "zd_good"}, {"subdomain", "acme"},
                          {"email", "other@acme.test"}}),
               422, "invalid_credentials");
  EXPECT_EQ(w.rows(), 0);
}

TEST(ApiKeys, MissingAndMalformedFieldsAre400NamingTheField) {
  key_world w;
  expect_error(w.connect({{"api_key", "x"}}), 400, "bad_request", "provider");
  expect_error(w.connect({{"provider", "stripe"}}), 400, "bad_request", "api_key");
  expect_error(w.connect({{"provider", "stripe"}, {"api_key", "pk_live_publishable"}}), 400,
               "bad_request", "does not look like a Stripe key");
  expect_error(w.connect({{"provider", "stripe"}, {"api_key", "sk_test_with space"}}), 400,
               "bad_request", "api_key is malformed");
  expect_error(w.connect({{"provider", "zendesk"}, {"api_key", "zd_good"}, {"email", "ops@acme.test"}}),
               400, "bad_request", "subdomain is required");
  expect_error(w.connect({{"provider", "zendesk"}, {"api_key", "zd_good"}, {"subdomain", "evil.com/x"},
                          {"email", "ops@acme.test"}}),
               400, "bad_request", "subdomain is not valid");
  expect_error(w.connect({{"provider", "gorgias"}, {"api_key", "g"}, {"domain", "acme"},
                          {"email", "not-an-email"}}),
               400, "bad_request", "email is not valid");
  expect_error(w.connect({{"provider", "github"}, {"api_key", "x"}}), 400, "bad_request", "OAuth");
  expect_error(w.connect({{"provider", "nosuch"}, {"api_key", "x"}}), 404, "not_found");
  auto broken = http_call(w.server->port(), "POST", "/api/connectors/connect",
                          {{"Authorization", w.alice}}, "{\"provider\":");
  expect_error(broken, 400, "bad_request", "not valid JSON");
  EXPECT_EQ(http_call(w.server->port(), "POST", "/api/connectors/connect", {},
                      R"({"provider":"stripe","api_key":"sk_test_good"})").status,
            401);
  EXPECT_EQ(w.rows(), 0);
  EXPECT_EQ(w.fake.refresh_calls(), 0);
}

TEST(ApiKeys, ProviderTroubleIs502AndNothingIsStored) {
  key_world w;
  auto stripe = nlohmann::json{{"provider", "stripe"}, {"api_key", "sk_test_good"}};
  w.fake.admin("/__behavior", R"({"mode":"error500","count":1})");
  expect_error(w.connect(stripe), 502, "provider_failed", "HTTP 500");
  w.fake.admin("/__behavior", R"({"mode":"html","count":1})");
  expect_error(w.connect(stripe), 502, "provider_failed", "not JSON");
  w.fake.admin("/__behavior", R"({"mode":"big","count":1})");
  expect_error(w.connect(stripe), 502, "provider_failed", "too_large");
  w.fake.admin("/__behavior", R"({"mode":"normal","delay_ms":2500,"count":1})");
  expect_error(w.connect(stripe), 502, "provider_failed");
  EXPECT_EQ(w.rows(), 0);
  // And it recovers: the same key connects once the provider is back.
  EXPECT_EQ(w.connect(stripe).status, 200);
}

// Stripe against stripe-stateful-mock, a third-party Stripe emulator (npm,
// pinned in tests/e2e). It has no balance endpoint, so validation uses one
// it serves.
TEST(ApiKeys, StripeAgainstStripeStatefulMock) {
  stripe_mock mock;
  server_options o{fresh_database("stripemock")};
  o.extra_yaml = "providers:\n  stripe:\n    validate_url: " + mock.url() +
                 "/v1/customers?limit=1\n";
  server_process server{o};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto user = "Bearer " + server.mint("alice", "acme");
  auto connect = [&](const std::string& key) {
    return http_call(server.port(), "POST", "/api/connectors/connect", {{"Authorization", user}},
                     nlohmann::json{{"provider", "stripe"}, {"api_key", key}}.dump());
  };
  auto live = connect("sk_live_not_accepted_by_the_mock");
  EXPECT_EQ(live.status, 422) << live.body;
  auto ok = connect("sk_test_4eC39HqLyjWDarjtT1zdp7dc");
  EXPECT_EQ(ok.status, 200) << ok.body;
  auto list = http_call(server.port(), "GET", "/api/connectors/list", {{"Authorization", user}});
  ASSERT_EQ(list.json()["connections"].size(), 1u);
  EXPECT_EQ(list.json()["connections"][0]["provider"], "stripe");
}

// Google Analytics 4: a service-account key file. The JWT-bearer grant is
// signed with the key and verified by the fake with its public key.
TEST(ApiKeys, GoogleAnalyticsServiceAccountKeys) {
  key_world w;
  temp_dir dir;
  auto priv = dir.file("sa.pem"), pub = dir.file("sa.pub"), other = dir.file("other.pem");
  ASSERT_EQ(run_command("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " + priv +
                        " 2>/dev/null && openssl pkey -in " + priv + " -pubout -out " + pub +
                        " && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " +
                        other + " 2>/dev/null"),
            0);
  const std::string email = "cm-ga4@acme-project.iam.gserviceaccount.com";
  w.fake.admin("/__ga4", nlohmann::json{{"client_email", email}, {"public_key", read_file(pub)}}.dump());
  auto key_file = [&](const std::string& pem_path) {
    return nlohmann::json{{"type", "service_account"},
                          {"project_id", "acme-project"},
                          {"private_key_id", "k1"},
                          {"private_key", read_file(pem_path)},
                          {"client_email", email},
                          {"token_uri", "https://evil.example/token"}}
      .dump(2);
  };
  auto connect = [&](const std::string& key, const std::string& property) {
    return w.connect({{"provider", "google-analytics"}, {"api_key", key}, {"property_id", property}});
  };
  expect_error(connect("not json", "123456"), 400, "bad_request", "service-account JSON key");
  expect_error(w.connect({{"provider", "google-analytics"}, {"api_key", key_file(priv)}}), 400,
               "bad_request", "property_id is required");
  expect_error(connect(key_file(other), "123456"), 422, "invalid_credentials", "invalid_grant");
  expect_error(connect(key_file(priv), "999"), 422, "invalid_credentials", "HTTP 403");
  EXPECT_EQ(w.rows(), 0);
  auto ok = connect(key_file(priv), "123456");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json()["account_name"], email);
  // Services get a minted access token, never the key file.
  auto token = http_call(w.server->port(), "GET", "/api/internal/tokens/google-analytics?user_id=alice",
                         {{"X-Services-Token", service_token}});
  ASSERT_EQ(token.status, 200) << token.body;
  EXPECT_EQ(token.json()["access_token"].get<std::string>().rfind("ya29-", 0), 0u);
  EXPECT_EQ(token.raw.find("PRIVATE KEY"), std::string::npos);
  auto list = http_call(w.server->port(), "GET", "/api/connectors/list", {{"Authorization", w.alice}});
  EXPECT_EQ(list.json()["connections"][0]["type"], "api_key");
  // A refresh mints a new token with the stored key.
  auto refreshed = http_call(w.server->port(), "POST", "/api/connectors/google-analytics/refresh",
                             {{"Authorization", w.alice}});
  ASSERT_EQ(refreshed.status, 200) << refreshed.body;
  auto second = http_call(w.server->port(), "GET", "/api/internal/tokens/google-analytics?user_id=alice",
                          {{"X-Services-Token", service_token}});
  EXPECT_NE(second.json()["access_token"], token.json()["access_token"]);
}

// Issue 16: a member's key file chooses what signing with it costs (a
// 30,000-bit modulus with bogus CRT values: seconds to minutes of CPU).
// Only RSA keys of the sizes Google issues, consistent, are signed with;
// anything else is 400 naming api_key before any signing, nothing stored.
TEST(ApiKeys, ServiceAccountKeysOfOtherSizesOrInconsistentAre400AndNothingIsStored) {
  key_world w;
  const std::string email = "cm-ga4@acme-project.iam.gserviceaccount.com";
  auto good = test::generate_rsa_test_key(2048);
  w.fake.admin("/__ga4",
               nlohmann::json{{"client_email", email}, {"public_key", good.public_pem}}.dump());
  auto before = w.tables();
  struct refused_key {
    std::string what;
    std::string pem;
    std::string message;
  };
  std::vector<refused_key> cases = {
    {"30,000-bit modulus, bogus CRT values", test::oversized_bogus_crt_pem(30000),
     "api_key: private_key must be an RSA key of 2048 to 4096 bits (this one has 30000)"},
    {"1024-bit key", test::generate_rsa_test_key(1024).private_pem,
     "api_key: private_key must be an RSA key of 2048 to 4096 bits (this one has 1024)"},
    // Signs correctly (OpenSSL falls back to the private exponent) and the
    // fake would accept it: only the consistency check refuses it.
    {"the registered key with a bogus CRT value", test::bogus_crt_pem(good.private_pem),
     "api_key: private_key is not a consistent RSA key"},
    {"EC key", test::ec_pem(), "api_key: private_key must be an RSA key"},
  };
  for (auto& c : cases) {
    auto start = std::chrono::steady_clock::now();
    auto r = w.connect({{"provider", "google-analytics"},
                        {"api_key", test::service_account_file(c.pem, email)},
                        {"property_id", "123456"}});
    auto took = std::chrono::steady_clock::now() - start;
    expect_error(r, 400, "bad_request", c.message);
    EXPECT_LT(took, std::chrono::seconds(5)) << c.what << ": refused before any signing";
    EXPECT_EQ(r.raw.find("PRIVATE KEY"), std::string::npos) << c.what;
  }
  EXPECT_EQ(w.fake.refresh_calls(), 0) << "no grant reached the token endpoint";
  EXPECT_EQ(w.tables(), before);
  // The same key, consistent, connects.
  auto ok = w.connect({{"provider", "google-analytics"},
                       {"api_key", test::service_account_file(good.private_pem, email)},
                       {"property_id", "123456"}});
  EXPECT_EQ(ok.status, 200) << ok.body;
}

// Signing runs on the key signer's own thread, not on the CAF workers that
// serve everyone: a service fetching a token over HTTP is answered promptly
// while members connect keys that are slow to check and sign (4096-bit
// keys, the largest accepted) and keys that used to stall the workers for
// a minute each (30,000 bits, bogus CRT values).
TEST(ApiKeys, SlowServiceAccountKeysDoNotHoldUpOtherRequests) {
  key_world w;
  const std::string email = "cm-ga4@acme-project.iam.gserviceaccount.com";
  ASSERT_EQ(w.connect({{"provider", "stripe"}, {"api_key", "sk_test_good"}}).status, 200);
  auto fetch = [&] {
    auto start = std::chrono::steady_clock::now();
    auto r = http_call(w.server->port(), "GET", "/api/internal/tokens/stripe?user_id=alice",
                       {{"X-Services-Token", service_token}});
    EXPECT_EQ(r.status, 200) << r.body;
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  };
  auto idle = fetch();
  auto largest = test::service_account_file(test::generate_rsa_test_key(4096).private_pem, email);
  auto hostile = test::service_account_file(test::oversized_bogus_crt_pem(30000), email);
  std::vector<std::string> keys = {hostile, hostile};
  for (int i = 0; i < 8; ++i)
    keys.push_back(largest);
  std::vector<std::future<std::pair<int, std::chrono::steady_clock::time_point>>> connects;
  for (auto& key : keys)
    connects.push_back(std::async(std::launch::async, [&w, key] {
      auto r = w.connect({{"provider", "google-analytics"}, {"api_key", key},
                          {"property_id", "123456"}});
      return std::make_pair(r.status, std::chrono::steady_clock::now());
    }));
  // Let the connects reach the server and the signer's queue.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto busy = fetch();
  auto answered = std::chrono::steady_clock::now();
  int still_signing = 0;
  std::map<int, int> statuses;
  for (auto& c : connects) {
    auto [status, finished] = c.get();
    ++statuses[status];
    still_signing += finished > answered ? 1 : 0;
  }
  report_figure("token fetch over HTTP, idle", std::to_string(idle.count()) + " ms");
  report_figure("token fetch over HTTP while 10 service-account keys are connected",
                std::to_string(busy.count()) + " ms (" + std::to_string(still_signing) +
                  " connects still in flight when it was answered)");
  EXPECT_LT(busy, std::chrono::seconds(2)) << "a generous bound; the workers were held for "
                                              "a minute per hostile key before";
  EXPECT_EQ(statuses[400], 2) << "the hostile keys are refused";
  // The fake knows none of these keys: signed grants are refused there (422);
  // a connect that found the signer's queue full is 503.
  EXPECT_EQ(statuses[422] + statuses[503], 8);
  EXPECT_GT(still_signing, 0) << "the fetch was answered while keys were still being signed";
}

// Keys stored before these checks existed are checked the same way when a
// refresh signs with them: a key that fails is never signed with and the
// connection needs re-authorization.
TEST(ApiKeys, StoredServiceAccountKeysAreCheckedBeforeARefreshSigns) {
  key_world w;
  const std::string email = "cm-ga4@acme-project.iam.gserviceaccount.com";
  auto good = test::generate_rsa_test_key(2048);
  w.fake.admin("/__ga4",
               nlohmann::json{{"client_email", email}, {"public_key", good.public_pem}}.dump());
  {
    // As an older version stored it: the registered key, its CRT value off
    // by two (OpenSSL still signs correctly with it, by the slow path).
    config::database_config db_cfg;
    db_cfg.url = w.db;
    storage::database conn{db_cfg};
    storage::column_cipher cipher{storage::keyring::load(w.server->dir().file("master.key"))};
    storage::outbox events{conn};
    storage::token_store store{conn, cipher, events};
    token_record r;
    r.key = {"acme", "alice", "google-analytics"};
    r.kind = connection_kind::oauth;
    r.access_token = secret{"ya29-stored"};
    r.refresh_token =
      secret{test::service_account_file(test::bogus_crt_pem(good.private_pem), email)};
    r.expires_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count() +
                      3600'000;
    r.scopes = {"https://www.googleapis.com/auth/analytics.readonly"};
    r.metadata = nlohmann::json{{"property_id", "123456"}, {"client_email", email},
                                {"account_name", email}}
                   .dump();
    store.save(r);
  }
  auto refreshed = http_call(w.server->port(), "POST", "/api/connectors/google-analytics/refresh",
                             {{"Authorization", w.alice}});
  expect_error(refreshed, 409, "needs_reauth", "api_key: private_key is not a consistent RSA key");
  EXPECT_EQ(w.fake.refresh_calls(), 0) << "nothing was signed or sent";
  EXPECT_EQ(psql(w.db, "SELECT status FROM connector_tokens WHERE user_id = 'alice'"),
            "needs_reauth");
  EXPECT_EQ(
    psql_int(w.db, "SELECT count(*) FROM event_outbox WHERE event_type = 'TOKEN_EXPIRED'"), 1);
}

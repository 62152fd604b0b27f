// Hostile tenants (issue 16) against real server processes: one member or
// team must not be able to spend what everyone shares.
//  - Routes that write or call providers draw from a token bucket per
//    caller: one member is refused with 429 + Retry-After while another is
//    served, and a refused request changes nothing.
//  - A member keeps at most oauth.max_pending_states OAuth states (both
//    flow families together), however fast and from however many
//    instances they are created.
//  - Event streams have quotas per team and per service and a share
//    reserved for services.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <memory>
#include <thread>

#include "common/time.hpp"
#include "provider/oauth_flow.hpp"
#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/migrations.hpp"
#include "storage/outbox.hpp"
#include "storage/token_store.hpp"
#include "tests/support/event_clients.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

const std::string allowed = "https://app.example/integrations/done";
const std::string reporting_token = "svc-token-tenant-limits-reporting-01";
const std::string billing_token = "svc-token-tenant-limits-billing-0001";
const std::string github_config = R"({"baseUrl":"https://api.github.com"})";

/// A GitHub OAuth app (authorize only builds a URL; nothing is contacted) and
/// the redirect allowlist, plus `extra` YAML (top-level sections) and
/// `oauth_extra` (keys of the oauth section).
server_options limits_options(const std::string& db, const std::string& extra,
                              const std::string& oauth_extra = "") {
  server_options o{db};
  o.log_level = "info";
  o.service_tokens.push_back({"reporting", reporting_token, {"FETCH_CONFIG"}});
  o.service_tokens.push_back({"billing", billing_token, {"FETCH_CONFIG"}});
  // Providers a refused request would have called point at a closed
  // loopback port: nothing leaves the machine, limits or not.
  o.extra_yaml = "oauth:\n  allowed_redirect_uris: [" + allowed + "]\n" + oauth_extra + extra +
                 "providers:\n  github:\n    client_id: cm-test-client\n"
                 "    client_secret: cm-test-secret\n"
                 "    token_url: http://127.0.0.1:9/token\n"
                 "    revoke_url: http://127.0.0.1:9/revoke\n"
                 "  figma:\n    validate_url: http://127.0.0.1:9/v1/me\n"
                 "  google-workspace:\n    token_url: http://127.0.0.1:9/token\n";
  return o;
}

std::string authorize_path(bool team_flow) {
  auto redirect = oauth::form_encode({{"redirect_uri", allowed}});
  return team_flow ? "/api/v1/connectors/github/oauth/authorize?" + redirect
                   : "/api/oauth/github/authorize?" + redirect;
}

http_reply as(uint16_t port, const std::string& method, const std::string& target,
              const header_map& who, const std::string& body = "") {
  return http_call(port, method, target, who, body);
}

header_map bearer(const std::string& jwt) { return {{"Authorization", "Bearer " + jwt}}; }

void expect_rate_limited(const http_reply& r, int64_t max_retry_after_s) {
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_EQ(r.json()["error"]["code"], "rate_limited") << r.body;
  auto retry = r.header("retry-after");
  ASSERT_FALSE(retry.empty()) << "429 without Retry-After";
  ASSERT_EQ(retry.find_first_not_of("0123456789"), std::string::npos) << retry;
  EXPECT_GE(std::stoll(retry), 1);
  EXPECT_LE(std::stoll(retry), max_retry_after_s);
}

/// Everything a refused request could have changed.
std::string tables(const std::string& db) {
  return psql(db, "SELECT team_id, user_id, provider, encode(state_hash, 'hex') FROM oauth_states "
                  "ORDER BY 1, 2, 4") +
         "|" +
         psql(db, "SELECT team_id, connector_name, enabled, config::text, filters::text, version "
                  "FROM connector_configs ORDER BY 1, 2") +
         "|" + psql(db, "SELECT count(*) FROM connector_tokens") + "|" +
         psql(db, "SELECT count(*), coalesce(max(seq), 0) FROM audit_log") + "|" +
         psql(db, "SELECT count(*) FROM event_outbox");
}

int64_t pending_states(const std::string& db, const std::string& team, const std::string& user) {
  return psql_int(db, "SELECT count(*) FROM oauth_states WHERE team_id = '" + team +
                        "' AND user_id = '" + user + "'");
}

} // namespace

// -- rate limits ---------------------------------------------------------------

TEST(TenantRateLimit, OneMemberIsRefusedWhileAnotherIsServedAndNothingChanges) {
  auto db = fresh_database("ratelimit");
  // Small buckets refilled once a minute, so the test never races a refill.
  server_process server{limits_options(
    db, "rate_limit:\n  user_burst: 3\n  user_per_minute: 1\n  service_burst: 2\n"
        "  service_per_minute: 1\n")};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto port = server.port();
  auto alice = bearer(server.mint("alice", "acme"));
  auto bob = bearer(server.mint("bob", "acme"));
  auto ada = bearer(server.mint("ada", "acme", true));

  // Alice spends her burst on authorizations, all on one connection.
  http_connection c{port};
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(c.request("GET", authorize_path(false), alice).status, 200) << i;
  // The admin spends hers on configuration changes.
  ASSERT_EQ(as(port, "PUT", "/api/v1/connectors/config/github", ada, github_config).status, 200);
  ASSERT_EQ(as(port, "POST", "/api/v1/connectors/toggle/github", ada, R"({"enabled":true})").status,
            200);
  ASSERT_EQ(as(port, "POST", "/api/v1/connectors/filters/github", ada, R"({"includeArchived":true})")
              .status,
            200);
  ASSERT_EQ(psql_int_eventually(db, "SELECT count(*) FROM audit_log", 3), 3);
  auto before = tables(db);

  // Every metered route now refuses them, whatever it would have done.
  expect_rate_limited(c.request("GET", authorize_path(false), alice), 60);
  expect_rate_limited(as(port, "DELETE", "/api/connectors/github", alice), 60);
  expect_rate_limited(as(port, "POST", "/api/connectors/connect", alice,
                         R"({"provider":"figma","api_key":"figd_x"})"),
                      60);
  expect_rate_limited(as(port, "POST", "/api/connectors/github/refresh", alice), 60);
  expect_rate_limited(as(port, "PUT", "/api/v1/connectors/config/github", ada,
                         R"({"baseUrl":"https://github.example"})"),
                      60);
  expect_rate_limited(as(port, "POST", "/api/v1/connectors/toggle/github", ada,
                         R"({"enabled":false})"),
                      60);
  expect_rate_limited(as(port, "GET", authorize_path(true), ada), 60);
  expect_rate_limited(as(port, "POST", "/api/v1/connectors/getTokenFromCode", ada,
                         R"({"tempCode":"x"})"),
                      60);
  std::this_thread::sleep_for(200ms); // an audit row would be written by now
  EXPECT_EQ(tables(db), before) << "a refused request changed a table";

  // Reads are not metered.
  EXPECT_EQ(as(port, "GET", "/api/connectors/list", alice).status, 200);
  EXPECT_EQ(as(port, "GET", "/api/v1/connectors/config/github", ada).status, 200);
  // Another member of the same team is unaffected.
  auto for_bob = as(port, "GET", authorize_path(false), bob);
  EXPECT_EQ(for_bob.status, 200) << for_bob.body;
  EXPECT_EQ(pending_states(db, "acme", "bob"), 1);

  // Services: a bucket each; token fetches are never metered.
  auto refresh_body = R"({"userId":"alice","connectorName":"github","orgId":"acme"})";
  header_map reporting{{"X-Services-Token", reporting_token}};
  header_map billing{{"X-Services-Token", billing_token}};
  auto refresh = [&](const header_map& who) {
    return as(port, "POST", "/api/v1/connectors/internal/refreshIndividualConnectorToken", who,
              refresh_body);
  };
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(refresh(reporting).status, 404) << "no such connection, but not limited";
  expect_rate_limited(refresh(reporting), 60);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(as(port, "GET", "/api/internal/tokens/github?user_id=alice&team_id=acme", reporting)
                .status,
              404);
  EXPECT_EQ(refresh(billing).status, 404) << "another service has its own bucket";
}

TEST(TenantRateLimit, CanBeSwitchedOff) {
  auto db = fresh_database("ratelimitoff");
  server_process server{limits_options(
    db, "rate_limit:\n  enabled: false\n  user_burst: 1\n  user_per_minute: 1\n")};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto alice = bearer(server.mint("alice", "acme"));
  http_connection c{server.port()};
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(c.request("GET", authorize_path(false), alice).status, 200) << i;
}

// -- pending OAuth states ------------------------------------------------------

TEST(TenantOAuthStates, AMemberKeepsTheNewestTwentyWhateverTheRouteFamily) {
  auto db = fresh_database("statecap");
  // Limits off: this is about the states alone (the default cap, 20).
  server_process server{limits_options(db, "rate_limit:\n  enabled: false\n")};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto ada = bearer(server.mint("ada", "acme", true));
  auto bob = bearer(server.mint("bob", "acme"));
  ASSERT_EQ(as(server.port(), "GET", authorize_path(false), bob).status, 200);

  // 300 authorizations on one keep-alive connection, alternating families.
  http_connection c{server.port()};
  std::vector<std::string> states;
  for (int i = 0; i < 300; ++i) {
    auto r = c.request("GET", authorize_path(i % 2 == 0), ada);
    ASSERT_EQ(r.status, 200) << r.body;
    states.push_back(query_of(r.json()["auth_url"].get<std::string>())["state"]);
  }
  EXPECT_EQ(pending_states(db, "acme", "ada"), 20);
  EXPECT_EQ(psql_int(db, "SELECT count(*) FROM oauth_states WHERE user_id = 'ada' AND "
                         "connector_name IS NOT NULL"),
            10)
    << "both families share one cap";
  EXPECT_EQ(pending_states(db, "acme", "bob"), 1) << "another member's state was dropped";

  // The oldest were dropped; the newest still work.
  auto callback = [&](size_t i) {
    auto family = i % 2 == 0 ? "/api/v1/connectors/github/oauth/callback?"
                             : "/api/oauth/github/callback?";
    return http_call(server.port(), "GET",
                     family + oauth::form_encode({{"state", states[i]}, {"error", "access_denied"}}));
  };
  auto oldest = callback(0);
  EXPECT_EQ(oldest.status, 400);
  EXPECT_NE(oldest.body.find("unknown or already used state"), std::string::npos) << oldest.body;
  auto dropped = callback(279);
  EXPECT_NE(dropped.body.find("unknown or already used state"), std::string::npos) << dropped.body;
  auto newest = callback(299);
  EXPECT_EQ(newest.status, 400);
  EXPECT_NE(newest.body.find("the provider refused the authorization"), std::string::npos)
    << newest.body;
  auto kept = callback(280);
  EXPECT_NE(kept.body.find("the provider refused the authorization"), std::string::npos)
    << kept.body;
}

TEST(TenantOAuthStates, ConcurrentAuthorizationsOnTwoInstancesNeverPassTheCap) {
  auto db = fresh_database("statecaptwo");
  auto options =
    limits_options(db, "rate_limit:\n  enabled: false\n", "  max_pending_states: 5\n");
  server_process first{options};
  ASSERT_TRUE(first.wait_ready()) << first.log();
  options.key_file = first.dir().file("master.key");
  server_process second{options};
  ASSERT_TRUE(second.wait_ready()) << second.log();
  // An admin, so both families are open to her.
  std::vector<std::pair<uint16_t, std::string>> callers = {
    {first.port(), first.mint("alice", "acme", true)}, {first.port(), first.mint("alice", "acme", true)},
    {second.port(), second.mint("alice", "acme", true)},
    {second.port(), second.mint("alice", "acme", true)}};

  std::atomic<bool> done{false};
  std::atomic<int64_t> most{0};
  std::thread watcher([&] {
    while (!done) {
      most = std::max<int64_t>(most, pending_states(db, "acme", "alice"));
      std::this_thread::sleep_for(5ms);
    }
  });
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (auto& [port, jwt] : callers)
    threads.emplace_back([&, port = port, jwt = jwt] {
      http_connection c{port};
      for (int i = 0; i < 25; ++i)
        if (c.request("GET", authorize_path(i % 2 == 0), bearer(jwt)).status != 200)
          ++failures;
    });
  for (auto& t : threads)
    t.join();
  done = true;
  watcher.join();
  EXPECT_EQ(failures, 0) << first.log() << second.log();
  EXPECT_EQ(pending_states(db, "acme", "alice"), 5);
  EXPECT_LE(most, 5) << "more than the cap was visible at some point";
}

TEST(TenantOAuthStates, CapHoldsForConcurrentWritersOnSeparateConnections) {
  // The storage layer alone, eight connections writing in lockstep rounds
  // (every writer starts its round together): the member's lock is what
  // keeps the count, not one storage actor's serial order. Without it the
  // last round alone leaves up to cap + 7 states behind.
  config::database_config cfg;
  cfg.url = fresh_database("statecaprace");
  {
    storage::database db{cfg};
    storage::apply_migrations(db);
  }
  auto keys = storage::keyring::parse("active 1\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
  constexpr int32_t cap = 3;
  constexpr int writers = 8;
  constexpr int rounds = 30;
  std::mutex mutex;
  std::condition_variable cv;
  int waiting = 0;
  int round = 0;
  auto start_round_together = [&] {
    std::unique_lock<std::mutex> lock{mutex};
    auto mine = round;
    if (++waiting == writers) {
      waiting = 0;
      ++round;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return round != mine; });
    }
  };
  std::atomic<int> failures{0};
  std::atomic<int64_t> most{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w)
    threads.emplace_back([&, w] {
      storage::database db{cfg};
      storage::column_cipher cipher{keys};
      storage::outbox events{db};
      storage::token_store store{db, cipher, events};
      for (int i = 0; i < rounds; ++i) {
        oauth_state_record st;
        st.state_hash = random_hex(32);
        st.team_id = "acme";
        st.user_id = "alice";
        st.provider = "github";
        st.redirect_uri = allowed;
        st.expires_at_ms = unix_now_ms() + 600000;
        start_round_together();
        try {
          store.put_state(st, cap);
        } catch (const std::exception&) {
          ++failures;
        }
        // One writer looks between rounds, while the others are writing.
        if (w == 0)
          most = std::max<int64_t>(most, pending_states(cfg.url, "acme", "alice"));
      }
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(pending_states(cfg.url, "acme", "alice"), cap);
  EXPECT_LE(most, cap);
}

// -- event streams -------------------------------------------------------------

TEST(TenantEventStreams, OneTeamCannotTakeEveryStream) {
  auto db = fresh_database("streamquota");
  // A pool of 6: 2 reserved for services, so admins share 4; 2 per team,
  // 2 per service.
  server_process server{limits_options(
    db, "events:\n  poll_ms: 200\n  heartbeat_ms: 500\n  max_subscribers: 6\n"
        "  max_subscribers_per_team: 2\n  max_subscribers_per_service: 2\n"
        "  reserved_service_subscribers: 2\n")};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto port = server.port();
  auto admin = [&](const std::string& team) {
    return header_map{{"Authorization", "Bearer " + server.mint("admin-" + team, team, true)}};
  };
  header_map reporting{{"X-Services-Token", reporting_token}};
  header_map billing{{"X-Services-Token", billing_token}};
  auto open = [&](const header_map& who) {
    return std::make_unique<sse_client>(port, "/api/v1/events", who);
  };
  auto expect_refused = [](const sse_client& s, int status, const std::string& code) {
    EXPECT_EQ(s.status(), status) << s.error_body();
    auto body = nlohmann::json::parse(s.error_body(), nullptr, false);
    EXPECT_EQ(body["error"]["code"], code) << s.error_body();
    EXPECT_EQ(s.header("retry-after"), "1") << "a departed client's slot frees within a heartbeat";
  };

  // Acme's admins try to take every stream: two, then refused.
  auto acme = admin("acme");
  std::vector<std::unique_ptr<sse_client>> acme_streams;
  for (int i = 0; i < 6; ++i) {
    acme_streams.push_back(open(acme));
    if (i < 2)
      ASSERT_EQ(acme_streams.back()->status(), 200) << acme_streams.back()->error_body();
    else
      expect_refused(*acme_streams.back(), 429, "rate_limited");
  }
  acme_streams.resize(2);
  // Another team's admin and a service still get streams.
  auto globex = open(admin("globex"));
  EXPECT_EQ(globex->status(), 200) << globex->error_body();
  auto reporting_1 = open(reporting);
  EXPECT_EQ(reporting_1->status(), 200) << reporting_1->error_body();

  // Admins fill their share of the pool; services still get the reserve.
  auto initech = open(admin("initech"));
  EXPECT_EQ(initech->status(), 200) << initech->error_body();
  expect_refused(*open(admin("umbrella")), 503, "unavailable");
  auto reporting_2 = open(reporting);
  EXPECT_EQ(reporting_2->status(), 200) << reporting_2->error_body();
  expect_refused(*open(reporting), 429, "rate_limited");
  expect_refused(*open(billing), 503, "unavailable");

  // Closed streams stop counting.
  acme_streams.clear();
  auto acme_again = open(acme);
  EXPECT_EQ(acme_again->status(), 200) << acme_again->error_body();
  auto umbrella = open(admin("umbrella"));
  EXPECT_EQ(umbrella->status(), 200) << umbrella->error_body();
  reporting_1.reset();
  auto billing_1 = open(billing);
  EXPECT_EQ(billing_1->status(), 200) << billing_1->error_body();

  // The streams that were let in deliver events.
  ASSERT_EQ(as(port, "POST", "/api/v1/connectors/toggle/github", admin("globex"),
               R"({"enabled":true})")
              .status,
            200);
  auto e = globex->next(5s);
  ASSERT_TRUE(e) << server.log();
  EXPECT_EQ(nlohmann::json::parse(e->data)["orgId"], "globex");
  EXPECT_TRUE(billing_1->next(5s)) << "the service sees every team's events";
}

// Tokens end to end: real server processes, a real PostgreSQL, the fake
// provider on loopback. Internal token endpoint, manual and service
// refreshes, several instances refreshing one connection at expiry, and a
// second CAF program fetching a token by actor message.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>

#include "http/auth.hpp"

#include "actors/actor_config.hpp"
#include "actors/storage_actor.hpp"
#include "common/time.hpp"
#include "storage/keyring.hpp"
#include "storage/migrations.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/token_world.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

const std::string& service_token = world_service_token;
const std::string& weak_token = world_weak_token;

http_reply token_call(uint16_t port, const std::string& query,
                      const std::string& token = service_token) {
  return http_call(port, "GET", "/api/internal/tokens/github?" + query,
                   {{"X-Services-Token", token}});
}

} // namespace

TEST(Tokens, InternalEndpointServesTheAccessTokenNeverTheRefreshToken) {
  token_world w;
  w.seed("alice", 3600'000);
  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto r = token_call(server.port(), "user_id=alice&team_id=acme");
  ASSERT_EQ(r.status, 200) << r.body;
  auto json = r.json();
  EXPECT_EQ(json["access_token"], "at-seed-alice");
  EXPECT_EQ(json["token_type"], "Bearer");
  EXPECT_TRUE(json["expires_at"].is_string());
  EXPECT_EQ(json["scopes"], nlohmann::json::array({"repo"}));
  EXPECT_EQ(json["metadata"]["account_name"], "octocat");
  EXPECT_EQ(r.raw.find("rt-seed-alice"), std::string::npos);
  // Without team_id the user's only team is used.
  EXPECT_EQ(token_call(server.port(), "user_id=alice").json()["access_token"], "at-seed-alice");
  // Audited: who, what, from where.
  server.stop();
  EXPECT_EQ(w.count("SELECT count(*) FROM audit_log WHERE action = 'token.read' AND "
                    "actor_id = 'reporting' AND target = 'github/alice'"),
            2);
  EXPECT_EQ(w.fake.refresh_calls(), 0) << "valid tokens come from memory";
}

/// Issue 18: audit rows of token reads are written off the request path,
/// in batches, and every token handed out has its row.
TEST(Tokens, EveryServedTokenHasItsAuditRow) {
  token_world w;
  w.seed("alice", 3600'000);
  w.seed("bob", 3600'000);
  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  std::set<std::string> served;
  for (int i = 0; i < 40; ++i) {
    auto user = i % 2 ? std::string{"alice"} : std::string{"bob"};
    auto r = token_call(server.port(), "user_id=" + user + (i % 4 < 2 ? "&team_id=acme" : ""));
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_FALSE(r.headers["x-request-id"].empty());
    served.insert(r.headers["x-request-id"]);
  }
  ASSERT_EQ(served.size(), 40u);
  // Written while the server runs, not only at its exit.
  EXPECT_EQ(psql_int_eventually(w.db, "SELECT count(*) FROM audit_log WHERE action = 'token.read'",
                                40, 10s),
            40);
  std::string ids;
  for (auto& id : served)
    ids += (ids.empty() ? "'" : ",'") + id + "'";
  EXPECT_EQ(w.count("SELECT count(DISTINCT request_id) FROM audit_log WHERE action = 'token.read' "
                    "AND actor_id = 'reporting' AND request_id IN (" + ids + ")"),
            40);
  server.stop();
}

TEST(Tokens, AFullAuditQueueRefusesTokenReadsInsteadOfServingThemUnaudited) {
  token_world w;
  w.seed("alice", 3600'000);
  auto opts = w.options();
  opts.extra_yaml += "audit:\n  queue_rows: 3\n";
  server_process server{opts};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  ASSERT_EQ(token_call(server.port(), "user_id=alice&team_id=acme").status, 200);
  ASSERT_EQ(psql_int_eventually(w.db, "SELECT count(*) FROM audit_log WHERE action = 'token.read'",
                                1, 10s),
            1);
  // The audit log cannot be written: a session holds its table locked.
  temp_dir dir;
  child_process locker{{"/bin/sh", "-c", "exec psql \"$1\" -v ON_ERROR_STOP=1 -c \"$2\"", "sh",
                        w.db,
                        "BEGIN; LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE; "
                        "SELECT pg_sleep(120);"},
                       dir.file("locker.log")};
  ASSERT_EQ(psql_int_eventually(w.db,
                                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = "
                                "l.relation WHERE c.relname = 'audit_log' AND l.granted AND "
                                "l.mode = 'AccessExclusiveLock'",
                                1, 10s),
            1);
  int ok = 1, refused = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = token_call(server.port(), "user_id=alice" + std::string(i % 2 ? "&team_id=acme" : ""));
    if (r.status == 200) {
      ++ok;
      continue;
    }
    ASSERT_EQ(r.status, 503) << r.body;
    EXPECT_EQ(r.json()["error"]["code"], "unavailable");
    EXPECT_FALSE(r.headers["retry-after"].empty());
    EXPECT_EQ(r.raw.find("at-seed-alice"), std::string::npos) << "no token in a refusal";
    ++refused;
  }
  EXPECT_EQ(ok, 1 + 3) << "exactly the queue's rows were handed out";
  EXPECT_EQ(refused, 7);
  auto health = http_call(server.port(), "GET", "/api/v1/health").json();
  EXPECT_EQ(health["tokens"]["audit_waiting"], 3);
  EXPECT_EQ(health["tokens"]["audit_refused"], 7);
  // The lock goes: the waiting rows are written, reads are served again.
  psql(w.db, "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = "
             "l.relation WHERE c.relname = 'audit_log' AND l.granted AND "
             "l.mode = 'AccessExclusiveLock'");
  locker.wait_exit(10s);
  EXPECT_EQ(psql_int_eventually(w.db, "SELECT count(*) FROM audit_log WHERE action = 'token.read'",
                                ok, 15s),
            ok);
  auto again = token_call(server.port(), "user_id=alice&team_id=acme");
  EXPECT_EQ(again.status, 200) << again.body;
  server.stop();
  EXPECT_EQ(w.count("SELECT count(*) FROM audit_log WHERE action = 'token.read'"), ok + 1)
    << "one row per token handed out, none for a refusal";
}

TEST(Tokens, AServiceTokenRevokedByAHotReloadFetchesNothingMoreEvenFromSnapshots) {
  token_world w;
  w.seed("alice", 3600'000);
  auto opts = w.options();
  const std::string billing = "svc-token-billing-0003";
  opts.service_tokens.push_back({"billing", billing, {"FETCH_CONFIG"}});
  server_process server{opts};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  // Read twice: the second answer comes from the connection's snapshot.
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(token_call(server.port(), "user_id=alice&team_id=acme", billing).status, 200);
  // The operator revokes the billing token and reloads.
  std::string text;
  {
    std::ifstream in(server.config_path());
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto digest = http::sha256_hex(billing);
  auto at = text.find(digest);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, digest.size(), http::sha256_hex("a-token-nobody-holds"));
  {
    std::ofstream out(server.config_path(), std::ios::trunc);
    out << text;
  }
  auto reloaded = http_call(server.port(), "POST", "/api/v1/connectors/updateAppConfig",
                            {{"X-Services-Token", service_token}}, "{}");
  ASSERT_EQ(reloaded.status, 200) << reloaded.body;
  auto refused = token_call(server.port(), "user_id=alice&team_id=acme", billing);
  EXPECT_EQ(refused.status, 401) << refused.body;
  EXPECT_EQ(refused.raw.find("at-seed-alice"), std::string::npos);
  EXPECT_EQ(token_call(server.port(), "user_id=alice&team_id=acme").status, 200);
  server.stop();
}

TEST(Tokens, InternalEndpointRefusesTheWrongCallersAndInputs) {
  token_world w;
  w.seed("alice", 3600'000);
  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto port = server.port();
  EXPECT_EQ(http_call(port, "GET", "/api/internal/tokens/github?user_id=alice").status, 401);
  EXPECT_EQ(token_call(port, "user_id=alice", "not-a-token").status, 401);
  EXPECT_EQ(token_call(port, "user_id=alice", weak_token).status, 403);
  EXPECT_EQ(http_call(port, "GET", "/api/internal/tokens/github?user_id=alice",
                      {{"Authorization", "Bearer " + server.mint("alice", "acme", true)}})
              .status,
            403) << "users, even admins, do not get raw tokens";
  EXPECT_EQ(token_call(port, "team_id=acme").status, 400);
  EXPECT_EQ(token_call(port, "user_id=bob&team_id=acme").status, 404);
  EXPECT_EQ(token_call(port, "user_id=alice&team_id=globex").status, 404);
  EXPECT_EQ(http_call(port, "GET", "/api/internal/tokens/nosuch?user_id=alice",
                      {{"X-Services-Token", service_token}})
              .status,
            404);
}

TEST(Tokens, ManualRefreshRotatesAndPersists) {
  token_world w;
  w.seed("alice", 3600'000);
  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto user = "Bearer " + server.mint("alice", "acme");
  auto r = http_call(server.port(), "POST", "/api/connectors/github/refresh",
                     {{"Authorization", user}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["refreshed"], true);
  EXPECT_EQ(r.raw.find("at-"), std::string::npos) << "no token in the answer";
  EXPECT_EQ(w.fake.refresh_calls(), 1);
  EXPECT_EQ(w.stored_refresh("alice"), "rt-f1-1");
  EXPECT_EQ(token_call(server.port(), "user_id=alice").json()["access_token"], "at-f1-1");
  // Another user's connection cannot be refreshed: it is simply not theirs.
  auto bob = "Bearer " + server.mint("bob", "acme");
  auto not_theirs = http_call(server.port(), "POST", "/api/connectors/github/refresh",
                              {{"Authorization", bob}});
  EXPECT_EQ(not_theirs.status, 404) << not_theirs.body << server.log();
  server.stop();
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox WHERE event_type = 'TOKEN_REFRESHED'"), 1);
}

TEST(Tokens, ServiceRefreshMakesThreeAttemptsWithBackoff) {
  token_world w;
  w.seed("alice", 3600'000);
  // The token is valid for an hour: failed forced refreshes are not retried
  // automatically before the regular plan, so every call is one of the three
  // attempts. Forced refreshes are not coalesced here: each call must reach
  // the provider.
  server_process server{w.options("  min_forced_interval_ms: 0\n")};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto refresh = [&] {
    return http_call(server.port(), "POST",
                     "/api/v1/connectors/internal/refreshIndividualConnectorToken",
                     {{"X-Services-Token", service_token}, {"Content-Type", "application/json"}},
                     R"({"userId":"alice","connectorName":"github","orgId":"acme"})");
  };
  // Two failures, then success: answered 200 after the third attempt.
  w.fake.admin("/__behavior", R"({"mode":"error500","count":2})");
  auto r = refresh();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["attempts"], 3);
  EXPECT_EQ(w.fake.refresh_calls(), 3);
  // Always failing: three attempts, then 502.
  w.fake.admin("/__behavior", R"({"mode":"error500","count":-1})");
  auto failed = refresh();
  EXPECT_EQ(failed.status, 502) << failed.body;
  EXPECT_EQ(w.fake.refresh_calls(), 6);
  auto bad = http_call(server.port(), "POST",
                       "/api/v1/connectors/internal/refreshIndividualConnectorToken",
                       {{"X-Services-Token", service_token}}, R"({"userId":"alice"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.json()["error"]["message"].get<std::string>().find("connectorName"),
            std::string::npos);
  EXPECT_EQ(http_call(server.port(), "POST",
                      "/api/v1/connectors/internal/refreshIndividualConnectorToken",
                      {{"X-Services-Token", weak_token}},
                      R"({"userId":"alice","connectorName":"github","orgId":"acme"})")
              .status,
            403);
}

TEST(Tokens, InvalidGrantMakesTheConnectionNeedReauth) {
  token_world w;
  w.seed("alice", 3600'000);
  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  w.fake.admin("/__behavior", R"({"mode":"invalid_grant"})");
  auto r = http_call(server.port(), "POST", "/api/connectors/github/refresh",
                     {{"Authorization", "Bearer " + server.mint("alice", "acme")}});
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.json()["error"]["code"], "needs_reauth");
  EXPECT_EQ(token_call(server.port(), "user_id=alice").status, 409);
  auto list = http_call(server.port(), "GET", "/api/connectors/list",
                        {{"Authorization", "Bearer " + server.mint("alice", "acme")}});
  EXPECT_EQ(list.json()["connections"][0]["status"], "needs_reauth");
  server.stop();
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox WHERE event_type = 'TOKEN_EXPIRED'"), 1);
}

// Several server processes share one PostgreSQL. At expiry, requests on all
// of them must cause exactly one provider refresh; the fake provider
// revokes the whole token family if a rotated refresh token is ever reused.
TEST(Tokens, ManyInstancesRefreshOnceAtExpiry) {
  token_world w;
  // Already inside the refresh window (margin 2 s): every request must wait
  // for the refresh; the provider takes 300 ms so requests pile up.
  w.seed("alice", 1500);
  w.backdate("alice");
  w.fake.admin("/__behavior", R"({"mode":"normal","delay_ms":300})");
  std::vector<std::unique_ptr<server_process>> servers;
  for (int i = 0; i < 3; ++i)
    servers.push_back(std::make_unique<server_process>(w.options("  margin_s: 2\n")));
  for (auto& s : servers)
    ASSERT_TRUE(s->wait_ready()) << s->log();

  constexpr int requests = 200;
  std::vector<std::string> tokens(requests);
  std::vector<int> statuses(requests, 0);
  std::atomic<int> ready{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < requests; ++i)
    callers.emplace_back([&, i] {
      auto port = servers[static_cast<size_t>(i % 3)]->port();
      ++ready;
      while (ready.load() < requests)
        std::this_thread::yield();
      try {
        auto r = token_call(port, "user_id=alice&team_id=acme");
        statuses[static_cast<size_t>(i)] = r.status;
        tokens[static_cast<size_t>(i)] = r.json().value("access_token", "");
      } catch (const std::exception&) {
        statuses[static_cast<size_t>(i)] = -1;
      }
    });
  for (auto& t : callers)
    t.join();

  std::set<std::string> distinct(tokens.begin(), tokens.end());
  auto calls = w.fake.refresh_calls();
  report_figure("multi-instance: provider refresh calls", std::to_string(calls));
  report_figure("multi-instance: distinct tokens handed out", std::to_string(distinct.size()));
  for (int i = 0; i < requests; ++i)
    ASSERT_EQ(statuses[static_cast<size_t>(i)], 200) << "request " << i;
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(distinct.size(), 1u);
  EXPECT_EQ(*distinct.begin(), "at-f1-1");
  EXPECT_EQ(w.stored_refresh("alice"), "rt-f1-1") << "the provider's latest is stored";
  auto stats = nlohmann::json::parse(w.fake.admin("/__stats", ""));
  EXPECT_FALSE(stats["families"]["f1"]["revoked"].get<bool>()) << "no refresh token was reused";
}

TEST(Tokens, EveryInstanceHandsOutTheNewestTokenRightAfterARefreshAnywhere) {
  // Issue 16: a service whose token was refused forces a refresh on one
  // instance; the load balancer sends its next call to another, which must
  // not answer with the token it still holds in memory.
  token_world w;
  w.seed("alice", 3600'000);
  w.backdate("alice");
  std::vector<std::unique_ptr<server_process>> servers;
  // Each forced refresh must reach the provider: no coalescing here.
  for (int i = 0; i < 3; ++i) {
    servers.push_back(std::make_unique<server_process>(w.options("  min_forced_interval_ms: 0\n")));
    ASSERT_TRUE(servers.back()->wait_ready()) << servers.back()->log();
  }
  // Every instance has the seeded token in memory.
  for (auto& s : servers)
    ASSERT_EQ(token_call(s->port(), "user_id=alice&team_id=acme").json()["access_token"],
              "at-seed-alice");
  constexpr int rounds = 6;
  for (int round = 0; round < rounds; ++round) {
    auto& refresher = *servers[static_cast<size_t>(round % 3)];
    auto refreshed = http_call(refresher.port(), "POST",
                               "/api/v1/connectors/internal/refreshIndividualConnectorToken",
                               {{"X-Services-Token", service_token},
                                {"Content-Type", "application/json"}},
                               R"({"userId":"alice","connectorName":"github","orgId":"acme"})");
    ASSERT_EQ(refreshed.status, 200) << refreshed.body << refresher.log();
    auto newest = "at-f1-" + std::to_string(round + 1);
    // Right after the answer, from the other two (and the refresher).
    for (size_t i = 1; i <= 3; ++i) {
      auto& reader = *servers[(static_cast<size_t>(round) + i) % 3];
      auto r = token_call(reader.port(), "user_id=alice&team_id=acme");
      ASSERT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(r.json()["access_token"], newest)
        << "round " << round << ", instance " << (round + i) % 3;
    }
  }
  EXPECT_EQ(w.fake.refresh_calls(), rounds);
  EXPECT_EQ(w.stored_refresh("alice"), "rt-f1-" + std::to_string(rounds));
  auto stats = nlohmann::json::parse(w.fake.admin("/__stats", ""));
  EXPECT_FALSE(stats["families"]["f1"]["revoked"].get<bool>()) << "no refresh token was reused";
  EXPECT_EQ(stats["parent_reuses"], 0);
}

TEST(Tokens, ForcedRefreshesByOneMemberCoalesce) {
  // Issue 16: 60 forced refreshes by one member cost one provider call, one
  // TOKEN_REFRESHED and answer with that refresh's token.
  token_world w;
  w.seed("alice", 3600'000);
  w.backdate("alice");
  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto user = "Bearer " + server.mint("alice", "acme");
  http_connection conn{server.port()};
  for (int i = 0; i < 60; ++i) {
    auto r = conn.request("POST", "/api/connectors/github/refresh",
                          {{"Authorization", user}, {"Connection", "keep-alive"}});
    ASSERT_EQ(r.status, 200) << r.body;
  }
  for (int i = 0; i < 10; ++i) {
    auto r = http_call(server.port(), "POST",
                       "/api/v1/connectors/internal/refreshIndividualConnectorToken",
                       {{"X-Services-Token", service_token}, {"Content-Type", "application/json"}},
                       R"({"userId":"alice","connectorName":"github","orgId":"acme"})");
    ASSERT_EQ(r.status, 200) << r.body;
  }
  EXPECT_EQ(token_call(server.port(), "user_id=alice").json()["access_token"], "at-f1-1");
  server.stop();
  auto calls = w.fake.refresh_calls();
  report_figure("coalescing: provider calls for 70 forced refreshes", std::to_string(calls));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox WHERE event_type = 'TOKEN_REFRESHED'"), 1);
}

TEST(Tokens, RestartHydratesAndRefreshesOnTime) {
  token_world w;
  w.seed("alice", 3600'000);
  w.seed("bob", 3600'000);
  {
    server_process first{w.options()};
    ASSERT_TRUE(first.wait_ready()) << first.log();
    EXPECT_NE(first.log().find("\"count\":2"), std::string::npos) << "hydrated both";
  }
  // Expiring soon: the restarted server's timers refresh without a request.
  w.seed("carol", 2500);
  w.backdate("carol");
  server_process second{w.options("  margin_s: 2\n")};
  ASSERT_TRUE(second.wait_ready()) << second.log();
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline && w.fake.refresh_calls() < 1)
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(w.fake.refresh_calls(), 1);
  deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline && w.stored_refresh("carol") != "rt-f3-1")
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(w.stored_refresh("carol"), "rt-f3-1");
}

TEST(Tokens, AnotherCafProgramGetsATokenByMessage) {
  token_world w;
  w.seed("alice", 3600'000);
  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  ASSERT_NE(server.token_service_port(), 0);
  auto run_client = [&](const std::string& token) {
    return command_output("echo '" + token + "' | " + std::string(CM_TOKEN_CLIENT_BINARY) +
                          " 127.0.0.1 " + std::to_string(server.token_service_port()) +
                          " acme alice github 2>/dev/null");
  };
  auto ok = nlohmann::json::parse(run_client(service_token), nullptr, false);
  ASSERT_TRUE(ok.is_object()) << run_client(service_token);
  EXPECT_EQ(ok["access_token"], "at-seed-alice");
  auto bad = nlohmann::json::parse(run_client("wrong-token"), nullptr, false);
  EXPECT_EQ(bad["error"], "unauthenticated");
  auto weak = nlohmann::json::parse(run_client(weak_token), nullptr, false);
  EXPECT_EQ(weak["error"], "forbidden");

  // A hot reload that rotates the service token applies by message too.
  const std::string rotated = "svc-token-rotated-by-reload-01";
  auto text = read_file(server.config_path());
  auto at = text.find(http::sha256_hex(service_token));
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 64, http::sha256_hex(rotated));
  write_file(server.config_path(), text);
  auto reloaded = http_call(server.port(), "POST", "/api/v1/connectors/updateAppConfig",
                            {{"X-Services-Token", service_token}}, "{}");
  ASSERT_EQ(reloaded.status, 200) << reloaded.body;
  auto old = nlohmann::json::parse(run_client(service_token), nullptr, false);
  EXPECT_EQ(old["error"], "unauthenticated") << "a rotated-out token still works by message";
  auto fresh = nlohmann::json::parse(run_client(rotated), nullptr, false);
  EXPECT_EQ(fresh["access_token"], "at-seed-alice");
  server.stop();
  EXPECT_EQ(w.count("SELECT count(*) FROM audit_log WHERE details->>'via' = 'actor'"), 2);
}

namespace {

/// The value of one series in Prometheus text ("name{a=\"b\"}" exactly as
/// written, or a bare name); -1 when absent.
double series(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
        line[name.size()] == ' ')
      return std::stod(line.substr(name.size() + 1));
  return -1;
}

/// A loopback port free right now.
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

} // namespace

TEST(Metrics, AScrapeDuringAFlowPassesPromtoolAndItsCountersMove) {
  ASSERT_EQ(run_command("command -v promtool >/dev/null"), 0)
    << "promtool (Debian package prometheus) is installed by scripts/test";
  token_world w;
  w.seed("alice", 3600'000);
  auto opts = w.options();
  const std::string scraper = "prometheus-scrape-token-77";
  opts.service_tokens.push_back({"prometheus", scraper, {"METRICS"}});
  auto metrics_port = free_port();
  opts.extra_yaml += "metrics:\n  port: " + std::to_string(metrics_port) + "\n";
  server_process server{opts};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto scrape = [&] {
    auto r = http_call(server.port(), "GET", "/metrics", {{"X-Services-Token", scraper}});
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("content-type").rfind("text/plain; version=0.0.4", 0), 0u);
    return r.body;
  };
  // Protected: a service without METRICS, or nobody, gets nothing.
  EXPECT_EQ(http_call(server.port(), "GET", "/metrics").status, 401);
  EXPECT_EQ(http_call(server.port(), "GET", "/metrics", {{"X-Services-Token", service_token}})
              .status,
            403);
  auto before = scrape();

  // A flow: tokens read (the second from the snapshot), a forced refresh at
  // the provider, a route that does not exist.
  ASSERT_EQ(token_call(server.port(), "user_id=alice&team_id=acme").status, 200);
  ASSERT_EQ(token_call(server.port(), "user_id=alice&team_id=acme").status, 200);
  auto refreshed = http_call(server.port(), "POST", "/api/connectors/github/refresh",
                             {{"Authorization", "Bearer " + server.mint("alice", "acme")}});
  ASSERT_EQ(refreshed.status, 200) << refreshed.body;
  EXPECT_EQ(http_call(server.port(), "GET", "/nope").status, 404);
  auto after = scrape();

  temp_dir dir;
  write_file(dir.file("metrics.txt"), after);
  auto lint = command_output("promtool check metrics < " + dir.file("metrics.txt") + " 2>&1; echo rc=$?");
  EXPECT_EQ(lint.find("rc=0"), 0u) << "promtool found problems:\n" << lint;

  auto reads = [](const std::string& text) {
    return std::max(0.0, series(text, "cm_token_reads_total{via=\"snapshot\"}")) +
           std::max(0.0, series(text, "cm_token_reads_total{via=\"actor\"}"));
  };
  EXPECT_EQ(reads(after) - reads(before), 2) << after;
  EXPECT_GE(series(after, "cm_refreshes_total{outcome=\"refreshed\",provider=\"github\"}"), 1)
    << after;
  EXPECT_GE(series(after, "cm_provider_request_duration_seconds_count{provider=\"github\","
                          "result=\"2xx\"}"),
            1)
    << after;
  auto token_route = "cm_http_request_duration_seconds_count{method=\"GET\",route=\"/api/internal/"
                     "tokens/{provider}\",status=\"200\"}";
  EXPECT_EQ(series(after, token_route) - std::max(0.0, series(before, token_route)), 2) << after;
  EXPECT_GE(series(after, "cm_http_request_duration_seconds_count{method=\"GET\",route="
                          "\"unmatched\",status=\"404\"}"),
            1);
  EXPECT_GE(series(after, "cm_connection_actors"), 1);
  EXPECT_GT(series(after, "cm_shards{state=\"owned\"}"), 0);
  EXPECT_EQ(series(after, "cm_shards{state=\"owned\"}"), series(after, "cm_shards{state=\"total\"}"))
    << "alone, it owns every shard";
  EXPECT_GE(series(after, "cm_webhook_backlog"), 0);
  // No secret, ever.
  for (auto* secret : {"at-seed-alice", "rt-seed-alice", "prometheus-scrape-token", "svc-"})
    EXPECT_EQ(after.find(secret), std::string::npos) << secret;

  // The metrics-only listener: no token, and nothing else.
  auto open = http_call(metrics_port, "GET", "/metrics");
  EXPECT_EQ(open.status, 200);
  EXPECT_NE(open.body.find("cm_token_reads_total"), std::string::npos);
  EXPECT_EQ(http_call(metrics_port, "GET", "/api/v1/health").status, 404);
  EXPECT_EQ(http_call(metrics_port, "GET", "/api/internal/tokens/github?user_id=alice",
                      {{"X-Services-Token", service_token}})
              .status,
            404);
}

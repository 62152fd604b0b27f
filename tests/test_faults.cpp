// Faults at the process level: the server killed with SIGKILL in the middle
// of a refresh storm, and PostgreSQL stopped under load. Real server
// processes, a real cluster, the fake provider rotating refresh tokens and
// revoking the whole family when a used one comes back.
//
// The sizes scale with CONNECTOR_FAULT_CONNECTIONS (scripts/soak runs them
// larger); the defaults keep each test to a few seconds.
#include <atomic>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/token_world.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

int connections_from_env(int fallback) {
  const char* text = std::getenv("CONNECTOR_FAULT_CONNECTIONS");
  int n = text ? std::atoi(text) : 0;
  return n > 0 ? n : fallback;
}

std::vector<std::string> user_names(int n) {
  std::vector<std::string> users;
  for (int i = 0; i < n; ++i)
    users.push_back("u" + std::to_string(1000 + i));
  return users;
}

/// Seeded in order, user i owns the fake provider's family f<i+1>.
std::string family_of(size_t index) {
  return "f" + std::to_string(index + 1);
}

nlohmann::json provider_stats(token_world& w) {
  auto body = w.fake.admin("/__stats", "");
  auto stats = nlohmann::json::parse(body);
  if (!stats.contains("families"))
    throw std::runtime_error("not a /__stats answer from the fake provider: " + body);
  return stats;
}

/// Users whose stored refresh token is not the one the provider expects next.
std::vector<std::string> out_of_step(token_world& w, const std::vector<std::string>& users) {
  auto stored = w.stored_refreshes(users);
  auto families = provider_stats(w)["families"];
  std::vector<std::string> behind;
  for (size_t i = 0; i < users.size(); ++i)
    if (stored[users[i]] != families[family_of(i)]["current_refresh"].get<std::string>())
      behind.push_back(users[i]);
  return behind;
}

/// Waits (at most 20 s) until the provider has been sent a third of the
/// storm's refreshes, the point where the fault tests strike; returns how
/// many it had been sent by then.
long wait_for_a_third_sent(token_world& w, size_t connections) {
  auto deadline = clock_type::now() + 20s;
  auto third = static_cast<long>(connections / 3);
  long calls = 0;
  while (clock_type::now() < deadline && (calls = w.fake.refresh_calls()) < third)
    std::this_thread::sleep_for(5ms);
  return calls;
}

int revoked_families(token_world& w) {
  int revoked = 0;
  // Named: a range-for over items() of a temporary would iterate freed
  // memory (the temporary dies before the loop body; ASan caught it).
  auto stats = provider_stats(w);
  for (auto& [id, f] : stats["families"].items())
    revoked += f["revoked"].get<bool>() ? 1 : 0;
  return revoked;
}

/// Server options with a given provider timeout and refresh lease (the
/// lease must cover two provider calls, see refresh.lease_ms); a short
/// lease lets a lease held by a killed process run out quickly.
server_options fault_options(const token_world& w, int provider_timeout_ms, int lease_ms) {
  auto o = w.options("  margin_s: 2\n");
  auto set = [&](const std::string& from, const std::string& to) {
    o.extra_yaml.replace(o.extra_yaml.find(from), from.size(), to);
  };
  set("provider_timeout_ms: 3000", "provider_timeout_ms: " + std::to_string(provider_timeout_ms));
  set("lease_ms: 10000", "lease_ms: " + std::to_string(lease_ms));
  return o;
}

http_reply service_refresh(uint16_t port, const std::string& user) {
  return http_call(port, "POST", "/api/v1/connectors/internal/refreshIndividualConnectorToken",
                   {{"X-Services-Token", world_service_token},
                    {"Content-Type", "application/json"}},
                   nlohmann::json{{"userId", user}, {"connectorName", "github"}, {"orgId", "acme"}}
                     .dump());
}

} // namespace

// SIGKILL while refreshes are in flight. The provider rotates every refresh
// token and, like Shopify, keeps the previous one valid until the new one is
// used; it answers 50 ms after rotating, so the kill always catches answers
// the server never received. After a restart every connection must refresh
// again, with no family revoked and every stored refresh token the one the
// provider expects next.
TEST(Faults, KillNineMidRefreshStormLosesNoRefreshToken) {
  token_world w;
  auto users = user_names(connections_from_env(120));
  // Inside the 2 s margin at load: every connection refreshes at once.
  w.seed_many(users, 1500);
  w.backdate_all();
  w.fake.admin("/__behavior",
               R"({"parent_valid_until_child_used":true,"answer_delay_ms":50})");
  auto options = fault_options(w, 1000, 4000);

  long calls_at_kill = 0;
  {
    server_process first{options};
    ASSERT_TRUE(first.wait_ready()) << first.log();
    calls_at_kill = wait_for_a_third_sent(w, users.size());
    ASSERT_GE(calls_at_kill, static_cast<long>(users.size() / 3)) << first.log();
    first.kill_now();
  }
  auto stored_at_kill = users.size() - out_of_step(w, users).size();
  ASSERT_LT(stored_at_kill, users.size()) << "the kill came after the storm";

  // A second process takes over: connections refreshed before the kill are
  // fine, the others (including those whose lease died with the first) are
  // due and refresh now.
  w.fake.admin("/__behavior", R"({"parent_valid_until_child_used":true})");
  auto restarted = clock_type::now();
  server_process second{options};
  ASSERT_TRUE(second.wait_ready()) << second.log();
  std::vector<std::string> behind = users;
  auto deadline = clock_type::now() + 30s;
  while (clock_type::now() < deadline && !(behind = out_of_step(w, users)).empty())
    std::this_thread::sleep_for(200ms);
  auto recovery_ms =
    std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - restarted).count();
  EXPECT_TRUE(behind.empty()) << behind.size() << " connections behind the provider, e.g. "
                              << (behind.empty() ? "" : behind.front()) << "\n"
                              << second.log();

  // Every connection still refreshes, now on demand.
  int refused = 0;
  for (auto& user : users) {
    auto r = service_refresh(second.port(), user);
    if (r.status != 200) {
      ++refused;
      ADD_FAILURE() << user << ": " << r.status << " " << r.body;
    }
  }
  EXPECT_EQ(refused, 0);
  EXPECT_TRUE(out_of_step(w, users).empty());
  EXPECT_EQ(revoked_families(w), 0) << "a rotated refresh token was reused";
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_tokens WHERE status <> 'connected'"), 0);
  auto stats = provider_stats(w);
  // Answers the killed process never received: their parent token was
  // presented again. Zero would mean the kill missed every refresh.
  auto unseen = stats["parent_reuses"].get<long>();
  EXPECT_GE(unseen, 1) << "the kill caught no refresh in flight";
  report_figure("crash: connections / stored before kill / provider answers lost in the kill",
                std::to_string(users.size()) + " / " + std::to_string(stored_at_kill) + " / " +
                  std::to_string(unseen));
  report_figure("crash: restart to every connection in step (ms)", std::to_string(recovery_ms));
}

namespace {

/// What a load thread saw: statuses by phase, and whether every 503
/// carried Retry-After.
struct load_record {
  std::mutex mutex;
  std::map<int, int> statuses;
  int unavailable_without_retry_after = 0;
  int transport_errors = 0;
  std::string last_transport_error;

  void add(const http_reply& r) {
    std::lock_guard<std::mutex> g{mutex};
    ++statuses[r.status];
    if (r.status == 503 && r.header("retry-after").empty())
      ++unavailable_without_retry_after;
  }
  int count(int status) {
    std::lock_guard<std::mutex> g{mutex};
    return statuses.count(status) ? statuses[status] : 0;
  }
  std::string describe() {
    std::lock_guard<std::mutex> g{mutex};
    std::string out;
    for (auto& [status, n] : statuses)
      out += std::to_string(status) + "×" + std::to_string(n) + " ";
    return out + "transport errors " + std::to_string(transport_errors) + " " +
           last_transport_error;
  }
};

} // namespace

// PostgreSQL stopped under load while refreshes are in flight, then started
// again. While it is down: every answer is 200 (from memory) or 503 with
// Retry-After, and the server stays up. Afterwards it recovers by itself;
// the refresh tokens the provider issued during the outage are the ones
// stored, each connection refreshed exactly once, no family revoked.
TEST(Faults, DatabaseOutageAnswers503ThenRecoversWithoutLosingARefresh) {
  auto cluster = pg_cluster::create();
  token_world w{cluster->fresh_database("outage")};
  // Connections valid for an hour scale with the soak; those refreshing
  // through the outage stay at 12, each answered by its own provider thread
  // well inside the provider timeout.
  auto steady = user_names(connections_from_env(10));
  std::vector<std::string> due;
  for (int i = 0; i < 12; ++i)
    due.push_back("d" + std::to_string(1000 + i));
  w.seed_many(steady, 3600'000);
  w.seed_many(due, 1500);
  for (auto& user : due)
    w.backdate(user);
  // The provider answers 2 s after rotating: PostgreSQL goes down after the
  // leases were taken and before the rotated tokens can be written.
  w.fake.admin("/__behavior", R"({"answer_delay_ms":2000})");
  server_process server{fault_options(w, 5000, 12000)};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto expected_calls = static_cast<long>(due.size());
  auto deadline = clock_type::now() + 15s;
  while (clock_type::now() < deadline && w.fake.refresh_calls() < expected_calls)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(w.fake.refresh_calls(), expected_calls) << server.log();

  // Load: lists (need the database), tokens served from memory, tokens of
  // connections whose refresh is in flight.
  std::atomic<bool> stop{false};
  load_record during;
  auto user_header = "Bearer " + server.mint(steady[0], "acme");
  std::vector<std::thread> load;
  auto loop = [&](const std::string& name, std::function<http_reply()> call) {
    return std::thread([&, name, call] {
      // Bounded: at most 2,000 requests or until told to stop.
      for (int i = 0; i < 2000 && !stop.load(); ++i) {
        try {
          during.add(call());
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> g{during.mutex};
          ++during.transport_errors;
          during.last_transport_error = name + ": " + e.what();
        }
        std::this_thread::sleep_for(20ms);
      }
    });
  };
  load.push_back(loop("list", [&] {
    return http_call(server.port(), "GET", "/api/connectors/list", {{"Authorization", user_header}});
  }));
  load.push_back(loop("steady token", [&] {
    return http_call(server.port(), "GET", "/api/internal/tokens/github?team_id=acme&user_id=" + steady[1],
                     {{"X-Services-Token", world_service_token}});
  }));
  load.push_back(loop("due token", [&] {
    return http_call(server.port(), "GET", "/api/internal/tokens/github?team_id=acme&user_id=" + due[0],
                     {{"X-Services-Token", world_service_token}});
  }));

  cluster->stop();
  // Down for 4 s: the provider's answers arrive meanwhile and cannot be
  // written.
  std::this_thread::sleep_for(4s);
  auto health_down = http_call(server.port(), "GET", "/api/v1/health");
  cluster->start();
  auto started = clock_type::now();

  // Recovery without intervention: a list answers 200 again.
  http_reply list;
  deadline = clock_type::now() + 20s;
  do {
    std::this_thread::sleep_for(100ms);
    list = http_call(server.port(), "GET", "/api/connectors/list", {{"Authorization", user_header}});
  } while (list.status != 200 && clock_type::now() < deadline);
  auto recovered_ms =
    std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - started).count();
  stop = true;
  for (auto& t : load)
    t.join();

  EXPECT_EQ(list.status, 200) << list.body << server.log();
  EXPECT_EQ(health_down.status, 503) << health_down.body;
  EXPECT_GT(during.count(503), 0) << "the outage never reached a request: " << during.describe();
  EXPECT_EQ(during.unavailable_without_retry_after, 0) << during.describe();
  for (auto& [status, n] : during.statuses)
    EXPECT_TRUE(status == 200 || status == 503) << status << " seen " << n << " times; "
                                                << during.describe();
  EXPECT_EQ(during.transport_errors, 0) << "the server stopped answering\n" << server.log();

  // The refreshes interrupted by the outage land: each due connection holds
  // the token the provider issued during the outage, and serves its access
  // token; the provider was asked once per connection.
  std::vector<std::string> behind = due;
  deadline = clock_type::now() + 15s;
  while (clock_type::now() < deadline) {
    auto stored = w.stored_refreshes(due);
    auto families = provider_stats(w)["families"];
    behind.clear();
    for (size_t i = 0; i < due.size(); ++i)
      if (stored[due[i]] !=
          families[family_of(steady.size() + i)]["current_refresh"].get<std::string>())
        behind.push_back(due[i]);
    if (behind.empty())
      break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(behind.empty()) << behind.size() << " due connections lost their refresh\n"
                              << server.log();
  for (size_t i = 0; i < due.size(); ++i) {
    auto r = http_call(server.port(), "GET", "/api/internal/tokens/github?user_id=" + due[i],
                       {{"X-Services-Token", world_service_token}});
    ASSERT_EQ(r.status, 200) << due[i] << ": " << r.body;
    EXPECT_EQ(r.json()["access_token"], "at-" + family_of(steady.size() + i) + "-1");
  }
  EXPECT_EQ(w.fake.refresh_calls(), expected_calls) << "a refresh was repeated";
  EXPECT_EQ(revoked_families(w), 0);
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_tokens WHERE status <> 'connected'"), 0);
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox WHERE event_type = 'TOKEN_REFRESHED'"),
            static_cast<int64_t>(due.size()));
  report_figure("outage: answers while PostgreSQL was down", during.describe());
  report_figure("outage: database back to first 200 list (ms)", std::to_string(recovered_ms));
}

// The same kill against a provider with strict rotation (GitHub App user
// tokens: the old refresh token dies the moment the new one is issued, and
// presenting it again revokes the family). An answer the killed process
// never received cannot be recovered by anyone; what must hold is that
// exactly those connections, and no others, end up `needs_reauth` with a
// TOKEN_EXPIRED event (the customer is told), and every other connection
// is in step with the provider and refreshes again.
TEST(Faults, KillNineWithAStrictProviderLosesOnlyTheAnswersInFlight) {
  token_world w;
  auto users = user_names(connections_from_env(120));
  w.seed_many(users, 1500);
  w.backdate_all();
  w.fake.admin("/__behavior", R"({"answer_delay_ms":50})");
  auto options = fault_options(w, 1000, 4000);
  {
    server_process first{options};
    ASSERT_TRUE(first.wait_ready()) << first.log();
    wait_for_a_third_sent(w, users.size());
    first.kill_now();
  }
  // The provider finishes what it was sent; then its state is final.
  std::this_thread::sleep_for(1s);
  w.fake.admin("/__behavior", R"({})");
  auto stored = w.stored_refreshes(users);
  auto families = provider_stats(w)["families"];
  std::set<std::string> unseen; // rotated by the provider, never stored
  for (size_t i = 0; i < users.size(); ++i)
    if (stored[users[i]] != families[family_of(i)]["current_refresh"].get<std::string>())
      if (families[family_of(i)]["generation"].get<int>() > 0)
        unseen.insert(users[i]);

  server_process second{options};
  ASSERT_TRUE(second.wait_ready()) << second.log();
  auto settled = [&] {
    auto rows = w.count("SELECT count(*) FROM connector_tokens WHERE status = 'needs_reauth'");
    return rows == static_cast<int64_t>(unseen.size()) &&
           out_of_step(w, users).size() == unseen.size();
  };
  auto deadline = clock_type::now() + 30s;
  while (clock_type::now() < deadline && !settled())
    std::this_thread::sleep_for(200ms);

  auto reauth = psql(w.db, "SELECT user_id FROM connector_tokens WHERE status = 'needs_reauth' "
                           "ORDER BY user_id");
  std::set<std::string> marked;
  for (size_t at = 0, end; at < reauth.size(); at = end + 1) {
    end = reauth.find('\n', at);
    if (end == std::string::npos)
      end = reauth.size();
    if (end > at)
      marked.insert(reauth.substr(at, end - at));
  }
  EXPECT_EQ(marked, unseen) << "only connections whose answer died with the process are lost";
  EXPECT_EQ(w.count("SELECT count(DISTINCT payload->>'userId') FROM event_outbox "
                    "WHERE event_type = 'TOKEN_EXPIRED'"),
            static_cast<int64_t>(unseen.size()));
  int refused = 0;
  for (auto& user : users) {
    if (unseen.count(user))
      continue;
    auto r = service_refresh(second.port(), user);
    refused += r.status == 200 ? 0 : 1;
  }
  EXPECT_EQ(refused, 0) << "a connection whose answer was stored failed to refresh";
  report_figure("crash, strict provider: connections / answers lost in the kill (need re-auth)",
                std::to_string(users.size()) + " / " + std::to_string(unseen.size()));
}

namespace {

/// The fields of the first JSON log line whose "msg" is `msg` (null if none).
nlohmann::json log_line(const std::string& log, const std::string& msg) {
  size_t at = 0;
  while (at < log.size()) {
    auto end = log.find('\n', at);
    if (end == std::string::npos)
      end = log.size();
    auto line = nlohmann::json::parse(log.substr(at, end - at), nullptr, false);
    if (line.is_object() && line.value("msg", "") == msg)
      return line;
    at = end + 1;
  }
  return nullptr;
}

} // namespace

// SIGTERM in the middle of the same storm, against the strict provider:
// the process stops taking requests and starting refreshes, waits for the
// refreshes already at the provider to store what it answered, and exits 0.
// Where SIGKILL (above) loses every answer in flight, a SIGTERM loses none:
// after a restart no connection needs re-authorization, every stored
// refresh token is the provider's current one, and every connection
// refreshes on demand.
TEST(Faults, SigtermDrainsRefreshesInFlightAndLosesNoAnswer) {
  token_world w;
  auto users = user_names(connections_from_env(120));
  w.seed_many(users, 1500);
  w.backdate_all();
  w.fake.admin("/__behavior", R"({"answer_delay_ms":50})");
  // A provider timeout well above the fake's queueing (16 threads, 50 ms
  // each, so 1,000 connections queue for 3 s): a timed-out call would be
  // retried with the same token, which the strict provider punishes, and
  // the test would measure that instead.
  int timeout_ms = 3000 + static_cast<int>(users.size()) * 10;
  auto options = fault_options(w, timeout_ms, 2 * timeout_ms + 2000);
  int exit_code = -1;
  std::string first_log;
  long calls_at_term = 0;
  {
    server_process first{options};
    ASSERT_TRUE(first.wait_ready()) << first.log();
    calls_at_term = wait_for_a_third_sent(w, users.size());
    ASSERT_GE(calls_at_term, static_cast<long>(users.size() / 3)) << first.log();
    exit_code = first.stop();
    first_log = first.log();
  }
  EXPECT_EQ(exit_code, 0) << first_log;
  // Not fatal: with the drain switched off (grace 0) the rest of the test
  // shows what it would have lost.
  auto drained = log_line(first_log, "refreshes drained");
  EXPECT_TRUE(drained.is_object()) << first_log;
  auto in_progress = drained.is_object() ? drained["in_progress"].get<long>() : 0;
  auto waited_ms = drained.is_object() ? drained["waited_ms"].get<long>() : 0;
  // Zero would mean the signal came between refreshes and proved nothing.
  EXPECT_GE(in_progress, 1);
  EXPECT_TRUE(log_line(first_log, "shutdown grace ran out with refreshes in progress").is_null());

  // Nothing the provider rotated is missing from the database.
  w.fake.admin("/__behavior", R"({})");
  auto stored = w.stored_refreshes(users);
  auto families = provider_stats(w)["families"];
  std::vector<std::string> unseen;
  for (size_t i = 0; i < users.size(); ++i)
    if (stored[users[i]] != families[family_of(i)]["current_refresh"].get<std::string>())
      unseen.push_back(users[i]);
  EXPECT_TRUE(unseen.empty()) << unseen.size() << " answers lost, e.g. " << unseen.front()
                              << "\n" << first_log;

  server_process second{options};
  ASSERT_TRUE(second.wait_ready()) << second.log();
  int refused = 0;
  for (auto& user : users) {
    auto r = service_refresh(second.port(), user);
    if (r.status != 200) {
      ++refused;
      ADD_FAILURE() << user << ": " << r.status << " " << r.body;
    }
  }
  EXPECT_EQ(refused, 0);
  EXPECT_EQ(revoked_families(w), 0) << "a rotated refresh token was reused";
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_tokens WHERE status <> 'connected'"), 0);
  report_figure("SIGTERM: connections / provider calls at the signal / refreshes drained (ms)",
                std::to_string(users.size()) + " / " + std::to_string(calls_at_term) + " / " +
                  std::to_string(in_progress) + " (" + std::to_string(waited_ms) + ")");
}

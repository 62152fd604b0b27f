// Scale-out with real processes on one PostgreSQL (issue 17): instances
// split the shards, a killed one's shards are taken over and its
// connections refreshed by the survivors, a joining one gets its share, and
// every instance answers for every connection.
#include <signal.h>

#include <algorithm>
#include <thread>

#include <gtest/gtest.h>

#include "actors/actor_config.hpp"
#include "client/token_client.hpp"
#include "common/error.hpp"
#include "storage/peer_token.hpp"

#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/token_world.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

constexpr int shard_total = 256;

server_options fast_cluster(const token_world& w) {
  // Refresh 20 to 40 s before expiry; beats every 200 ms, so joining takes
  // 0.6 s and a takeover a round of 0.2 s after PostgreSQL notices.
  auto opts = w.options("  margin_s: 20\n");
  opts.extra_yaml += "cluster:\n  heartbeat_ms: 200\n";
  opts.log_level = "info";
  return opts;
}

/// Shards the instance owns, as its health route reports (-1: no answer).
int owned_shards(const server_process& s) {
  try {
    auto r = http_call(s.port(), "GET", "/api/v1/health", {});
    if (r.status != 200)
      return -1;
    auto json = r.json();
    EXPECT_EQ(json["shards"]["total"], shard_total);
    return json["shards"]["owned"].get<int>();
  } catch (const std::exception&) {
    return -1;
  }
}

/// Waits until `servers` own every shard between them, each within ±10 %
/// of a fair share; returns the shares (empty when it never happened).
std::vector<int> wait_for_fair_split(const std::vector<server_process*>& servers,
                                     std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  double fair = static_cast<double>(shard_total) / static_cast<double>(servers.size());
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<int> shares;
    int sum = 0;
    bool fair_enough = true;
    for (auto* s : servers) {
      shares.push_back(owned_shards(*s));
      sum += shares.back();
      fair_enough = fair_enough && std::abs(shares.back() - fair) <= fair * 0.1;
    }
    if (sum == shard_total && fair_enough)
      return shares;
    std::this_thread::sleep_for(50ms);
  }
  return {};
}

/// prefix-0, prefix-1, …
std::vector<std::string> numbered_users(const std::string& prefix, int n) {
  std::vector<std::string> users;
  for (int i = 0; i < n; ++i)
    users.push_back(prefix + "-" + std::to_string(i));
  return users;
}

std::string shares_text(const std::vector<server_process*>& servers) {
  std::string out;
  for (auto* s : servers)
    out += std::to_string(owned_shards(*s)) + " ";
  return out;
}

} // namespace

TEST(ScaleOut, InstancesSplitTheShardsAndSurvivorsRefreshWhatAKilledOneOwned) {
  token_world w;
  constexpr int n = 120;
  auto users = numbered_users("user", n);
  // Due 20 to 40 s from now: after the kill and the join below.
  w.seed_many(users, 60'000);
  w.backdate_all();

  std::vector<std::unique_ptr<server_process>> servers;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(std::make_unique<server_process>(fast_cluster(w)));
    ASSERT_TRUE(servers.back()->wait_ready()) << servers.back()->log();
  }
  std::vector<server_process*> three = {servers[0].get(), servers[1].get(), servers[2].get()};
  auto shares = wait_for_fair_split(three, 20s);
  ASSERT_FALSE(shares.empty()) << "shares: " << shares_text(three);
  report_figure("scale-out: shards of three instances",
                std::to_string(shares[0]) + " " + std::to_string(shares[1]) + " " +
                  std::to_string(shares[2]) + " of " + std::to_string(shard_total));

  // Every instance answers for every connection, owned here or not.
  for (auto* s : three)
    for (int i = 0; i < n; i += 7) {
      auto r = http_call(s->port(), "GET", "/api/internal/tokens/github?user_id=" + users[i] +
                                             "&team_id=acme",
                         {{"X-Services-Token", world_service_token}});
      ASSERT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(r.json()["access_token"], "at-seed-" + users[i]);
    }

  // One dies without a word; the other two take its shards over.
  servers[1]->kill_now();
  auto killed_at = std::chrono::steady_clock::now();
  std::vector<server_process*> survivors = {servers[0].get(), servers[2].get()};
  auto after_kill = wait_for_fair_split(survivors, 20s);
  ASSERT_FALSE(after_kill.empty()) << "shares: " << shares_text(survivors);
  auto takeover_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - killed_at).count();
  report_figure("scale-out: takeover after kill -9",
                std::to_string(takeover_ms) + " ms (shares " + std::to_string(after_kill[0]) + " " +
                  std::to_string(after_kill[1]) + ")");
  // PostgreSQL notices a killed client at once on loopback; the bound is 5 s.
  EXPECT_LT(takeover_ms, 5000);

  // A fourth joins: three again, each with its share.
  servers.push_back(std::make_unique<server_process>(fast_cluster(w)));
  ASSERT_TRUE(servers.back()->wait_ready()) << servers.back()->log();
  std::vector<server_process*> joined = {servers[0].get(), servers[2].get(), servers[3].get()};
  auto rebalanced = wait_for_fair_split(joined, 20s);
  ASSERT_FALSE(rebalanced.empty()) << "shares: " << shares_text(joined);

  // Every connection is refreshed once by its owner of the moment, the
  // killed instance's too; no refresh token is presented twice.
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline && w.fake.refresh_calls() < n)
    std::this_thread::sleep_for(200ms);
  // A refresh in flight on a second instance would show up late: wait a bit.
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(w.fake.refresh_calls(), n);
  auto stored = w.stored_refreshes(users);
  int refreshed = 0;
  for (auto& user : users)
    refreshed += stored[user].rfind("rt-seed-", 0) == 0 ? 0 : 1;
  EXPECT_EQ(refreshed, n);
  auto stats = nlohmann::json::parse(w.fake.admin("/__stats", ""));
  EXPECT_EQ(stats["parent_reuses"], 0);
  for (auto& [id, family] : stats["families"].items())
    EXPECT_FALSE(family["revoked"].get<bool>()) << id;
  // And every survivor hands out the refreshed token of any connection.
  for (auto* s : joined)
    for (int i = 0; i < n; i += 11) {
      auto r = http_call(s->port(), "GET", "/api/internal/tokens/github?user_id=" + users[i] +
                                             "&team_id=acme",
                         {{"X-Services-Token", world_service_token}});
      ASSERT_EQ(r.status, 200) << r.body;
      EXPECT_NE(r.json()["access_token"], "at-seed-" + users[i]);
    }
}

namespace {

/// The health route's count of requests sent to their owner: answered by
/// it, and served here after it did not answer.
std::pair<int64_t, int64_t> forwarded(const server_process& s) {
  auto r = http_call(s.port(), "GET", "/api/v1/health", {});
  auto json = r.json();
  auto& f = json["shards"]["forwarded"];
  return {f["answered"].get<int64_t>(), f["served_here"].get<int64_t>()};
}

http_reply token_of(const server_process& s, const std::string& user) {
  return http_call(s.port(), "GET",
                   "/api/internal/tokens/github?user_id=" + user + "&team_id=acme",
                   {{"X-Services-Token", world_service_token}});
}

} // namespace

TEST(ScaleOut, RequestsGoToTheOwnerOrAreServedHereWhenItCannotAnswer) {
  token_world w;
  constexpr int n = 40;
  auto users = numbered_users("user", n);
  w.seed_many(users, 3600'000); // valid throughout: nothing is refreshed
  auto opts = fast_cluster(w);
  opts.extra_yaml += "  forward_timeout_ms: 300\n";
  server_process a{opts};
  ASSERT_TRUE(a.wait_ready()) << a.log();
  server_process b{opts};
  ASSERT_TRUE(b.wait_ready()) << b.log();
  ASSERT_FALSE(wait_for_fair_split({&a, &b}, 20s).empty()) << shares_text({&a, &b});
  // A few rounds, so each has read where the other's shards are.
  std::this_thread::sleep_for(1s);

  // B answers for every connection; those of A's shards A answers.
  for (auto& user : users) {
    auto r = token_of(b, user);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json()["access_token"], "at-seed-" + user);
  }
  auto [answered, served_here] = forwarded(b);
  report_figure("scale-out: requests answered by their owner",
                std::to_string(answered) + " of " + std::to_string(n) + " (the rest owned here)");
  // About half the connections are A's (40 keys over two halves of 256
  // shards: fewer than 10 on one side is a one-in-a-thousand draw).
  EXPECT_GE(answered, n / 4);
  EXPECT_LE(answered, n - n / 4);
  EXPECT_EQ(served_here, 0);

  // The owner's side, asked as a peer would: only with the deployment's
  // peer token, and only for the shards it owns.
  {
    actor_config cfg;
    caf::actor_system sys{cfg};
    auto service = client::connect(sys, "127.0.0.1", a.token_service_port());
    ASSERT_TRUE(service) << to_string(service.error());
    caf::scoped_actor self{sys};
    auto ask_a = [&](const std::string& peer_token, const std::string& user) {
      caf::expected<token_grant> out = caf::sec::request_timeout;
      self->request(*service, 10s, forward_atom_v, peer_token, connection_key{"acme", user, "github"},
                    false)
        .receive([&](token_grant& g) { out = std::move(g); }, [&](caf::error& e) { out = e; });
      return out;
    };
    auto stranger = ask_a(std::string(64, 'a'), users[0]);
    ASSERT_FALSE(stranger);
    EXPECT_EQ(code_of(stranger.error()), ec::unauthenticated);
    auto token = storage::peer_token(*storage::keyring::load(w.key_file));
    int64_t owned_by_a = 0, elsewhere = 0;
    for (auto& user : users) {
      auto got = ask_a(token, user);
      if (got) {
        ++owned_by_a;
        EXPECT_EQ(got->access_token.reveal(), "at-seed-" + user);
      } else {
        EXPECT_EQ(code_of(got.error()), ec::unavailable) << to_string(got.error());
        ++elsewhere;
      }
    }
    EXPECT_EQ(owned_by_a, answered) << "A answers exactly for the connections B forwarded";
    EXPECT_EQ(owned_by_a + elsewhere, n);
  }

  // A stops answering but keeps its shards (stopped, not dead: its
  // sessions and locks stay). B serves A's connections itself, from the
  // database under the lease, once the forward times out.
  ASSERT_EQ(::kill(a.pid(), SIGSTOP), 0);
  int64_t slowest_ms = 0;
  for (auto& user : users) {
    auto started = std::chrono::steady_clock::now();
    auto r = token_of(b, user);
    slowest_ms = std::max<int64_t>(
      slowest_ms, std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - started).count());
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status == 200) {
      EXPECT_EQ(r.json()["access_token"], "at-seed-" + user);
    }
  }
  ::kill(a.pid(), SIGCONT);
  auto after = forwarded(b);
  report_figure("scale-out: owner stopped, served by the asker",
                std::to_string(after.second) + " requests, slowest " + std::to_string(slowest_ms) +
                  " ms (forward timeout 300 ms)");
  EXPECT_EQ(after.second, answered) << "each of A's connections was served by B";
  EXPECT_EQ(after.first, answered) << "A answered nothing more";
  EXPECT_LT(slowest_ms, 300 + 2000);
}

namespace {

nlohmann::json provider_stats(token_world& w) {
  return nlohmann::json::parse(w.fake.admin("/__stats", ""));
}

/// Users whose stored refresh token is not the provider's newest for them
/// (seeded in order, user i owns the fake's family f<i+1>).
std::vector<std::string> not_refreshed(token_world& w, const std::vector<std::string>& users) {
  auto stored = w.stored_refreshes(users);
  auto families = provider_stats(w)["families"];
  std::vector<std::string> behind;
  for (size_t i = 0; i < users.size(); ++i) {
    auto& family = families["f" + std::to_string(i + 1)];
    if (family["generation"].get<int>() == 0 ||
        stored[users[i]] != family["current_refresh"].get<std::string>())
      behind.push_back(users[i]);
  }
  return behind;
}

} // namespace

// Item 7 of issue 17: a storm split among three instances, one of them
// killed with -9 in the middle of it and a fourth joining right after. The
// provider rotates every refresh token, keeps the previous one valid until
// the new one is used (so a grant whose answer died with the killed
// instance can be refreshed again from the stored token, which the fake
// counts as a parent reuse), and answers 100 ms late; four refreshes in
// flight per instance stretch the storm over seconds.
TEST(ScaleOut, AStormSurvivesAKilledInstanceAndAJoinerWithoutRefreshingAnythingTwice) {
  token_world w;
  constexpr int n = 480;
  constexpr int in_flight = 4;
  auto users = numbered_users("storm", n);
  // Valid for 45 s, all inside the 45 s margin: every one is due at load.
  w.seed_many(users, 45'000);
  w.backdate_all();
  auto seeded = std::chrono::steady_clock::now();
  w.fake.admin("/__behavior", R"({"parent_valid_until_child_used":true,"answer_delay_ms":100})");
  auto opts = w.options("  margin_s: 45\n  max_in_flight: " + std::to_string(in_flight) + "\n");
  auto set = [&](const std::string& from, const std::string& to) {
    opts.extra_yaml.replace(opts.extra_yaml.find(from), from.size(), to);
  };
  // A lease held by the killed instance runs out in 4 s.
  set("provider_timeout_ms: 3000", "provider_timeout_ms: 1000");
  set("lease_ms: 10000", "lease_ms: 4000");
  opts.extra_yaml += "cluster:\n  heartbeat_ms: 200\n";
  opts.log_level = "info";

  // Three start together; the first loads everything and the others take
  // their share as they join, by handover, while the storm runs.
  std::vector<std::unique_ptr<server_process>> servers;
  for (int i = 0; i < 3; ++i)
    servers.push_back(std::make_unique<server_process>(opts));
  for (auto& s : servers)
    ASSERT_TRUE(s->wait_ready()) << s->log();
  std::vector<server_process*> three = {servers[0].get(), servers[1].get(), servers[2].get()};
  ASSERT_FALSE(wait_for_fair_split(three, 20s).empty()) << shares_text(three);

  // Kill one in the middle of the storm.
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (w.fake.refresh_calls() < n / 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  auto calls_at_kill = w.fake.refresh_calls();
  servers[1]->kill_now();
  ASSERT_LT(calls_at_kill, n * 3 / 4) << "the storm ended before the kill";
  // A fourth joins while the storm goes on.
  servers.push_back(std::make_unique<server_process>(opts));
  ASSERT_TRUE(servers.back()->wait_ready()) << servers.back()->log();
  std::vector<server_process*> after = {servers[0].get(), servers[2].get(), servers[3].get()};
  ASSERT_FALSE(wait_for_fair_split(after, 20s).empty()) << shares_text(after);

  // Every connection is refreshed, before its token expires.
  std::vector<std::string> behind = users;
  deadline = seeded + 45s;
  while (std::chrono::steady_clock::now() < deadline && !(behind = not_refreshed(w, users)).empty())
    std::this_thread::sleep_for(200ms);
  auto done_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - seeded).count();
  EXPECT_TRUE(behind.empty()) << behind.size() << " not refreshed before their token expired, "
                              << "e.g. " << (behind.empty() ? "" : behind[0]);
  // Anything still in flight would show up late.
  std::this_thread::sleep_for(1s);
  auto stats = provider_stats(w);
  auto reuses = stats["parent_reuses"].get<int64_t>();
  int64_t generations = 0;
  int refreshed_twice = 0;
  for (auto& [id, family] : stats["families"].items()) {
    EXPECT_FALSE(family["revoked"].get<bool>()) << id << ": a refresh token was reused";
    auto g = family["generation"].get<int>();
    generations += g;
    refreshed_twice += g > 1 ? 1 : 0;
    EXPECT_LE(g, 2) << id;
  }
  char line[256];
  std::snprintf(line, sizeof line,
                "%d connections, one instance of three killed at %ld provider calls and a "
                "fourth joining: all refreshed %.1f s after load (tokens valid 45 s); %d refreshed "
                "twice, %lld answers lost with the killed instance",
                n, calls_at_kill, done_s, refreshed_twice, static_cast<long long>(reuses));
  report_figure("scale-out: storm across a kill -9 and a join", line);
  // A connection is refreshed a second time only when the answer to the
  // first died with the killed instance: it held at most `in_flight`.
  EXPECT_EQ(generations, n + reuses) << "a connection was refreshed twice for one due time";
  EXPECT_LE(reuses, in_flight);
}

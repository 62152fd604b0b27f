// Shards (migration 0008) and their ownership through advisory locks
// (storage/shard_ownership.hpp), on a real PostgreSQL: the hash is the same
// in SQL and C++, the count is fixed at the first migration, and owners
// split the shards fairly, hand them over when one joins and take them
// over when one's session ends.
#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "storage/database.hpp"
#include "storage/migrations.hpp"
#include "storage/shard_ownership.hpp"
#include "storage/shards.hpp"
#include "tests/support/test_env.hpp"

using namespace cm;
using namespace std::chrono_literals;

namespace {

config::database_config db_config(const std::string& url) {
  config::database_config cfg;
  cfg.url = url;
  cfg.connect_timeout_s = 2;
  cfg.reconnect_min_backoff = 50ms;
  cfg.reconnect_max_backoff = 400ms;
  return cfg;
}

std::string quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'')
      out += '\'';
    out += c;
  }
  return out + "'";
}

int32_t sql_shard(storage::database& db, const connection_key& key, int32_t count) {
  auto res = db.exec_script("SELECT connection_shard(" + quoted(key.team_id) + ", " +
                            quoted(key.user_id) + ", " + quoted(key.provider) + ", " +
                            std::to_string(count) + ")");
  return static_cast<int32_t>(res.integer(0, 0));
}

void insert_row(storage::database& db, const connection_key& key) {
  db.exec_script("INSERT INTO connector_tokens (team_id, id, user_id, provider, kind, key_id) "
                 "VALUES (" + quoted(key.team_id) + ", gen_random_uuid(), " + quoted(key.user_id) +
                 ", " + quoted(key.provider) + ", 'oauth', 1)");
}

int32_t stored_shard(storage::database& db, const connection_key& key) {
  auto res = db.exec_script("SELECT shard FROM connector_tokens WHERE team_id = " +
                            quoted(key.team_id) + " AND user_id = " + quoted(key.user_id) +
                            " AND provider = " + quoted(key.provider));
  return static_cast<int32_t>(res.integer(0, 0));
}

} // namespace

TEST(Shards, SqlAndCppComputeTheSameShard) {
  auto url = test::fresh_database("shards");
  storage::database db{db_config(url)};
  storage::apply_migrations(db);
  std::vector<connection_key> keys = {
    {"acme", "alice", "github"}, {"", "", ""}, {"t", "u'quote", "p"},
    {"équipe", "ユーザー", "shopify"}, {"a\x1f" "b", "c", "d"}, {"a", "b\x1f" "c", "d"}};
  for (int i = 0; i < 300; ++i)
    keys.push_back({"team-" + std::to_string(i % 17), "user-" + std::to_string(i),
                    i % 2 ? "stripe" : "google"});
  std::set<int32_t> seen;
  for (auto count : {1, 7, 256, 16384}) {
    for (auto& key : keys) {
      auto expected = sql_shard(db, key, count);
      ASSERT_EQ(storage::shard_of(key, count), expected)
        << key.team_id << "/" << key.user_id << "/" << key.provider << " of " << count;
      ASSERT_GE(expected, 0);
      ASSERT_LT(expected, count);
      if (count == 256)
        seen.insert(expected);
    }
  }
  // 306 keys over 256 shards: a hash that spreads lands on well over half.
  EXPECT_GT(seen.size(), 150u);
}

TEST(Shards, TheCountIsFixedAtTheFirstMigrationAndEveryRowGetsItsShard) {
  auto url = test::fresh_database("shards");
  storage::database db{db_config(url)};
  // A deployment from before the shards: its rows get theirs when 0008 runs.
  db.exec_script("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT "
                 "NULL, applied_at timestamptz NOT NULL DEFAULT now())");
  for (auto& m : storage::embedded_migrations()) {
    if (m.version >= 8)
      break;
    db.exec_script(m.sql);
    db.exec_script("INSERT INTO schema_migrations (version, name) VALUES (" +
                   std::to_string(m.version) + ", '" + m.name + "')");
  }
  connection_key before{"acme", "alice", "github"};
  insert_row(db, before);

  // 0008 and every migration after it.
  EXPECT_EQ(storage::apply_migrations(db, 64),
            static_cast<int>(storage::embedded_migrations().size()) - 7);
  EXPECT_EQ(storage::stored_shard_count(db), 64);
  EXPECT_EQ(stored_shard(db, before), storage::shard_of(before, 64));
  // Rows inserted later by anyone (here plain SQL) get theirs by trigger.
  connection_key after{"globex", "bob", "stripe"};
  insert_row(db, after);
  EXPECT_EQ(stored_shard(db, after), storage::shard_of(after, 64));
  // Another configured count changes nothing once one is stored.
  EXPECT_EQ(storage::apply_migrations(db, 256), 0);
  EXPECT_EQ(storage::stored_shard_count(db), 64);

  auto fresh = test::fresh_database("shards");
  storage::database other{db_config(fresh)};
  storage::apply_migrations(other);
  EXPECT_EQ(storage::stored_shard_count(other), storage::default_shard_count);
}

TEST(Shards, FairShareRoundsUp) {
  EXPECT_EQ(storage::fair_share(256, 0), 256);
  EXPECT_EQ(storage::fair_share(256, 1), 256);
  EXPECT_EQ(storage::fair_share(256, 2), 128);
  EXPECT_EQ(storage::fair_share(256, 3), 86);
  EXPECT_EQ(storage::fair_share(256, 4), 64);
  EXPECT_EQ(storage::fair_share(7, 3), 3);
}

namespace {

/// One instance's ownership, with what its handlers were told.
struct owner {
  owner(const std::string& url, const std::string& name, int32_t shards)
    : log(std::make_shared<events>()),
      ownership(db_config(url), name, shards, 100ms, handlers_for(log)) {}

  struct events {
    std::mutex mutex;
    std::map<int32_t, int> acquired, released, lost;
  };
  static storage::shard_ownership::handlers handlers_for(std::shared_ptr<events> log) {
    auto note = [log](std::map<int32_t, int> events::*which) {
      return [log, which](const std::vector<int32_t>& shards) {
        std::lock_guard<std::mutex> guard{log->mutex};
        for (auto s : shards)
          ++((*log).*which)[s];
      };
    };
    return {note(&events::acquired), note(&events::released), note(&events::lost)};
  }
  int32_t owned() const { return ownership.owned()->owned_count(); }

  std::shared_ptr<events> log;
  storage::shard_ownership ownership;
};

/// Rounds every owner until `done` holds (at most `rounds` rounds each).
template <class Done>
bool settle(std::vector<owner*> owners, Done done, int rounds = 20) {
  for (int i = 0; i < rounds; ++i) {
    for (auto* o : owners)
      o->ownership.round_once();
    if (done())
      return true;
  }
  return false;
}

/// No shard owned twice, and all of them owned.
void expect_partition(const std::vector<owner*>& owners, int32_t shards) {
  for (int32_t s = 0; s < shards; ++s) {
    int holders = 0;
    for (auto* o : owners)
      holders += o->ownership.owned()->owns(s) ? 1 : 0;
    EXPECT_EQ(holders, 1) << "shard " << s;
  }
}

} // namespace

TEST(ShardOwnership, ThreeSplitTheShardsAFourthJoinsAndADeadOnesAreTakenOver) {
  auto url = test::fresh_database("ownership");
  {
    storage::database db{db_config(url)};
    storage::apply_migrations(db);
  }
  constexpr int32_t shards = 256;
  owner a{url, "a", shards}, b{url, "b", shards}, c{url, "c", shards};
  // The first alone takes everything; the others join one by one.
  a.ownership.round_once();
  EXPECT_EQ(a.owned(), shards);
  std::vector<owner*> three = {&a, &b, &c};
  ASSERT_TRUE(settle(three, [&] {
    return a.owned() + b.owned() + c.owned() == shards &&
           std::max({a.owned(), b.owned(), c.owned()}) <= storage::fair_share(shards, 3);
  })) << a.owned() << " " << b.owned() << " " << c.owned();
  expect_partition(three, shards);
  for (auto* o : three) {
    // Within ±10 % of a third each.
    EXPECT_NEAR(o->owned(), shards / 3.0, shards / 3.0 * 0.1);
    EXPECT_EQ(o->ownership.members(), 3);
  }
  // A handed a shard over only after telling its handler (actors stopped).
  {
    std::lock_guard<std::mutex> guard{a.log->mutex};
    EXPECT_EQ(static_cast<int32_t>(a.log->released.size()), shards - a.owned());
  }

  // A fourth joins: everyone ends at a quarter, no shard owned twice.
  owner d{url, "d", shards};
  std::vector<owner*> four = {&a, &b, &c, &d};
  ASSERT_TRUE(settle(four, [&] {
    return d.owned() == storage::fair_share(shards, 4) &&
           a.owned() + b.owned() + c.owned() + d.owned() == shards;
  }));
  expect_partition(four, shards);

  // b's session ends as if its process died (PostgreSQL ends it; its locks
  // go with it): the survivors take its shards at their next round.
  std::set<int32_t> of_b;
  for (int32_t s = 0; s < shards; ++s)
    if (b.ownership.owned()->owns(s))
      of_b.insert(s);
  ASSERT_FALSE(of_b.empty());
  {
    storage::database admin{db_config(url)};
    admin.exec_script("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                      "'advisory' AND classid = 727005 AND objid = " +
                      std::to_string(*of_b.begin()) + " AND objsubid = 2");
  }
  auto killed_at = std::chrono::steady_clock::now();
  std::vector<owner*> survivors = {&a, &c, &d};
  // pg_terminate_backend returns before the backend has gone: a few rounds.
  ASSERT_TRUE(settle(survivors, [&] {
    return a.owned() + c.owned() + d.owned() == shards;
  }, 50));
  auto takeover = std::chrono::steady_clock::now() - killed_at;
  expect_partition(survivors, shards);
  for (auto* o : survivors)
    EXPECT_NEAR(o->owned(), shards / 3.0, shards / 3.0 * 0.1);
  // Rounds here run back to back; the service rounds every heartbeat.
  EXPECT_LT(takeover, 5s);
  // b learns at its next round that it lost them and owns nothing then:
  // either the round finds its locks gone (a new session joins as a fourth
  // member and waits its turn) or the dead session fails the round, which
  // gives everything up. Which one depends on whether libpq has seen the
  // socket close yet (the backend drops its locks before it closes).
  b.ownership.round_or_give_up();
  EXPECT_EQ(b.owned(), 0);
  {
    std::lock_guard<std::mutex> guard{b.log->mutex};
    std::set<int32_t> lost;
    for (auto& [s, n] : b.log->lost)
      lost.insert(s);
    EXPECT_EQ(lost, of_b);
  }

  // A graceful stop hands everything over at once.
  b.ownership.stop();
  d.ownership.stop();
  std::vector<owner*> two = {&a, &c};
  ASSERT_TRUE(settle(two, [&] { return a.owned() + c.owned() == shards; }));
  expect_partition(two, shards);
  EXPECT_EQ(a.ownership.members(), 2);
}

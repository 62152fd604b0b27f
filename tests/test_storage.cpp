// The storage actor on a real PostgreSQL: migrations, encrypted rows,
// integrity alarms, and surviving a database restart.
#include <cstdio>
#include <map>
#include <set>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>

#include <thread>

#include "actors/actor_config.hpp"
#include "actors/storage_actor.hpp"
#include "common/log.hpp"
#include "storage/database.hpp"
#include "storage/instance_heartbeat.hpp"
#include "storage/migrations.hpp"
#include "storage/shards.hpp"
#include "storage/unbound_format.hpp"
#include "tests/support/test_env.hpp"

using namespace cm;
using namespace std::chrono_literals;

namespace {

const std::string keyring_text = "active 1\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";

config::database_config db_config(const std::string& url) {
  config::database_config cfg;
  cfg.url = url;
  cfg.connect_timeout_s = 2;
  cfg.reconnect_min_backoff = 50ms;
  cfg.reconnect_max_backoff = 400ms;
  return cfg;
}

token_record sample(const std::string& user, const std::string& provider,
                    const std::string& access = "access-canary-1",
                    const std::string& refresh = "refresh-canary-1") {
  token_record r;
  r.key = {"acme", user, provider};
  r.kind = connection_kind::oauth;
  r.access_token = secret{access};
  r.refresh_token = secret{refresh};
  r.expires_at_ms = 1'900'000'000'000;
  r.scopes = {"repo", "actions"};
  r.metadata = R"({"account_name":"octocat"})";
  return r;
}

/// An actor system with a storage actor on a fresh, migrated database.
struct storage_fixture : ::testing::Test {
  std::string url = cm::test::fresh_database("storage");
  actor_config cfg;
  caf::actor_system sys{cfg};
  storage_actor store;

  void SetUp() override {
    storage::database db{db_config(url)};
    storage::apply_migrations(db);
    auto spawned = spawn_storage(sys, db_config(url), storage::keyring::parse(keyring_text));
    ASSERT_TRUE(spawned);
    store = *spawned;
  }
  void TearDown() override { caf::anon_send_exit(store, caf::exit_reason::user_shutdown); }

  template <class T, class... Ts>
  caf::expected<T> call(Ts&&... xs) {
    caf::scoped_actor self{sys};
    caf::expected<T> result = caf::make_error(caf::sec::request_timeout);
    self->request(store, 10s, std::forward<Ts>(xs)...)
      .receive([&](T& value) { result = std::move(value); },
               [&](caf::error& err) { result = std::move(err); });
    return result;
  }
};

} // namespace

TEST(Migrations, ApplyingTwiceIsANoOp) {
  auto url = cm::test::fresh_database("migrations");
  storage::database db{db_config(url)};
  auto first = storage::apply_migrations(db);
  EXPECT_EQ(first, static_cast<int>(storage::embedded_migrations().size()));
  EXPECT_EQ(storage::apply_migrations(db), 0);
  auto versions = storage::applied_migrations(db);
  ASSERT_EQ(versions.size(), storage::embedded_migrations().size());
  EXPECT_EQ(versions.front(), 1);
  auto tables = db.exec_script(
    "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
    "('connector_tokens','oauth_states','connector_configs','event_outbox',"
    "'webhook_deliveries','audit_log','schema_migrations')");
  EXPECT_EQ(tables.integer(0, 0), 7);
  // Every table of team data carries team_id (the distribution column);
  // the deployment's own tables are Citus reference tables (docs/STORAGE.md).
  auto without_team = db.exec_script(
    "SELECT count(*) FROM information_schema.tables t WHERE t.table_schema = 'public' "
    "AND t.table_name NOT IN ('schema_migrations', 'service_instances', 'cipher_formats', 'shard_settings', 'service_tokens', 'kafka_relay_cursor') "
    "AND NOT EXISTS (SELECT 1 FROM "
    "information_schema.columns c WHERE c.table_name = t.table_name AND c.column_name = 'team_id')");
  EXPECT_EQ(without_team.integer(0, 0), 0);
  // A database that never held a ciphertext refuses the team-unbound
  // format 1 from the start (migration 0007).
  EXPECT_EQ(db.exec_script("SELECT unbound_refused_since IS NOT NULL FROM cipher_formats").text(0, 0),
            "t");
}

TEST_F(storage_fixture, SaveFindListRemove) {
  auto saved = call<token_record>(save_atom_v, sample("alice", "github"));
  ASSERT_TRUE(saved) << to_string(saved.error());
  EXPECT_FALSE(saved->id.empty());
  EXPECT_EQ(saved->version, 1);
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("bob", "stripe")));

  auto found = call<token_record>(find_atom_v, connection_key{"acme", "alice", "github"});
  ASSERT_TRUE(found) << to_string(found.error());
  EXPECT_EQ(found->access_token.reveal(), "access-canary-1");
  EXPECT_EQ(found->refresh_token.reveal(), "refresh-canary-1");
  EXPECT_EQ(found->expires_at_ms, 1'900'000'000'000);
  EXPECT_EQ(found->scopes, (std::vector<std::string>{"repo", "actions"}));
  EXPECT_EQ(nlohmann::json::parse(found->metadata)["account_name"], "octocat");

  auto mine = call<token_summaries>(list_atom_v, std::string{"acme"}, std::string{"alice"});
  ASSERT_TRUE(mine);
  ASSERT_EQ(mine->size(), 1u);
  EXPECT_EQ(mine->at(0).key.provider, "github");
  auto team = call<token_summaries>(list_atom_v, std::string{"acme"}, std::string{});
  ASSERT_TRUE(team);
  EXPECT_EQ(team->size(), 2u);
  auto other_team = call<token_summaries>(list_atom_v, std::string{"globex"}, std::string{});
  ASSERT_TRUE(other_team);
  EXPECT_TRUE(other_team->empty());

  auto removed = call<bool>(remove_atom_v, connection_key{"acme", "alice", "github"});
  ASSERT_TRUE(removed);
  EXPECT_TRUE(*removed);
  auto again = call<bool>(remove_atom_v, connection_key{"acme", "alice", "github"});
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  auto gone = call<token_record>(find_atom_v, connection_key{"acme", "alice", "github"});
  ASSERT_FALSE(gone);
  EXPECT_EQ(code_of(gone.error()), ec::not_found);
}

TEST_F(storage_fixture, SecretsAreCiphertextAtRest) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github")));
  storage::database db{db_config(url)};
  auto rows = db.exec_script("SELECT access_token, refresh_token, key_id FROM connector_tokens");
  ASSERT_EQ(rows.rows(), 1);
  auto access = rows.bytes(0, 0);
  auto refresh = rows.bytes(0, 1);
  EXPECT_EQ(access.find("access-canary-1"), std::string::npos);
  EXPECT_EQ(refresh.find("refresh-canary-1"), std::string::npos);
  EXPECT_EQ(storage::column_cipher::key_id_of(access), 1u);
  EXPECT_EQ(rows.integer(0, 2), 1);
}

TEST_F(storage_fixture, ReplacingBumpsVersionAndKeepsOneRow) {
  auto first = call<token_record>(save_atom_v, sample("alice", "github"));
  ASSERT_TRUE(first);
  auto second = call<token_record>(save_atom_v, sample("alice", "github", "access-2", "refresh-2"));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->version, first->version + 1);
  EXPECT_NE(second->id, first->id);
  auto found = call<token_record>(find_atom_v, connection_key{"acme", "alice", "github"});
  ASSERT_TRUE(found);
  EXPECT_EQ(found->refresh_token.reveal(), "refresh-2");
  auto team = call<token_summaries>(list_atom_v, std::string{"acme"}, std::string{});
  ASSERT_TRUE(team);
  EXPECT_EQ(team->size(), 1u);
}

TEST_F(storage_fixture, SwappedCiphertextIsDetectedNotServedAndAlarmed) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github", "alice-access", "alice-refresh")));
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("mallory", "github", "mallory-access", "m-refresh")));
  // Someone with database access copies alice's token into mallory's row.
  storage::database db{db_config(url)};
  db.exec_script("UPDATE connector_tokens SET access_token = (SELECT access_token FROM "
                 "connector_tokens WHERE user_id = 'alice') WHERE user_id = 'mallory'");
  std::FILE* capture = std::tmpfile();
  log::set_sink(capture);
  auto stolen = call<token_record>(find_atom_v, connection_key{"acme", "mallory", "github"});
  log::set_sink(nullptr);
  ASSERT_FALSE(stolen);
  EXPECT_EQ(code_of(stolen.error()), ec::integrity_failure);
  std::rewind(capture);
  std::string logged;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, capture)) > 0)
    logged.append(buf, n);
  std::fclose(capture);
  EXPECT_NE(logged.find("ALARM"), std::string::npos) << logged;
  EXPECT_EQ(logged.find("alice-access"), std::string::npos);
  // Alice's own row is untouched.
  auto own = call<token_record>(find_atom_v, connection_key{"acme", "alice", "github"});
  ASSERT_TRUE(own);
  EXPECT_EQ(own->access_token.reveal(), "alice-access");
}

TEST_F(storage_fixture, InvalidMetadataIsABadRequest) {
  auto r = sample("alice", "github");
  r.metadata = "[1,2]";
  auto saved = call<token_record>(save_atom_v, r);
  ASSERT_FALSE(saved);
  EXPECT_EQ(code_of(saved.error()), ec::bad_request);
}

// Stops and restarts a real cluster while the storage actor is in use.
TEST(StorageReconnect, OutageFailsFastAndRecoversByItself) {
  auto cluster = cm::test::pg_cluster::create();
  auto url = cluster->fresh_database("reconnect");
  {
    storage::database db{db_config(url)};
    storage::apply_migrations(db);
  }
  actor_config cfg;
  caf::actor_system sys{cfg};
  auto store = spawn_storage(sys, db_config(url), storage::keyring::parse(keyring_text));
  ASSERT_TRUE(store);
  caf::scoped_actor self{sys};
  auto ping = [&]() -> caf::error {
    caf::error result = caf::make_error(caf::sec::request_timeout);
    self->request(*store, 10s, ping_atom_v)
      .receive([&](int64_t) { result = caf::error{}; }, [&](caf::error& e) { result = e; });
    return result;
  };
  auto save = [&](const std::string& user) -> caf::error {
    caf::error result = caf::make_error(caf::sec::request_timeout);
    self->request(*store, 10s, save_atom_v, sample(user, "github"))
      .receive([&](token_record&) { result = caf::error{}; }, [&](caf::error& e) { result = e; });
    return result;
  };
  ASSERT_FALSE(ping());
  ASSERT_FALSE(save("before"));

  cluster->stop();
  // During the outage every call fails quickly with `unavailable`; none hangs.
  for (int i = 0; i < 5; ++i) {
    auto start = std::chrono::steady_clock::now();
    auto err = i % 2 ? save("during") : ping();
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(code_of(err), ec::unavailable) << to_string(err);
    EXPECT_LT(took, 3s);
  }

  cluster->start();
  // Recovery needs no intervention: poll (bounded) until a call succeeds.
  auto deadline = std::chrono::steady_clock::now() + 15s;
  caf::error last = cm::make_error(ec::unavailable);
  while (std::chrono::steady_clock::now() < deadline && (last = ping()))
    std::this_thread::sleep_for(100ms);
  ASSERT_FALSE(last) << "storage did not recover: " << to_string(last);
  EXPECT_FALSE(save("after"));
  caf::expected<token_summaries> rows = caf::make_error(caf::sec::request_timeout);
  self->request(*store, 10s, list_atom_v, std::string{"acme"}, std::string{})
    .receive([&](token_summaries& s) { rows = s; }, [&](caf::error& e) { rows = e; });
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->size(), 2u); // "before" and "after"; nothing from the outage
  caf::anon_send_exit(*store, caf::exit_reason::user_shutdown);
}

// -- refresh support: leases, fences, outbox, hydration ----------------------

namespace {

int64_t count_events(const std::string& url, const std::string& type) {
  storage::database db{db_config(url)};
  return db.exec_script("SELECT count(*) FROM event_outbox WHERE event_type = '" + type + "'")
    .integer(0, 0);
}

} // namespace

TEST_F(storage_fixture, LeaseIsExclusiveAndBumpsTheFence) {
  auto saved = call<token_record>(save_atom_v, sample("alice", "github"));
  ASSERT_TRUE(saved);
  connection_key key{"acme", "alice", "github"};
  auto a = call<token_record>(lease_atom_v, key, std::string{"instance-a"}, int64_t{30000});
  ASSERT_TRUE(a) << to_string(a.error());
  EXPECT_EQ(a->version, saved->version + 1);
  EXPECT_EQ(a->refresh_token.reveal(), "refresh-canary-1") << "the lease re-reads the row";
  auto b = call<token_record>(lease_atom_v, key, std::string{"instance-b"}, int64_t{30000});
  ASSERT_FALSE(b);
  EXPECT_EQ(code_of(b.error()), ec::conflict);
  // The holder may take it again (a guarded retry renews it).
  EXPECT_TRUE(call<token_record>(lease_atom_v, key, std::string{"instance-a"}, int64_t{30000}));
  auto missing = call<token_record>(lease_atom_v, connection_key{"acme", "nobody", "github"},
                                    std::string{"instance-a"}, int64_t{30000});
  EXPECT_EQ(code_of(missing.error()), ec::not_found);
}

TEST_F(storage_fixture, ExpiredLeaseCanBeTakenOver) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github")));
  connection_key key{"acme", "alice", "github"};
  ASSERT_TRUE(call<token_record>(lease_atom_v, key, std::string{"instance-a"}, int64_t{1000}));
  storage::database db{db_config(url)};
  db.exec_script("UPDATE connector_tokens SET lease_expires_at = now() - interval '1 second'");
  EXPECT_TRUE(call<token_record>(lease_atom_v, key, std::string{"instance-b"}, int64_t{1000}));
}

TEST_F(storage_fixture, CompleteStoresRotatedTokensAndTheEventTogether) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github")));
  connection_key key{"acme", "alice", "github"};
  auto leased = call<token_record>(lease_atom_v, key, std::string{"instance-a"}, int64_t{30000});
  ASSERT_TRUE(leased);
  refreshed_tokens fresh;
  fresh.access_token = secret{"access-2"};
  fresh.refresh_token = secret{"refresh-2"};
  fresh.expires_at_ms = 1'900'000'360'000;
  auto stored = call<token_record>(complete_atom_v, key, leased->version,
                                   std::string{"instance-a"}, fresh);
  ASSERT_TRUE(stored) << to_string(stored.error());
  EXPECT_EQ(stored->version, leased->version + 1);
  auto found = call<token_record>(find_atom_v, key);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->access_token.reveal(), "access-2");
  EXPECT_EQ(found->refresh_token.reveal(), "refresh-2");
  EXPECT_EQ(found->expires_at_ms, 1'900'000'360'000);
  EXPECT_EQ(count_events(url, "TOKEN_REFRESHED"), 1);
  // Events name the connection, never a secret.
  storage::database db{db_config(url)};
  auto payload = std::string(db.exec_script("SELECT payload::text FROM event_outbox").text(0, 0));
  EXPECT_EQ(payload.find("access-2"), std::string::npos);
  EXPECT_EQ(payload.find("refresh-2"), std::string::npos);
  auto json = nlohmann::json::parse(payload);
  EXPECT_EQ(json["eventType"], "TOKEN_REFRESHED");
  EXPECT_EQ(json["userId"], "alice");
  EXPECT_EQ(json["orgId"], "acme");
  EXPECT_EQ(json["connectionId"], found->id);
  // The lease is released: another instance can take it at once.
  EXPECT_TRUE(call<token_record>(lease_atom_v, key, std::string{"instance-b"}, int64_t{30000}));
}

TEST_F(storage_fixture, LeasesAndCompletionsThatArriveTogetherCommitTogether) {
  // Issue 17: a refresh storm's leases and completions are grouped into
  // one transaction each, and every caller still gets its own answer.
  const int n = 40;
  for (int i = 0; i < n; ++i)
    ASSERT_TRUE(call<token_record>(save_atom_v, sample("u" + std::to_string(i), "github")));
  auto key_of = [](int i) { return connection_key{"acme", "u" + std::to_string(i), "github"}; };
  // u0 is leased elsewhere: our lease on it is refused inside the group.
  ASSERT_TRUE(call<token_record>(lease_atom_v, key_of(0), std::string{"b"}, int64_t{30000}));
  storage::database db{db_config(url)};
  // Every write in one transaction has the same xmin.
  auto transactions_of = [&](const std::string& where) {
    return db.exec_script("SELECT count(DISTINCT xmin::text) FROM connector_tokens WHERE " + where)
      .integer(0, 0);
  };
  // Sends every request before reading any answer.
  caf::scoped_actor self{sys};
  auto all_at_once = [&](auto&& request_of, int count) {
    std::vector<caf::expected<token_record>> out;
    std::vector<decltype(request_of(0))> handles;
    for (int i = 0; i < count; ++i)
      handles.push_back(request_of(i));
    for (auto& h : handles) {
      caf::expected<token_record> r = caf::make_error(caf::sec::request_timeout);
      h.receive([&](token_record& v) { r = std::move(v); }, [&](caf::error& e) { r = e; });
      out.push_back(std::move(r));
    }
    return out;
  };
  // Counts UPDATE statements on connector_tokens (rolled back with theirs).
  db.exec_script(
    "CREATE TABLE update_statements (n integer); INSERT INTO update_statements VALUES (0); "
    "CREATE FUNCTION count_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "UPDATE update_statements SET n = n + 1; RETURN NULL; END $$; "
    "CREATE TRIGGER count_update AFTER UPDATE ON connector_tokens "
    "FOR EACH STATEMENT EXECUTE FUNCTION count_update()");
  auto update_statements = [&] {
    auto count = db.exec_script("SELECT n FROM update_statements").integer(0, 0);
    db.exec_script("UPDATE update_statements SET n = 0");
    return count;
  };
  auto leases = all_at_once(
    [&](int i) {
      auto key = i < n ? key_of(i) : connection_key{"acme", "nobody", "github"};
      return self->request(store, 10s, lease_atom_v, key, std::string{"a"}, int64_t{30000});
    },
    n + 1);
  EXPECT_EQ(code_of(leases[0].error()), ec::conflict);
  EXPECT_EQ(code_of(leases[static_cast<size_t>(n)].error()), ec::not_found);
  for (int i = 1; i < n; ++i)
    ASSERT_TRUE(leases[static_cast<size_t>(i)]) << i << ": " << to_string(leases[static_cast<size_t>(i)].error());
  EXPECT_LE(transactions_of("lease_owner = 'a'"), 4) << "leases that arrive together commit together";
  // One statement per group, and one for each refused lease to learn why
  // (u0's and the missing row's), not one each.
  EXPECT_LE(update_statements(), 4 + 2) << "leases that arrive together go in one statement";

  // Completions, one with a stale fence among them; and one row whose
  // UPDATE fails in SQL (a trigger), which rolls the group back: each write
  // then runs on its own and only that one fails.
  db.exec_script(
    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF NEW.user_id = 'u7' AND NEW.access_token IS DISTINCT FROM OLD.access_token THEN "
    "RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$; "
    "CREATE TRIGGER poison BEFORE UPDATE ON connector_tokens FOR EACH ROW EXECUTE FUNCTION poison()");
  auto completes = all_at_once(
    [&](int i) {
      refreshed_tokens fresh;
      fresh.access_token = secret{"access-" + std::to_string(i + 1)};
      fresh.refresh_token = secret{"refresh-" + std::to_string(i + 1)};
      fresh.expires_at_ms = 1'900'000'360'000;
      auto fence = leases[static_cast<size_t>(i + 1)]->version - (i == 2 ? 1 : 0);
      return self->request(store, 10s, complete_atom_v, key_of(i + 1), fence, std::string{"a"},
                           fresh);
    },
    n - 1);
  for (int i = 1; i < n; ++i) {
    auto& r = completes[static_cast<size_t>(i - 1)];
    auto found = call<token_record>(find_atom_v, key_of(i));
    ASSERT_TRUE(found);
    if (i == 3 || i == 7) {
      ASSERT_FALSE(r) << i;
      EXPECT_EQ(code_of(r.error()), i == 3 ? ec::conflict : ec::internal) << i;
      EXPECT_EQ(found->refresh_token.reveal(), "refresh-canary-1") << i;
      continue;
    }
    ASSERT_TRUE(r) << i << ": " << to_string(r.error());
    EXPECT_EQ(r->refresh_token.reveal(), "refresh-" + std::to_string(i)) << i;
    EXPECT_EQ(found->refresh_token.reveal(), "refresh-" + std::to_string(i)) << i;
  }
  EXPECT_EQ(count_events(url, "TOKEN_REFRESHED"), n - 3) << "one event per stored refresh";

  // Without the poison, completions that arrive together are stored in one
  // statement per group, with their events, and each caller gets its own
  // row; one whose provider kept its refresh token keeps it (sealed again).
  db.exec_script("DROP TRIGGER poison ON connector_tokens");
  auto again = all_at_once(
    [&](int i) {
      return self->request(store, 10s, lease_atom_v, key_of(i + 1), std::string{"a"},
                           int64_t{30000});
    },
    n - 1);
  for (auto& r : again)
    ASSERT_TRUE(r) << to_string(r.error());
  update_statements();
  auto stored = all_at_once(
    [&](int i) {
      refreshed_tokens fresh;
      fresh.access_token = secret{"access-again-" + std::to_string(i + 1)};
      if (i != 4)
        fresh.refresh_token = secret{"refresh-again-" + std::to_string(i + 1)};
      fresh.expires_at_ms = 1'900'000'720'000;
      fresh.scopes = {"repo", "user-" + std::to_string(i + 1)};
      return self->request(store, 10s, complete_atom_v, key_of(i + 1),
                           again[static_cast<size_t>(i)]->version, std::string{"a"}, fresh);
    },
    n - 1);
  EXPECT_LE(update_statements(), 4) << "completions that arrive together go in one statement";
  for (int i = 1; i < n; ++i) {
    auto& r = stored[static_cast<size_t>(i - 1)];
    ASSERT_TRUE(r) << i << ": " << to_string(r.error());
    // u5's provider kept its refresh token: the one stored before stays.
    auto expected_refresh =
      i == 5 ? std::string{"refresh-5"} : "refresh-again-" + std::to_string(i);
    EXPECT_EQ(r->key, key_of(i));
    EXPECT_EQ(r->access_token.reveal(), "access-again-" + std::to_string(i)) << i;
    EXPECT_EQ(r->refresh_token.reveal(), expected_refresh) << i;
    EXPECT_EQ(r->version, again[static_cast<size_t>(i - 1)]->version + 1) << i;
    EXPECT_EQ(r->scopes, (std::vector<std::string>{"repo", "user-" + std::to_string(i)})) << i;
    auto found = call<token_record>(find_atom_v, key_of(i));
    ASSERT_TRUE(found);
    EXPECT_EQ(found->refresh_token.reveal(), r->refresh_token.reveal()) << i;
    EXPECT_EQ(found->access_token.reveal(), "access-again-" + std::to_string(i)) << i;
    EXPECT_EQ(found->expires_at_ms, 1'900'000'720'000) << i;
  }
  EXPECT_EQ(count_events(url, "TOKEN_REFRESHED"), n - 3 + n - 1) << "one event per stored refresh";
}

TEST_F(storage_fixture, AnInstanceOutsideItsActivityNeitherLeasesNorStores) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github")));
  connection_key key{"acme", "alice", "github"};
  storage::database db{db_config(url)};
  // Active now: leases like any owner.
  db.exec_script("INSERT INTO service_instances VALUES ('instance-a', now() - interval '1 s', "
                 "now() + interval '5 s', now())");
  auto leased = call<token_record>(lease_atom_v, key, std::string{"instance-a"}, int64_t{30000});
  ASSERT_TRUE(leased) << to_string(leased.error());
  // Its heartbeats lapse while the provider answers: the refreshed tokens
  // are refused as unavailable (the caller keeps them and tries again),
  // never as a stale fence (which would make it drop them).
  db.exec_script("UPDATE service_instances SET active_until = now() - interval '1 s'");
  refreshed_tokens fresh;
  fresh.access_token = secret{"access-2"};
  fresh.refresh_token = secret{"refresh-2"};
  fresh.expires_at_ms = 1'900'000'360'000;
  auto refused = call<token_record>(complete_atom_v, key, leased->version,
                                    std::string{"instance-a"}, fresh);
  ASSERT_FALSE(refused);
  EXPECT_EQ(code_of(refused.error()), ec::unavailable);
  EXPECT_EQ(call<token_record>(find_atom_v, key)->refresh_token.reveal(), "refresh-canary-1");
  EXPECT_EQ(count_events(url, "TOKEN_REFRESHED"), 0);
  // Beating again, it stores them under the same lease.
  db.exec_script("UPDATE service_instances SET active_until = now() + interval '5 s'");
  auto stored = call<token_record>(complete_atom_v, key, leased->version,
                                   std::string{"instance-a"}, fresh);
  ASSERT_TRUE(stored) << to_string(stored.error());
  EXPECT_EQ(stored->refresh_token.reveal(), "refresh-2");
  // Joining (its grace not over): no lease, and the row is untouched.
  db.exec_script("INSERT INTO service_instances VALUES ('instance-b', now() + interval '3 s', "
                 "now() + interval '5 s', now())");
  auto version = call<int64_t>(version_atom_v, key);
  ASSERT_TRUE(version);
  auto joining = call<token_record>(lease_atom_v, key, std::string{"instance-b"}, int64_t{30000});
  ASSERT_FALSE(joining);
  EXPECT_EQ(code_of(joining.error()), ec::unavailable);
  EXPECT_EQ(*call<int64_t>(version_atom_v, key), *version);
}

TEST_F(storage_fixture, VersionOfFollowsEveryWrite) {
  auto saved = call<token_record>(save_atom_v, sample("alice", "github"));
  ASSERT_TRUE(saved);
  connection_key key{"acme", "alice", "github"};
  EXPECT_EQ(*call<int64_t>(version_atom_v, key), saved->version);
  auto leased = call<token_record>(lease_atom_v, key, std::string{"a"}, int64_t{30000});
  EXPECT_EQ(*call<int64_t>(version_atom_v, key), leased->version);
  auto missing = call<int64_t>(version_atom_v, connection_key{"acme", "nobody", "github"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(code_of(missing.error()), ec::not_found);
}

TEST(InstanceHeartbeat, TheFirstIsActiveAtOnceAJoinerWaitsItsGraceAndBothSeeEachOther) {
  auto url = cm::test::fresh_database("heartbeat");
  {
    storage::database db{db_config(url)};
    storage::apply_migrations(db);
  }
  storage::heartbeat_timing timing{200ms};
  auto view_a = std::make_shared<storage::cluster_view>(timing.trust());
  auto view_b = std::make_shared<storage::cluster_view>(timing.trust());
  EXPECT_FALSE(view_a->alone()) << "nothing is known before the first beat";
  storage::instance_heartbeat a{db_config(url), "instance-a", timing, view_a};
  auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(a.join(5s));
  EXPECT_LT(std::chrono::steady_clock::now() - started, timing.grace())
    << "alone, no grace to wait";
  EXPECT_TRUE(view_a->alone());

  storage::instance_heartbeat b{db_config(url), "instance-b", timing, view_b};
  started = std::chrono::steady_clock::now();
  ASSERT_TRUE(b.join(5s));
  EXPECT_GE(std::chrono::steady_clock::now() - started, timing.grace())
    << "another instance is active: the joiner waits out the grace";
  EXPECT_FALSE(view_b->alone());
  // A sees B at its next beat.
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (view_a->alone() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(view_a->alone());

  // B leaves: it is fenced at once; A counts it as present for the settle
  // time, then is alone again.
  b.leave();
  storage::database db{db_config(url)};
  auto fenced = db.exec_script("SELECT active_until <= clock_timestamp() FROM service_instances "
                               "WHERE instance_id = 'instance-b'");
  EXPECT_EQ(fenced.text(0, 0), "t");
  deadline = std::chrono::steady_clock::now() + timing.settle() + 3s;
  while (!view_a->alone() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(view_a->alone());
}

TEST(InstanceHeartbeat, TheAloneViewRunsOutWithoutBeats) {
  storage::cluster_view view{100ms};
  auto t0 = storage::cluster_view::clock::now();
  view.observed(t0, 0);
  EXPECT_TRUE(view.alone(t0 + 50ms));
  EXPECT_FALSE(view.alone(t0 + 100ms)) << "trust ran out: a joiner may be active by now";
  view.observed(t0 + 100ms, 2);
  EXPECT_FALSE(view.alone(t0 + 110ms));
}

TEST_F(storage_fixture, NoRefreshTokenReturnedKeepsTheStoredOne) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github")));
  connection_key key{"acme", "alice", "github"};
  auto leased = call<token_record>(lease_atom_v, key, std::string{"a"}, int64_t{30000});
  refreshed_tokens fresh;
  fresh.access_token = secret{"access-2"};
  fresh.expires_at_ms = 1'900'000'360'000;
  ASSERT_TRUE(call<token_record>(complete_atom_v, key, leased->version, std::string{"a"}, fresh));
  EXPECT_EQ(call<token_record>(find_atom_v, key)->refresh_token.reveal(), "refresh-canary-1");
}

TEST_F(storage_fixture, StaleFenceIsRefusedAndBothTokensSurvive) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github")));
  connection_key key{"acme", "alice", "github"};
  auto mine = call<token_record>(lease_atom_v, key, std::string{"a"}, int64_t{30000});
  ASSERT_TRUE(mine);
  // Our lease lapses; another instance takes it and stores its tokens.
  storage::database db{db_config(url)};
  db.exec_script("UPDATE connector_tokens SET lease_expires_at = now() - interval '1 second'");
  auto theirs = call<token_record>(lease_atom_v, key, std::string{"b"}, int64_t{30000});
  ASSERT_TRUE(theirs);
  refreshed_tokens b_tokens;
  b_tokens.access_token = secret{"access-b"};
  b_tokens.refresh_token = secret{"refresh-b"};
  b_tokens.expires_at_ms = 1'900'000'360'000;
  ASSERT_TRUE(call<token_record>(complete_atom_v, key, theirs->version, std::string{"b"}, b_tokens));
  // Our late write with the old fence is refused...
  refreshed_tokens a_tokens;
  a_tokens.access_token = secret{"access-a"};
  a_tokens.refresh_token = secret{"refresh-a"};
  a_tokens.expires_at_ms = 1'900'000'999'000;
  auto late = call<token_record>(complete_atom_v, key, mine->version, std::string{"a"}, a_tokens);
  ASSERT_FALSE(late);
  EXPECT_EQ(code_of(late.error()), ec::conflict);
  // ...and the row still holds the other writer's tokens, intact.
  auto found = call<token_record>(find_atom_v, key);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->refresh_token.reveal(), "refresh-b");
  EXPECT_EQ(found->access_token.reveal(), "access-b");
  EXPECT_EQ(count_events(url, "TOKEN_REFRESHED"), 1);
}

TEST_F(storage_fixture, ReauthMarksTheRowAndWritesTokenExpired) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github")));
  connection_key key{"acme", "alice", "github"};
  auto leased = call<token_record>(lease_atom_v, key, std::string{"a"}, int64_t{30000});
  auto marked = call<token_record>(reauth_atom_v, key, leased->version, std::string{"a"},
                                   std::string{"HTTP 400 invalid_grant"});
  ASSERT_TRUE(marked);
  EXPECT_EQ(marked->status, grant_status::needs_reauth);
  EXPECT_EQ(marked->reason, "HTTP 400 invalid_grant");
  EXPECT_EQ(count_events(url, "TOKEN_EXPIRED"), 1);
  EXPECT_EQ(marked->refresh_token.reveal(), "refresh-canary-1") << "kept for a manual retry";
  auto stale = call<token_record>(reauth_atom_v, key, leased->version, std::string{"a"},
                                  std::string{"again"});
  EXPECT_EQ(code_of(stale.error()), ec::conflict);
}

TEST_F(storage_fixture, HydrationStreamsEveryLiveRowInPages) {
  for (int i = 0; i < 25; ++i)
    ASSERT_TRUE(call<token_record>(save_atom_v, sample("user-" + std::to_string(i), "github")));
  std::set<std::string> seen;
  std::string team, id;
  int pages = 0;
  while (true) {
    auto batch = call<hydrate_batch>(hydrate_atom_v, team, id, int32_t{10});
    ASSERT_TRUE(batch);
    ++pages;
    for (auto& r : batch->rows) {
      EXPECT_EQ(r.access_token.reveal(), "access-canary-1");
      seen.insert(r.key.user_id);
    }
    if (batch->done)
      break;
    team = batch->last_team;
    id = batch->last_id;
  }
  EXPECT_EQ(seen.size(), 25u);
  EXPECT_EQ(pages, 3);
}

TEST_F(storage_fixture, ShardsLoadOneAtATimeOrAsASetWithTheSameRows) {
  // A takeover of a few shards walks each on its index; a start (a large
  // share) walks the key once per loader for a set: both must yield
  // exactly the live rows of those shards, page by page.
  constexpr int users = 60;
  for (int i = 0; i < users; ++i)
    ASSERT_TRUE(call<token_record>(save_atom_v, sample("user-" + std::to_string(i), "github")));
  auto gone = sample("user-gone", "github");
  ASSERT_TRUE(call<token_record>(save_atom_v, gone));
  ASSERT_TRUE(call<bool>(remove_atom_v, gone.key));
  auto shard_count = static_cast<int32_t>(storage::default_shard_count);
  std::map<int32_t, std::set<std::string>> expected;
  for (int i = 0; i < users; ++i) {
    connection_key k{"acme", "user-" + std::to_string(i), "github"};
    expected[storage::shard_of(k, shard_count)].insert(k.user_id);
  }
  // Every other shard that has rows, as a set; page size 7.
  std::vector<int32_t> set;
  std::set<std::string> in_set;
  bool take = true;
  for (auto& [shard, names] : expected) {
    if (take) {
      set.push_back(shard);
      in_set.insert(names.begin(), names.end());
    }
    take = !take;
  }
  ASSERT_GE(set.size(), 2u);
  auto walk = [&](auto first_arg) {
    std::multiset<std::string> seen;
    std::string team, id;
    for (int pages = 0; pages < 100; ++pages) {
      auto batch = call<hydrate_batch>(hydrate_atom_v, first_arg, team, id, int32_t{7});
      EXPECT_TRUE(batch);
      if (!batch)
        break;
      for (auto& r : batch->rows)
        seen.insert(r.key.user_id);
      if (batch->done)
        break;
      team = batch->last_team;
      id = batch->last_id;
    }
    return seen;
  };
  auto by_set = walk(set);
  EXPECT_EQ(std::set<std::string>(by_set.begin(), by_set.end()), in_set);
  EXPECT_EQ(by_set.size(), in_set.size()) << "no row twice";
  std::multiset<std::string> one_by_one;
  for (auto shard : set)
    for (auto& name : walk(shard))
      one_by_one.insert(name);
  EXPECT_EQ(one_by_one, by_set);
}

TEST_F(storage_fixture, TeamsOfAndAudit) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github")));
  auto teams = call<std::vector<std::string>>(teams_atom_v, std::string{"alice"},
                                              std::string{"github"});
  ASSERT_TRUE(teams);
  EXPECT_EQ(*teams, std::vector<std::string>{"acme"});
  audit_entry entry;
  entry.team_id = "acme";
  entry.actor_type = "service";
  entry.actor_id = "reporting";
  entry.action = "token.read";
  entry.target = "github/alice";
  caf::anon_send(store, audit_atom_v, entry);
  // Values that need quoting in the batched statement's array literals.
  auto tricky = entry;
  tricky.target = R"(git"hub/{al,ice}\ NULL)";
  tricky.details = R"({"note":"a \"quoted\", {braced} \\ value"})";
  caf::anon_send(store, audit_atom_v, tricky);
  // Rows are batched and written within the flush delay.
  storage::database db{db_config(url)};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (db.exec_script("SELECT 1 FROM audit_log").rows() < 2 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto rows = db.exec_script("SELECT actor_id, action, target, details->>'note' FROM audit_log "
                             "ORDER BY seq");
  ASSERT_EQ(rows.rows(), 2);
  EXPECT_EQ(rows.text(0, 0), "reporting");
  EXPECT_EQ(rows.text(0, 1), "token.read");
  EXPECT_EQ(rows.text(1, 2), R"(git"hub/{al,ice}\ NULL)");
  EXPECT_EQ(rows.text(1, 3), R"(a "quoted", {braced} \ value)");
}

TEST_F(storage_fixture, TamperedRowsCanStillBeReplacedAndDeleted) {
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("alice", "github", "alice-a", "alice-r")));
  ASSERT_TRUE(call<token_record>(save_atom_v, sample("mallory", "github", "m-a", "m-r")));
  storage::database db{db_config(url)};
  db.exec_script("UPDATE connector_tokens SET refresh_token = (SELECT refresh_token FROM "
                 "connector_tokens WHERE user_id = 'alice') WHERE user_id = 'mallory'");
  // Reconnecting replaces the tampered row (nothing to revoke).
  auto replaced = call<connect_result>(connect_atom_v, sample("mallory", "github", "m-a2", "m-r2"));
  ASSERT_TRUE(replaced) << to_string(replaced.error());
  EXPECT_FALSE(replaced->replaced_existing);
  EXPECT_EQ(call<token_record>(find_atom_v, connection_key{"acme", "mallory", "github"})
              ->refresh_token.reveal(),
            "m-r2");
  // And a tampered row can be deleted.
  db.exec_script("UPDATE connector_tokens SET access_token = (SELECT access_token FROM "
                 "connector_tokens WHERE user_id = 'alice') WHERE user_id = 'mallory'");
  auto removed = call<token_record>(disconnect_atom_v, connection_key{"acme", "mallory", "github"},
                                    std::string{"tampered"});
  ASSERT_TRUE(removed) << to_string(removed.error());
  EXPECT_EQ(code_of(call<token_record>(find_atom_v, connection_key{"acme", "mallory", "github"})
                      .error()),
            ec::not_found);
}

TEST(UnboundFormatPolicy, AllowedUntilRecordedThenRefusedForGood) {
  auto url = cm::test::fresh_database("unbound");
  storage::database db{db_config(url)};
  storage::apply_migrations(db);
  // As after an upgrade of a database that held ciphertexts.
  db.exec_script("UPDATE cipher_formats SET unbound_refused_since = NULL");
  storage::unbound_format_policy policy{db, 0ms};
  EXPECT_TRUE(policy.allowed());
  db.exec_script("INSERT INTO connector_tokens (team_id, id, user_id, provider, kind, "
                 "access_token, key_id) VALUES ('acme', gen_random_uuid(), 'alice', 'github', "
                 "'api_key', '\\x01'::bytea || '\\x00000001'::bytea, 1)");
  EXPECT_EQ(storage::unbound_values(db), 1);
  db.exec_script("DELETE FROM connector_tokens");
  EXPECT_EQ(storage::unbound_values(db), 0);
  storage::refuse_unbound_format(db);
  EXPECT_FALSE(policy.allowed()) << "seen at the next re-check";
  // A copy: text() views the result, which is gone after this line.
  std::string since{
    db.exec_script("SELECT unbound_refused_since::text FROM cipher_formats").text(0, 0)};
  storage::refuse_unbound_format(db);
  EXPECT_EQ(db.exec_script("SELECT unbound_refused_since::text FROM cipher_formats").text(0, 0),
            since)
    << "the first time is kept";
  // Remembered: even if the row were cleared, this instance keeps refusing.
  db.exec_script("UPDATE cipher_formats SET unbound_refused_since = NULL");
  EXPECT_FALSE(policy.allowed());
}

TEST_F(storage_fixture, AuditRowsWithAnyBytesAreWrittenAndReadBack) {
  // Audit rows go in by COPY (issue 18): its separators in a value, and
  // bytes PostgreSQL would refuse, must neither break the batch nor be lost.
  std::vector<std::string> targets = {"tab\there", "line\nbreak\r", "back\\slash\\N",
                                      std::string("nul\0byte", 8), "bad\xff\xfeutf8", "ok é ✓"};
  for (size_t i = 0; i < targets.size(); ++i) {
    audit_entry e;
    e.team_id = "acme";
    e.actor_type = "service";
    e.actor_id = "reporting";
    e.action = "token.read";
    e.target = targets[i];
    e.request_id = "req-" + std::to_string(i);
    e.details = i == 0 ? "not json" : R"({"via":"http"})";
    caf::anon_send(caf::actor_cast<caf::actor>(store), audit_atom_v, std::move(e));
  }
  audit_rows rows;
  for (int attempt = 0; attempt < 100 && rows.size() < targets.size(); ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto page = call<audit_rows>(audit_page_atom_v, std::string{"acme"}, int64_t{0}, int32_t{50});
    ASSERT_TRUE(page);
    rows = *page;
  }
  ASSERT_EQ(rows.size(), targets.size());
  std::map<std::string, std::string> by_request;
  for (auto& r : rows)
    by_request[r.entry.request_id] = r.entry.target;
  EXPECT_EQ(by_request["req-0"], "tab\there");
  EXPECT_EQ(by_request["req-1"], "line\nbreak\r");
  EXPECT_EQ(by_request["req-2"], "back\\slash\\N");
  EXPECT_EQ(by_request["req-3"], "nul?byte");
  EXPECT_EQ(by_request["req-4"], "bad??utf8");
  EXPECT_EQ(by_request["req-5"], "ok é ✓");
}

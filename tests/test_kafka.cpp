// The Kafka producer (kafka/producer.hpp) against librdkafka's mock
// cluster: what it reports delivered arrived once, in order per key, with
// its headers; a broker that is down delays without losing; a message no
// retry can fix is reported refused, not retried forever.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <functional>
#include <sstream>
#include <map>
#include <set>
#include <thread>

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "kafka/producer.hpp"
#include "kafka/relay.hpp"
#include "kafka/settings.hpp"
#include "common/private_file.hpp"
#include "storage/database.hpp"
#include "storage/kafka_relay_store.hpp"
#include "storage/migrations.hpp"
#include "storage/outbox.hpp"
#include "provider/oauth_protocol.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/kafka_mock.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/test_env.hpp"

using namespace cm;
using namespace std::chrono_literals;

namespace {

/// Polls until `count` messages have a report or `timeout` passes.
std::map<uint64_t, kafka::delivery_report> reports_for(kafka::producer& p, size_t count,
                                                       std::chrono::milliseconds timeout) {
  std::map<uint64_t, kafka::delivery_report> out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out.size() < count && std::chrono::steady_clock::now() < deadline)
    for (auto& r : p.poll(50))
      out[r.id] = r;
  return out;
}

std::unique_ptr<kafka::producer> producer_for(const test::kafka_mock_cluster& cluster,
                                              int64_t delivery_timeout_ms = 30000) {
  kafka::producer_settings s;
  s.brokers = cluster.bootstraps();
  s.delivery_timeout_ms = delivery_timeout_ms;
  std::string problem;
  auto p = kafka::producer::create(s, problem);
  if (!p)
    throw std::runtime_error(problem);
  return p;
}

} // namespace

TEST(KafkaProducer, WhatIsReportedDeliveredArrivesOnceInOrderPerKeyWithItsHeaders) {
  test::kafka_mock_cluster cluster(3);
  cluster.create_topic("token-events", 4);
  auto p = producer_for(cluster);
  constexpr int per_key = 50;
  const std::vector<std::string> keys = {"conn-a", "conn-b", "conn-c"};
  uint64_t id = 0;
  std::string problem;
  for (int i = 0; i < per_key; ++i)
    for (auto& key : keys) {
      ++id;
      ASSERT_EQ(kafka::producer::queued::yes,
                p->produce("token-events", key, key + ":" + std::to_string(i),
                           {{"event_id", "e" + std::to_string(id)},
                            {"event_type", "TOKEN_REFRESHED"}},
                           id, problem))
        << problem;
    }
  auto reports = reports_for(*p, id, 20s);
  ASSERT_EQ(reports.size(), id);
  for (auto& [rid, r] : reports)
    EXPECT_EQ(r.outcome, kafka::delivery_outcome::delivered) << rid << " " << r.reason;
  EXPECT_EQ(p->in_flight(), 0);

  auto got = test::consume(cluster.bootstraps(), "token-events", id, 20s);
  ASSERT_EQ(got.size(), id) << "each message exactly once";
  std::map<std::string, int> next;
  std::map<std::string, int32_t> partition_of;
  std::set<std::string> event_ids;
  for (auto& m : got) {
    auto colon = m.payload.find(':');
    ASSERT_NE(colon, std::string::npos);
    EXPECT_EQ(m.payload.substr(0, colon), m.key);
    // One key, one partition, in the order produced.
    EXPECT_EQ(std::stoi(m.payload.substr(colon + 1)), next[m.key]++) << m.key;
    if (partition_of.count(m.key)) {
      EXPECT_EQ(partition_of[m.key], m.partition);
    }
    partition_of[m.key] = m.partition;
    EXPECT_EQ(m.headers["event_type"], "TOKEN_REFRESHED");
    EXPECT_TRUE(event_ids.insert(m.headers["event_id"]).second);
  }
  for (auto& key : keys)
    EXPECT_EQ(next[key], per_key);
}

TEST(KafkaProducer, BrokersDownDelayButLoseNothingAndRetriableErrorsAreRetried) {
  test::kafka_mock_cluster cluster(1);
  cluster.create_topic("entity-events", 1);
  auto p = producer_for(cluster);
  std::string problem;
  // Two transient refusals of the next produce requests: librdkafka
  // retries them itself (idempotently), and the report is a delivery.
  cluster.push_request_errors(0 /* Produce */, {RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                                                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT});
  ASSERT_EQ(kafka::producer::queued::yes,
            p->produce("entity-events", "acme/github", "first", {}, 1, problem))
    << problem;
  auto first = reports_for(*p, 1, 20s);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[1].outcome, kafka::delivery_outcome::delivered) << first[1].reason;

  cluster.broker_down(1);
  for (uint64_t id = 2; id <= 11; ++id)
    ASSERT_EQ(kafka::producer::queued::yes,
              p->produce("entity-events", "acme/github", "m" + std::to_string(id), {}, id,
                         problem))
      << problem;
  // Nothing is reported delivered while the only broker is down.
  auto during = reports_for(*p, 10, 1500ms);
  for (auto& [rid, r] : during)
    EXPECT_NE(r.outcome, kafka::delivery_outcome::delivered) << rid;
  EXPECT_TRUE(during.empty()) << "still within delivery.timeout.ms: nothing to report yet";
  cluster.broker_up(1);
  auto after = reports_for(*p, 10, 30s);
  ASSERT_EQ(after.size(), 10u);
  for (auto& [rid, r] : after)
    EXPECT_EQ(r.outcome, kafka::delivery_outcome::delivered) << rid << " " << r.reason;
  auto got = test::consume(cluster.bootstraps(), "entity-events", 11, 20s);
  ASSERT_EQ(got.size(), 11u);
  EXPECT_EQ(got.front().payload, "first");
  for (size_t i = 1; i < got.size(); ++i)
    EXPECT_EQ(got[i].payload, "m" + std::to_string(i + 1));
}

TEST(KafkaProducer, AMessageNoRetryCanFixIsReportedRefusedAndTimeoutsRetriable) {
  test::kafka_mock_cluster cluster(1);
  cluster.create_topic("token-events", 1);
  auto p = producer_for(cluster, 2000);
  std::string problem;
  cluster.push_request_errors(0 /* Produce */, {RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED});
  ASSERT_EQ(kafka::producer::queued::yes,
            p->produce("token-events", "k", "not allowed", {}, 7, problem))
    << problem;
  auto refused = reports_for(*p, 1, 20s);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[7].outcome, kafka::delivery_outcome::refused);
  EXPECT_EQ(refused[7].reason, "TOPIC_AUTHORIZATION_FAILED");
  // The topic now refuses this client at once.
  EXPECT_EQ(kafka::producer::queued::refused,
            p->produce("token-events", "k", "again", {}, 9, problem));
  EXPECT_EQ(problem, "TOPIC_AUTHORIZATION_FAILED");
  // A broker away for longer than delivery.timeout.ms: retriable (the
  // relay produces it again later), never delivered.
  cluster.create_topic("entity-events", 1);
  cluster.broker_down(1);
  ASSERT_EQ(kafka::producer::queued::yes,
            p->produce("entity-events", "k", "later", {}, 8, problem)) << problem;
  auto timed_out = reports_for(*p, 1, 20s);
  ASSERT_EQ(timed_out.size(), 1u);
  EXPECT_EQ(timed_out[8].outcome, kafka::delivery_outcome::retriable);
  EXPECT_EQ(timed_out[8].reason, "_MSG_TIMED_OUT");
  EXPECT_EQ(p->fatal_error(), "");
}

TEST(KafkaProducer, BadSettingsAreRefusedNamingThePropertyNotItsValue) {
  kafka::producer_settings s;
  s.brokers = "127.0.0.1:1";
  s.properties["sasl.password"] = "canary-sasl-password-0001";
  s.properties["no.such.property"] = "canary-value-0002";
  std::string problem;
  EXPECT_EQ(kafka::producer::create(s, problem), nullptr);
  EXPECT_NE(problem.find("no.such.property"), std::string::npos) << problem;
  EXPECT_EQ(problem.find("canary"), std::string::npos) << problem;
}

namespace {

config::database_config db_config(const std::string& url) {
  config::database_config cfg;
  cfg.url = url;
  cfg.connect_timeout_s = 2;
  return cfg;
}

} // namespace

/// One relay at a time: the advisory lock decides, and only its holder
/// moves the cursor, forward only.
TEST(KafkaRelayStore, OnlyTheLockHolderMovesTheCursorAndOnlyForward) {
  auto url = test::fresh_database("kafka_relay");
  storage::database a{db_config(url)};
  storage::apply_migrations(a);
  storage::database b{db_config(url)};
  storage::kafka_relay_store first{a};
  storage::kafka_relay_store second{b};
  EXPECT_EQ(first.cursor(), (outbox_position{0, 0}));
  EXPECT_FALSE(first.advance({10, 1})) << "not the holder";
  ASSERT_TRUE(first.try_lead());
  EXPECT_TRUE(first.leading());
  EXPECT_FALSE(second.try_lead());
  EXPECT_FALSE(second.leading());
  EXPECT_TRUE(first.advance({10, 1}));
  EXPECT_TRUE(first.advance({10, 5}));
  EXPECT_FALSE(first.advance({10, 3})) << "backwards";
  EXPECT_FALSE(second.advance({20, 1})) << "not the holder";
  EXPECT_EQ(second.cursor(), (outbox_position{10, 5}));
  first.step_down();
  EXPECT_FALSE(first.leading());
  ASSERT_TRUE(second.try_lead());
  EXPECT_TRUE(second.advance({20, 1}));
  EXPECT_EQ(first.cursor(), (outbox_position{20, 1}));
  first.park("acme", "6f1c1a4e-0000-4000-8000-000000000001", "token-events",
             "MSG_SIZE_TOO_LARGE");
  first.park("acme", "6f1c1a4e-0000-4000-8000-000000000001", "token-events",
             "MSG_SIZE_TOO_LARGE");
  EXPECT_EQ(second.parked(), 1);
}

/// Secrets come from files with a private mode, and go only to librdkafka:
/// no error names a value.
TEST(KafkaSettings, SecretsAreReadFromPrivateFilesAndNeverQuoted) {
  test::temp_dir dir;
  auto password = dir.file("kafka.password");
  test::write_file(password, "canary-sasl-password-7f3a\n", 0600);
  config::kafka_config k;
  k.brokers = "127.0.0.1:1";
  k.security_protocol = "sasl_plaintext";
  k.sasl_mechanism = "SCRAM-SHA-256";
  k.sasl_username = "cm";
  k.sasl_password_file = password;
  auto s = kafka::settings_for(k);
  EXPECT_EQ(s.properties.at("sasl.password"), "canary-sasl-password-7f3a");
  EXPECT_EQ(s.properties.at("sasl.mechanisms"), "SCRAM-SHA-256");
  EXPECT_EQ(s.properties.at("security.protocol"), "sasl_plaintext");
  std::string problem;
  EXPECT_NE(kafka::producer::create(s, problem), nullptr) << problem;
  chmod(password.c_str(), 0644);
  try {
    kafka::settings_for(k);
    ADD_FAILURE() << "a password file others can read was accepted";
  } catch (const private_file_error& e) {
    EXPECT_NE(std::string(e.what()).find("events.kafka.sasl.password_file"), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find("canary"), std::string::npos);
  }
}

// -- the relay: outbox to Kafka ------------------------------------------------

namespace {

struct relay_world {
  test::kafka_mock_cluster cluster{3};
  std::string url = test::fresh_database("kafka_relay");
  storage::database db{db_config(url)};
  int next_event = 0;

  relay_world() {
    storage::apply_migrations(db);
    cluster.create_topic("token-events", 4);
    cluster.create_topic("entity-events", 2);
  }

  /// A token event of `connection` whose payload numbers it per connection.
  void token_event(const std::string& connection, int n) {
    storage::outbox outbox{db};
    char id[40];
    std::snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", ++next_event);
    outbox.append("acme", {{"eventId", id}, {"eventType", "TOKEN_REFRESHED"},
                           {"topic", "token-events"}, {"connectionId", connection},
                           {"n", n}});
  }
  void entity_event(const std::string& connector, int n) {
    storage::outbox outbox{db};
    char id[40];
    std::snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", ++next_event);
    outbox.append("acme", {{"eventId", id}, {"eventType", "appEnabled"},
                           {"topic", "entity-events"}, {"connectorName", connector},
                           {"syncAction", "immediate"}, {"n", n}});
  }

  std::unique_ptr<kafka::relay> start_relay() {
    config::kafka_config k;
    k.brokers = cluster.bootstraps();
    k.delivery_timeout_ms = 5000;
    auto settings = kafka::settings_for(k);
    return std::make_unique<kafka::relay>(db_config(url), k, settings, 50ms);
  }
};

/// Per key, the payloads' n in order 0, 1, 2…; every event once.
void expect_once_in_order(const std::vector<test::consumed_message>& got, size_t expected) {
  EXPECT_EQ(got.size(), expected);
  std::map<std::string, int> next;
  std::set<std::string> ids;
  for (auto& m : got) {
    auto payload = nlohmann::json::parse(m.payload);
    EXPECT_EQ(payload["n"].get<int>(), next[m.key]++) << m.key;
    EXPECT_EQ(m.headers.at("event_id"), payload["eventId"]);
    EXPECT_EQ(m.headers.at("event_type"), payload["eventType"]);
    EXPECT_TRUE(ids.insert(m.headers.at("event_id")).second) << "twice: " << m.payload;
  }
}

} // namespace

/// The operator's list and re-queue, on the store alone: one request
/// re-queues each waiting event once, in outbox order, and never an event
/// whose outbox row was pruned (it could not be produced).
TEST(KafkaRelayStore, RequeueTakesWaitingEventsOnceAndNeverAPrunedOne) {
  relay_world w;
  w.token_event("conn-1", 0);
  w.token_event("conn-1", 1);
  w.token_event("conn-1", 2);
  storage::kafka_relay_store store{w.db};
  storage::outbox outbox{w.db};
  // The outbox shows an event once no older transaction is still open
  // anywhere in the cluster (commit order), and tests in parallel share it.
  auto events = outbox.after({0, 0}, "", 10);
  for (int i = 0; i < 200 && events.size() < 3; ++i) {
    std::this_thread::sleep_for(50ms);
    events = outbox.after({0, 0}, "", 10);
  }
  ASSERT_EQ(events.size(), 3u);
  for (auto& e : events)
    store.park(e.team_id, e.event_id, "token-events", "MSG_SIZE_TOO_LARGE");
  auto pruned = events[1].event_id;
  test::psql(w.url, "DELETE FROM event_outbox WHERE event_id = '" + pruned + "'");
  auto listed = store.list_parked(10);
  ASSERT_EQ(listed.size(), 3u);
  for (auto& r : listed)
    EXPECT_EQ(r.event_type.empty(), r.event_id == pruned) << r.event_id;
  EXPECT_EQ(store.requeue(pruned), 0);
  EXPECT_EQ(store.requeue(""), 2) << "the other two";
  EXPECT_EQ(store.requeue(""), 0) << "none waits now";
  auto requeued = store.requeued(10);
  ASSERT_EQ(requeued.size(), 2u);
  EXPECT_EQ(requeued[0].event.event_id, events[0].event_id) << "outbox order within a request";
  EXPECT_EQ(requeued[1].event.event_id, events[2].event_id);
  EXPECT_EQ(requeued[0].key, "conn-1");
  // Acknowledged: the row goes, unless it was parked and re-queued again
  // meanwhile (the time it was re-queued is the fence).
  store.requeue_done(requeued[0]);
  store.park(events[2].team_id, events[2].event_id, "token-events", "TOPIC_AUTHORIZATION_FAILED");
  auto upper = events[2].event_id; // an operator may paste it in upper case
  for (auto& c : upper)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(store.requeue(upper), 1);
  store.requeue_done(requeued[1]);
  EXPECT_EQ(store.parked(), 2) << "the pruned one and the one re-queued again";
  auto again = store.requeued(10);
  ASSERT_EQ(again.size(), 1u);
  store.requeue_done(again[0]);
  EXPECT_EQ(store.parked(), 1);
}

TEST(KafkaRelay, EveryOutboxEventArrivesOnceOnItsTopicKeyedAndInOrder) {
  relay_world w;
  for (int n = 0; n < 20; ++n)
    for (auto c : {"conn-1", "conn-2", "conn-3"})
      w.token_event(c, n);
  for (int n = 0; n < 5; ++n)
    for (auto c : {"github", "stripe"})
      w.entity_event(c, n);
  auto relay = w.start_relay();
  auto tokens = test::consume(w.cluster.bootstraps(), "token-events", 60, 30s);
  auto entities = test::consume(w.cluster.bootstraps(), "entity-events", 10, 30s);
  expect_once_in_order(tokens, 60);
  expect_once_in_order(entities, 10);
  for (auto& m : entities)
    EXPECT_TRUE(m.key == "acme/github" || m.key == "acme/stripe") << m.key;
  // Marked relayed only as acknowledged: the cursor reaches the head.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  storage::kafka_relay_store store{w.db};
  storage::outbox outbox{w.db};
  while (std::chrono::steady_clock::now() < deadline && store.cursor() < outbox.head())
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(store.cursor(), outbox.head());
  EXPECT_EQ(relay->relayed(), 70);
  // Later events follow.
  w.token_event("conn-1", 20);
  auto more = test::consume(w.cluster.bootstraps(), "token-events", 61, 30s);
  EXPECT_EQ(more.size(), 61u);
}

TEST(KafkaRelay, TwoInstancesRelayEachEventOnceAndABrokerOutageLosesNothing) {
  relay_world w;
  for (int n = 0; n < 30; ++n)
    w.token_event("conn-" + std::to_string(n % 5), n / 5);
  auto first = w.start_relay();
  auto second = w.start_relay();
  auto got = test::consume(w.cluster.bootstraps(), "token-events", 30, 30s);
  expect_once_in_order(got, 30);
  EXPECT_NE(first->leading(), second->leading()) << "exactly one relays";
  // Every broker away, events keep coming, the brokers return.
  for (int id = 1; id <= 3; ++id)
    w.cluster.broker_down(id);
  for (int n = 6; n < 12; ++n)
    for (int c = 0; c < 5; ++c)
      w.token_event("conn-" + std::to_string(c), n);
  std::this_thread::sleep_for(1500ms);
  for (int id = 1; id <= 3; ++id)
    w.cluster.broker_up(id);
  auto after = test::consume(w.cluster.bootstraps(), "token-events", 60, 60s);
  EXPECT_GE(after.size(), 60u);
  // At least once: every event there; in order per key among first copies.
  std::set<std::string> ids;
  for (auto& m : after)
    ids.insert(m.headers.at("event_id"));
  EXPECT_EQ(ids.size(), 60u);
}

TEST(KafkaRelay, AnEventRefusedForGoodIsParkedAndTheRestFlows) {
  relay_world w;
  w.token_event("conn-1", 0);
  w.cluster.push_request_errors(0 /* Produce */, {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE});
  auto relay = w.start_relay();
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline && relay->parked() == 0)
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(relay->parked(), 1);
  storage::kafka_relay_store store{w.db};
  EXPECT_EQ(store.parked(), 1);
  w.token_event("conn-1", 1);
  auto got = test::consume(w.cluster.bootstraps(), "token-events", 1, 20s);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(got[0].payload)["n"], 1);
}

/// Through the real server: an OAuth connect, a refresh, a disconnect and a
/// connector toggle each reach their topic once, keyed by the connection
/// (or the team's connector), in order, and never with a secret.
TEST(KafkaRelay, AConnectARefreshADisconnectAndAToggleReachTheirTopicsFromTheServer) {
  test::kafka_mock_cluster cluster{1};
  cluster.create_topic("token-events", 3);
  cluster.create_topic("entity-events", 1);
  test::fake_provider_process fake;
  test::server_options o{test::fresh_database("kafka_server")};
  o.log_level = "info";
  const std::string landing = "https://app.example/done";
  o.extra_yaml = "oauth:\n  public_base_url: https://cm.example\n  allowed_redirect_uris: [" +
                 landing + "]\n"
                 "events:\n  poll_ms: 100\n  kafka:\n    brokers: \"" + cluster.bootstraps() +
                 "\"\n    delivery_timeout_ms: 5000\n"
                 "providers:\n  github:\n    client_id: cm-test-client\n"
                 "    client_secret: cm-test-secret\n"
                 "    authorization_url: " + fake.url("/authorize") + "\n"
                 "    token_url: " + fake.url("/token") + "\n"
                 "    account_url: " + fake.url("/me") + "\n"
                 "    revoke_url: " + fake.url("/applications/{client_id}/token") + "\n";
  test::server_process server{o};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto alice = "Bearer " + server.mint("alice", "acme");
  auto admin = "Bearer " + server.mint("ada", "acme", true);
  auto authorized = test::http_call(server.port(), "GET",
                                    "/api/oauth/github/authorize?redirect_uri=" +
                                      oauth::form_encode({{"", landing}}).substr(1),
                                    {{"Authorization", alice}});
  ASSERT_EQ(authorized.status, 200) << authorized.body;
  auto approved = test::http_call(fake.port(), "GET",
                                  test::path_and_query(authorized.json()["auth_url"]));
  ASSERT_EQ(approved.status, 302);
  auto q = test::query_of(approved.header("location"));
  auto connected = test::http_call(
    server.port(), "GET",
    "/api/oauth/github/callback?" + oauth::form_encode({{"code", q["code"]}, {"state", q["state"]}}));
  ASSERT_EQ(connected.status, 200) << connected.body;
  ASSERT_EQ(test::http_call(server.port(), "POST", "/api/connectors/github/refresh",
                            {{"Authorization", alice}})
              .status,
            200);
  ASSERT_EQ(test::http_call(server.port(), "DELETE", "/api/connectors/github",
                            {{"Authorization", alice}})
              .status,
            200);
  ASSERT_EQ(test::http_call(server.port(), "POST", "/api/v1/connectors/toggle/stripe",
                            {{"Authorization", admin}, {"Content-Type", "application/json"}},
                            R"({"enabled":true,"syncAction":"immediate"})")
              .status,
            200);
  auto tokens = test::consume(cluster.bootstraps(), "token-events", 3, 30s, 1s);
  ASSERT_EQ(tokens.size(), 3u);
  std::vector<std::string> types;
  for (auto& m : tokens) {
    auto payload = nlohmann::json::parse(m.payload);
    types.push_back(payload["eventType"]);
    EXPECT_EQ(m.key, payload["connectionId"]);
    EXPECT_EQ(m.key, tokens.front().key) << "one connection, one key";
    EXPECT_EQ(payload["userId"], "alice");
    EXPECT_EQ(payload["provider"], "github");
    EXPECT_EQ(m.headers["event_type"], payload["eventType"]);
    // The fake provider's tokens start with "at-" and "rt-".
    EXPECT_EQ(m.payload.find("\"at-"), std::string::npos) << m.payload;
    EXPECT_EQ(m.payload.find("\"rt-"), std::string::npos) << m.payload;
  }
  EXPECT_EQ(types, (std::vector<std::string>{"TOKEN_CREATED", "TOKEN_REFRESHED", "TOKEN_REVOKED"}));
  auto entities = test::consume(cluster.bootstraps(), "entity-events", 1, 30s, 1s);
  ASSERT_EQ(entities.size(), 1u);
  auto toggled = nlohmann::json::parse(entities[0].payload);
  EXPECT_EQ(toggled["eventType"], "appEnabled");
  EXPECT_EQ(toggled["syncAction"], "immediate");
  EXPECT_EQ(entities[0].key, "acme/stripe");
}

TEST(KafkaRelay, AParkedEventAnOperatorRequeuesIsProducedAgainAndLeavesTheParkedList) {
  relay_world w;
  w.token_event("conn-1", 0);
  w.cluster.push_request_errors(0 /* Produce */, {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE});
  auto relay = w.start_relay();
  storage::kafka_relay_store store{w.db};
  auto eventually = [](const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline && !done())
      std::this_thread::sleep_for(50ms);
    return done();
  };
  ASSERT_TRUE(eventually([&] { return relay->parked() == 1; }));
  auto parked = store.list_parked(10);
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].reason, "MSG_SIZE_TOO_LARGE");
  EXPECT_EQ(parked[0].event_type, "TOKEN_REFRESHED");
  EXPECT_EQ(parked[0].requeued_at, "");
  // The leader's figures: nothing behind the cursor, one parked event
  // waiting for an operator.
  auto status = relay->status();
  EXPECT_TRUE(eventually([&] { return status->parked_stored == 1 && status->backlog == 0; }));

  // Re-queued while the cause persists: refused again, parked again with
  // the reason, waiting for the operator once more.
  w.cluster.push_request_errors(0 /* Produce */, {RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED});
  EXPECT_EQ(store.requeue(parked[0].event_id), 1);
  ASSERT_TRUE(eventually([&] { return relay->parked() == 2; }));
  parked = store.list_parked(10);
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].reason, "TOPIC_AUTHORIZATION_FAILED");
  EXPECT_EQ(parked[0].requeued_at, "");

  // librdkafka's producer now refuses that topic at once (until its next
  // metadata refresh), so a new event is parked too: an authorization
  // failure parks what comes, it is not retried forever.
  w.token_event("conn-2", 0);
  ASSERT_TRUE(eventually([&] { return relay->parked() == 3; }));
  EXPECT_EQ(store.list_parked(10).size(), 2u);

  // Once the cause is gone, the operator sends both again: the relay takes
  // a fresh producer for them, they are acknowledged and leave the list.
  EXPECT_EQ(store.requeue(""), 2);
  auto got = test::consume(w.cluster.bootstraps(), "token-events", 2, 20s, 1s);
  ASSERT_EQ(got.size(), 2u);
  std::set<std::string> ids;
  for (auto& m : got)
    ids.insert(m.headers.at("event_id"));
  EXPECT_EQ(ids.count(parked[0].event_id), 1u);
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_TRUE(eventually([&] { return store.parked() == 0; }));
  EXPECT_TRUE(eventually([&] { return relay->status()->requeued == 2; }));
  EXPECT_EQ(store.requeue(""), 0);
}

namespace {

/// A server relaying to `cluster`, with a METRICS service token.
test::server_options kafka_server(const test::kafka_mock_cluster& cluster, const std::string& db) {
  test::server_options o{db};
  o.log_level = "info";
  o.service_tokens.push_back({"prometheus", "cm-test-metrics-token", {"METRICS"}});
  o.extra_yaml = "events:\n  poll_ms: 100\n  kafka:\n    brokers: \"" + cluster.bootstraps() +
                 "\"\n    delivery_timeout_ms: 60000\n";
  return o;
}

/// Switches a connector for team acme: one entity event each.
void toggle(const test::server_process& server, const std::string& admin,
            const std::string& connector, bool enabled) {
  auto r = test::http_call(server.port(), "POST", "/api/v1/connectors/toggle/" + connector,
                           {{"Authorization", admin}, {"Content-Type", "application/json"}},
                           nlohmann::json{{"enabled", enabled}, {"syncAction", "immediate"}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
}

/// The entity events in the outbox, in commit order.
std::vector<std::string> outbox_entity_ids(const std::string& db) {
  auto text = test::psql(db, "SELECT event_id FROM event_outbox WHERE topic = 'entity-events' "
                             "ORDER BY txid, seq");
  std::vector<std::string> ids;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty())
      ids.push_back(line);
  return ids;
}

std::vector<std::string> ids_of(const std::vector<test::consumed_message>& got) {
  std::vector<std::string> ids;
  for (auto& m : got)
    ids.push_back(m.headers.at("event_id"));
  return ids;
}

nlohmann::json kafka_health(const test::server_process& server) {
  auto r = test::http_call(server.port(), "GET", "/api/v1/health");
  auto body = nlohmann::json::parse(r.body, nullptr, false);
  return body.is_object() && body.contains("kafka") ? body["kafka"] : nlohmann::json{};
}

/// Polls the health route until `done` holds for its kafka part.
bool health_eventually(const test::server_process& server,
                       const std::function<bool(const nlohmann::json&)>& done,
                       std::chrono::seconds timeout = 20s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done(kafka_health(server)))
      return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

/// The value of one sample line of /metrics ("" when absent).
std::string metric(const test::server_process& server, const std::string& sample) {
  auto r = test::http_call(server.port(), "GET", "/metrics",
                           {{"X-Services-Token", "cm-test-metrics-token"}});
  std::stringstream in(r.body);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(sample + " ", 0) == 0)
      return line.substr(sample.size() + 1);
  return "";
}

struct cli_run {
  int code = -1;
  std::string out;
};

cli_run kafka_cli(const test::server_process& server, const std::string& args) {
  test::temp_dir dir;
  cli_run r;
  r.code = test::run_command(test::server_binary() + " kafka " + args + " --config " +
                             server.config_path() + " >" + dir.file("out") + " 2>&1");
  r.out = test::read_file(dir.file("out"));
  return r;
}

} // namespace

/// A relaying server killed after the brokers stored its messages and
/// before they said so: the next instance produces them again (the
/// documented duplicates of at least once), in order, and loses nothing.
TEST(KafkaRelay, AServerKilledBetweenProduceAndAcknowledgeProducesThoseAgainAndLosesNone) {
  test::kafka_mock_cluster cluster{2};
  cluster.create_topic("entity-events", 1);
  cluster.create_topic("token-events", 1);
  cluster.set_leader("entity-events", 0, 1);
  auto db = test::fresh_database("kafka_crash");
  auto o = kafka_server(cluster, db);
  test::server_process first{o};
  ASSERT_TRUE(first.wait_ready()) << first.log();
  auto admin = "Bearer " + first.mint("ada", "acme", true);
  toggle(first, admin, "github", true);
  toggle(first, admin, "stripe", true);
  toggle(first, admin, "github", false);
  ASSERT_EQ(test::consume(cluster.bootstraps(), "entity-events", 3, 30s, 0ms).size(), 3u);
  ASSERT_TRUE(health_eventually(first, [](auto& k) { return k["relayed"] == 3; }))
    << kafka_health(first).dump();

  // The leader now stores what it is sent but answers a minute later.
  cluster.delay_produce_answers(1, 20, 60000);
  toggle(first, admin, "stripe", false);
  toggle(first, admin, "github", true);
  auto stored = test::consume(cluster.bootstraps(), "entity-events", 5, 30s, 0ms);
  ASSERT_EQ(stored.size(), 5u) << "the broker has both";
  EXPECT_LT(cluster.delayed_answers_left(1), 20u);
  EXPECT_EQ(kafka_health(first)["relayed"], 3) << "and the relay heard of neither";
  first.kill_now();

  // The partition's next leader answers at once.
  cluster.set_leader("entity-events", 0, 2);
  o.key_file = first.dir().file("master.key");
  test::server_process second{o};
  ASSERT_TRUE(second.wait_ready()) << second.log();
  toggle(second, "Bearer " + second.mint("ada", "acme", true), "stripe", true);
  auto got = test::consume(cluster.bootstraps(), "entity-events", 8, 30s, 1s);
  auto outbox = outbox_entity_ids(db);
  ASSERT_EQ(outbox.size(), 6u);
  // Everything once, then the two unacknowledged ones again, then the
  // rest: nothing lost, nothing out of order after its first copy.
  std::vector<std::string> expected = {outbox[0], outbox[1], outbox[2], outbox[3],
                                       outbox[4], outbox[3], outbox[4], outbox[5]};
  EXPECT_EQ(ids_of(got), expected);
  EXPECT_TRUE(health_eventually(second, [](auto& k) {
    return k["status"] == "relaying" && k["relayed"] == 3 && k["backlog"] == 0;
  })) << kafka_health(second).dump();
}

/// Broker errors and outages injected under a running server lose
/// nothing; a message refused for good is alarmed (log, health, metrics),
/// listed for the operator and sent again on request.
TEST(KafkaRelay, BrokerFaultsUnderTheServerLoseNothingAndAParkedEventIsAlarmedListedAndRequeued) {
  test::kafka_mock_cluster cluster{1};
  cluster.create_topic("entity-events", 2);
  cluster.create_topic("token-events", 1);
  auto db = test::fresh_database("kafka_faults");
  test::server_process server{kafka_server(cluster, db)};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto admin = "Bearer " + server.mint("ada", "acme", true);

  // Refusals a retry fixes: librdkafka retries, the relay waits.
  cluster.push_request_errors(0 /* Produce */,
                              {RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                               RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                               RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                               RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE});
  toggle(server, admin, "github", true);
  toggle(server, admin, "stripe", true);
  toggle(server, admin, "github", false);
  toggle(server, admin, "stripe", false);
  auto first = test::consume(cluster.bootstraps(), "entity-events", 4, 30s);
  ASSERT_EQ(first.size(), 4u);

  // The only broker away: events wait in the outbox, the health route and
  // the metrics say so, the service stays healthy.
  cluster.broker_down(1);
  toggle(server, admin, "github", true);
  toggle(server, admin, "stripe", true);
  EXPECT_TRUE(health_eventually(server, [](auto& k) {
    return k["status"] == "brokers_down" && k["backlog"] == 2;
  })) << kafka_health(server).dump();
  EXPECT_EQ(test::http_call(server.port(), "GET", "/api/v1/health").status, 200);
  EXPECT_EQ(metric(server, "cm_kafka_relay_backlog_events"), "2");
  EXPECT_EQ(metric(server, "cm_kafka_brokers_down"), "1");
  EXPECT_EQ(metric(server, "cm_kafka_relay_leading"), "1");
  cluster.broker_up(1);
  auto all = test::consume(cluster.bootstraps(), "entity-events", 6, 60s, 1s);
  ASSERT_EQ(all.size(), 6u);
  // Per key (partition), the outbox's order, each event once.
  auto outbox = outbox_entity_ids(db);
  std::map<std::string, std::vector<std::string>> by_key, expected_by_key;
  for (auto& m : all)
    by_key[m.key].push_back(m.headers.at("event_id"));
  std::map<std::string, std::string> key_of_id;
  for (auto& m : all)
    key_of_id[m.headers.at("event_id")] = m.key;
  for (auto& id : outbox)
    expected_by_key[key_of_id[id]].push_back(id);
  EXPECT_EQ(by_key, expected_by_key);
  EXPECT_TRUE(health_eventually(server, [](auto& k) {
    return k["status"] == "relaying" && k["backlog"] == 0 && k["relayed"] == 6;
  })) << kafka_health(server).dump();
  EXPECT_EQ(metric(server, "cm_kafka_events_total{outcome=\"relayed\"}"), "6");

  // Refused for good: parked, alarmed, and the next event still flows.
  cluster.push_request_errors(0 /* Produce */, {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE});
  toggle(server, admin, "github", false);
  EXPECT_TRUE(health_eventually(server, [](auto& k) {
    return k["parked"] == 1 && k["parked_waiting"] == 1;
  })) << kafka_health(server).dump();
  EXPECT_EQ(metric(server, "cm_kafka_parked_events"), "1");
  EXPECT_EQ(metric(server, "cm_kafka_events_total{outcome=\"parked\"}"), "1");
  EXPECT_NE(server.log().find("event refused for good: parked"), std::string::npos);
  toggle(server, admin, "stripe", false);
  ASSERT_EQ(test::consume(cluster.bootstraps(), "entity-events", 7, 30s).size(), 7u);

  // The operator lists it (never a payload) and sends it again.
  auto listed = kafka_cli(server, "parked --json");
  ASSERT_EQ(listed.code, 0) << listed.out;
  auto rows = nlohmann::json::parse(listed.out)["parked"];
  ASSERT_EQ(rows.size(), 1u) << listed.out;
  auto parked_id = rows[0]["event_id"].get<std::string>();
  EXPECT_EQ(rows[0]["event_type"], "appDisabled");
  EXPECT_EQ(rows[0]["topic"], "entity-events");
  EXPECT_EQ(rows[0]["reason"], "MSG_SIZE_TOO_LARGE");
  EXPECT_EQ(rows[0]["requeued_at"], nullptr);
  EXPECT_EQ(listed.out.find("syncAction"), std::string::npos) << "no payload";
  auto table = kafka_cli(server, "parked");
  EXPECT_EQ(table.code, 0);
  EXPECT_NE(table.out.find(parked_id), std::string::npos) << table.out;
  EXPECT_EQ(kafka_cli(server, "requeue").code, 2) << "--event or --all";
  EXPECT_EQ(kafka_cli(server, "requeue --event 00000000-0000-4000-8000-000000000000").code, 1);
  auto requeued = kafka_cli(server, "requeue --event " + parked_id);
  ASSERT_EQ(requeued.code, 0) << requeued.out;
  auto after = test::consume(cluster.bootstraps(), "entity-events", 8, 30s, 1s);
  ASSERT_EQ(after.size(), 8u);
  auto after_ids = ids_of(after);
  EXPECT_EQ(std::count(after_ids.begin(), after_ids.end(), parked_id), 1);
  EXPECT_TRUE(health_eventually(server, [](auto& k) {
    return k["requeued"] == 1 && k["parked_waiting"] == 0;
  })) << kafka_health(server).dump();
  EXPECT_EQ(metric(server, "cm_kafka_events_total{outcome=\"requeued\"}"), "1");
  EXPECT_EQ(kafka_cli(server, "parked --json").out, "{\"parked\":[]}\n");
  EXPECT_EQ(kafka_cli(server, "requeue --all").code, 1) << "nothing waits";
}

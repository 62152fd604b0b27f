// Lifecycle event delivery end to end (issue 6): signed webhooks with
// retries, Server-Sent Events with Last-Event-ID resume, and PostgreSQL
// NOTIFY carrying events written by one instance to another instance's
// subscribers. No secret appears in any delivered event.
#include <gtest/gtest.h>

#include <thread>

#include "tests/support/child_process.hpp"
#include "tests/support/event_clients.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

const std::string webhook_secret = "whsec-test-0123456789abcdef";
const std::string secret_canary = "CANARY-events-client-secret-51";
const std::string scoped_token = "svc-token-events-scoped-000001";

http_reply as(uint16_t port, const std::string& method, const std::string& target,
              const std::string& bearer, const std::string& body = "") {
  return http_call(port, method, target, {{"Authorization", bearer}}, body);
}

http_reply toggle(uint16_t port, const std::string& bearer, const std::string& connector,
                  bool enabled) {
  return as(port, "POST", "/api/v1/connectors/toggle/" + connector, bearer,
            enabled ? R"({"enabled":true,"syncAction":"scheduled"})" : R"({"enabled":false})");
}

} // namespace

TEST(Events, WebhookIsSignedRetriedAfterAFailureAndCarriesAStableId) {
  webhook_receiver receiver{{500}};
  temp_dir dir;
  write_file(dir.file("webhook.secret"), webhook_secret + "\n");
  auto db = fresh_database("webhooks");
  server_options o{db};
  o.log_level = "info";
  o.extra_yaml = "events:\n  poll_ms: 200\n  webhook_retry_base_ms: 200\n"
                 "  webhooks:\n    - name: sink\n      url: http://127.0.0.1:" +
                 std::to_string(receiver.port()) + "/hook\n      secret_file: " +
                 dir.file("webhook.secret") + "\n";
  server_process server{o};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto admin = "Bearer " + server.mint("ada", "acme", true);
  // A configuration with a secret, then a toggle: one entity event.
  ASSERT_EQ(as(server.port(), "PUT", "/api/v1/connectors/config/github", admin,
               R"({"baseUrl":"https://api.github.com","auth":{"clientId":"x","clientSecret":")" +
                 secret_canary + R"("}})")
              .status,
            200);
  ASSERT_EQ(toggle(server.port(), admin, "github", true).status, 200);

  ASSERT_TRUE(receiver.wait_for(2, 15s)) << "no retry after a 500: " << server.log();
  auto got = receiver.deliveries();
  EXPECT_EQ(got[0].answered, 500);
  EXPECT_EQ(got[1].answered, 200);
  for (auto& d : got) {
    auto timestamp = d.headers["x-connector-timestamp"];
    auto signature = d.headers["x-connector-signature"];
    ASSERT_FALSE(timestamp.empty());
    EXPECT_EQ(signature, "t=" + timestamp + ",v1=" +
                           hmac_sha256_hex(webhook_secret, timestamp + "." + d.body))
      << "the signature covers timestamp.body with the configured secret";
    EXPECT_NE(signature, "t=" + timestamp + ",v1=" +
                           hmac_sha256_hex("another-secret-entirely", timestamp + "." + d.body));
    auto event = nlohmann::json::parse(d.body);
    EXPECT_EQ(event["eventType"], "appEnabled");
    EXPECT_EQ(event["syncAction"], "scheduled");
    EXPECT_EQ(event["orgId"], "acme");
    EXPECT_EQ(d.headers["x-connector-event-id"], event["eventId"]);
    EXPECT_EQ(d.body.find(secret_canary), std::string::npos);
  }
  EXPECT_EQ(got[0].headers["x-connector-event-id"], got[1].headers["x-connector-event-id"])
    << "a retry carries the same id, so receivers can deduplicate";
  EXPECT_EQ(got[0].headers["x-connector-delivery-attempt"], "1");
  EXPECT_EQ(got[1].headers["x-connector-delivery-attempt"], "2");
  // Recorded as delivered after two attempts; nothing else pending.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (psql_int(db, "SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NOT NULL") == 0 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(psql(db, "SELECT attempts || ',' || last_status FROM webhook_deliveries"), "2,200");
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(receiver.deliveries().size(), 2u) << "delivered once more after success";
  EXPECT_EQ(server.log().find(secret_canary), std::string::npos);
  EXPECT_EQ(server.log().find(webhook_secret), std::string::npos);
}

TEST(Events, ServerSentEventsResumeFromLastEventId) {
  auto db = fresh_database("sse");
  server_options o{db};
  o.log_level = "info";
  o.service_tokens.push_back({"reporting", scoped_token, {"FETCH_CONFIG"}});
  o.extra_yaml = "events:\n  poll_ms: 200\n  heartbeat_ms: 500\n";
  server_process server{o};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto admin = "Bearer " + server.mint("ada", "acme", true);
  auto other = "Bearer " + server.mint("olga", "globex", true);

  sse_event first;
  {
    sse_client stream{server.port(), "/api/v1/events?topics=entity-events",
                      {{"Authorization", admin}}};
    ASSERT_EQ(stream.status(), 200) << stream.error_body();
    ASSERT_EQ(toggle(server.port(), admin, "stripe", true).status, 200);
    ASSERT_EQ(toggle(server.port(), other, "stripe", true).status, 200) << "another team's";
    auto e = stream.next(5s);
    ASSERT_TRUE(e) << server.log();
    EXPECT_EQ(e->event, "entity-events");
    auto payload = nlohmann::json::parse(e->data);
    EXPECT_EQ(payload["eventType"], "appEnabled");
    EXPECT_EQ(payload["orgId"], "acme");
    first = *e;
    EXPECT_FALSE(stream.next(700ms)) << "globex's event reached acme's stream";
  } // disconnect

  // Changes while nobody listens.
  ASSERT_EQ(toggle(server.port(), admin, "stripe", false).status, 200);
  ASSERT_EQ(toggle(server.port(), admin, "figma", true).status, 200);

  sse_client resumed{server.port(), "/api/v1/events?topics=entity-events",
                     {{"Authorization", admin}, {"Last-Event-ID", first.id}}};
  ASSERT_EQ(resumed.status(), 200) << resumed.error_body();
  auto a = resumed.next(5s);
  auto b = resumed.next(5s);
  ASSERT_TRUE(a && b) << server.log();
  EXPECT_GT(a->position(), first.position());
  EXPECT_GT(b->position(), a->position());
  EXPECT_EQ(nlohmann::json::parse(a->data)["eventType"], "appDisabled");
  EXPECT_EQ(nlohmann::json::parse(b->data)["connectorName"], "figma");
  // And then live events follow on the same stream.
  ASSERT_EQ(toggle(server.port(), admin, "vercel", true).status, 200);
  auto c = resumed.next(5s);
  ASSERT_TRUE(c);
  EXPECT_EQ(nlohmann::json::parse(c->data)["connectorName"], "vercel");
  EXPECT_GT(c->position(), b->position());

  // A service sees every team unless it names one; topics are filtered.
  sse_client service{server.port(), "/api/v1/events?topics=token-events",
                     {{"X-Services-Token", scoped_token}, {"Last-Event-ID", "0.0"}}};
  ASSERT_EQ(service.status(), 200);
  EXPECT_FALSE(service.next(700ms)) << "entity events on a token-events stream";
  sse_client bad{server.port(), "/api/v1/events?topics=everything", {{"Authorization", admin}}};
  EXPECT_EQ(bad.status(), 400);
  sse_client bad_id{server.port(), "/api/v1/events",
                    {{"Authorization", admin}, {"Last-Event-ID", "yesterday"}}};
  EXPECT_EQ(bad_id.status(), 400);
}

TEST(Events, SecondInstanceSubscriberSeesEventsWrittenByTheFirst) {
  auto db = fresh_database("notify");
  // Polling is slowed to 30 s: only NOTIFY can deliver within the wait.
  server_options a{db};
  a.log_level = "info";
  a.extra_yaml = "events:\n  poll_ms: 30000\n";
  server_process first{a};
  ASSERT_TRUE(first.wait_ready()) << first.log();
  server_options b = a;
  b.key_file = first.dir().file("master.key");
  server_process second{b};
  ASSERT_TRUE(second.wait_ready()) << second.log();
  // Each harness instance signs sessions with its own secret.
  auto admin = "Bearer " + first.mint("ada", "acme", true);
  auto admin_at_second = "Bearer " + second.mint("ada", "acme", true);

  sse_client stream{second.port(), "/api/v1/events", {{"Authorization", admin_at_second}}};
  ASSERT_EQ(stream.status(), 200) << stream.error_body();
  auto started = std::chrono::steady_clock::now();
  ASSERT_EQ(toggle(first.port(), admin, "posthog", true).status, 200);
  auto e = stream.next(10s);
  ASSERT_TRUE(e) << second.log();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
  auto payload = nlohmann::json::parse(e->data);
  EXPECT_EQ(payload["connectorName"], "posthog");
  EXPECT_EQ(payload["eventType"], "appEnabled");
}

TEST(Events, DisconnectThroughOneInstanceStopsTheOtherFromServingTheToken) {
  // Before events crossed instances, the second instance's connection
  // actor kept serving the deleted key from memory.
  fake_provider_process fake;
  auto db = fresh_database("crossdisconnect");
  server_options a{db};
  a.log_level = "info";
  a.service_tokens.push_back({"reporting", scoped_token, {"FETCH_CONFIG"}});
  a.extra_yaml = "events:\n  poll_ms: 30000\nproviders:\n  figma:\n    validate_url: "
                 "http://127.0.0.1:" + std::to_string(fake.port()) + "/v1/me\n";
  server_process first{a};
  ASSERT_TRUE(first.wait_ready()) << first.log();
  server_options b = a;
  b.key_file = first.dir().file("master.key");
  server_process second{b};
  ASSERT_TRUE(second.wait_ready()) << second.log();
  auto user = "Bearer " + first.mint("max", "acme");

  ASSERT_EQ(as(first.port(), "POST", "/api/connectors/connect", user,
               R"({"provider":"figma","api_key":"figd_good"})")
              .status,
            200);
  auto serve = [&] {
    return http_call(second.port(), "GET", "/api/internal/tokens/figma?user_id=max&team_id=acme",
                     {{"X-Services-Token", scoped_token}});
  };
  ASSERT_EQ(serve().status, 200) << "the second instance serves the key";
  ASSERT_EQ(as(first.port(), "DELETE", "/api/connectors/figma", user).status, 200);
  // A request racing with the removal may get 503 (retry); none may get
  // the key once the removal arrived, and the answer settles on 404.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  int status = 200;
  while (std::chrono::steady_clock::now() < deadline && (status = serve().status) != 404)
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(status, 404) << "the second instance still served a deleted key: " << second.log();
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(serve().status, 404);
}

// The proxy end to end: the real server calling the fake provider's API
// (tests/fake_provider, /papi/), which echoes what it received with the
// credential as a digest, and stripe-stateful-mock. Every test checks what
// the provider got and what the caller got back, and the canaries: the
// stored token appears on no surface (answers, log, audit, events,
// metrics).
#include <chrono>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "http/auth.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/stripe_mock.hpp"
#include "tests/support/token_world.hpp"

using namespace cm;
using namespace cm::test;

namespace {

const std::string agent_token = "svc-token-proxy-agent-0003";
const std::string scraper_token = "svc-token-metrics-0004";

/// A server whose providers' API base URLs point at the fake's /papi/.
struct proxy_world {
  token_world w;
  std::unique_ptr<server_process> server;
  std::vector<std::string> answers;

  explicit proxy_world(const std::string& proxy_yaml = "", bool rate_limits = false,
                       int timeout_ms = 1500, int request_timeout_ms = 5000) {
    auto o = w.options();
    o.request_timeout_ms = request_timeout_ms;
    o.service_tokens.push_back({"agent", agent_token, {"PROXY"}});
    o.service_tokens.push_back({"scraper", scraper_token, {"METRICS"}});
    auto papi = w.fake.url("/papi");
    auto& yaml = o.extra_yaml;
    auto github = yaml.find("  github:\n");
    yaml.insert(github + 10, "    api_base_url: " + papi + "/github\n");
    auto key = [&](const std::string& name, const std::string& validate, const std::string& base) {
      return "  " + name + ":\n    validate_url: " + w.fake.url(validate) +
             "\n    api_base_url: " + papi + base + "\n";
    };
    std::string providers =
      key("stripe", "/v1/balance", "/stripe") + key("klaviyo", "/api/accounts/", "/klaviyo") +
      key("gorgias", "/{domain}/api/account", "/{domain}/gorgias") +
      key("zendesk", "/{subdomain}/api/v2/users/me.json", "/{subdomain}/zendesk") +
      key("figma", "/v1/me", "/figma") +
      "  shopify:\n    api_base_url: " + papi + "/{shop}/shopify\n" +
      "  meta:\n    api_base_url: " + papi + "/meta\n";
    yaml.insert(yaml.find("rate_limit:"), providers);
    if (rate_limits) {
      std::string off = "rate_limit:\n  enabled: false\n";
      yaml.replace(yaml.find(off), off.size(), "");
    }
    yaml += "proxy:\n  timeout_ms: " + std::to_string(timeout_ms) + "\n" + proxy_yaml;
    server = std::make_unique<server_process>(o);
    if (!server->wait_ready())
      throw std::runtime_error("server did not start: " + server->log());
  }

  http_reply call(const std::string& method, const std::string& target, header_map headers = {},
                  const std::string& body = "") {
    if (headers.find("X-Services-Token") == headers.end())
      headers["X-Services-Token"] = agent_token;
    auto r = http_call(server->port(), method, target, headers, body);
    answers.push_back(r.raw);
    return r;
  }

  http_reply connect_key(const nlohmann::json& body) {
    auto user = "Bearer " + server->mint("alice", "acme");
    return http_call(server->port(), "POST", "/api/connectors/connect",
                     {{"Authorization", user}, {"Content-Type", "application/json"}},
                     body.dump());
  }

  /// Waits until `n` proxy.call audit rows are written (they go in
  /// batches, off the request path).
  void await_audit(int64_t n) {
    psql_int_eventually(w.db, "SELECT count(*) FROM audit_log WHERE action = 'proxy.call'", n);
  }

  int64_t api_calls() {
    return nlohmann::json::parse(w.fake.admin("/__stats", "{}"))["api_calls"].get<int64_t>();
  }

  std::string metrics() {
    return http_call(server->port(), "GET", "/metrics", {{"X-Services-Token", scraper_token}}).body;
  }

  /// Fails the test when `canary` is on any surface the proxy touches.
  void expect_nowhere(const std::string& canary) {
    for (auto& raw : answers)
      EXPECT_EQ(raw.find(canary), std::string::npos) << "in an answer: " << raw.substr(0, 400);
    EXPECT_EQ(server->log().find(canary), std::string::npos) << "in the log";
    EXPECT_EQ(metrics().find(canary), std::string::npos) << "in the metrics";
    for (auto table : {"audit_log", "event_outbox"})
      EXPECT_EQ(psql(w.db, std::string("SELECT coalesce(string_agg(row_to_json(t)::text, ''), '') "
                                       "FROM ") + table + " t")
                  .find(canary),
                std::string::npos)
        << "in " << table;
  }
};

std::string digest(const std::string& value) { return http::sha256_hex(value); }

} // namespace

TEST(Proxy, TheConnectionsTokenGoesOutAndNothingOfTheCallersDoes) {
  proxy_world p;
  p.w.seed("alice", 3600 * 1000);
  auto r = p.call("POST", "/api/proxy/github/repos/octo/hello/issues?state=open&cm_user_id=alice&per_page=5",
                  {{"Content-Type", "application/json"},
                   {"Accept", "application/vnd.github+json"},
                   {"X-GitHub-Api-Version", "2022-11-28"},
                   {"Cookie", "session=callers-cookie"},
                   {"X-Custom-Header", "not-forwarded"}},
                  R"({"title":"found a bug"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto echo = r.json();
  EXPECT_EQ(echo["method"], "POST");
  EXPECT_EQ(echo["path"], "/papi/github/repos/octo/hello/issues");
  EXPECT_EQ(echo["query"], (nlohmann::json{{"state", "open"}, {"per_page", "5"}}));
  EXPECT_EQ(echo["body"], R"({"title":"found a bug"})");
  EXPECT_EQ(echo["credentials"]["authorization"], digest("Bearer at-seed-alice"));
  auto& sent = echo["headers"];
  EXPECT_EQ(sent["content-type"], "application/json");
  EXPECT_EQ(sent["accept"], "application/vnd.github+json");
  EXPECT_EQ(sent["x-github-api-version"], "2022-11-28");
  for (auto never : {"cookie", "x-services-token", "x-custom-header", "x-connection-user-id"})
    EXPECT_FALSE(sent.contains(never)) << never;
  // The provider's safe headers come back; its cookie and the rest do not.
  EXPECT_EQ(r.header("x-ratelimit-remaining"), "41");
  EXPECT_EQ(r.header("set-cookie"), "");
  EXPECT_EQ(r.header("x-internal-trace"), "");
  EXPECT_EQ(r.header("content-type"), "application/json");

  // No path is the base itself (Railway's GraphQL endpoint is its base).
  auto base = p.call("POST", "/api/proxy/github?cm_user_id=alice",
                     {{"Content-Type", "application/json"}}, R"({"query":"{ me { name } }"})");
  ASSERT_EQ(base.status, 200) << base.body;
  EXPECT_EQ(base.json()["path"], "/papi/github");
  // The header form names the connection too; a team is optional when the
  // user has the provider in one team only.
  auto byHeader = p.call("GET", "/api/proxy/github/user",
                         {{"X-Connection-User-Id", "alice"}, {"X-Connection-Team-Id", "acme"}});
  ASSERT_EQ(byHeader.status, 200) << byHeader.body;
  EXPECT_EQ(byHeader.json()["path"], "/papi/github/user");
  EXPECT_FALSE(byHeader.json()["headers"].contains("x-connection-team-id"));
  // HEAD goes out as HEAD: the provider's status and safe headers, no body.
  auto calls = p.api_calls();
  auto head = p.call("HEAD", "/api/proxy/github/user?cm_user_id=alice");
  EXPECT_EQ(head.status, 200) << head.body;
  EXPECT_EQ(head.body, "");
  EXPECT_EQ(head.header("x-ratelimit-remaining"), "41");
  EXPECT_EQ(p.api_calls(), calls + 1);

  // Every call is audited: service, connection, method, path without the
  // query, status and duration.
  p.await_audit(4);
  auto rows = psql(p.w.db,
                   "SELECT actor_type || ' ' || actor_id || ' ' || team_id || ' ' || target || ' ' || "
                   "(details::jsonb->>'method') || ' ' || (details::jsonb->>'path') || ' ' || "
                   "(details::jsonb->>'status') || ' ' || ((details::jsonb->>'duration_ms')::int >= 0)::text "
                   "FROM audit_log WHERE action = 'proxy.call' ORDER BY seq");
  EXPECT_EQ(rows,
            "service agent acme github/alice POST /repos/octo/hello/issues 200 true\n"
            "service agent acme github/alice POST / 200 true\n"
            "service agent acme github/alice GET /user 200 true\n"
            "service agent acme github/alice HEAD /user 200 true");
  EXPECT_NE(p.metrics().find("cm_proxy_requests_total{outcome=\"2xx\",provider=\"github\"} 4"),
            std::string::npos);
  p.expect_nowhere("at-seed-alice");
  p.expect_nowhere("rt-seed-alice");
}

TEST(Proxy, EachCredentialSchemeIsPresentedTheProvidersWay) {
  proxy_world p;
  struct key_case {
    nlohmann::json connect;
    std::string provider, header, presented, path;
  };
  std::vector<key_case> keys = {
    {{{"provider", "stripe"}, {"api_key", "sk_test_good"}}, "stripe", "authorization",
     "Bearer sk_test_good", "/papi/stripe/v1/thing"},
    {{{"provider", "klaviyo"}, {"api_key", "pk_good"}}, "klaviyo", "authorization",
     "Klaviyo-API-Key pk_good", "/papi/klaviyo/v1/thing"},
    {{{"provider", "gorgias"}, {"api_key", "gorgias_good"}, {"domain", "acme"}, {"email", "ops@acme.test"}},
     "gorgias", "authorization", "", "/papi/acme/gorgias/v1/thing"},
    {{{"provider", "zendesk"}, {"api_key", "zd_good"}, {"subdomain", "acme"}, {"email", "ops@acme.test"}},
     "zendesk", "authorization", "", "/papi/acme/zendesk/v1/thing"},
    {{{"provider", "figma"}, {"api_key", "figd_good"}}, "figma", "x-figma-token", "figd_good",
     "/papi/figma/v1/thing"},
  };
  // Basic: base64 of "email:key" and "email/token:key".
  keys[2].presented = "Basic b3BzQGFjbWUudGVzdDpnb3JnaWFzX2dvb2Q=";
  keys[3].presented = "Basic b3BzQGFjbWUudGVzdC90b2tlbjp6ZF9nb29k";
  for (auto& k : keys) {
    auto c = p.connect_key(k.connect);
    ASSERT_EQ(c.status, 200) << k.provider << ": " << c.body;
    auto r = p.call("GET", "/api/proxy/" + k.provider + "/v1/thing?cm_user_id=alice");
    ASSERT_EQ(r.status, 200) << k.provider << ": " << r.body;
    EXPECT_EQ(r.json()["path"], k.path) << k.provider;
    EXPECT_EQ(r.json()["credentials"][k.header], digest(k.presented)) << k.provider;
    EXPECT_EQ(r.json()["credentials"].size(), 1u) << k.provider << ": one credential, once";
  }
  // Klaviyo's revision: the catalog's unless the caller chose one.
  auto revision = p.call("GET", "/api/proxy/klaviyo/api/lists?cm_user_id=alice");
  EXPECT_EQ(revision.json()["headers"]["revision"], "2024-07-15");
  auto chosen = p.call("GET", "/api/proxy/klaviyo/api/lists?cm_user_id=alice",
                       {{"revision", "2025-01-15"}});
  EXPECT_EQ(chosen.json()["headers"]["revision"], "2025-01-15");

  // OAuth tokens in a named header (Shopify, with the shop in the base
  // URL) and in the query (Meta's Graph API).
  p.w.store("acme", "alice", "shopify", "shpat_canary_token", "", R"({"shop":"acme-store"})");
  auto shop = p.call("GET", "/api/proxy/shopify/orders.json?status=any&cm_user_id=alice");
  ASSERT_EQ(shop.status, 200) << shop.body;
  EXPECT_EQ(shop.json()["path"], "/papi/acme-store/shopify/orders.json");
  EXPECT_EQ(shop.json()["credentials"]["x-shopify-access-token"], digest("shpat_canary_token"));
  EXPECT_FALSE(shop.json()["credentials"].contains("authorization"));

  p.w.store("acme", "alice", "meta", "EAAcanary+token/x", "", "{}");
  auto graph = p.call("GET", "/api/proxy/meta/me/adaccounts?fields=name&cm_user_id=alice");
  ASSERT_EQ(graph.status, 200) << graph.body;
  EXPECT_EQ(graph.json()["credentials"]["query:access_token"],
            digest("EAAcanary%2Btoken%2Fx"));
  EXPECT_EQ(graph.json()["query"]["fields"], "name");
  // A provider that echoes the token (Graph's paging links) has it
  // redacted before the caller sees it.
  auto paging = p.call("GET", "/api/proxy/meta/me/echo-credential?cm_user_id=alice");
  ASSERT_EQ(paging.status, 200) << paging.body;
  EXPECT_NE(paging.json()["paging"]["next"].get<std::string>().find("access_token=[redacted]"),
            std::string::npos)
    << paging.body;
  // The query parameter that carries the token is the proxy's alone.
  auto own = p.call("GET", "/api/proxy/meta/me?access_token=someone-elses&cm_user_id=alice");
  EXPECT_EQ(own.status, 400) << own.body;
  // A connection whose metadata lacks the base URL's placeholder: 409.
  p.w.store("acme", "bob", "shopify", "shpat_other", "", "{}");
  auto noShop = p.call("GET", "/api/proxy/shopify/orders.json?cm_user_id=bob");
  EXPECT_EQ(noShop.status, 409) << noShop.body;
  for (auto canary : {"sk_test_good", "pk_good", "gorgias_good", "zd_good", "figd_good",
                      "shpat_canary_token", "EAAcanary", "shpat_other"})
    p.expect_nowhere(canary);
}

TEST(Proxy, A401ForcesOneRefreshAndOneRetryWithTheNewToken) {
  proxy_world p;
  p.w.seed("alice", 3600 * 1000);
  auto ok = p.call("GET", "/api/proxy/github/needs-current?cm_user_id=alice");
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto refreshes = p.w.fake.refresh_calls();
  // The provider stops taking the token (revoked, rotated elsewhere): the
  // proxy refreshes once and retries once, and the caller sees only 200.
  p.w.fake.admin("/__stale_access", R"({"access_token":"at-seed-alice"})");
  auto calls = p.api_calls();
  auto retried = p.call("GET", "/api/proxy/github/needs-current?cm_user_id=alice");
  ASSERT_EQ(retried.status, 200) << retried.body;
  EXPECT_EQ(p.w.fake.refresh_calls(), refreshes + 1);
  EXPECT_EQ(p.api_calls(), calls + 2);
  auto fresh = http_call(p.server->port(), "GET", "/api/internal/tokens/github?user_id=alice",
                         {{"X-Services-Token", world_service_token}});
  auto token = fresh.json()["access_token"].get<std::string>();
  EXPECT_NE(token, "at-seed-alice");
  EXPECT_EQ(retried.json()["credentials"]["authorization"], digest("Bearer " + token));
  EXPECT_NE(p.metrics().find("cm_proxy_token_refreshes_total{provider=\"github\"} 1"),
            std::string::npos);

  // The new token is refused too, moments later: a forced refresh within
  // refresh.min_forced_interval_ms shares the last one (issue 9), so the
  // token is the same, nothing is retried, and the provider's own 401 is
  // the answer. A burst of 401s costs the provider one refresh, not one
  // per call.
  p.w.fake.admin("/__stale_access", nlohmann::json{{"access_token", token}}.dump());
  calls = p.api_calls();
  refreshes = p.w.fake.refresh_calls();
  for (int i = 0; i < 3; ++i) {
    auto dead = p.call("GET", "/api/proxy/github/needs-current?cm_user_id=alice");
    EXPECT_EQ(dead.status, 401) << dead.body;
    EXPECT_EQ(dead.json()["error"], "invalid_token");
  }
  EXPECT_EQ(p.w.fake.refresh_calls(), refreshes);
  EXPECT_EQ(p.api_calls(), calls + 3);

  // An API key is never refreshed: its 401 passes straight through.
  ASSERT_EQ(p.connect_key({{"provider", "stripe"}, {"api_key", "sk_test_good"}}).status, 200);
  refreshes = p.w.fake.refresh_calls();
  auto key401 = p.call("GET", "/api/proxy/stripe/v1/status/401?cm_user_id=alice");
  EXPECT_EQ(key401.status, 401);
  EXPECT_EQ(p.w.fake.refresh_calls(), refreshes);
  p.expect_nowhere(token);
  p.expect_nowhere("rt-seed-alice");
}

TEST(Proxy, RetryAfterPassesThroughAndNothingIsRetried) {
  proxy_world p;
  p.w.seed("alice", 3600 * 1000);
  for (int status : {429, 503}) {
    auto calls = p.api_calls();
    auto r = p.call("GET", "/api/proxy/github/status/" + std::to_string(status) + "?cm_user_id=alice");
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(r.header("retry-after"), "7");
    EXPECT_EQ(r.json()["status"], status);
    EXPECT_EQ(p.api_calls(), calls + 1) << "no retry";
  }
  // A redirect is the caller's to follow, not ours.
  auto calls = p.api_calls();
  auto moved = p.call("GET", "/api/proxy/github/redirect?cm_user_id=alice");
  EXPECT_EQ(moved.status, 302);
  EXPECT_EQ(moved.header("location"), "http://127.0.0.1:9/elsewhere");
  EXPECT_EQ(p.api_calls(), calls + 1);
}

TEST(Proxy, SlowProvidersAre504AndOversizedAnswers502) {
  proxy_world p{"  max_response_bytes: 4096\n"};
  p.w.seed("alice", 3600 * 1000);
  auto quick = p.call("GET", "/api/proxy/github/slow/100?cm_user_id=alice");
  EXPECT_EQ(quick.status, 200) << quick.body;
  auto slow = p.call("GET", "/api/proxy/github/slow/4000?cm_user_id=alice");
  EXPECT_EQ(slow.status, 504) << slow.body;
  EXPECT_EQ(slow.json()["error"]["code"], "provider_timeout");
  auto fits = p.call("GET", "/api/proxy/github/big/4000?cm_user_id=alice");
  EXPECT_EQ(fits.status, 200);
  EXPECT_EQ(fits.body.size(), 4000u);
  auto big = p.call("GET", "/api/proxy/github/big/5000?cm_user_id=alice");
  EXPECT_EQ(big.status, 502) << big.body;
  p.await_audit(4);
  auto rows = psql(p.w.db, "SELECT string_agg(details::jsonb->>'status', ',' ORDER BY seq) FROM "
                           "audit_log WHERE action = 'proxy.call'");
  EXPECT_EQ(rows, "200,504,200,502");
}

// The whole call, every attempt included, ends within proxy.timeout_ms of
// the request's arrival: a 504 of ours, well before Pistache would answer
// 408 on its own (listen.request_timeout + 5 s).
TEST(Proxy, TheDeadlineCoversTheWholeCallAndComesBeforePistaches) {
  proxy_world p{"", false, 2000, 2000};
  p.w.seed("alice", 3600 * 1000);
  auto quick = p.call("GET", "/api/proxy/github/slow/1200?cm_user_id=alice");
  EXPECT_EQ(quick.status, 200) << quick.body;
  auto started = std::chrono::steady_clock::now();
  auto slow = p.call("GET", "/api/proxy/github/slow/9000?cm_user_id=alice");
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(slow.status, 504) << slow.body;
  EXPECT_LT(took, std::chrono::milliseconds(6000)) << "Pistache's own 408 comes at 7 s";
  // A proxy.timeout_ms longer than the listener allows is refused at load.
  server_options o{p.w.db};
  o.request_timeout_ms = 2000;
  o.extra_yaml = "proxy:\n  timeout_ms: 5000\n";
  server_process refused{o};
  EXPECT_FALSE(refused.wait_ready(std::chrono::seconds(10)));
  EXPECT_NE(refused.log().find("proxy.timeout_ms"), std::string::npos) << refused.log();
}

// The raw request target is taken from each request's own line, so
// pipelined requests, proxied or not, each go where they asked.
TEST(Proxy, PipelinedRequestsEachGoWhereTheyAsked) {
  proxy_world p;
  p.w.seed("alice", 3600 * 1000);
  http_connection conn{p.server->port()};
  auto request = [](const std::string& target) {
    return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Services-Token: " + agent_token +
           "\r\n\r\n";
  };
  auto first = conn.raw(request("/api/proxy/github/first/a%20b?x=1&cm_user_id=alice") +
                        request("/api/v1/health") +
                        request("/api/proxy/github/second?y=2&cm_user_id=alice"));
  auto health = conn.raw("");
  auto second = conn.raw("");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.json()["path"], "/papi/github/first/a%20b");
  EXPECT_EQ(first.json()["query"], (nlohmann::json{{"x", "1"}}));
  EXPECT_EQ(health.status, 200) << health.body;
  EXPECT_TRUE(health.json().contains("status")) << health.body;
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.json()["path"], "/papi/github/second");
  EXPECT_EQ(second.json()["query"], (nlohmann::json{{"y", "2"}}));
}

namespace {

/// The fake provider's /papi/.../stream/ counters.
struct stream_counters {
  long sent = 0;
  long broken = 0;
};

stream_counters stream_stats(proxy_world& p) {
  auto stats = nlohmann::json::parse(p.w.fake.admin("/__stats", "{}"));
  return {stats["stream_sent"].get<long>(), stats["stream_broken"].get<long>()};
}

/// Waits until the fake's stream has sent more than `baseline` and then
/// stops sending (its client, the proxy, stopped reading); returns what it
/// had sent by then, or -1.
long stalled_at(proxy_world& p, long baseline = 0) {
  auto last = stream_stats(p).sent;
  for (int i = 0; i < 75; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto now = stream_stats(p).sent;
    if (now == last && now > baseline)
      return now;
    last = now;
  }
  return -1;
}

std::string get_request(const std::string& target, const std::string& version = "HTTP/1.1") {
  return "GET " + target + " " + version + "\r\nHost: 127.0.0.1\r\nX-Services-Token: " +
         agent_token + "\r\n\r\n";
}

} // namespace

// An answer larger than proxy.stream_after_bytes goes out as it comes
// (chunked), whole, with the credential redacted even where the provider
// sent it in two pieces; the connection then serves the next pipelined
// request. A small answer keeps its Content-Length, and so does every
// answer to an HTTP/1.0 caller (whose body would end by the close, where a
// cut could not be told from the end).
TEST(Proxy, LargeAnswersAreStreamedWholeAndRedactedAcrossPieces) {
  proxy_world p{"  stream_after_bytes: 65536\n  max_response_bytes: 4194304\n"};
  p.w.seed("alice", 3600 * 1000);
  const size_t total = 1 << 20;
  const std::string token = "at-seed-alice";
  http_connection conn{p.server->port()};
  auto streamed =
    conn.raw(get_request("/api/proxy/github/data/stream/1048576/with-credential?cm_user_id=alice") +
             get_request("/api/proxy/github/user?cm_user_id=alice"));
  auto after = conn.raw("");
  p.answers.push_back(streamed.raw);
  p.answers.push_back(after.raw);
  ASSERT_EQ(streamed.status, 200) << streamed.raw.substr(0, 400);
  EXPECT_EQ(streamed.header("transfer-encoding"), "chunked");
  EXPECT_EQ(streamed.header("content-length"), "");
  EXPECT_EQ(streamed.header("content-type"), "text/plain");
  EXPECT_FALSE(streamed.truncated);
  EXPECT_EQ(streamed.body.size(), total - token.size() + std::string("[redacted]").size());
  EXPECT_EQ(streamed.body.find(token), std::string::npos);
  auto mark = streamed.body.find("[redacted]");
  ASSERT_NE(mark, std::string::npos);
  EXPECT_EQ(streamed.body.find_first_not_of('y'), mark);
  EXPECT_EQ(streamed.body.find_first_not_of('y', mark + 10), std::string::npos);
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(after.json()["path"], "/papi/github/user");
  EXPECT_NE(after.header("content-length"), "");
  EXPECT_TRUE(conn.open()) << "the stream left the connection open";

  http_connection old{p.server->port()};
  auto closed = old.raw(get_request("/api/proxy/github/data/stream/300000?cm_user_id=alice",
                                    "HTTP/1.0"));
  EXPECT_EQ(closed.status, 200);
  EXPECT_EQ(closed.header("transfer-encoding"), "");
  EXPECT_EQ(closed.header("content-length"), "300000");
  EXPECT_EQ(closed.body, std::string(300000, 'y'));

  p.await_audit(3);
  EXPECT_EQ(psql(p.w.db, "SELECT string_agg((details::jsonb->>'status') || "
                         "coalesce(' ' || (details::jsonb->>'cut'), ''), ',' ORDER BY seq) FROM "
                         "audit_log WHERE action = 'proxy.call'"),
            "200,200,200");
  p.expect_nowhere(token);
}

// A caller that stops reading stops the provider (the transfer pauses, and
// what waits in memory stays small), and gets everything once it reads
// again; a caller that hangs up ends the transfer.
TEST(Proxy, ASlowReaderPausesTheProviderAndAGoneOneStopsIt) {
  proxy_world p{"  stream_after_bytes: 65536\n  max_response_bytes: 134217728\n", false, 8000,
                10000};
  p.w.seed("alice", 3600 * 1000);
  const long total = 48L << 20;
  const auto target = "/api/proxy/github/data/stream/" + std::to_string(total) + "?cm_user_id=alice";
  {
    http_connection slow{p.server->port(), 32768};
    slow.send_only(get_request(target));
    auto stalled = stalled_at(p);
    ASSERT_GT(stalled, 0) << "the provider never stopped sending";
    // Socket buffers on each leg hold some megabytes; without the pause the
    // whole body would be in the proxy's memory by now.
    EXPECT_LT(stalled, total / 2);
    auto whole = slow.read_reply();
    EXPECT_EQ(whole.status, 200);
    EXPECT_FALSE(whole.truncated);
    EXPECT_EQ(whole.body.size(), static_cast<size_t>(total));
    EXPECT_EQ(whole.body.find_first_not_of('y'), std::string::npos);
  }
  auto before = stream_stats(p);
  {
    http_connection gone{p.server->port(), 32768};
    gone.send_only(get_request(target));
    auto stalled = stalled_at(p, before.sent);
    ASSERT_GT(stalled, before.sent);
    gone.close();
  }
  p.await_audit(2);
  EXPECT_EQ(psql(p.w.db, "SELECT string_agg((details::jsonb->>'status') || "
                         "coalesce(' ' || (details::jsonb->>'cut'), ''), ',' ORDER BY seq) FROM "
                         "audit_log WHERE action = 'proxy.call'"),
            "200,200 client_gone");
  // The transfer ended: the provider's writes failed well before the end.
  for (int i = 0; i < 50 && stream_stats(p).broken == before.broken; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto after = stream_stats(p);
  EXPECT_EQ(after.broken, before.broken + 1);
  EXPECT_LT(after.sent - before.sent, total);
}

// proxy.max_response_bytes bounds a streamed body too: an answer that
// announces more is refused before anything is sent (502); one that grows
// past it mid-stream is cut, so the caller sees a chunked body without its
// end, never a whole-looking short one.
TEST(Proxy, TheSizeCapRefusesAnAnnouncedOversizeAndCutsAGrowingStream) {
  proxy_world p{"  stream_after_bytes: 65536\n  max_response_bytes: 262144\n"};
  p.w.seed("alice", 3600 * 1000);
  auto announced = p.call("GET", "/api/proxy/github/data/stream/1048576?cm_user_id=alice");
  EXPECT_EQ(announced.status, 502) << announced.body;
  http_connection conn{p.server->port()};
  auto cut = conn.raw(get_request("/api/proxy/github/data/stream/1048576/chunked?cm_user_id=alice"));
  EXPECT_EQ(cut.status, 200);
  EXPECT_EQ(cut.header("transfer-encoding"), "chunked");
  EXPECT_TRUE(cut.truncated);
  EXPECT_LE(cut.body.size(), 262144u);
  EXPECT_GE(cut.body.size(), 65536u);
  EXPECT_FALSE(conn.open());
  p.await_audit(2);
  EXPECT_EQ(psql(p.w.db, "SELECT string_agg((details::jsonb->>'status') || "
                         "coalesce(' ' || (details::jsonb->>'cut'), ''), ',' ORDER BY seq) FROM "
                         "audit_log WHERE action = 'proxy.call'"),
            "502,200 too_large");
  EXPECT_NE(p.metrics().find("cm_proxy_requests_total{outcome=\"too_large\",provider=\"github\"} 2"),
            std::string::npos)
    << p.metrics();
}

TEST(Proxy, EveryRefusedPathIsA400AndReachesNoProvider) {
  proxy_world p;
  p.w.seed("alice", 3600 * 1000);
  auto calls = p.api_calls();
  std::vector<std::string> refused = {
    "/api/proxy/github/../../__stats",   "/api/proxy/github/a/%2e%2e/%2e%2e/__stats",
    "/api/proxy/github/%2E%2E/x",        "/api/proxy/github/a/./b",
    "/api/proxy/github/a%2fb",           "/api/proxy/github/a%2F..%2F..%2F__stats",
    "/api/proxy/github/a%5c..%5c",       "/api/proxy/github//evil.example/x",
    "/api/proxy/github/a//b",            "/api/proxy/github/http://evil.example/x",
    "/api/proxy/github/https:%2f%2fevil.example", "/api/proxy/github/a%00b",
    "/api/proxy/github/a%0d%0aHost:%20evil", "/api/proxy//github/user",
    "/api/proxy/git%68ub/user",          "/api/proxy/github/a%zz",
    "/api/proxy/github/%252e%252e/__stats", "/api/proxy/github/..;/__stats",
  };
  for (auto& target : refused) {
    auto r = p.call("GET", target + (target.find('?') == std::string::npos ? "?" : "&") +
                             "cm_user_id=alice");
    EXPECT_TRUE(r.status == 400 || r.status == 404) << target << " -> " << r.status << " " << r.body;
    EXPECT_EQ(r.body.find("evil"), std::string::npos) << "never echoed: " << r.body;
  }
  EXPECT_EQ(p.api_calls(), calls) << "no refused path reached the provider";
  // Who may call, and naming the connection.
  auto noUser = p.call("GET", "/api/proxy/github/user");
  EXPECT_EQ(noUser.status, 400);
  EXPECT_EQ(p.call("GET", "/api/proxy/github/user?cm_user_id=nobody").status, 404);
  EXPECT_EQ(p.call("GET", "/api/proxy/nonesuch/user?cm_user_id=alice").status, 404);
  EXPECT_EQ(p.call("GET", "/api/proxy/github/user?cm_user_id=alice",
                   {{"X-Services-Token", world_service_token}})
              .status,
            403)
    << "FETCH_CONFIG is not PROXY";
  auto member = "Bearer " + p.server->mint("alice", "acme");
  EXPECT_EQ(http_call(p.server->port(), "GET", "/api/proxy/github/user?cm_user_id=alice",
                      {{"Authorization", member}})
              .status,
            403);
  EXPECT_EQ(p.api_calls(), calls);
  // Nothing was called, so nothing is audited (one call after, to know
  // the writer caught up).
  EXPECT_EQ(p.call("GET", "/api/proxy/github/user?cm_user_id=alice").status, 200);
  p.await_audit(1);
}

TEST(Proxy, OneTeamsOpenCallsAndBucketDoNotHoldBackAnother) {
  proxy_world p{"  team_in_flight: 2\n  burst: 5\n  per_minute: 60\n", true, 4500};
  p.w.seed("alice", 3600 * 1000, "acme");
  p.w.seed("bob", 3600 * 1000, "globex");
  auto calls = p.api_calls();
  auto slow = [&] {
    return std::async(std::launch::async, [&] {
      return http_call(p.server->port(), "GET", "/api/proxy/github/slow/3000?cm_user_id=alice",
                       {{"X-Services-Token", agent_token}});
    });
  };
  auto a = slow();
  auto b = slow();
  // Both open at the provider (each holds one of acme's two slots).
  for (int i = 0; i < 100 && p.api_calls() < calls + 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(p.api_calls(), calls + 2);
  auto third = p.call("GET", "/api/proxy/github/user?cm_user_id=alice");
  EXPECT_EQ(third.status, 429) << third.body;
  EXPECT_FALSE(third.header("retry-after").empty());
  auto other = p.call("GET", "/api/proxy/github/user?cm_user_id=bob");
  EXPECT_EQ(other.status, 200) << "another team is not held back: " << other.body;
  EXPECT_EQ(a.get().status, 200);
  EXPECT_EQ(b.get().status, 200);
  int limited = 0;
  // acme's bucket holds at most its burst (5): of 8 more calls, some wait.
  for (int i = 0; i < 8; ++i)
    limited += p.call("GET", "/api/proxy/github/user?cm_user_id=alice").status == 429;
  EXPECT_GE(limited, 1);
  EXPECT_EQ(p.call("GET", "/api/proxy/github/user?cm_user_id=bob").status, 200);
}

// Stripe through the proxy against stripe-stateful-mock (npm, pinned in
// tests/e2e): a customer created through the proxy is read back through it.
TEST(Proxy, StripeCustomerCreatedAndReadBackThroughTheProxy) {
  stripe_mock mock;
  auto base = mock.url();
  server_options o{fresh_database("proxystripe")};
  o.service_tokens.push_back({"agent", agent_token, {"PROXY"}});
  o.extra_yaml = "providers:\n  stripe:\n    validate_url: " + base +
                 "/v1/customers?limit=1\n    api_base_url: " + base + "\n";
  server_process server{o};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto user = "Bearer " + server.mint("alice", "acme");
  auto key = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";
  auto connect = http_call(server.port(), "POST", "/api/connectors/connect", {{"Authorization", user}},
                           nlohmann::json{{"provider", "stripe"}, {"api_key", key}}.dump());
  ASSERT_EQ(connect.status, 200) << connect.body;
  auto created = http_call(server.port(), "POST", "/api/proxy/stripe/v1/customers",
                           {{"X-Services-Token", agent_token},
                            {"X-Connection-User-Id", "alice"},
                            {"Content-Type", "application/x-www-form-urlencoded"},
                            {"Idempotency-Key", "proxy-test-1"}},
                           "email=jenny%40example.com&description=Jenny%20Rosen&metadata[plan]=gold");
  ASSERT_EQ(created.status, 200) << created.body;
  auto id = created.json()["id"].get<std::string>();
  EXPECT_EQ(id.rfind("cus_", 0), 0u) << id;
  auto read = http_call(server.port(), "GET", "/api/proxy/stripe/v1/customers/" + id + "?cm_user_id=alice",
                        {{"X-Services-Token", agent_token}});
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(read.json()["email"], "jenny@example.com");
  EXPECT_EQ(read.json()["description"], "Jenny Rosen");
  EXPECT_EQ(read.json()["metadata"]["plan"], "gold");
  // The mock's own errors pass through as they are.
  auto missing = http_call(server.port(), "GET", "/api/proxy/stripe/v1/customers/cus_nope?cm_user_id=alice",
                           {{"X-Services-Token", agent_token}});
  EXPECT_EQ(missing.status, 404) << missing.body;
  EXPECT_EQ(missing.json()["error"]["type"], "invalid_request_error");
  for (auto& raw : {created.raw, read.raw, missing.raw})
    EXPECT_EQ(raw.find(key), std::string::npos);
  EXPECT_EQ(server.log().find(key), std::string::npos);
}

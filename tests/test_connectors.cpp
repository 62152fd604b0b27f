// Team connector management end to end (issue 6): every /api/v1/connectors
// route through the real server, an authorization matrix, write-only
// secrets, schema validation, toggles and their events, the team's own
// OAuth app, getTokenFromCode with ID-token verification, the audit log,
// and configuration hot reload.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "http/exchange.hpp"
#include "provider/oauth_flow.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/event_clients.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

const std::string allowed = "https://app.example/integrations/done";
const std::string scoped_token = "svc-token-connectors-scoped-01";
const std::string unscoped_token = "svc-token-connectors-unscoped1";
const std::string secret_canary = "CANARY-client-secret-7f3a9c2e";

struct world {
  std::string db = fresh_database("connectors");
  fake_provider_process fake;
  std::unique_ptr<server_process> server;
  std::string admin, member, other_admin;
  std::string base;

  explicit world(const std::string& deployment_github_client = "cm-test-client") {
    server_options o{db};
    o.log_level = "info";
    o.service_tokens.push_back({"reporting", scoped_token, {"FETCH_CONFIG"}});
    o.service_tokens.push_back({"limited", unscoped_token, {}});
    base = "http://127.0.0.1:" + std::to_string(fake.port());
    o.extra_yaml = "oauth:\n  public_base_url: https://cm.example\n  allowed_redirect_uris: [" +
                   allowed + "]\n"
                   "refresh:\n  provider_timeout_ms: 2000\n  lease_ms: 8000\n"
                   "providers:\n"
                   "  github:\n    client_id: " + deployment_github_client + "\n"
                   "    client_secret: deployment-secret-not-the-fakes\n"
                   "    authorization_url: " + base + "/authorize\n"
                   "    token_url: " + base + "/token\n"
                   "    account_url: " + base + "/me\n"
                   "    revoke_url: " + base + "/applications/{client_id}/token\n"
                   "  google-workspace:\n    client_id: cm-test-client\n"
                   "    client_secret: cm-test-secret\n"
                   "    authorization_url: " + base + "/authorize\n"
                   "    token_url: " + base + "/token\n"
                   "    account_url: " + base + "/me\n"
                   "    revoke_url: " + base + "/revoke\n"
                   "    jwks_url: " + base + "/jwks\n";
    server = std::make_unique<server_process>(o);
    if (!server->wait_ready())
      throw std::runtime_error("server did not start: " + server->log());
    admin = "Bearer " + server->mint("ada", "acme", true, "ada@acme.test");
    member = "Bearer " + server->mint("max", "acme", false, "max@acme.test");
    other_admin = "Bearer " + server->mint("olga", "globex", true, "olga@globex.test");
  }

  uint16_t port() const { return server->port(); }

  http_reply call(const std::string& method, const std::string& target, const std::string& auth,
                  const std::string& body = "") {
    header_map h;
    if (auth.rfind("Bearer ", 0) == 0)
      h["Authorization"] = auth;
    else if (!auth.empty())
      h["X-Services-Token"] = auth;
    if (!body.empty())
      h["Content-Type"] = "application/json";
    return http_call(port(), method, target, h, body);
  }

  int64_t count(const std::string& sql) { return psql_int(db, sql); }
};

const std::string github_config =
  R"({"baseUrl":"https://api.github.com","auth":{"clientId":"cm-test-client","clientSecret":")" +
  secret_canary + R"(","scopes":["repo"]},"sync":{"mode":"scheduled","interval":3600}})";

} // namespace

TEST(Connectors, AuthorizationMatrix) {
  world w;
  // Team acme's configuration, to prove another team's admin never sees it.
  ASSERT_EQ(w.call("PUT", "/api/v1/connectors/config/github", w.admin, github_config).status, 200);

  struct route {
    std::string method, path, body;
    bool admin_route; // else: service route (FETCH_CONFIG)
  };
  const std::vector<route> routes = {
    {"GET", "/api/v1/connectors", "", true},
    {"GET", "/api/v1/connectors/active", "", true},
    {"GET", "/api/v1/connectors/inactive", "", true},
    {"GET", "/api/v1/connectors/config/github", "", true},
    {"PUT", "/api/v1/connectors/config/stripe", R"({"baseUrl":"https://api.stripe.com"})", true},
    {"GET", "/api/v1/connectors/schema/github", "", true},
    {"POST", "/api/v1/connectors/toggle/stripe", R"({"enabled":false})", true},
    {"GET", "/api/v1/connectors/filters/github", "", true},
    {"POST", "/api/v1/connectors/filters/github", R"({"includeArchived":true})", true},
    {"POST", "/api/v1/connectors/getTokenFromCode", R"({"tempCode":"not-a-code"})", true},
    {"GET", "/api/v1/audit", "", true},
    {"POST", "/api/v1/connectors/updateAppConfig", "{}", false},
  };
  for (auto& r : routes) {
    SCOPED_TRACE(r.method + " " + r.path);
    EXPECT_EQ(w.call(r.method, r.path, "", r.body).status, 401) << "no credentials";
    auto as_member = w.call(r.method, r.path, w.member, r.body);
    EXPECT_EQ(as_member.status, 403) << as_member.body;
    EXPECT_EQ(w.call(r.method, r.path, unscoped_token, r.body).status, 403)
      << "service without FETCH_CONFIG";
    auto as_admin = w.call(r.method, r.path, w.admin, r.body);
    auto as_other = w.call(r.method, r.path, w.other_admin, r.body);
    auto as_service = w.call(r.method, r.path, scoped_token, r.body);
    if (r.admin_route) {
      // getTokenFromCode with a made-up code is refused by the provider: 400.
      int expected = r.path.find("getTokenFromCode") != std::string::npos ? 400 : 200;
      EXPECT_EQ(as_admin.status, expected) << as_admin.body;
      EXPECT_EQ(as_other.status, expected) << as_other.body;
      EXPECT_EQ(as_service.status, 403) << "admin routes are for users";
      EXPECT_EQ(as_other.body.find("api.github.com"), std::string::npos)
        << "another team's admin saw acme's configuration: " << as_other.body;
    } else {
      EXPECT_EQ(as_admin.status, 403);
      EXPECT_EQ(as_other.status, 403);
      EXPECT_EQ(as_service.status, 200) << as_service.body;
    }
  }
  // The event stream: admins and scoped services only.
  EXPECT_EQ(sse_client(w.port(), "/api/v1/events", {}).status(), 401);
  EXPECT_EQ(sse_client(w.port(), "/api/v1/events", {{"Authorization", w.member}}).status(), 403);
  EXPECT_EQ(sse_client(w.port(), "/api/v1/events", {{"X-Services-Token", unscoped_token}}).status(),
            403);
  EXPECT_EQ(sse_client(w.port(), "/api/v1/events", {{"Authorization", w.admin}}).status(), 200);
  EXPECT_EQ(sse_client(w.port(), "/api/v1/events", {{"X-Services-Token", scoped_token}}).status(),
            200);
  // Unknown connectors are 404 for an admin.
  EXPECT_EQ(w.call("GET", "/api/v1/connectors/config/nope", w.admin).status, 404);
  EXPECT_EQ(w.call("POST", "/api/v1/connectors/toggle/nope", w.admin, "{}").status, 404);
  EXPECT_EQ(w.call("GET", "/api/v1/connectors/schema/nope", w.admin).status, 404);
}

TEST(Connectors, ConfigSecretIsWriteOnlyAndBadBodiesChangeNothing) {
  world w;
  auto put = w.call("PUT", "/api/v1/connectors/config/github", w.admin, github_config);
  ASSERT_EQ(put.status, 200) << put.body;
  auto got = w.call("GET", "/api/v1/connectors/config/github", w.admin);
  ASSERT_EQ(got.status, 200);
  auto j = got.json();
  EXPECT_EQ(j["config"]["baseUrl"], "https://api.github.com");
  EXPECT_EQ(j["config"]["auth"]["clientId"], "cm-test-client");
  EXPECT_EQ(j["config"]["auth"]["clientSecretSet"], true);
  EXPECT_FALSE(j["config"]["auth"].contains("clientSecret"));
  EXPECT_EQ(j["config"]["sync"]["interval"], 3600);
  EXPECT_TRUE(j["configured"].get<bool>());
  EXPECT_EQ(got.raw.find(secret_canary), std::string::npos);
  EXPECT_EQ(put.raw.find(secret_canary), std::string::npos);
  // Stored encrypted: the plaintext is nowhere in the row.
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_configs WHERE position(convert_to('" +
                    secret_canary + "', 'UTF8') in secrets) > 0 OR config::text LIKE '%" +
                    secret_canary + "%'"),
            0);
  auto version = j["version"].get<int64_t>();

  // A PUT without the secret keeps it (write-only, not erased).
  auto keep = w.call("PUT", "/api/v1/connectors/config/github", w.admin,
                     R"({"baseUrl":"https://github.example","auth":{"clientId":"cm-test-client"}})");
  ASSERT_EQ(keep.status, 200) << keep.body;
  EXPECT_EQ(keep.json()["config"]["auth"]["clientSecretSet"], true);

  // Bad bodies: a clear error naming the field, and nothing changes.
  struct bad {
    std::string body, names;
  };
  for (auto& b : std::vector<bad>{
         {R"({"auth":{"clientId":"x"}})", "baseUrl"},
         {R"({"baseUrl":"ftp://x"})", "baseUrl"},
         {R"({"baseUrl":"https://x","sync":{"interval":5}})", "sync.interval"},
         {R"({"baseUrl":"https://x","sync":{"mode":"hourly"}})", "sync.mode"},
         {R"({"baseUrl":"https://x","auth":{"clientSecret":42}})", "auth.clientSecret"},
         {R"({"baseUrl":"https://x","surprise":1})", "surprise"},
         {R"({"baseUrl": "https://x",)", "JSON"},
       }) {
    SCOPED_TRACE(b.body);
    auto r = w.call("PUT", "/api/v1/connectors/config/github", w.admin, b.body);
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(r.json()["error"]["message"].get<std::string>().find(b.names), std::string::npos)
      << r.body;
  }
  auto after = w.call("GET", "/api/v1/connectors/config/github", w.admin).json();
  EXPECT_EQ(after["version"].get<int64_t>(), version + 1) << "only the good PUT changed it";
  EXPECT_EQ(after["config"]["baseUrl"], "https://github.example");
  EXPECT_EQ(w.server->log().find(secret_canary), std::string::npos) << "secret in the log";
  // Each accepted change is audited, without the secret.
  EXPECT_EQ(w.count("SELECT count(*) FROM audit_log WHERE team_id = 'acme' AND "
                    "action = 'connector.config.update'"),
            2);
  EXPECT_EQ(w.count("SELECT count(*) FROM audit_log WHERE details::text LIKE '%" + secret_canary +
                    "%'"),
            0);
}

// Issue 16: a team's clientId fills {client_id} in GitHub's revocation
// path; `..` made libcurl send the client secret and the token to another
// path on the provider's host. It obeys the rule for every template value.
TEST(Connectors, ClientIdThatWouldReshapeAUrlIs400AndNothingIsStored) {
  world w;
  for (auto connector : {"github", "google-workspace"}) {
    for (auto client_id : {"..", ".", "a/../b", "%2e%2e", "x?y", "x#y", "x\\\\y", "x y", "x@y"}) {
      SCOPED_TRACE(std::string(connector) + " " + client_id);
      auto r = w.call("PUT", std::string("/api/v1/connectors/config/") + connector, w.admin,
                      std::string(R"({"baseUrl":"https://api.example","auth":{"clientId":")") +
                        client_id + R"(","clientSecret":")" + secret_canary + R"("}})");
      EXPECT_EQ(r.status, 400) << r.body;
      EXPECT_EQ(r.json()["error"]["code"], "bad_request") << r.body;
      EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("auth.clientId"),
                std::string::npos)
        << r.body;
      EXPECT_EQ(r.raw.find(secret_canary), std::string::npos);
    }
  }
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_configs"), 0);
  EXPECT_EQ(w.count("SELECT count(*) FROM audit_log"), 0);
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox"), 0);
  // A real client id is stored.
  auto ok = w.call("PUT", "/api/v1/connectors/config/github", w.admin,
                   R"({"baseUrl":"https://api.github.com","auth":{"clientId":"Iv1.0123abcd"}})");
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_configs"), 1);
  EXPECT_EQ(w.server->log().find(secret_canary), std::string::npos);
}

TEST(Connectors, SchemaAndFiltersAreValidatedFromTheCatalog) {
  world w;
  auto schema = w.call("GET", "/api/v1/connectors/schema/github", w.admin).json();
  EXPECT_EQ(schema["required"], nlohmann::json::array({"baseUrl"}));
  EXPECT_EQ(schema["properties"]["auth"]["properties"]["clientSecret"]["writeOnly"], true);
  EXPECT_TRUE(schema["properties"]["filters"]["properties"].contains("repositories"));

  auto options = w.call("GET", "/api/v1/connectors/filters/github", w.admin).json();
  ASSERT_TRUE(options["filterOptions"].is_array());
  bool has_repositories = false;
  for (auto& o : options["filterOptions"])
    has_repositories |= o["name"] == "repositories";
  EXPECT_TRUE(has_repositories) << options.dump();

  auto wrong = w.call("POST", "/api/v1/connectors/filters/github", w.admin,
                      R"({"repositories":"not-a-list"})");
  EXPECT_EQ(wrong.status, 400);
  EXPECT_NE(wrong.body.find("repositories"), std::string::npos) << wrong.body;
  auto unknown = w.call("POST", "/api/v1/connectors/filters/github", w.admin, R"({"colour":"red"})");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(unknown.body.find("colour"), std::string::npos) << unknown.body;
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_configs"), 0) << "refused filters stored";

  auto ok = w.call("POST", "/api/v1/connectors/filters/github", w.admin,
                   R"({"filters":{"repositories":["acme/api","acme/web"],"includeArchived":false}})");
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto now = w.call("GET", "/api/v1/connectors/filters/github", w.admin).json();
  EXPECT_EQ(now["filters"]["repositories"], nlohmann::json::array({"acme/api", "acme/web"}));
  // Filters given with PUT /config land in the same place.
  ASSERT_EQ(w.call("PUT", "/api/v1/connectors/config/github", w.admin,
                   R"({"baseUrl":"https://api.github.com","filters":{"includeArchived":true}})")
              .status,
            200);
  EXPECT_EQ(w.call("GET", "/api/v1/connectors/filters/github", w.admin).json()["filters"],
            nlohmann::json({{"includeArchived", true}}));
}

TEST(Connectors, ToggleEmitsEntityEventsAndListsFollow) {
  world w;
  auto on = w.call("POST", "/api/v1/connectors/toggle/google-workspace", w.admin,
                   R"({"enabled":true,"syncAction":"immediate"})");
  ASSERT_EQ(on.status, 200) << on.body;
  EXPECT_EQ(on.json()["enabled"], true);
  auto event = nlohmann::json::parse(
    psql(w.db, "SELECT payload FROM event_outbox WHERE event_type = 'appEnabled'"));
  EXPECT_EQ(event["topic"], "entity-events");
  EXPECT_EQ(event["orgId"], "acme");
  EXPECT_EQ(event["userId"], "ada");
  EXPECT_EQ(event["connectorName"], "google-workspace");
  EXPECT_EQ(event["syncAction"], "immediate");
  EXPECT_EQ(event["apps"], nlohmann::json::array({"calendar", "drive", "gmail"}));
  EXPECT_TRUE(event.contains("eventId") && event.contains("timestamp"));

  auto names = [&](const std::string& path, const std::string& auth) {
    std::vector<std::string> out;
    auto reply = w.call("GET", path, auth);
    EXPECT_EQ(reply.status, 200) << path << ": " << reply.body;
    auto body = reply.json();
    for (auto& c : body["connectors"])
      out.push_back(c["connectorName"]);
    return out;
  };
  auto active = names("/api/v1/connectors/active", w.admin);
  EXPECT_EQ(active, std::vector<std::string>{"google-workspace"});
  auto all = names("/api/v1/connectors", w.admin);
  EXPECT_GE(all.size(), 17u) << "every catalog connector is listed";
  auto inactive = names("/api/v1/connectors/inactive", w.admin);
  EXPECT_EQ(inactive.size(), all.size() - 1);
  EXPECT_TRUE(names("/api/v1/connectors/active", w.other_admin).empty())
    << "another team's connectors are its own";

  // No body: a flip. Disabling emits appDisabled with syncAction none.
  auto off = w.call("POST", "/api/v1/connectors/toggle/google-workspace", w.admin);
  ASSERT_EQ(off.status, 200) << off.body;
  EXPECT_EQ(off.json()["enabled"], false);
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox WHERE event_type = 'appDisabled' AND "
                    "payload->>'syncAction' = 'none'"),
            1);
  EXPECT_TRUE(names("/api/v1/connectors/active", w.admin).empty());
  auto bad = w.call("POST", "/api/v1/connectors/toggle/github", w.admin,
                    R"({"syncAction":"sometimes"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox"), 2) << "a refused toggle emitted";
}

TEST(Connectors, TeamOAuthAppIsUsedForTheFlowAndForRefresh) {
  // The deployment's GitHub app is one the fake does not know; only the
  // team's app (the fake's credentials) can complete the flow and refresh.
  world w{"deployment-client-unknown-to-fake"};
  auto team_app = R"({"baseUrl":"https://api.github.com","auth":{"clientId":"cm-test-client",)"
                  R"("clientSecret":"cm-test-secret"}})";
  ASSERT_EQ(w.call("PUT", "/api/v1/connectors/config/github", w.admin, team_app).status, 200);
  auto authorized = w.call("GET", "/api/v1/connectors/github/oauth/authorize?redirect_uri=" +
                                    oauth::form_encode({{"", allowed}}).substr(1),
                           w.admin);
  ASSERT_EQ(authorized.status, 200) << authorized.body;
  auto url = authorized.json()["auth_url"].get<std::string>();
  EXPECT_NE(url.find("client_id=cm-test-client"), std::string::npos) << url;
  auto approve = http_call(w.fake.port(), "GET", url.substr(url.find('/', 8)));
  ASSERT_EQ(approve.status, 302) << approve.body;
  auto location = approve.header("location");
  std::map<std::string, std::string> q;
  http::parse_query(location.substr(location.find('?') + 1), q);
  std::vector<std::pair<std::string, std::string>> fields(q.begin(), q.end());
  auto done = http_call(w.port(), "GET",
                        "/api/v1/connectors/github/oauth/callback?" + oauth::form_encode(fields));
  ASSERT_EQ(done.status, 200) << done.body << w.server->log();
  EXPECT_EQ(psql(w.db, "SELECT metadata->>'oauth_app' FROM connector_tokens"), "team");
  EXPECT_EQ(psql_int_eventually(w.db,
                                "SELECT count(*) FROM audit_log WHERE action = "
                                "'connector.oauth.connect' AND actor_id = 'ada' AND target = 'github'",
                                1),
            1)
    << "a team flow is an audited admin change";
  // A refresh must use the team's app too, or the fake refuses it.
  auto calls = [&] { return http_call(w.fake.port(), "GET", "/__stats").json()["refresh_calls"]; };
  auto before = calls();
  auto refreshed = w.call("POST", "/api/connectors/github/refresh", w.admin);
  EXPECT_EQ(refreshed.status, 200) << refreshed.body;
  EXPECT_EQ(calls(), before.get<int>() + 1) << w.server->log();
}

TEST(Connectors, GetTokenFromCodeVerifiesTheIdTokenBeforeStoringAnything) {
  world w;
  auto code_for = [&](const std::string& email, const std::string& sign_with = "published") {
    http_call(w.fake.port(), "POST", "/__id_token", {},
              nlohmann::json{{"email", email}, {"iss", "https://accounts.google.com"},
                             {"sign_with", sign_with}}
                .dump());
    return http_call(w.fake.port(), "POST", "/__code", {},
                     R"({"scope":"openid email https://www.googleapis.com/auth/drive.readonly )"
                     R"(https://www.googleapis.com/auth/gmail.readonly"})")
      .json()["code"]
      .get<std::string>();
  };
  auto exchange = [&](const std::string& code, const std::string& auth) {
    return w.call("POST", "/api/v1/connectors/getTokenFromCode", auth,
                  nlohmann::json{{"tempCode", code}}.dump());
  };
  // Someone else's Google account: refused, nothing stored or enabled.
  auto wrong_email = exchange(code_for("mallory@evil.test"), w.admin);
  EXPECT_EQ(wrong_email.status, 403) << wrong_email.body;
  // Signed by a key the provider does not publish.
  auto forged = exchange(code_for("ada@acme.test", "other"), w.admin);
  EXPECT_EQ(forged.status, 401) << forged.body;
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_tokens"), 0);
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_configs"), 0);
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox"), 0);

  auto ok = exchange(code_for("Ada@acme.test"), w.admin);
  ASSERT_EQ(ok.status, 200) << ok.body << w.server->log();
  auto j = ok.json();
  EXPECT_EQ(j["account_name"], "Ada@acme.test");
  EXPECT_EQ(j["apps"], nlohmann::json::array({"drive", "gmail"}));
  EXPECT_EQ(j["enabled"], true);
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_tokens WHERE user_id = 'ada' AND "
                    "provider = 'google-workspace'"),
            1);
  EXPECT_EQ(psql(w.db, "SELECT enabled FROM connector_configs WHERE team_id = 'acme' AND "
                       "connector_name = 'google-workspace'"),
            "t");
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox WHERE event_type = 'appEnabled' AND "
                    "payload->>'syncAction' = 'immediate' AND payload->'apps' = "
                    "'[\"drive\",\"gmail\"]'::jsonb"),
            1);
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox WHERE event_type = 'TOKEN_CREATED'"), 1);
  // A used code does not work twice.
  EXPECT_EQ(exchange("reused-or-unknown", w.admin).status, 400);
}

TEST(Connectors, AuditLogPagesNewestFirstAndStaysInTheTeam) {
  world w;
  for (auto connector : {"stripe", "github", "figma"})
    ASSERT_EQ(w.call("POST", std::string("/api/v1/connectors/toggle/") + connector, w.admin,
                     R"({"enabled":true})")
                .status,
              200);
  auto page1 = w.call("GET", "/api/v1/audit?limit=2", w.admin);
  ASSERT_EQ(page1.status, 200) << page1.body;
  auto p1 = page1.json();
  ASSERT_EQ(p1["entries"].size(), 2u);
  EXPECT_EQ(p1["entries"][0]["target"], "figma");
  EXPECT_EQ(p1["entries"][1]["target"], "github");
  EXPECT_EQ(p1["entries"][0]["actor_id"], "ada");
  EXPECT_EQ(p1["entries"][0]["action"], "connector.enable");
  EXPECT_EQ(p1["entries"][0]["remote_addr"], "127.0.0.1");
  ASSERT_TRUE(p1["next_before"].is_number());
  auto p2 = w.call("GET", "/api/v1/audit?limit=2&before=" + p1["next_before"].dump(), w.admin).json();
  ASSERT_EQ(p2["entries"].size(), 1u);
  EXPECT_EQ(p2["entries"][0]["target"], "stripe");
  EXPECT_TRUE(p2["next_before"].is_null());
  EXPECT_TRUE(w.call("GET", "/api/v1/audit", w.other_admin).json()["entries"].empty());
  EXPECT_EQ(w.call("GET", "/api/v1/audit?limit=0", w.admin).status, 400);
  EXPECT_EQ(w.call("GET", "/api/v1/audit?before=abc", w.admin).status, 400);
}

TEST(Connectors, HotReloadAppliesAGoodFileAndKeepsRunningOnABadOne) {
  world w;
  auto authorize_url = [&] {
    auto r = w.call("GET", "/api/oauth/github/authorize?redirect_uri=" +
                             oauth::form_encode({{"", allowed}}).substr(1),
                    w.member);
    return r.status == 200 ? r.json()["auth_url"].get<std::string>() : "status " + std::to_string(r.status);
  };
  EXPECT_NE(authorize_url().find("client_id=cm-test-client"), std::string::npos);
  std::string original;
  {
    std::ifstream in(w.server->config_path());
    original.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto write = [&](const std::string& text) {
    std::ofstream out(w.server->config_path(), std::ios::trunc);
    out << text;
  };
  auto reload = [&] {
    return w.call("POST", "/api/v1/connectors/updateAppConfig", scoped_token, "{}");
  };

  // A bad file: rejected with its error, the running configuration stays.
  write(original + "\nnot_a_section: true\n");
  auto bad = reload();
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("not_a_section"), std::string::npos) << bad.body;
  EXPECT_NE(authorize_url().find("client_id=cm-test-client"), std::string::npos);

  // A good file: the new GitHub app is used from the next request on.
  auto changed = original;
  auto pos = changed.find("client_id: cm-test-client");
  ASSERT_NE(pos, std::string::npos);
  changed.replace(pos, std::string("client_id: cm-test-client").size(), "client_id: reloaded-app");
  write(changed);
  auto good = reload();
  ASSERT_EQ(good.status, 200) << good.body;
  EXPECT_EQ(good.json()["reloaded"], true);
  EXPECT_NE(authorize_url().find("client_id=reloaded-app"), std::string::npos) << authorize_url();
  EXPECT_EQ(psql_int_eventually(
              w.db, "SELECT count(*) FROM audit_log WHERE action = 'config.reload'", 1),
            1);
  EXPECT_EQ(psql_int_eventually(
              w.db, "SELECT count(*) FROM audit_log WHERE action = 'config.reload_rejected'", 1),
            1);
  // Still serving after both.
  EXPECT_EQ(http_call(w.port(), "GET", "/api/v1/health").status, 200);
}

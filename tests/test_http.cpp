// The HTTP front in process: Pistache on loopback, front actors, a real
// storage actor. Error shapes, guards, size limit, keep-alive, timeouts.
#include <any>
#include <atomic>
#include <random>
#include <set>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <gtest/gtest.h>

#include "actors/actor_config.hpp"
#include "actors/front_actor.hpp"
#include "actors/storage_actor.hpp"
#include "api/openapi.hpp"
#include "api/route_table.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "http/exchange.hpp"
#include "http/json_body.hpp"
#include "http/server.hpp"
#include "storage/migrations.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/test_env.hpp"

using namespace cm;
using namespace std::chrono_literals;
using cm::test::http_call;

namespace {

const std::string keyring_text = "active 1\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";

/// A storage actor that accepts every request and never answers, to prove
/// the front still answers once its request budget runs out.
struct silent_state {
  std::vector<std::any> held;
  static inline const char* name = "silent-storage";
};

using silent_pointer = storage_actor::stateful_pointer<silent_state>;

template <class T>
caf::typed_response_promise<T> hold(silent_pointer self) {
  auto promise = self->make_response_promise<T>();
  self->state.held.emplace_back(promise);
  return promise;
}

storage_actor::behavior_type silent_storage(silent_pointer self) {
  return {
    [=](ping_atom) { return hold<int64_t>(self); },
    [=](save_atom, token_record&) { return hold<token_record>(self); },
    [=](find_atom, const connection_key&) { return hold<token_record>(self); },
    [=](version_atom, const connection_key&) { return hold<int64_t>(self); },
    [=](list_atom, const std::string&, const std::string&) { return hold<token_summaries>(self); },
    [=](remove_atom, const connection_key&) { return hold<bool>(self); },
    [=](lease_atom, const connection_key&, const std::string&, int64_t) {
      return hold<token_record>(self);
    },
    [=](complete_atom, const connection_key&, int64_t, const std::string&,
        const refreshed_tokens&) { return hold<token_record>(self); },
    [=](release_atom, const connection_key&, int64_t, const std::string&, const std::string&) {
      return hold<bool>(self);
    },
    [=](reauth_atom, const connection_key&, int64_t, const std::string&, const std::string&) {
      return hold<token_record>(self);
    },
    [=](hydrate_atom, const std::string&, const std::string&, int32_t) {
      return hold<hydrate_batch>(self);
    },
    [=](hydrate_atom, int32_t, const std::string&, const std::string&, int32_t) {
      return hold<hydrate_batch>(self);
    },
    [=](hydrate_atom, const std::vector<int32_t>&, const std::string&, const std::string&,
        int32_t) { return hold<hydrate_batch>(self); },
    [=](teams_atom, const std::string&, const std::string&) {
      return hold<std::vector<std::string>>(self);
    },
    [=](audit_atom, const audit_entry&) {},
    [=](audit_atom) {},
    [=](flush_atom) {},
    [=](state_put_atom, const oauth_state_record&, int32_t) { return hold<bool>(self); },
    [=](state_take_atom, const std::string&) { return hold<oauth_state_record>(self); },
    [=](connect_atom, const token_record&) { return hold<connect_result>(self); },
    [=](disconnect_atom, const connection_key&, const std::string&) {
      return hold<token_record>(self);
    },
    [=](config_get_atom, const std::string&, const std::string&) {
      return hold<connector_config_record>(self);
    },
    [=](outbox_atom, const outbox_position&, const std::string&, int32_t) {
      return hold<outbox_page>(self);
    },
    [=](head_atom) { return hold<outbox_position>(self); },
    [=](claim_atom, int32_t, int64_t) { return hold<webhook_jobs>(self); },
    [=](backlog_atom) { return hold<int64_t>(self); },
    [=](delivered_atom, const webhook_job&, int32_t, const std::string&, int64_t) {
      return hold<bool>(self);
    },
    [=](webhooks_atom, const webhook_targets&) {},
    [=](config_list_atom, const std::string&) { return hold<connector_config_records>(self); },
    [=](config_change_atom, const connector_change&) {
      return hold<connector_config_record>(self);
    },
    [=](code_connect_atom, const token_record&, const connector_change&) {
      return hold<connect_result>(self);
    },
    [=](audit_page_atom, const std::string&, int64_t, int32_t) { return hold<audit_rows>(self); },
  };
}

enum class backend { database, unreachable_database, silent };

struct http_fixture {
  cm::test::temp_dir dir;
  actor_config cfg;
  caf::actor_system sys{cfg};
  storage_actor store;
  std::shared_ptr<front_context> ctx = std::make_shared<front_context>();
  std::vector<front_actor> fronts;
  std::unique_ptr<http::server> server;

  explicit http_fixture(backend kind, size_t max_body = 4096,
                        std::chrono::milliseconds timeout = 5000ms) {
    cm::test::write_file(dir.file("jwt.secret"), "http-test-secret-0123456789abcdef0123");
    ctx->cfg.auth.hs256_secret_file = dir.file("jwt.secret");
    ctx->cfg.auth.service_tokens.push_back(
      {"reporting", http::sha256_hex("service-token-1"), {"FETCH_CONFIG"}});
    ctx->cfg.listen.port = 0;
    ctx->cfg.cors.allowed_origins = {"https://app.example"};
    ctx->cfg.listen.max_request_bytes = max_body;
    ctx->cfg.listen.request_timeout = timeout;
    ctx->auth = std::make_shared<const http::authenticator>(ctx->cfg.auth);
    config::database_config db;
    db.connect_timeout_s = 1;
    if (kind == backend::silent) {
      store = sys.spawn(silent_storage);
    } else {
      db.url = kind == backend::database ? cm::test::fresh_database("http")
                                         : "host=" + dir.path() + " dbname=none user=none";
      if (kind == backend::database) {
        storage::database conn{db};
        storage::apply_migrations(conn);
      }
      store = *spawn_storage(sys, db, storage::keyring::parse(keyring_text));
    }
    ctx->storage = store;
    ctx->states = store;
    ctx->configs = store;
    for (int i = 0; i < 2; ++i)
      fronts.push_back(sys.spawn(front, std::shared_ptr<const front_context>(ctx)));
    server = std::make_unique<http::server>(ctx->cfg.listen, fronts);
    server->start();
  }
  ~http_fixture() {
    server->stop();
    server.reset();
    for (auto& f : fronts)
      caf::anon_send_exit(f, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
  }
  uint16_t port() const { return server->port(); }
  std::string bearer(const std::string& user, const std::string& team, bool admin = false) const {
    return "Bearer " + ctx->auth->mint(user, team, "", admin ? "admin" : "member", 600);
  }
  /// Stores a connection; returns its row id.
  std::string save(const std::string& team, const std::string& user, const std::string& provider,
                   const std::string& access) {
    token_record r;
    r.key = {team, user, provider};
    r.access_token = secret{access};
    r.refresh_token = secret{access + "-refresh"};
    r.metadata = R"({"account_name":"acct-)" + user + R"("})";
    r.expires_at_ms = 1'800'000'000'123;
    caf::scoped_actor self{sys};
    std::string id;
    self->request(store, 10s, save_atom_v, r)
      .receive([&](token_record& saved) { id = saved.id; }, [&](caf::error&) {});
    EXPECT_FALSE(id.empty());
    return id;
  }
};

void expect_error_shape(const cm::test::http_reply& r, int status, const std::string& code) {
  EXPECT_EQ(r.status, status) << r.body;
  auto json = r.json();
  ASSERT_TRUE(json.is_object()) << r.body;
  ASSERT_TRUE(json.contains("error")) << r.body;
  EXPECT_EQ(json["error"]["code"], code) << r.body;
  EXPECT_TRUE(json["error"]["message"].is_string());
  EXPECT_EQ(json.size(), 1u);
  EXPECT_NE(r.header("content-type").find("application/json"), std::string::npos);
  EXPECT_FALSE(r.header("x-request-id").empty()) << r.raw;
}

} // namespace

TEST(HttpFront, HealthReportsPostgres) {
  http_fixture f{backend::database};
  auto r = http_call(f.port(), "GET", "/api/v1/health");
  ASSERT_EQ(r.status, 200) << r.body;
  auto json = r.json();
  EXPECT_EQ(json["status"], "healthy");
  EXPECT_EQ(json["checks"]["postgres"]["status"], "up");
  EXPECT_TRUE(json["checks"]["postgres"]["latency_ms"].is_number());
}

TEST(HttpFront, HealthIs503WhenPostgresIsUnreachable) {
  http_fixture f{backend::unreachable_database};
  auto r = http_call(f.port(), "GET", "/api/v1/health");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.json()["status"], "unhealthy");
  EXPECT_EQ(r.json()["checks"]["postgres"]["status"], "down");
  EXPECT_FALSE(r.header("retry-after").empty());
  // A data route answers 503 with Retry-After too.
  auto list = http_call(f.port(), "GET", "/api/connectors/list",
                        {{"Authorization", f.bearer("alice", "acme")}});
  expect_error_shape(list, 503, "unavailable");
  EXPECT_FALSE(list.header("retry-after").empty());
}

TEST(HttpFront, UnknownRouteIs404Json) {
  http_fixture f{backend::database};
  expect_error_shape(http_call(f.port(), "GET", "/nope"), 404, "not_found");
  expect_error_shape(http_call(f.port(), "GET", "/api/connectors/list/extra"), 404, "not_found");
}

TEST(HttpFront, AKnownPathWithTheWrongMethodIs405NamingTheMethodsItAnswers) {
  http_fixture f{backend::database};
  auto r = http_call(f.port(), "DELETE", "/api/v1/health");
  expect_error_shape(r, 405, "method_not_allowed");
  EXPECT_EQ(r.header("allow"), "GET, OPTIONS");
  // A path two routes share lists both of their methods.
  auto config = http_call(f.port(), "PATCH", "/api/v1/connectors/config/github",
                          {{"Authorization", f.bearer("root", "acme", true)}});
  expect_error_shape(config, 405, "method_not_allowed");
  EXPECT_EQ(config.header("allow"), "GET, PUT, OPTIONS");
  // OPTIONS on a known path answers what it allows, without a body.
  auto options = http_call(f.port(), "OPTIONS", "/api/internal/tokens/github");
  EXPECT_EQ(options.status, 204) << options.raw;
  EXPECT_EQ(options.header("allow"), "GET, OPTIONS");
  // "list" is also a {provider} DELETE /api/connectors/{provider} could name.
  EXPECT_EQ(http_call(f.port(), "OPTIONS", "/api/connectors/list").header("allow"),
            "GET, DELETE, OPTIONS");
  EXPECT_TRUE(options.body.empty());
  EXPECT_TRUE(options.header("content-length").empty()) << "204 carries no length";
  EXPECT_EQ(http_call(f.port(), "OPTIONS", "/nope").status, 404);
}

namespace {

/// Every {"$ref": "#/…"} in `node` names something in `doc`.
void expect_refs_resolve(const nlohmann::json& doc, const nlohmann::json& node, int& count) {
  if (node.is_object()) {
    if (node.contains("$ref")) {
      ++count;
      auto ptr = node["$ref"].get<std::string>();
      ASSERT_EQ(ptr.rfind("#/", 0), 0u) << ptr;
      EXPECT_TRUE(doc.contains(nlohmann::json::json_pointer(ptr.substr(1)))) << ptr;
    }
    for (auto& [key, value] : node.items())
      expect_refs_resolve(doc, value, count);
  } else if (node.is_array()) {
    for (auto& value : node)
      expect_refs_resolve(doc, value, count);
  }
}

} // namespace

TEST(HttpFront, TheOpenApiDocumentIsServedAndDescribesEveryRoute) {
  http_fixture f{backend::database};
  auto r = http_call(f.port(), "GET", "/api/v1/openapi.json");
  ASSERT_EQ(r.status, 200) << r.body;
  auto doc = r.json();
  EXPECT_EQ(doc["openapi"], "3.1.0");
  EXPECT_EQ(doc["servers"][0]["url"], f.ctx->cfg.oauth.public_base_url);
  std::set<std::string> operation_ids;
  size_t routes = 0;
  for (auto& route : api::route_table()) {
    ++routes;
    std::string method = route.method;
    std::transform(method.begin(), method.end(), method.begin(), ::tolower);
    auto where = route.method + " " + route.pattern;
    auto path = api::openapi_path(route.pattern);
    ASSERT_TRUE(doc["paths"].contains(path)) << where;
    ASSERT_TRUE(doc["paths"][path].contains(method)) << where;
    auto& op = doc["paths"][path][method];
    EXPECT_FALSE(op["summary"].get<std::string>().empty()) << where;
    EXPECT_TRUE(operation_ids.insert(op["operationId"].get<std::string>()).second)
      << "operationId used twice: " << op["operationId"];
    auto& answers = op["responses"];
    bool success = false;
    for (auto& [status, answer] : answers.items())
      success = success || status[0] == '2' || status[0] == '3';
    EXPECT_TRUE(success) << where << " lists no success";
    EXPECT_TRUE(answers.contains("500")) << where;
    bool guarded = route.who != http::access::open;
    EXPECT_EQ(answers.contains("401"), guarded) << where;
    // A page's form sends its session in a field, which OpenAPI security
    // cannot name: the body declares it instead.
    bool form = route.read_by == api::reader::browser_form;
    EXPECT_EQ(op["security"].empty(), !guarded || form) << where;
    if (form) {
      auto& body = op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
      EXPECT_NE(std::find(body["required"].begin(), body["required"].end(), "session"),
                body["required"].end())
        << where;
      EXPECT_TRUE(answers["401"]["content"].contains("text/html")) << where;
    }
    if (route.cost == http::metering::metered) {
      EXPECT_TRUE(answers.contains("429")) << where;
    }
    // Path parameters are declared, each once.
    for (auto part : http::split_path(route.pattern))
      if (part.front() == '{') {
        auto name = std::string(part.substr(1, part.size() - 2));
        if (name.back() == '*') // the rest of the path, {path} in OpenAPI
          name.pop_back();
        bool declared = false;
        for (auto& p : op["parameters"])
          declared = declared || (p["name"] == name && p["in"] == "path" && p["required"] == true);
        EXPECT_TRUE(declared) << where << " does not declare " << name;
      }
  }
  size_t documented = 0;
  for (auto& [path, methods] : doc["paths"].items())
    documented += methods.size();
  EXPECT_EQ(documented, routes) << "the document describes exactly the routes served";
  int refs = 0;
  expect_refs_resolve(doc, doc, refs);
  EXPECT_GT(refs, 20);
  // The error shape every error answer uses.
  auto codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
  EXPECT_NE(std::find(codes.begin(), codes.end(), "method_not_allowed"), codes.end());
  EXPECT_NE(std::find(codes.begin(), codes.end(), "needs_reauth"), codes.end());
}

TEST(HttpFront, A401NamesTheBearerSchemeItWants) {
  http_fixture f{backend::database};
  for (auto headers : std::vector<cm::test::header_map>{
         {}, {{"Authorization", "Bearer not-a-jwt"}}, {{"X-Services-Token", "wrong"}}}) {
    auto r = http_call(f.port(), "GET", "/api/connectors/list", headers);
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.header("www-authenticate"), "Bearer realm=\"connector-manager\"") << r.raw;
  }
  // Not on other errors.
  auto forbidden = http_call(f.port(), "GET", "/api/connectors/list",
                             {{"X-Services-Token", "service-token-1"}});
  EXPECT_EQ(forbidden.status, 403);
  EXPECT_TRUE(forbidden.header("www-authenticate").empty());
}

TEST(HttpFront, BrowsersOnAllowedOriginsGetCorsHeadersAndOthersGetNone) {
  http_fixture f{backend::database};
  const std::string page = "https://app.example";
  auto allowed = http_call(f.port(), "GET", "/api/v1/health", {{"Origin", page}});
  EXPECT_EQ(allowed.status, 200);
  EXPECT_EQ(allowed.header("access-control-allow-origin"), page);
  EXPECT_EQ(allowed.header("vary"), "Origin");
  EXPECT_NE(allowed.header("access-control-expose-headers").find("X-Request-Id"),
            std::string::npos);
  EXPECT_TRUE(allowed.header("access-control-allow-credentials").empty());
  // Errors too, so the page can read why.
  auto refused = http_call(f.port(), "GET", "/api/connectors/list", {{"Origin", page}});
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.header("access-control-allow-origin"), page);
  // Another origin, or one that only starts like an allowed one, gets nothing.
  for (std::string other : {"https://evil.example", "https://app.example.evil", "null",
                            "http://app.example"}) {
    auto r = http_call(f.port(), "GET", "/api/v1/health", {{"Origin", other}});
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(r.header("access-control-allow-origin").empty()) << other;
  }
  // The preflight.
  cm::test::header_map preflight = {{"Origin", page},
                                    {"Access-Control-Request-Method", "DELETE"},
                                    {"Access-Control-Request-Headers", "authorization"}};
  auto pre = http_call(f.port(), "OPTIONS", "/api/connectors/github", preflight);
  EXPECT_EQ(pre.status, 204) << pre.raw;
  EXPECT_EQ(pre.header("access-control-allow-origin"), page);
  EXPECT_EQ(pre.header("access-control-allow-methods"), "DELETE, OPTIONS");
  EXPECT_NE(pre.header("access-control-allow-headers").find("Authorization"), std::string::npos);
  EXPECT_EQ(pre.header("access-control-max-age"), "600");
  preflight["Origin"] = "https://evil.example";
  auto evil = http_call(f.port(), "OPTIONS", "/api/connectors/github", preflight);
  expect_error_shape(evil, 403, "forbidden");
  EXPECT_TRUE(evil.header("access-control-allow-origin").empty());
  EXPECT_TRUE(evil.header("access-control-allow-methods").empty());
}

TEST(HttpFront, ACallersRequestIdAndTraceAreKeptAndEveryAccessLineSaysWhatHappened) {
  std::FILE* capture = std::tmpfile();
  log::set_sink(capture);
  const std::string canary = "Bearer canary-session-7f3a9c";
  {
    http_fixture f{backend::database};
    auto kept = http_call(f.port(), "GET", "/api/v1/health", {{"X-Request-Id", "job-42:step.3_a"}});
    EXPECT_EQ(kept.header("x-request-id"), "job-42:step.3_a");
    for (std::string bad : std::vector<std::string>{"has space", std::string(129, 'a'), "quote\"", "semi;colon"}) {
      auto r = http_call(f.port(), "GET", "/api/v1/health", {{"X-Request-Id", bad}});
      EXPECT_NE(r.header("x-request-id"), bad);
      EXPECT_EQ(r.header("x-request-id").size(), 16u) << "a fresh id instead";
    }
    auto traced = http_call(
      f.port(), "GET", "/api/connectors/list",
      {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
       {"X-Request-Id", "traced-1"},
       {"Authorization", canary}});
    EXPECT_EQ(traced.status, 401);
    log::flush();
  }
  log::flush();
  log::set_sink(nullptr);
  std::rewind(capture);
  std::string text;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, capture)) > 0;)
    text.append(buf, n);
  std::fclose(capture);
  EXPECT_EQ(text.find("canary-session"), std::string::npos) << "no credential in any line";
  bool kept_line = false, traced_line = false;
  size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    auto line = nlohmann::json::parse(text.substr(start, end - start), nullptr, false);
    start = end == std::string::npos ? text.size() : end + 1;
    if (!line.is_object() || line.value("msg", "") != "request done")
      continue;
    EXPECT_TRUE(line["duration_ms"].is_number());
    EXPECT_TRUE(line["caller"].is_string());
    if (line["request_id"] == "job-42:step.3_a") {
      kept_line = true;
      EXPECT_EQ(line["status"], 200);
      EXPECT_FALSE(line.contains("error"));
    }
    if (line["request_id"] == "traced-1") {
      traced_line = true;
      EXPECT_EQ(line["status"], 401);
      EXPECT_EQ(line["error"], "unauthenticated");
      EXPECT_EQ(line["caller"], "anonymous");
      EXPECT_EQ(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
  }
  EXPECT_TRUE(kept_line) << text;
  EXPECT_TRUE(traced_line) << text;
}

TEST(RequestIds, OnlyWellFormedIdsAndTraceparentsAreKept) {
  EXPECT_EQ(http::accepted_request_id("abc-DEF_1.2:3"), "abc-DEF_1.2:3");
  EXPECT_EQ(http::accepted_request_id(""), "");
  EXPECT_EQ(http::accepted_request_id(std::string(128, 'x')), std::string(128, 'x'));
  EXPECT_EQ(http::accepted_request_id(std::string(129, 'x')), "");
  EXPECT_EQ(http::accepted_request_id("a\nb"), "");
  EXPECT_EQ(http::accepted_request_id("a b"), "");
  const std::string good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  EXPECT_EQ(http::trace_id_of(good), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(http::trace_id_of(good + "-x"), "") << "version 00 has exactly four fields";
  EXPECT_EQ(http::trace_id_of("01" + good.substr(2) + "-later"),
            "4bf92f3577b34da6a3ce929d0e0e4736")
    << "a later version may add fields";
  EXPECT_EQ(http::trace_id_of("ff" + good.substr(2)), "");
  EXPECT_EQ(http::trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), "");
  EXPECT_EQ(http::trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), "");
  EXPECT_EQ(http::trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "");
  EXPECT_EQ(http::trace_id_of("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "");
  EXPECT_EQ(http::trace_id_of("garbage"), "");
}

TEST(HttpFront, GuardsAnswer401And403) {
  http_fixture f{backend::database};
  expect_error_shape(http_call(f.port(), "GET", "/api/connectors/list"), 401, "unauthenticated");
  expect_error_shape(http_call(f.port(), "GET", "/api/connectors/list",
                               {{"Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.xx"}}),
                     401, "unauthenticated");
  expect_error_shape(http_call(f.port(), "GET", "/api/connectors/list",
                               {{"X-Services-Token", "wrong"}}),
                     401, "unauthenticated");
  // A valid service token is authenticated but this route is for users.
  expect_error_shape(http_call(f.port(), "GET", "/api/connectors/list",
                               {{"X-Services-Token", "service-token-1"}}),
                     403, "forbidden");
}

TEST(HttpFront, ListShowsOwnConnectionsOrTheTeamsWithoutSecrets) {
  http_fixture f{backend::database};
  auto alice_id = f.save("acme", "alice", "github", "alice-secret-token");
  auto bob_id = f.save("acme", "bob", "stripe", "bob-secret-token");
  f.save("globex", "eve", "github", "eve-secret-token");
  auto mine = http_call(f.port(), "GET", "/api/connectors/list",
                        {{"Authorization", f.bearer("alice", "acme")}});
  ASSERT_EQ(mine.status, 200) << mine.body;
  auto list = mine.json()["connections"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["provider"], "github");
  EXPECT_EQ(list[0]["type"], "oauth");
  EXPECT_EQ(list[0]["status"], "connected");
  EXPECT_EQ(list[0]["account"], "acct-alice");
  // The id events carry as connectionId; times in RFC 3339, as everywhere.
  EXPECT_EQ(list[0]["id"], alice_id);
  EXPECT_EQ(list[0]["expires_at"], "2027-01-15T08:00:00.123Z");
  EXPECT_GT(parse_rfc3339(list[0]["updated_at"].get<std::string>()), 0) << list[0];
  auto team = http_call(f.port(), "GET", "/api/connectors/list?scope=team",
                        {{"Authorization", f.bearer("alice", "acme")}});
  ASSERT_EQ(team.status, 200);
  EXPECT_EQ(team.json()["connections"].size(), 2u);
  EXPECT_EQ(team.json()["connections"][1]["id"], bob_id);
  for (auto* body : {&mine.raw, &team.raw}) {
    EXPECT_EQ(body->find("secret-token"), std::string::npos);
    EXPECT_EQ(body->find("eve"), std::string::npos);
  }
  expect_error_shape(http_call(f.port(), "GET", "/api/connectors/list?scope=world",
                               {{"Authorization", f.bearer("alice", "acme")}}),
                     400, "bad_request");
  expect_error_shape(http_call(f.port(), "GET", "/api/connectors/list?scope=%zz",
                               {{"Authorization", f.bearer("alice", "acme")}}),
                     400, "bad_request");
}

TEST(HttpFront, OversizedBodiesAre413) {
  http_fixture f{backend::database, 4096};
  auto over = http_call(f.port(), "POST", "/api/connectors/list", {}, std::string(8000, 'x'));
  expect_error_shape(over, 413, "payload_too_large");
  // Far over the limit: refused by the request guard at the head.
  cm::test::http_connection c{f.port()};
  auto huge = c.request("POST", "/api/connectors/list", {}, std::string(200000, 'x'));
  EXPECT_EQ(huge.status, 413);
  // The server keeps serving.
  EXPECT_EQ(http_call(f.port(), "GET", "/api/v1/health").status, 200);
}

TEST(HttpFront, KeepAliveForHttp11) {
  http_fixture f{backend::database};
  cm::test::http_connection c{f.port()};
  for (int i = 0; i < 3; ++i) {
    auto r = c.request("GET", "/api/v1/health");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.header("connection"), "") << "HTTP/1.1 defaults to keep-alive";
  }
  EXPECT_TRUE(c.open());
  auto explicit_close = c.request("GET", "/api/v1/health", {{"Connection", "close"}});
  EXPECT_EQ(explicit_close.header("connection"), "Close");
  cm::test::http_connection old{f.port()};
  auto r10 = old.raw("GET /api/v1/health HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r10.status, 200);
  EXPECT_EQ(r10.header("connection"), "Close");
}

TEST(HttpFront, EveryRequestIsAnsweredWhenABackendNeverReplies) {
  http_fixture f{backend::silent, 4096, 400ms};
  auto start = std::chrono::steady_clock::now();
  auto health = http_call(f.port(), "GET", "/api/v1/health");
  EXPECT_EQ(health.status, 503);
  auto list = http_call(f.port(), "GET", "/api/connectors/list",
                        {{"Authorization", f.bearer("alice", "acme")}});
  expect_error_shape(list, 503, "unavailable");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

namespace {

/// Connects, sends `bytes` and returns the socket without reading; -1
/// (nothing left open) when that fails.
int send_and_leave_open(uint16_t port, const std::string& bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

} // namespace

// Pistache 0.0.5 queues each answer under the connection's descriptor
// number. A client that hangs up just as its answer is being written frees
// that number, the next client to connect gets it, and a stale queued
// answer (a token, on the token routes) would reach that stranger. Clients
// here hang up around the moment their answers (503 at the request budget)
// are written while others connect all the time; every stranger must get
// its own answer (404) and nothing else.
TEST(HttpFront, AnAnswerNeverReachesAnotherConnection) {
  http_fixture f{backend::silent, 4096, 100ms};
  auto hanging_request = "GET /api/connectors/list HTTP/1.1\r\nHost: x\r\nAuthorization: " +
                         f.bearer("alice", "acme") + "\r\n\r\n";
  std::atomic<bool> done{false};
  std::atomic<int> strangers{0}, misdelivered{0};
  int unsent = 0;
  std::vector<std::thread> bystanders;
  for (int t = 0; t < 6; ++t)
    bystanders.emplace_back([&] {
      while (!done) {
        try {
          cm::test::http_connection c{f.port()};
          auto r = c.request("GET", "/nope", {{"Connection", "close"}});
          ++strangers;
          if (r.status != 404)
            ++misdelivered;
        } catch (const std::exception&) {
          // A refused connection under load is not a misdelivery.
        }
      }
    });
  // Bounded: 20 rounds of 40 clients that all hang up at once, around
  // the moment their answers are written.
  std::mt19937 random{42};
  std::uniform_int_distribution<int> jitter{95, 105};
  auto deadline = std::chrono::steady_clock::now() + 60s;
  for (int batch = 0; batch < 20 && std::chrono::steady_clock::now() < deadline; ++batch) {
    std::vector<int> victims;
    auto sent = std::chrono::steady_clock::now();
    for (int i = 0; i < 40; ++i)
      if (int fd = send_and_leave_open(f.port(), hanging_request); fd >= 0)
        victims.push_back(fd);
      else
        ++unsent;
    std::this_thread::sleep_until(sent + std::chrono::milliseconds(jitter(random)));
    for (auto fd : victims)
      ::close(fd);
  }
  done = true;
  for (auto& b : bystanders)
    b.join();
  EXPECT_EQ(unsent, 0) << "clients that could not send their request";
  EXPECT_GT(strangers.load(), 0);
  EXPECT_EQ(misdelivered.load(), 0) << "of " << strangers.load() << " strangers";
  EXPECT_EQ(http_call(f.port(), "GET", "/nope").status, 404);
}

TEST(Exchange, RepliesExactlyOnce) {
  std::vector<http::response> written;
  {
    auto ex = std::make_shared<http::exchange>(http::request{},
                                               [&](http::response r) { written.push_back(r); });
    EXPECT_TRUE(ex->reply_json(200, {{"ok", true}}));
    EXPECT_FALSE(ex->reply_error(ec::internal, "late"));
  }
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(written[0].status, 200);
}

TEST(Exchange, DroppedWithoutReplyAnswers500) {
  std::vector<http::response> written;
  {
    http::exchange ex{http::request{}, [&](http::response r) { written.push_back(r); }};
  }
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(written[0].status, 500);
  EXPECT_EQ(nlohmann::json::parse(written[0].body)["error"]["code"], "internal");
}

TEST(JsonBody, LimitsDepthAndRejectsNonObjects) {
  nlohmann::json out;
  std::string problem;
  EXPECT_TRUE(http::parse_json_object(R"({"provider":"stripe"})", out, problem));
  EXPECT_FALSE(http::parse_json_object("[1]", out, problem));
  EXPECT_FALSE(http::parse_json_object("{bad", out, problem));
  EXPECT_EQ(problem, "request body is not valid JSON");
  std::string deep(10000, '[');
  EXPECT_FALSE(http::parse_json_object("{\"a\":" + deep, out, problem));
  EXPECT_EQ(problem, "request body is nested too deeply");
  EXPECT_FALSE(http::parse_json_object("{\"a\":\"\xff\xfe\"}", out, problem));
}

TEST(Query, PercentDecoding) {
  std::map<std::string, std::string> q;
  ASSERT_TRUE(http::parse_query("?redirect_uri=http%3A%2F%2Fx%2Fy&a=b+c&flag", q));
  EXPECT_EQ(q["redirect_uri"], "http://x/y");
  EXPECT_EQ(q["a"], "b c");
  EXPECT_EQ(q.count("flag"), 1u);
  EXPECT_FALSE(http::parse_query("a=%4", q));
  EXPECT_FALSE(http::parse_query("a=%zz", q));
}

// Authorization end to end (issue 8, item 5): every route of the real route
// table × every kind of caller, against the real server, with the expected
// status derived from DESIGN.md's rules, not from the code's table; and
// requests about another user's connection answer exactly like requests
// about a connection that does not exist.
#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <ctime>
#include <set>
#include <thread>

#include "actors/front_actor.hpp"
#include "http/exchange.hpp"
#include "http/router.hpp"
#include "provider/oauth_flow.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/event_clients.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/rsa_test_key.hpp"
#include "tests/support/server_process.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

const std::string allowed_redirect = "https://app.example/integrations/done";

// -- hand-made JWTs ------------------------------------------------------------

std::string b64url(const std::string& bytes) { return base64url(bytes); }

std::string hmac_sha256(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

/// An HS256 JWS keyed with any bytes: the right secret, a wrong one, or the
/// RS256 public key (algorithm confusion).
std::string hs256(const std::string& key, const nlohmann::json& claims) {
  auto input = b64url(R"({"alg":"HS256","typ":"JWT"})") + "." + b64url(claims.dump());
  return input + "." + b64url(hmac_sha256(key, input));
}

/// An unsigned JWS with the given `alg` (RFC 7519 §6: "none", and its
/// case variants that lenient libraries have accepted).
std::string unsigned_jwt(const std::string& alg, const nlohmann::json& claims) {
  return b64url(nlohmann::json{{"alg", alg}, {"typ", "JWT"}}.dump()) + "." + b64url(claims.dump()) +
         ".";
}

long now_s() { return static_cast<long>(std::time(nullptr)); }

nlohmann::json user_claims(const std::string& user, const std::string& team, bool admin,
                           long exp_offset = 600) {
  return {{"sub", user},
          {"team", team},
          {"email", user + "@" + team + ".test"},
          {"role", admin ? "admin" : "member"},
          {"iat", now_s()},
          {"exp", now_s() + exp_offset}};
}

// -- callers -------------------------------------------------------------------

/// What DESIGN.md's "Identity" section says a caller is.
enum class kind {
  bad_credential,   // must be 401 on every route that is not open
  member,           // a team member
  admin,            // a team admin
  service_unscoped, // a service without FETCH_CONFIG
  service_scoped,   // a service holding FETCH_CONFIG
  service_metrics,  // a service holding METRICS only (a Prometheus scraper)
  service_proxy,    // a service holding PROXY only (an agent calling providers)
};

struct caller {
  std::string name;
  kind what;
  header_map headers;
};

// -- the rules, written from DESIGN.md's "HTTP API" section ---------------------

/// Who may call a route according to the design.
enum class rule {
  open,             // no credentials needed
  user,             // any user of a team (per-user connection routes)
  admin,            // team connector management: the caller's team's admins
  service,          // services holding FETCH_CONFIG
  admin_or_service, // an admin, or a service holding FETCH_CONFIG
  metrics,          // services holding METRICS ("GET /metrics, protected by configuration")
  proxy,            // services holding PROXY ("the proxy … (services with scope PROXY …)")
};

const char* name_of(rule r) {
  switch (r) {
    case rule::open: return "open";
    case rule::user: return "user";
    case rule::admin: return "admin";
    case rule::service: return "service(FETCH_CONFIG)";
    case rule::admin_or_service: return "admin_or_service(FETCH_CONFIG)";
    case rule::metrics: return "service(METRICS)";
    case rule::proxy: return "service(PROXY)";
  }
  return "?";
}

enum class verdict { allowed, unauthenticated, forbidden };

const char* name_of(verdict v) {
  switch (v) {
    case verdict::allowed: return "allowed (neither 401 nor 403)";
    case verdict::unauthenticated: return "401";
    case verdict::forbidden: return "403";
  }
  return "?";
}

/// The status class a caller must get on a route under `r`.
verdict expected(rule r, kind k) {
  if (r == rule::open)
    return verdict::allowed;
  switch (k) {
    case kind::bad_credential: return verdict::unauthenticated;
    case kind::member: return r == rule::user ? verdict::allowed : verdict::forbidden;
    case kind::admin:
      return r == rule::service || r == rule::metrics || r == rule::proxy ? verdict::forbidden
                                                                          : verdict::allowed;
    case kind::service_unscoped: return verdict::forbidden;
    case kind::service_scoped:
      return r == rule::service || r == rule::admin_or_service ? verdict::allowed
                                                               : verdict::forbidden;
    case kind::service_metrics: return r == rule::metrics ? verdict::allowed : verdict::forbidden;
    case kind::service_proxy: return r == rule::proxy ? verdict::allowed : verdict::forbidden;
  }
  return verdict::forbidden;
}

/// One route as the design describes it, with a request that reaches it.
struct expectation {
  std::string method;
  std::string pattern;
  rule who;
  /// Path and query of a request that this route (and no earlier one) matches.
  std::string target;
  std::string body;
  bool event_stream = false;
  /// A page's form (api::reader::browser_form): the caller's Bearer JWT goes
  /// in the field `session`; a service token cannot be sent that way.
  bool form = false;
};

/// Every route the design names. A route the code serves that is missing
/// here fails the matrix: add it with the rule the design gives it.
const std::vector<expectation>& design_routes() {
  static const std::vector<expectation> routes = {
    // "GET /api/v1/health needs no auth".
    {"GET", "/api/v1/health", rule::open, "/api/v1/health", ""},
    // "GET /api/v1/openapi.json (the API described as OpenAPI 3.1)": a
    // description of public routes, open like health.
    {"GET", "/api/v1/openapi.json", rule::open, "/api/v1/openapi.json", ""},
    {"GET", "/metrics", rule::metrics, "/metrics", ""},
    // Per-user connections: "Tokens are scoped per user. A team member sees
    // and deletes only their own connections".
    {"GET", "/api/connectors/list", rule::user, "/api/connectors/list", ""},
    {"POST", "/api/connectors/{provider}/refresh", rule::user, "/api/connectors/github/refresh", ""},
    {"GET", "/api/oauth/{provider}/authorize", rule::user,
     "/api/oauth/github/authorize?redirect_uri=" + oauth::form_encode({{"", allowed_redirect}}).substr(1),
     ""},
    // The provider sends the browser back without a session.
    {"GET", "/api/oauth/{provider}/callback", rule::open,
     "/api/oauth/github/callback?code=not-a-code&state=not-a-state", ""},
    {"DELETE", "/api/connectors/{provider}", rule::user, "/api/connectors/github", ""},
    // The Connect page's popup start: a member's flow, as authorize.
    {"POST", "/api/oauth/{provider}/start", rule::user, "/api/oauth/github/start",
     "origin=https%3A%2F%2Fcm.example", false, true},
    // "GET /api/connectors/catalog (members: the providers they can connect
    // and the fields each needs)".
    {"GET", "/api/connectors/catalog", rule::user, "/api/connectors/catalog", ""},
    // "the Connect page /connect with /connect/sdk.js": static files.
    {"GET", "/connect", rule::open, "/connect", ""},
    {"GET", "/connect/{file}", rule::open, "/connect/sdk.js", ""},
    {"POST", "/api/connectors/connect", rule::user, "/api/connectors/connect",
     R"({"provider":"stripe","api_key":"sk_test_revoked"})"},
    // "GET /api/internal/tokens/{provider}?user_id=… (service auth)"; service
    // access is scoped (FETCH_CONFIG).
    {"GET", "/api/internal/tokens/{provider}", rule::service,
     "/api/internal/tokens/github?user_id=alice&team_id=acme", ""},
    // Team connector management: "admins manage team-level connector
    // configuration".
    {"GET", "/api/v1/connectors", rule::admin, "/api/v1/connectors", ""},
    {"GET", "/api/v1/connectors/active", rule::admin, "/api/v1/connectors/active", ""},
    {"GET", "/api/v1/connectors/inactive", rule::admin, "/api/v1/connectors/inactive", ""},
    {"GET", "/api/v1/connectors/config/{connectorName}", rule::admin,
     "/api/v1/connectors/config/github", ""},
    {"PUT", "/api/v1/connectors/config/{connectorName}", rule::admin,
     "/api/v1/connectors/config/stripe", R"({"baseUrl":"https://api.stripe.com"})"},
    {"GET", "/api/v1/connectors/schema/{connectorName}", rule::admin,
     "/api/v1/connectors/schema/github", ""},
    {"POST", "/api/v1/connectors/toggle/{connectorName}", rule::admin,
     "/api/v1/connectors/toggle/stripe", R"({"enabled":false})"},
    {"GET", "/api/v1/connectors/{connectorName}/oauth/authorize", rule::admin,
     "/api/v1/connectors/github/oauth/authorize?redirect_uri=" +
       oauth::form_encode({{"", allowed_redirect}}).substr(1),
     ""},
    {"POST", "/api/v1/connectors/{connectorName}/oauth/start", rule::admin,
     "/api/v1/connectors/github/oauth/start", "origin=https%3A%2F%2Fcm.example", false, true},
    {"GET", "/api/v1/connectors/{connectorName}/oauth/callback", rule::open,
     "/api/v1/connectors/github/oauth/callback?code=not-a-code&state=not-a-state", ""},
    {"POST", "/api/v1/connectors/getTokenFromCode", rule::admin, "/api/v1/connectors/getTokenFromCode",
     R"({"tempCode":"not-a-code"})"},
    {"GET", "/api/v1/connectors/filters/{connectorName}", rule::admin,
     "/api/v1/connectors/filters/github", ""},
    {"POST", "/api/v1/connectors/filters/{connectorName}", rule::admin,
     "/api/v1/connectors/filters/github", R"({"includeArchived":true})"},
    // "POST /internal/refreshIndividualConnectorToken (scope FETCH_CONFIG …)".
    {"POST", "/api/v1/connectors/internal/refreshIndividualConnectorToken", rule::service,
     "/api/v1/connectors/internal/refreshIndividualConnectorToken",
     R"({"userId":"alice","connectorName":"github","orgId":"acme"})"},
    // "POST /updateAppConfig (scope FETCH_CONFIG …)".
    {"POST", "/api/v1/connectors/updateAppConfig", rule::service,
     "/api/v1/connectors/updateAppConfig", "{}"},
    // The audit log is the team's (README: "(admin) … only the caller's team").
    {"GET", "/api/v1/audit", rule::admin, "/api/v1/audit", ""},
    // "Events: GET /api/v1/events (Server-Sent Events; admin or service)".
    {"GET", "/api/v1/events", rule::admin_or_service, "/api/v1/events", "", true},
    // "the proxy /api/proxy/{provider}/{path…} (services with scope PROXY …)",
    // for any method; alice's Stripe key, the fake provider's echoing API.
    {"GET", "/api/proxy/{provider}/{path*}", rule::proxy,
     "/api/proxy/stripe/v1/thing?cm_user_id=alice", ""},
    {"HEAD", "/api/proxy/{provider}/{path*}", rule::proxy,
     "/api/proxy/stripe/v1/thing?cm_user_id=alice", ""},
    {"POST", "/api/proxy/{provider}/{path*}", rule::proxy,
     "/api/proxy/stripe/v1/thing?cm_user_id=alice", "{}"},
    {"PUT", "/api/proxy/{provider}/{path*}", rule::proxy,
     "/api/proxy/stripe/v1/thing?cm_user_id=alice", "{}"},
    {"PATCH", "/api/proxy/{provider}/{path*}", rule::proxy,
     "/api/proxy/stripe/v1/thing?cm_user_id=alice", "{}"},
    {"DELETE", "/api/proxy/{provider}/{path*}", rule::proxy,
     "/api/proxy/stripe/v1/thing?cm_user_id=alice", ""},
  };
  return routes;
}

const expectation* find_expectation(const std::string& method, const std::string& pattern) {
  for (auto& e : design_routes())
    if (e.method == method && e.pattern == pattern)
      return &e;
  return nullptr;
}

std::string path_of(const std::string& target) { return target.substr(0, target.find('?')); }

/// The first route of the code's table that a request matches (as the
/// dispatcher picks it), or nullptr.
const route_shape* first_match(const std::vector<route_shape>& table, const std::string& method,
                               const std::string& target) {
  for (auto& r : table) {
    http::route_params params;
    if (r.method == method && http::match_path(r.pattern, path_of(target), params))
      return &r;
  }
  return nullptr;
}

rule rule_of(const route_shape& r) {
  switch (r.who) {
    case http::access::open: return rule::open;
    case http::access::user: return rule::user;
    case http::access::admin: return rule::admin;
    case http::access::service:
      return r.scope == http::scope_metrics ? rule::metrics
             : r.scope == http::scope_proxy ? rule::proxy
                                            : rule::service;
    case http::access::admin_or_service: return rule::admin_or_service;
  }
  return rule::open;
}

/// Opens an event stream. No retry: "ready" is logged only once the event
/// hub serves subscribers, so a 503 here is a failure.
std::unique_ptr<sse_client> open_stream(uint16_t port, const std::string& target,
                                        const std::map<std::string, std::string>& headers) {
  return std::make_unique<sse_client>(port, target, headers);
}

// -- the world -----------------------------------------------------------------

/// One server with HS256 and RS256 both configured, the fake provider for
/// OAuth and API-key checks, and every kind of caller.
struct authz_world {
  std::string db = fresh_database("authz");
  fake_provider_process fake;
  temp_dir keys;
  rsa_test_key rsa = generate_rsa_test_key(2048);
  std::string scoped_token = "svc-authz-scoped-" + random_hex(12);
  std::string unscoped_token = "svc-authz-unscoped-" + random_hex(12);
  std::string metrics_token = "svc-authz-metrics-" + random_hex(12);
  std::string proxy_token = "svc-authz-proxy-" + random_hex(12);
  std::unique_ptr<server_process> server;
  std::string hs_secret;
  std::vector<caller> callers;
  header_map alice; // owns the seeded connections; never a matrix caller

  authz_world() {
    write_file(keys.file("rs256.pub"), rsa.public_pem);
    server_options o{db};
    o.log_level = "info";
    o.service_tokens.push_back({"reporting", scoped_token, {"FETCH_CONFIG"}});
    o.service_tokens.push_back({"limited", unscoped_token, {}});
    o.service_tokens.push_back({"prometheus", metrics_token, {"METRICS"}});
    o.service_tokens.push_back({"agent", proxy_token, {"PROXY"}});
    o.env["CM_AUTH__JWT__RS256_PUBLIC_KEY_FILE"] = keys.file("rs256.pub");
    auto base = "http://127.0.0.1:" + std::to_string(fake.port());
    o.extra_yaml = "oauth:\n  public_base_url: https://cm.example\n  allowed_redirect_uris: [" +
                   allowed_redirect + "]\n"
                   "refresh:\n  provider_timeout_ms: 2000\n  lease_ms: 8000\n"
                   "providers:\n"
                   "  github:\n    client_id: cm-test-client\n    client_secret: cm-test-secret\n"
                   "    authorization_url: " + base + "/authorize\n"
                   "    token_url: " + base + "/token\n"
                   "    account_url: " + base + "/me\n"
                   "    revoke_url: " + base + "/applications/{client_id}/token\n"
                   "  stripe:\n    validate_url: " + base + "/v1/balance\n"
                   "    api_base_url: " + base + "/papi/stripe\n"
                   "  posthog:\n    validate_url: " + base + "/api/users/@me/\n";
    server = std::make_unique<server_process>(o);
    if (!server->wait_ready())
      throw std::runtime_error("server did not start: " + server->log());
    hs_secret = read_file(server->dir().file("jwt.secret"));

    auto bearer = [](const std::string& jwt) { return header_map{{"Authorization", "Bearer " + jwt}}; };
    auto user = [&](const std::string& u, const std::string& t, bool admin) {
      return bearer(hs256(hs_secret, user_claims(u, t, admin)));
    };
    alice = user("alice", "acme", false);
    // The bad credentials all carry an acme admin's claims, the strongest
    // user: if one were accepted it would pass every user and admin guard.
    auto admin_claims = user_claims("ada", "acme", true);
    auto expired = user_claims("ada", "acme", true, -3600); // beyond the 30 s leeway
    callers = {
      {"no credentials", kind::bad_credential, {}},
      {"expired JWT", kind::bad_credential, bearer(hs256(hs_secret, expired))},
      {"JWT with a wrong signature", kind::bad_credential,
       bearer(hs256("another-secret-of-at-least-32-bytes-0123", admin_claims))},
      {"alg none", kind::bad_credential, bearer(unsigned_jwt("none", admin_claims))},
      {"alg None", kind::bad_credential, bearer(unsigned_jwt("None", admin_claims))},
      {"alg nOnE", kind::bad_credential, bearer(unsigned_jwt("nOnE", admin_claims))},
      {"HS256 keyed with the RS256 public key", kind::bad_credential,
       bearer(hs256(rsa.public_pem, admin_claims))},
      {"unknown service token", kind::bad_credential,
       {{"X-Services-Token", "svc-authz-unknown-" + random_hex(12)}}},
      {"member of acme", kind::member, user("bob", "acme", false)},
      {"member of acme (RS256)", kind::member,
       bearer(sign_rs256(rsa, user_claims("bob", "acme", false), ""))},
      {"member of globex", kind::member, user("gus", "globex", false)},
      {"admin of acme", kind::admin, user("ada", "acme", true)},
      {"admin of globex", kind::admin, user("olga", "globex", true)},
      {"service token without scope", kind::service_unscoped, {{"X-Services-Token", unscoped_token}}},
      {"service JWT without FETCH_CONFIG", kind::service_unscoped,
       bearer(hs256(hs_secret, {{"sub", "svc-jwt"}, {"scopes", {"READ_ONLY"}}, {"exp", now_s() + 600}}))},
      {"service token with FETCH_CONFIG", kind::service_scoped, {{"X-Services-Token", scoped_token}}},
      {"service token with METRICS", kind::service_metrics, {{"X-Services-Token", metrics_token}}},
      {"service token with PROXY", kind::service_proxy, {{"X-Services-Token", proxy_token}}},
      {"service JWT with FETCH_CONFIG", kind::service_scoped,
       bearer(hs256(hs_secret, {{"sub", "svc-jwt"}, {"scopes", {"FETCH_CONFIG"}}, {"exp", now_s() + 600}}))},
    };
  }

  uint16_t port() const { return server->port(); }

  const header_map& headers_of(const std::string& name) const {
    for (auto& c : callers)
      if (c.name == name)
        return c.headers;
    throw std::runtime_error("no caller " + name);
  }

  http_reply call(const std::string& method, const std::string& target, header_map headers,
                  const std::string& body = "") {
    if (!body.empty())
      headers["Content-Type"] = "application/json";
    return http_call(port(), method, target, headers, body);
  }

  /// A request to any route; the event stream is read as a stream.
  http_reply send(const expectation& e, const header_map& headers) {
    if (e.form) {
      std::string body = e.body;
      auto authz = headers.find("Authorization");
      if (authz != headers.end() && authz->second.rfind("Bearer ", 0) == 0)
        body = "session=" + authz->second.substr(7) + "&" + body;
      return http_call(port(), e.method, e.target,
                       {{"Content-Type", "application/x-www-form-urlencoded"},
                        {"Origin", "https://cm.example"}},
                       body);
    }
    if (!e.event_stream) {
      try {
        return call(e.method, e.target, headers, e.body);
      } catch (const std::exception& ex) {
        http_reply broken; // status 0: reported by the caller's checks
        broken.body = std::string("transport error: ") + ex.what();
        return broken;
      }
    }
    auto stream = open_stream(port(), e.target, headers);
    http_reply r;
    r.status = stream->status();
    r.body = stream->error_body();
    return r;
  }

  /// Alice connects GitHub by OAuth and Stripe by API key, through the API.
  void seed_alice() {
    auto authorized = call("GET",
                           "/api/oauth/github/authorize?redirect_uri=" +
                             oauth::form_encode({{"", allowed_redirect}}).substr(1),
                           alice);
    ASSERT_EQ(authorized.status, 200) << authorized.body;
    auto approved = http_call(fake.port(), "GET",
                              path_and_query(authorized.json()["auth_url"].get<std::string>()));
    ASSERT_EQ(approved.status, 302) << approved.body;
    auto q = query_of(approved.header("location"));
    std::vector<std::pair<std::string, std::string>> fields(q.begin(), q.end());
    auto connected = call("GET", "/api/oauth/github/callback?" + oauth::form_encode(fields), {});
    ASSERT_EQ(connected.status, 200) << connected.body;
    auto keyed = call("POST", "/api/connectors/connect", alice,
                      R"({"provider":"stripe","api_key":"sk_test_good"})");
    ASSERT_EQ(keyed.status, 200) << keyed.body;
    ASSERT_EQ(psql_int(db, "SELECT count(*) FROM connector_tokens WHERE user_id = 'alice'"), 2);
  }

  /// Every stored connection as text: any write changes it (version,
  /// ciphertext, timestamps, status).
  std::string connections_snapshot() {
    return psql(db, "SELECT row_to_json(t)::text FROM connector_tokens t ORDER BY team_id, id");
  }
};

/// A reply as a caller sees it, minus what differs on every request.
std::string observable(const http_reply& r, const std::map<std::string, std::string>& renames = {}) {
  std::string out = std::to_string(r.status) + "\n";
  for (auto& [name, value] : r.headers)
    if (name != "x-request-id" && name != "date")
      out += name + ": " + value + "\n";
  out += r.body;
  for (auto& [from, to] : renames)
    for (auto pos = out.find(from); pos != std::string::npos; pos = out.find(from, pos + to.size()))
      out.replace(pos, from.size(), to);
  return out;
}

} // namespace

TEST(Authorization, EveryRouteOfTheTableHasADesignRuleAndAReachingRequest) {
  auto table = route_table();
  ASSERT_FALSE(table.empty());
  for (auto& r : table) {
    auto e = find_expectation(r.method, r.pattern);
    EXPECT_NE(e, nullptr) << r.method << " " << r.pattern
                          << " is served but has no expectation in design_routes(): add it with "
                             "the rule DESIGN.md gives it";
    if (!e)
      continue;
    EXPECT_EQ(name_of(rule_of(r)), std::string(name_of(e->who)))
      << r.method << " " << r.pattern << ": the code's guard differs from the design";
    if (r.who == http::access::service || r.who == http::access::admin_or_service) {
      EXPECT_EQ(r.scope, e->who == rule::metrics ? "METRICS"
                         : e->who == rule::proxy ? "PROXY"
                                                 : "FETCH_CONFIG")
        << r.method << " " << r.pattern;
    }
  }
  for (auto& e : design_routes()) {
    auto hit = first_match(table, e.method, e.target);
    ASSERT_NE(hit, nullptr) << e.method << " " << e.target << " reaches no route";
    EXPECT_EQ(hit->pattern, e.pattern) << e.method << " " << e.target
                                       << " is answered by another route first";
  }
}

TEST(Authorization, EveryRouteTimesEveryCallerGivesTheDesignStatus) {
  authz_world w;
  w.seed_alice();
  // Sanity: RS256 is really configured, so the algorithm-confusion caller
  // tests a server that holds an RS256 public key.
  auto rs = w.call("GET", "/api/connectors/list", w.headers_of("member of acme (RS256)"));
  ASSERT_EQ(rs.status, 200) << rs.body;

  auto table = route_table();
  int cells = 0;
  for (auto& r : table) {
    auto e = find_expectation(r.method, r.pattern);
    if (e == nullptr) {
      ADD_FAILURE() << r.method << " " << r.pattern << " has no expectation: it is not matrixed";
      continue;
    }
    int anonymous_status = 0;
    for (auto& who : w.callers) {
      auto want = expected(e->who, who.what);
      // A form carries a session JWT, never a service token.
      if (e->form && !who.headers.count("Authorization"))
        want = verdict::unauthenticated;
      SCOPED_TRACE(e->method + " " + e->target + " as " + who.name + ", expected " + name_of(want));
      auto got = w.send(*e, who.headers);
      ++cells;
      auto code = got.json().is_object() && got.json().contains("error")
                    ? got.json()["error"].value("code", "")
                    : std::string{};
      // A page's form is refused back to the page, the code in the query
      // (api/popup_start.hpp): read it as the status it stands for.
      if (e->form && got.status == 303) {
        auto outcome = query_of(got.header("location"));
        if (outcome.count("error")) {
          code = outcome["error"];
          got.status = code == "unauthenticated" ? 401 : code == "forbidden" ? 403 : 400;
        }
      }
      switch (want) {
        case verdict::unauthenticated:
          EXPECT_EQ(got.status, 401) << "rule " << name_of(e->who) << ": " << got.body;
          EXPECT_EQ(code, "unauthenticated") << got.body;
          break;
        case verdict::forbidden:
          EXPECT_EQ(got.status, 403) << "rule " << name_of(e->who) << ": " << got.body;
          EXPECT_EQ(code, "forbidden") << got.body;
          break;
        case verdict::allowed:
          EXPECT_NE(got.status, 401) << "rule " << name_of(e->who) << ": " << got.body;
          EXPECT_NE(got.status, 403) << "rule " << name_of(e->who) << ": " << got.body;
          EXPECT_NE(got.status, 0) << "no answer";
          EXPECT_LT(got.status, 500) << got.body;
          EXPECT_FALSE(got.status == 404 && got.body.find("no such route") != std::string::npos)
            << "the request did not reach the route";
          break;
      }
      // Open routes ignore credentials: every caller gets what anyone gets.
      if (e->who == rule::open) {
        if (who.headers.empty())
          anonymous_status = got.status;
        else
          EXPECT_EQ(got.status, anonymous_status) << got.body;
      }
    }
  }
  report_figure("authorization matrix cells", std::to_string(cells));
  EXPECT_EQ(cells, static_cast<int>(table.size() * w.callers.size()));
  EXPECT_EQ(w.server->log().find(w.scoped_token), std::string::npos);
}

TEST(Authorization, AnotherUsersConnectionIsIndistinguishableFromNone) {
  authz_world w;
  auto caller = [&](const std::string& name) { return w.headers_of(name); };
  struct probe {
    std::string label;
    header_map headers;
    std::string method, target, body;
  };
  const std::string refresh_route = "/api/v1/connectors/internal/refreshIndividualConnectorToken";
  auto service_refresh = [](const std::string& user, const std::string& provider,
                            const std::string& team) {
    return nlohmann::json{{"userId", user}, {"connectorName", provider}, {"orgId", team}}.dump();
  };
  // Requests by everyone but alice that could touch or reveal her
  // connections: per-user routes act on the caller's own key, so they must
  // not notice hers; services asking for her in another team, or for a
  // provider she does not have, must not learn that she exists.
  std::vector<probe> probes;
  for (auto& name : {"member of acme", "member of globex", "admin of acme", "admin of globex"}) {
    auto h = caller(name);
    for (auto& provider : {"github", "stripe"}) {
      probes.push_back({name, h, "POST", std::string("/api/connectors/") + provider + "/refresh", ""});
      probes.push_back({name, h, "DELETE", std::string("/api/connectors/") + provider, ""});
      probes.push_back({name, h, "GET", std::string("/api/internal/tokens/") + provider +
                                          "?user_id=alice&team_id=acme", ""});
    }
    probes.push_back({name, h, "GET", "/api/connectors/list", ""});
    probes.push_back({name, h, "POST", refresh_route, service_refresh("alice", "github", "acme")});
  }
  // The team list aggregates the caller's own team only.
  for (auto& name : {"member of globex", "admin of globex"})
    probes.push_back({name, caller(name), "GET", "/api/connectors/list?scope=team", ""});
  for (auto& path : {"/api/v1/connectors", "/api/v1/connectors/active", "/api/v1/connectors/inactive"})
    probes.push_back({"admin of globex", caller("admin of globex"), "GET", path, ""});
  auto scoped = caller("service token with FETCH_CONFIG");
  auto unscoped = caller("service token without scope");
  // About alice, as the service sees her: in another team, and for a
  // provider she never connected (with and without a team).
  auto about = [&](const std::string& user) {
    std::vector<probe> out;
    for (auto& provider : {"github", "stripe"}) {
      out.push_back({"service about " + user, scoped, "GET",
                     std::string("/api/internal/tokens/") + provider + "?user_id=" + user +
                       "&team_id=globex", ""});
      out.push_back({"service about " + user, scoped, "POST", refresh_route,
                     service_refresh(user, provider, "globex")});
      out.push_back({"unscoped service about " + user, unscoped, "GET",
                     std::string("/api/internal/tokens/") + provider + "?user_id=" + user +
                       "&team_id=acme", ""});
      out.push_back({"unscoped service about " + user, unscoped, "POST", refresh_route,
                     service_refresh(user, provider, "acme")});
    }
    out.push_back({"service about " + user, scoped, "GET",
                   "/api/internal/tokens/posthog?user_id=" + user + "&team_id=acme", ""});
    out.push_back({"service about " + user, scoped, "GET", "/api/internal/tokens/posthog?user_id=" + user, ""});
    out.push_back({"service about " + user, scoped, "POST", refresh_route,
                   service_refresh(user, "posthog", "acme")});
    return out;
  };
  for (auto& p : about("alice"))
    probes.push_back(p);

  auto run = [&](const std::vector<probe>& ps) {
    std::vector<http_reply> out;
    for (auto& p : ps)
      out.push_back(w.call(p.method, p.target, p.headers, p.body));
    return out;
  };

  // Both teams' admins watch their event streams throughout.
  auto acme_stream = open_stream(w.port(), "/api/v1/events", caller("admin of acme"));
  auto globex_stream = open_stream(w.port(), "/api/v1/events", caller("admin of globex"));
  ASSERT_EQ(acme_stream->status(), 200) << acme_stream->error_body();
  ASSERT_EQ(globex_stream->status(), 200) << globex_stream->error_body();

  auto before = run(probes);
  w.seed_alice();
  // The connections exist and are served to a scoped service that names them.
  auto found = w.call("GET", "/api/internal/tokens/github?user_id=alice&team_id=acme", scoped);
  ASSERT_EQ(found.status, 200) << found.body;
  auto events_before = psql_int(w.db, "SELECT count(*) FROM event_outbox");
  auto snapshot = w.connections_snapshot();

  auto after = run(probes);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < probes.size(); ++i) {
    auto& p = probes[i];
    SCOPED_TRACE(p.label + ": " + p.method + " " + p.target + " " + p.body);
    EXPECT_EQ(observable(after[i]), observable(before[i]))
      << "the answer changed once alice's connection existed";
    EXPECT_EQ(after[i].body.find("sk_test_good"), std::string::npos);
  }
  EXPECT_EQ(w.connections_snapshot(), snapshot) << "a probe changed a stored connection";
  EXPECT_EQ(psql_int(w.db, "SELECT count(*) FROM event_outbox"), events_before)
    << "a probe wrote an event";

  // In the same world, alice elsewhere answers exactly like a user who
  // never existed.
  auto ghost = "ghost-" + random_hex(6);
  auto alice_probes = about("alice");
  auto ghost_probes = about(ghost);
  auto alice_replies = run(alice_probes);
  auto ghost_replies = run(ghost_probes);
  for (size_t i = 0; i < alice_probes.size(); ++i) {
    SCOPED_TRACE(alice_probes[i].method + " " + alice_probes[i].target + " " + alice_probes[i].body);
    EXPECT_EQ(observable(alice_replies[i], {{"alice", "<user>"}}),
              observable(ghost_replies[i], {{ghost, "<user>"}}));
  }
  EXPECT_EQ(w.connections_snapshot(), snapshot);

  // Alice's own team's stream saw her connections created; globex's did not.
  EXPECT_TRUE(acme_stream->next(5s).has_value()) << "acme's admin did not see alice's events";
  EXPECT_FALSE(globex_stream->next(500ms).has_value()) << "globex saw an acme event";
  EXPECT_EQ(globex_stream->raw().find("alice"), std::string::npos) << globex_stream->raw();
}

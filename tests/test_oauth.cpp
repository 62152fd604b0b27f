// OAuth authorization-code flows end to end against the fake provider acting
// as an auto-approving authorization server: connect, list, serve, revoke,
// and every abuse the flow must refuse before anything is stored.
#include <gtest/gtest.h>

#include <openssl/hmac.h>

#include "common/time.hpp"
#include "http/exchange.hpp"
#include "provider/oauth_flow.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

const std::string allowed = "https://app.example/integrations/done";
const std::string service_token = "svc-token-oauth-tests-0001";

struct oauth_world {
  std::string db = fresh_database("oauth");
  fake_provider_process fake;
  std::unique_ptr<server_process> server;
  std::string alice, bob;

  explicit oauth_world(const std::string& extra = "",
                       const std::map<std::string, std::string>& env = {}) {
    server_options o{db};
    o.env = env;
    o.log_level = "info";
    o.service_tokens.push_back({"reporting", service_token, {"FETCH_CONFIG"}});
    auto base = "http://127.0.0.1:" + std::to_string(fake.port());
    o.extra_yaml = "oauth:\n  public_base_url: https://cm.example\n  allowed_redirect_uris: [" +
                   allowed + "]\n" +
                   "refresh:\n  provider_timeout_ms: 1000\n  lease_ms: 5000\n" +
                   "providers:\n"
                   "  github:\n    client_id: cm-test-client\n    client_secret: cm-test-secret\n"
                   "    authorization_url: " + base + "/authorize\n"
                   "    token_url: " + base + "/token\n"
                   "    account_url: " + base + "/me\n"
                   "    revoke_url: " + base + "/applications/{client_id}/token\n"
                   "  google-workspace:\n    client_id: cm-test-client\n    client_secret: cm-test-secret\n"
                   "    authorization_url: " + base + "/authorize\n"
                   "    token_url: " + base + "/token\n"
                   "    account_url: " + base + "/me\n"
                   "    revoke_url: " + base + "/revoke\n"
                   "  shopify:\n    client_id: cm-test-client\n    client_secret: cm-test-secret\n"
                   "    authorization_url: " + base + "/{shop}/admin/oauth/authorize\n"
                   "    token_url: " + base + "/{shop}/admin/oauth/access_token\n"
                   "    account_url: " + base + "/me\n"
                   "    revoke_url: " + base + "/revoke\n"
                   "  tiktok-ads:\n    client_id: cm-test-client\n    client_secret: cm-test-secret\n"
                   "    authorization_url: " + base + "/tiktok/authorize\n"
                   "    token_url: " + base + "/open_api/v1.3/oauth2/access_token/\n"
                   "    account_url: " + base + "/open_api/v1.3/oauth2/advertiser/get/\n"
                   "    revoke_url: " + base + "/open_api/v1.3/oauth2/revoke_token/\n"
                   "  meta:\n    client_id: cm-test-client\n    client_secret: cm-test-secret\n"
                   "    authorization_url: " + base + "/meta/authorize\n"
                   "    token_url: " + base + "/v22.0/oauth/access_token\n"
                   "    account_url: " + base + "/v22.0/me/adaccounts?fields=name,account_id\n"
                   "    revoke_url: " + base + "/v22.0/me/permissions\n"
                   "  atlassian:\n    client_id: cm-test-client\n    client_secret: cm-test-secret\n"
                   "    authorization_url: " + base + "/atlassian/authorize\n"
                   "    token_url: " + base + "/oauth/token\n"
                   "    account_url: " + base + "/oauth/token/accessible-resources\n" + extra;
    server = std::make_unique<server_process>(o);
    if (!server->wait_ready())
      throw std::runtime_error("server did not start: " + server->log());
    alice = "Bearer " + server->mint("alice", "acme");
    bob = "Bearer " + server->mint("bob", "acme");
  }

  uint16_t port() const { return server->port(); }

  http_reply authorize(const std::string& provider, const std::string& user,
                       const std::string& redirect = allowed, const std::string& extra = "") {
    return http_call(port(), "GET",
                     "/api/oauth/" + provider + "/authorize?redirect_uri=" +
                       oauth::form_encode({{"", redirect}}).substr(1) + extra,
                     {{"Authorization", user}});
  }

  /// Follows auth_url at the fake (which approves at once) and returns the
  /// callback's query: code and state.
  std::map<std::string, std::string> approve(const http_reply& authorized) {
    auto url = authorized.json()["auth_url"].get<std::string>();
    auto reply = http_call(fake.port(), "GET", path_and_query(url));
    if (reply.status != 302)
      throw std::runtime_error("fake did not redirect: " + reply.body);
    return query_of(reply.header("location"));
  }

  http_reply callback(const std::string& provider, const std::map<std::string, std::string>& q,
                      const header_map& headers = {}) {
    std::vector<std::pair<std::string, std::string>> fields(q.begin(), q.end());
    return http_call(port(), "GET", "/api/oauth/" + provider + "/callback?" + oauth::form_encode(fields),
                     headers);
  }

  int64_t rows() {
    return psql_int(db, "SELECT count(*) FROM connector_tokens");
  }
  int64_t events(const std::string& type) {
    return psql_int(db, "SELECT count(*) FROM event_outbox WHERE event_type = '" + type + "'");
  }
};

void expect_refused(const http_reply& r, int status, const std::string& fragment) {
  EXPECT_EQ(r.status, status) << r.body;
  auto message = r.json()["error"]["message"];
  ASSERT_TRUE(message.is_string()) << r.body;
  EXPECT_NE(message.get<std::string>().find(fragment), std::string::npos) << r.body;
}

} // namespace

/// Issue 18: the token route answers from snapshots its connection actors
/// publish, never with a token older than the newest stored.
TEST(OAuth, TheTokenRouteNeverServesAStaleSnapshotAfterARefreshAReconnectOrADisconnect) {
  oauth_world w;
  auto served_from_snapshots = [&] {
    auto health = http_call(w.port(), "GET", "/api/v1/health").json();
    return health["tokens"]["served_from_snapshots"].get<int64_t>();
  };
  auto read = [&](const std::string& query) {
    return http_call(w.port(), "GET", "/api/internal/tokens/github?" + query,
                     {{"X-Services-Token", service_token}});
  };
  auto token_of = [](const http_reply& r) {
    return r.status == 200 ? r.json()["access_token"].get<std::string>() : std::string{};
  };
  auto first = w.approve(w.authorize("github", w.alice));
  ASSERT_EQ(w.callback("github", first).status, 200);
  // The first read goes through the actor, which publishes; the next ones
  // (with and without team_id) come from the snapshot.
  ASSERT_EQ(token_of(read("user_id=alice&team_id=acme")), "at-" + first["code"]);
  // (Only while the heartbeat says this instance is alone: on a loaded
  // machine a late heartbeat sends reads through the actor's version check
  // for a moment, so this asks until snapshots were used.)
  auto before = served_from_snapshots();
  for (int i = 0; i < 50 && served_from_snapshots() - before < 6; ++i) {
    EXPECT_EQ(token_of(read("user_id=alice&team_id=acme")), "at-" + first["code"]);
    EXPECT_EQ(token_of(read("user_id=alice")), "at-" + first["code"]);
  }
  EXPECT_GE(served_from_snapshots() - before, 6) << "the reads were not served from snapshots";

  // A refresh: the very next read has the new token.
  auto refreshed = http_call(w.port(), "POST", "/api/connectors/github/refresh",
                             {{"Authorization", w.alice}});
  ASSERT_EQ(refreshed.status, 200) << refreshed.body;
  auto after_refresh = token_of(read("user_id=alice&team_id=acme"));
  EXPECT_FALSE(after_refresh.empty());
  EXPECT_NE(after_refresh, "at-" + first["code"]);
  EXPECT_EQ(token_of(read("user_id=alice")), after_refresh);
  EXPECT_EQ(psql(w.db, "SELECT count(*) FROM connector_tokens"), "1");

  // A reconnect through a second consent: the very next read has its token.
  before = served_from_snapshots();
  for (int i = 0; i < 50 && served_from_snapshots() == before; ++i)
    EXPECT_EQ(token_of(read("user_id=alice")), after_refresh);
  EXPECT_GT(served_from_snapshots(), before) << "the refreshed token was published";
  auto second = w.approve(w.authorize("github", w.alice));
  ASSERT_EQ(w.callback("github", second).status, 200);
  EXPECT_EQ(token_of(read("user_id=alice&team_id=acme")), "at-" + second["code"]);
  EXPECT_EQ(token_of(read("user_id=alice")), "at-" + second["code"]);
  EXPECT_EQ(token_of(read("user_id=alice")), "at-" + second["code"]);

  // A disconnect: the very next read finds nothing, with or without team_id.
  ASSERT_EQ(http_call(w.port(), "DELETE", "/api/connectors/github", {{"Authorization", w.alice}})
              .status,
            200);
  EXPECT_EQ(read("user_id=alice&team_id=acme").status, 404);
  EXPECT_EQ(read("user_id=alice").status, 404);
}

TEST(OAuth, AuthorizeBuildsAPkceUrlAndKeepsOnlyAHashOfTheState) {
  oauth_world w;
  auto r = w.authorize("github", w.alice);
  ASSERT_EQ(r.status, 200) << r.body;
  auto url = r.json()["auth_url"].get<std::string>();
  auto q = query_of(url);
  EXPECT_EQ(q["client_id"], "cm-test-client");
  EXPECT_EQ(q["redirect_uri"], "https://cm.example/api/oauth/github/callback");
  EXPECT_EQ(q["response_type"], "code");
  EXPECT_EQ(q["scope"], "repo actions");
  EXPECT_EQ(q["code_challenge_method"], "S256");
  EXPECT_EQ(q["code_challenge"].size(), 43u);
  EXPECT_GE(q["state"].size(), 43u) << "at least 256 bits, base64url";
  auto stored = psql(w.db, "SELECT encode(state_hash, 'hex'), redirect_uri, user_id FROM oauth_states");
  EXPECT_EQ(stored.find(q["state"]), std::string::npos) << "the state itself is not stored";
  EXPECT_NE(stored.find(allowed), std::string::npos);
  EXPECT_NE(stored.find("alice"), std::string::npos);
}

TEST(OAuth, FullFlowConnectsListsServesAndDisconnects) {
  oauth_world w;
  auto q = w.approve(w.authorize("github", w.alice));
  auto done = w.callback("github", q);
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(done.json()["connected"], true);
  EXPECT_EQ(done.json()["provider"], "github");
  EXPECT_EQ(done.json()["account_name"], "octocat");
  EXPECT_EQ(done.raw.find("at-code"), std::string::npos) << "no token in the answer";

  auto list = http_call(w.port(), "GET", "/api/connectors/list", {{"Authorization", w.alice}});
  ASSERT_EQ(list.json()["connections"].size(), 1u);
  EXPECT_EQ(list.json()["connections"][0]["account"], "octocat");
  EXPECT_EQ(list.json()["connections"][0]["status"], "connected");

  auto token = http_call(w.port(), "GET", "/api/internal/tokens/github?user_id=alice",
                         {{"X-Services-Token", service_token}});
  ASSERT_EQ(token.status, 200) << token.body;
  EXPECT_EQ(token.json()["access_token"], "at-" + q["code"]);

  auto del = http_call(w.port(), "DELETE", "/api/connectors/github", {{"Authorization", w.alice}});
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(del.json()["deleted"], true);
  EXPECT_EQ(del.json()["revoked"], true);
  auto stats = nlohmann::json::parse(w.fake.admin("/__stats", ""));
  EXPECT_EQ(stats["revocations"], 1);
  EXPECT_EQ(w.rows(), 0);
  EXPECT_EQ(http_call(w.port(), "GET", "/api/internal/tokens/github?user_id=alice&team_id=acme",
                      {{"X-Services-Token", service_token}}).status,
            404);
  EXPECT_EQ(w.events("TOKEN_CREATED"), 1);
  EXPECT_EQ(w.events("TOKEN_REVOKED"), 1);
  EXPECT_EQ(http_call(w.port(), "DELETE", "/api/connectors/github", {{"Authorization", w.alice}})
              .status,
            404);
}

/// "cm_flow_…=value" out of a Set-Cookie, for the Cookie header.
std::string cookie_pair(const http_reply& r) {
  auto set_cookie = r.header("set-cookie");
  return set_cookie.substr(0, set_cookie.find(';'));
}

/// The headers a browser's navigation sends, with the flow's cookie.
header_map browser(const std::string& cookie = "") {
  header_map h{{"Accept", "text/html,application/xhtml+xml"}, {"Sec-Fetch-Mode", "navigate"}};
  if (!cookie.empty())
    h["Cookie"] = "unrelated=1; " + cookie;
  return h;
}

TEST(OAuth, BrowsersAreRedirectedToTheRecordedRedirectUri) {
  oauth_world w;
  auto authorized = w.authorize("github", w.alice);
  auto q = w.approve(authorized);
  auto done = w.callback("github", q, browser(cookie_pair(authorized)));
  EXPECT_EQ(done.status, 302) << done.body;
  EXPECT_EQ(done.header("location"), allowed + "?connected=true&provider=github");
  // The cookie is spent.
  EXPECT_NE(done.header("set-cookie").find("Max-Age=0"), std::string::npos);
  auto again = w.authorize("github", w.alice);
  auto denied_state = w.approve(again);
  denied_state["error"] = "access_denied";
  denied_state.erase("code");
  auto denied = w.callback("github", denied_state, browser(cookie_pair(again)));
  EXPECT_EQ(denied.status, 302);
  EXPECT_EQ(denied.header("location"), allowed + "?connected=false&provider=github&error=bad_request");
}

/// Issue 20: the grant is bound to the browser that started the flow. A
/// colleague who completes the consent for alice's auth_url in their own
/// browser attaches nothing to alice, and is not sent to her application.
TEST(OAuth, AnotherBrowserCompletingTheConsentAttachesNothing) {
  oauth_world w;
  auto authorized = w.authorize("github", w.alice);
  auto set_cookie = authorized.header("set-cookie");
  // Over https a __Host- cookie: nobody else can plant one (a sibling
  // subdomain, a plain-http answer).
  EXPECT_EQ(set_cookie.rfind("__Host-cm_flow_", 0), 0u) << set_cookie;
  for (auto attribute : {"; HttpOnly", "; SameSite=Lax", "; Secure", "; Max-Age=600",
                         "; Path=/;"})
    EXPECT_NE(set_cookie.find(attribute), std::string::npos) << attribute << " in " << set_cookie;
  auto q = w.approve(authorized);
  auto elsewhere = w.callback("github", q, browser());
  EXPECT_EQ(elsewhere.status, 403);
  EXPECT_EQ(elsewhere.header("location"), "");
  EXPECT_EQ(elsewhere.header("content-type").rfind("text/html", 0), 0u);
  EXPECT_NE(elsewhere.body.find("data-code=\"forbidden\""), std::string::npos) << elsewhere.body;
  EXPECT_NE(elsewhere.body.find("started in another browser"), std::string::npos);
  EXPECT_NE(elsewhere.header("content-security-policy").find("default-src 'none'"),
            std::string::npos);
  EXPECT_EQ(w.rows(), 0);
  EXPECT_EQ(w.events("TOKEN_CREATED"), 0);
  // The state is spent: the starter's own browser cannot use it after.
  auto late = w.callback("github", q, browser(cookie_pair(authorized)));
  EXPECT_EQ(late.status, 400);
  EXPECT_NE(late.body.find("unknown or already used state"), std::string::npos) << late.body;
  // Another flow's cookie, or a forged one, under this flow's name is no
  // better than none.
  auto first = w.authorize("github", w.alice);
  auto second = w.authorize("github", w.alice);
  auto q2 = w.approve(second);
  auto name = cookie_pair(second).substr(0, cookie_pair(second).find('='));
  auto value_of_first = cookie_pair(first).substr(cookie_pair(first).find('=') + 1);
  EXPECT_EQ(w.callback("github", q2, browser(name + "=" + value_of_first)).status, 403);
  auto third = w.authorize("github", w.alice);
  auto q3 = w.approve(third);
  auto name3 = cookie_pair(third).substr(0, cookie_pair(third).find('='));
  EXPECT_EQ(w.callback("github", q3, browser(name3 + "=" + std::string(64, 'a'))).status, 403);
  EXPECT_EQ(w.rows(), 0);
  EXPECT_NE(w.server->log().find("callback from another browser refused"), std::string::npos);
}

/// A program that runs the flow itself completes it without the cookie
/// unless oauth.browser_binding is always; then it must bring the cookie
/// or the starter's session. off accepts any browser (a CLI printing the
/// URL).
TEST(OAuth, TheBrowserBindingSwitchDecidesWhatAProgramAndABrowserNeed) {
  {
    oauth_world w("", {{"CM_OAUTH__BROWSER_BINDING", "always"}});
    auto plain = w.callback("github", w.approve(w.authorize("github", w.alice)));
    EXPECT_EQ(plain.status, 403) << plain.body;
    EXPECT_NE(plain.json()["error"]["message"].get<std::string>().find("another browser"),
              std::string::npos);
    auto as_bob = w.callback("github", w.approve(w.authorize("github", w.alice)),
                             {{"Authorization", w.bob}});
    EXPECT_EQ(as_bob.status, 403);
    EXPECT_EQ(w.rows(), 0);
    auto as_alice = w.callback("github", w.approve(w.authorize("github", w.alice)),
                               {{"Authorization", w.alice}});
    EXPECT_EQ(as_alice.status, 200) << as_alice.body;
    auto authorized = w.authorize("github", w.alice);
    auto with_cookie =
      w.callback("github", w.approve(authorized), {{"Cookie", cookie_pair(authorized)}});
    EXPECT_EQ(with_cookie.status, 200) << with_cookie.body;
  }
  {
    oauth_world w("", {{"CM_OAUTH__BROWSER_BINDING", "off"}});
    auto any_browser = w.callback("github", w.approve(w.authorize("github", w.alice)), browser());
    EXPECT_EQ(any_browser.status, 302);
    EXPECT_EQ(any_browser.header("location"), allowed + "?connected=true&provider=github");
  }
  {
    oauth_world w;
    auto program = w.callback("github", w.approve(w.authorize("github", w.alice)));
    EXPECT_EQ(program.status, 200) << program.body;
    // A program asking to be redirected is still a program (no Fetch
    // Metadata headers).
    auto redirected = w.callback("github", w.approve(w.authorize("github", w.alice)),
                                 {{"Accept", "text/html"}});
    EXPECT_EQ(redirected.status, 302) << redirected.body;
    EXPECT_EQ(redirected.header("location"), allowed + "?connected=true&provider=github");
    // A navigation over plain http sends no Fetch Metadata, but it does
    // send Upgrade-Insecure-Requests.
    auto plain_http = w.callback("github", w.approve(w.authorize("github", w.alice)),
                                 {{"Accept", "text/html"}, {"Upgrade-Insecure-Requests", "1"}});
    EXPECT_EQ(plain_http.status, 403) << plain_http.body;
    // A page's fetch is a browser too (Sec-Fetch-Mode: cors).
    auto page = w.callback("github", w.approve(w.authorize("github", w.alice)),
                           {{"Sec-Fetch-Mode", "cors"}});
    EXPECT_EQ(page.status, 403) << page.body;
  }
}

/// POST …/start: the Connect page's popup. It starts the flow from a form
/// that carries the session, sets the cookie and sends the browser on; the
/// popup ends on /connect/done with the opener's origin and the page's
/// nonce.
TEST(OAuth, ThePopupStartBindsTheFlowAndEndsOnTheDonePage) {
  oauth_world w;
  auto jwt = w.alice.substr(7);
  const std::string page = "https://cm.example";
  const std::string form_type = "application/x-www-form-urlencoded";
  auto start = [&](const std::string& provider, const std::string& form,
                   header_map headers = {}) {
    if (!headers.count("Content-Type"))
      headers["Content-Type"] = form_type;
    if (!headers.count("Origin"))
      headers["Origin"] = page;
    return http_call(w.port(), "POST", "/api/oauth/" + provider + "/start", headers, form);
  };
  const std::string nonce = "0123456789abcdef0123456789abcdef";
  auto started = start("github", "session=" + jwt + "&origin=https%3A%2F%2Fcm.example&flow=" + nonce);
  ASSERT_EQ(started.status, 303) << started.body;
  auto location = started.header("location");
  EXPECT_EQ(location.rfind("http://127.0.0.1:" + std::to_string(w.fake.port()) + "/authorize?", 0),
            0u)
    << location;
  EXPECT_NE(started.header("set-cookie").find("; HttpOnly"), std::string::npos);
  EXPECT_EQ(started.header("referrer-policy"), "no-referrer");
  auto approved = http_call(w.fake.port(), "GET", path_and_query(location));
  ASSERT_EQ(approved.status, 302);
  auto q = query_of(approved.header("location"));
  auto done = w.callback("github", q, browser(cookie_pair(started)));
  ASSERT_EQ(done.status, 302) << done.body;
  EXPECT_EQ(done.header("location"), "https://cm.example/connect/done?origin=https%3A%2F%2Fcm.example&"
                                     "flow=" + nonce + "&connected=true&provider=github");
  EXPECT_EQ(w.rows(), 1);

  auto states = [&] { return psql_int(w.db, "SELECT count(*) FROM oauth_states"); };
  auto before = states();
  auto page_with = [](const http_reply& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(r.header("content-type").rfind("text/html", 0), 0u) << r.body;
    EXPECT_NE(r.body.find("data-code=\"" + code + "\""), std::string::npos) << r.body;
  };
  // A page elsewhere cannot make a browser start its author's flow (login
  // CSRF): the request's own Origin decides, and it gets a page, no redirect.
  auto own = "session=" + jwt + "&origin=https%3A%2F%2Fcm.example";
  page_with(start("github", own, {{"Origin", "https://evil.example"}}), 403, "forbidden");
  page_with(start("github", own, {{"Origin", "null"}}), 403, "forbidden");
  page_with(http_call(w.port(), "POST", "/api/oauth/github/start",
                      {{"Content-Type", form_type}}, own),
            403, "forbidden");
  // Origin null (a page with no-referrer) is fine from the service's own
  // page, which Fetch Metadata proves.
  EXPECT_EQ(start("github", own, {{"Origin", "null"}, {"Sec-Fetch-Site", "same-origin"}}).status,
            303);
  // The form's origin must be the page's; a bad nonce or redirect_uri.
  page_with(start("github", "session=" + jwt + "&origin=https%3A%2F%2Fevil.example"), 403,
            "forbidden");
  page_with(start("github", "session=" + jwt), 403, "forbidden");
  page_with(start("github", own + "&flow=short"), 403, "forbidden");
  page_with(start("github", "session=" + jwt + "&redirect_uri=https%3A%2F%2Fevil.example%2F"), 403,
            "forbidden");
  before = states();
  // Once the page is known, a refusal goes back to it with the code, so the
  // page can say why (an expired session, a wrong parameter).
  auto back_with = [&](const http_reply& r, const std::string& provider, const std::string& code) {
    EXPECT_EQ(r.status, 303) << r.body;
    EXPECT_EQ(r.header("location"), "https://cm.example/connect/done?origin=https%3A%2F%2Fcm.example&"
                                    "flow=" + nonce + "&connected=false&provider=" + provider +
                                      "&error=" + code);
    EXPECT_EQ(r.header("set-cookie"), "");
  };
  auto with_nonce = "&origin=https%3A%2F%2Fcm.example&flow=" + nonce;
  back_with(start("github", "x=1" + std::string(with_nonce)), "github", "unauthenticated");
  back_with(start("github", "session=not-a-jwt" + std::string(with_nonce)), "github",
            "unauthenticated");
  back_with(start("nosuch", "session=" + jwt + with_nonce), "nosuch", "not_found");
  back_with(start("stripe", "session=" + jwt + with_nonce), "stripe", "bad_request");
  back_with(start("shopify", "session=" + jwt + with_nonce), "shopify", "bad_request");
  // A member cannot start a team connector's flow.
  auto team = http_call(w.port(), "POST", "/api/v1/connectors/github/oauth/start",
                        {{"Content-Type", form_type}, {"Origin", page}},
                        "session=" + jwt + with_nonce);
  EXPECT_EQ(team.status, 303);
  EXPECT_NE(team.header("location").find("&error=forbidden"), std::string::npos);
  // A session in a JSON body is not a form's.
  page_with(start("github", R"({"session":")" + jwt + R"("})", {{"Content-Type", "application/json"}}),
            401, "unauthenticated");
  EXPECT_EQ(states(), before);
  // A form of another media type is not a form: nothing is read from it.
  page_with(start("github", "session=" + jwt + with_nonce, {{"Content-Type", "text/plain"}}), 401,
            "unauthenticated");
  // The allowlisted redirect_uri instead of the done page; the shop goes
  // to the provider's URL, as Shopify's admin shows it or bare.
  auto shop = start("shopify", "session=" + jwt + "&redirect_uri=" +
                                 oauth::form_encode({{"", allowed}}).substr(1) +
                                 "&shop=" + oauth::form_encode({{"", "https://Acme.myshopify.com/"}}).substr(1));
  ASSERT_EQ(shop.status, 303) << shop.body;
  EXPECT_NE(shop.header("location").find("/acme/admin/oauth/authorize"), std::string::npos);
  EXPECT_EQ(states(), before + 1);
  // The session never reaches the log.
  EXPECT_EQ(w.server->log().find(jwt), std::string::npos);
}

/// A start refused by the member's rate limit goes back to the page with
/// the code, like the other refusals once the page is known.
TEST(OAuth, ARateLimitedPopupStartGoesBackToThePageWithTheCode) {
  oauth_world w("", {{"CM_RATE_LIMIT__USER_BURST", "1"}, {"CM_RATE_LIMIT__USER_PER_MINUTE", "1"}});
  auto start = [&] {
    return http_call(w.port(), "POST", "/api/oauth/github/start",
                     {{"Content-Type", "application/x-www-form-urlencoded"},
                      {"Origin", "https://cm.example"}},
                     "session=" + w.alice.substr(7) +
                       "&origin=https%3A%2F%2Fcm.example&flow=0123456789abcdef0123456789abcdef");
  };
  ASSERT_EQ(start().status, 303);
  auto limited = start();
  EXPECT_EQ(limited.status, 303) << limited.body;
  EXPECT_EQ(limited.header("location"),
            "https://cm.example/connect/done?origin=https%3A%2F%2Fcm.example&flow="
            "0123456789abcdef0123456789abcdef&connected=false&provider=github&error=rate_limited");
  EXPECT_FALSE(limited.header("retry-after").empty());
  EXPECT_EQ(limited.header("set-cookie"), "");
}

/// A failed callback from a browser never shows JSON: back to the recorded
/// redirect_uri with the error when the state is known, else a page.
TEST(OAuth, AFailedBrowserCallbackGoesBackWithTheErrorOrShowsAPage) {
  oauth_world w;
  auto unknown = w.callback("github", {{"code", "x"}, {"state", oauth::new_state()}}, browser());
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(unknown.header("content-type").rfind("text/html", 0), 0u);
  EXPECT_NE(unknown.body.find("unknown or already used state"), std::string::npos);
  auto missing = w.callback("github", {{"code", "x"}}, browser());
  EXPECT_EQ(missing.status, 400);
  EXPECT_NE(missing.body.find("<h1>Connection failed</h1>"), std::string::npos);
  auto nosuch = w.callback("nosuch", {{"code", "x"}, {"state", "y"}}, browser());
  EXPECT_EQ(nosuch.status, 404);
  EXPECT_NE(nosuch.body.find("data-code=\"not_found\""), std::string::npos);
  // An expired state is known: its application hears why.
  auto authorized = w.authorize("github", w.alice);
  auto q = w.approve(authorized);
  psql_int(w.db, "WITH e AS (UPDATE oauth_states SET expires_at = now() - interval '1 minute' "
                 "RETURNING 1) SELECT count(*) FROM e");
  auto expired = w.callback("github", q, browser(cookie_pair(authorized)));
  EXPECT_EQ(expired.status, 302);
  EXPECT_EQ(expired.header("location"), allowed + "?connected=false&provider=github&error=bad_request");
  // Programs still read JSON.
  auto program = w.callback("github", {{"code", "x"}, {"state", oauth::new_state()}});
  EXPECT_EQ(program.status, 400);
  EXPECT_EQ(program.json()["error"]["code"], "bad_request");
  // What a provider sends is never echoed unescaped.
  auto hostile = w.callback("github", {{"code", "<script>x</script>"}, {"state", "<b>"}}, browser());
  EXPECT_EQ(hostile.body.find("<script>"), std::string::npos);
  EXPECT_EQ(hostile.body.find("<b>"), std::string::npos);
  EXPECT_EQ(w.rows(), 0);
}

/// GET /api/connectors/catalog: what a member can connect, with the fields
/// each connect takes and the member's own connection.
TEST(OAuth, TheCatalogListsWhatAMemberCanConnectWithItsFields) {
  oauth_world w;
  auto catalog = [&](const std::string& who) {
    auto r = http_call(w.port(), "GET", "/api/connectors/catalog", {{"Authorization", who}});
    EXPECT_EQ(r.status, 200) << r.body;
    std::map<std::string, nlohmann::json> by_name;
    auto body = r.json();
    for (auto& p : body["providers"])
      by_name[p["name"].get<std::string>()] = p;
    return by_name;
  };
  auto field = [](const nlohmann::json& provider, const std::string& name) {
    for (auto& f : provider["fields"])
      if (f["name"] == name)
        return f;
    return nlohmann::json();
  };
  auto before = catalog(w.alice);
  // OAuth providers with an app configured, API-key providers always; an
  // OAuth provider without an app cannot be connected and is not offered.
  for (auto name : {"github", "shopify", "meta", "stripe", "zendesk", "google-analytics"})
    EXPECT_TRUE(before.count(name)) << name;
  for (auto name : {"microsoft", "google-ads"})
    EXPECT_FALSE(before.count(name)) << name;
  auto& github = before["github"];
  EXPECT_EQ(github["display_name"], "GitHub");
  EXPECT_EQ(github["auth_mode"], "oauth2");
  EXPECT_EQ(github["connected"], false);
  EXPECT_EQ(github["status"], nullptr);
  auto stripe_key = field(before["stripe"], "api_key");
  EXPECT_EQ(stripe_key["secret"], true);
  EXPECT_EQ(stripe_key["required"], true);
  EXPECT_EQ(stripe_key["label"], "Secret key");
  EXPECT_EQ(stripe_key["pattern"], "^(?:sk_live_|sk_test_|rk_live_|rk_test_)");
  EXPECT_EQ(before["stripe"]["fields"][0]["name"], "api_key");
  auto subdomain = field(before["zendesk"], "subdomain");
  EXPECT_EQ(subdomain["secret"], false);
  EXPECT_EQ(subdomain["required"], true);
  EXPECT_EQ(subdomain["pattern"], "^[a-z0-9][a-z0-9-]{0,62}$");
  EXPECT_EQ(field(before["zendesk"], "email")["required"], true);
  EXPECT_EQ(field(before["posthog"], "host")["required"], false);
  EXPECT_EQ(field(before["google-analytics"], "api_key")["multiline"], true);
  EXPECT_EQ(field(before["shopify"], "shop")["required"], true);
  // GitHub's {client_id} fills its revocation URL from the deployment's
  // app: nothing a member types.
  EXPECT_EQ(before["github"]["fields"], nlohmann::json::array());
  EXPECT_EQ(github["connectable"], true);
  EXPECT_EQ(github["updated_at"], nullptr);

  ASSERT_EQ(w.callback("github", w.approve(w.authorize("github", w.alice))).status, 200);
  auto after = catalog(w.alice);
  EXPECT_EQ(after["github"]["connected"], true);
  EXPECT_EQ(after["github"]["status"], "connected");
  EXPECT_TRUE(after["github"]["account_name"].is_string());
  EXPECT_TRUE(after["github"]["updated_at"].is_string());
  // The connection's id, as the list route gives it: a reconnect makes a
  // new one.
  auto list = http_call(w.port(), "GET", "/api/connectors/list", {{"Authorization", w.alice}});
  EXPECT_EQ(after["github"]["connection_id"], list.json()["connections"][0]["id"]);
  ASSERT_EQ(w.callback("github", w.approve(w.authorize("github", w.alice))).status, 200);
  EXPECT_NE(catalog(w.alice)["github"]["connection_id"], after["github"]["connection_id"]);
  EXPECT_EQ(catalog(w.bob)["github"]["connected"], false);
  // A provider the team's admin switched off is not offered.
  auto admin = "Bearer " + w.server->mint("ada", "acme", true);
  ASSERT_EQ(http_call(w.port(), "POST", "/api/v1/connectors/toggle/stripe",
                      {{"Authorization", admin}, {"Content-Type", "application/json"}},
                      R"({"enabled":false})")
              .status,
            200);
  EXPECT_FALSE(catalog(w.alice).count("stripe"));
  // Switched off while alice is connected: listed, so she can disconnect,
  // but not connectable.
  ASSERT_EQ(http_call(w.port(), "POST", "/api/v1/connectors/toggle/github",
                      {{"Authorization", admin}, {"Content-Type", "application/json"}},
                      R"({"enabled":false})")
              .status,
            200);
  auto switched_off = catalog(w.alice);
  ASSERT_TRUE(switched_off.count("github"));
  EXPECT_EQ(switched_off["github"]["connectable"], false);
  EXPECT_EQ(switched_off["github"]["connected"], true);
  EXPECT_FALSE(catalog(w.bob).count("github"));
  EXPECT_EQ(http_call(w.port(), "GET", "/api/connectors/catalog").status, 401);
}

TEST(OAuth, ReconnectingReplacesAndRevokesTheOldGrant) {
  oauth_world w;
  ASSERT_EQ(w.callback("github", w.approve(w.authorize("github", w.alice))).status, 200);
  auto second = w.approve(w.authorize("github", w.alice));
  ASSERT_EQ(w.callback("github", second).status, 200);
  EXPECT_EQ(w.rows(), 1);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline &&
         nlohmann::json::parse(w.fake.admin("/__stats", ""))["revocations"] != 1)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(nlohmann::json::parse(w.fake.admin("/__stats", ""))["revocations"], 1);
  auto token = http_call(w.port(), "GET", "/api/internal/tokens/github?user_id=alice",
                         {{"X-Services-Token", service_token}});
  EXPECT_EQ(token.json()["access_token"], "at-" + second["code"]);
}

TEST(OAuth, WorkspaceScopesMapToApps) {
  oauth_world w;
  ASSERT_EQ(w.callback("google-workspace", w.approve(w.authorize("google-workspace", w.alice))).status,
            200);
  auto list = http_call(w.port(), "GET", "/api/connectors/list", {{"Authorization", w.alice}});
  auto metadata = list.json()["connections"][0]["metadata"];
  EXPECT_EQ(metadata["apps"], nlohmann::json::array({"calendar", "drive", "gmail"}));
}

TEST(OAuth, RedirectUriMustBeOnTheAllowlistExactly) {
  oauth_world w;
  expect_refused(w.authorize("github", w.alice, "https://evil.example/done"), 400, "allowlist");
  expect_refused(w.authorize("github", w.alice, allowed + "/"), 400, "allowlist");
  expect_refused(w.authorize("github", w.alice, "https://app.example/integrations/donE"), 400,
                 "allowlist");
  expect_refused(http_call(w.port(), "GET", "/api/oauth/github/authorize",
                           {{"Authorization", w.alice}}),
                 400, "redirect_uri");
  EXPECT_EQ(http_call(w.port(), "GET", "/api/oauth/github/authorize?redirect_uri=x").status, 401);
  expect_refused(w.authorize("nosuch", w.alice), 404, "unknown provider");
  expect_refused(w.authorize("stripe", w.alice), 400, "API key");
  EXPECT_EQ(psql_int(w.db, "SELECT count(*) FROM oauth_states"), 0);
}

TEST(OAuth, StateAbuseIsRefusedAndNothingIsStored) {
  oauth_world w;
  // Missing state.
  expect_refused(w.callback("github", {{"code", "whatever"}}), 400, "state is missing");
  // A made-up state.
  expect_refused(w.callback("github", {{"code", "x"}, {"state", oauth::new_state()}}), 400,
                 "unknown or already used state");
  // A state of another provider's flow.
  auto for_github = w.approve(w.authorize("github", w.alice));
  expect_refused(w.callback("google-workspace", for_github), 400, "another flow");
  // ... which also consumed it: single use, whatever happened.
  expect_refused(w.callback("github", for_github), 400, "unknown or already used state");
  // An expired state.
  auto stale = w.approve(w.authorize("github", w.alice));
  psql(w.db, "UPDATE oauth_states SET expires_at = now() - interval '1 minute'");
  expect_refused(w.callback("github", stale), 400, "expired");
  // The provider's refusal.
  auto denied = w.approve(w.authorize("github", w.alice));
  denied.erase("code");
  denied["error"] = "access_denied";
  denied["error_description"] = "The user said no <script>";
  auto refused = w.callback("github", denied);
  expect_refused(refused, 400, "access_denied");
  EXPECT_EQ(refused.body.find("<script>"), std::string::npos);
  // A wrong issuer.
  auto iss = w.approve(w.authorize("github", w.alice));
  iss["iss"] = "https://evil.example";
  expect_refused(w.callback("github", iss), 400, "issuer");
  EXPECT_EQ(w.rows(), 0);
  EXPECT_EQ(w.fake.refresh_calls(), 0) << "no code was ever sent to the token endpoint";
}

TEST(OAuth, AnotherUsersStateIsRefused) {
  oauth_world w;
  auto alices = w.approve(w.authorize("github", w.alice));
  expect_refused(w.callback("github", alices, {{"Authorization", w.bob}}), 403, "another user");
  EXPECT_EQ(w.rows(), 0);
  EXPECT_EQ(w.fake.refresh_calls(), 0);
  // With her own session, or none (a browser), the flow completes.
  auto again = w.approve(w.authorize("github", w.alice));
  EXPECT_EQ(w.callback("github", again, {{"Authorization", w.alice}}).status, 200);
}

TEST(OAuth, ReplayedStateAndReusedCodeAreRefused) {
  oauth_world w;
  auto first = w.approve(w.authorize("github", w.alice));
  ASSERT_EQ(w.callback("github", first).status, 200);
  auto rows = w.rows();
  expect_refused(w.callback("github", first), 400, "unknown or already used state");
  // A fresh state with the already used code: the provider refuses it.
  auto fresh = w.approve(w.authorize("github", w.alice));
  fresh["code"] = first["code"];
  expect_refused(w.callback("github", fresh), 400, "authorization code was rejected");
  EXPECT_EQ(w.rows(), rows);
}

TEST(OAuth, TokenEndpointErrorsAndHangsAreBounded) {
  oauth_world w;
  w.fake.admin("/__behavior", R"({"mode":"error500","count":1})");
  expect_refused(w.callback("github", w.approve(w.authorize("github", w.alice))), 502,
                 "token endpoint failed");
  w.fake.admin("/__behavior", R"({"mode":"malformed","count":1})");
  expect_refused(w.callback("github", w.approve(w.authorize("github", w.alice))), 502,
                 "token endpoint failed");
  w.fake.admin("/__behavior", R"({"mode":"hang","count":1})");
  auto start = std::chrono::steady_clock::now();
  expect_refused(w.callback("github", w.approve(w.authorize("github", w.alice))), 502,
                 "token endpoint");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s) << "provider_timeout_ms bounds it";
  EXPECT_EQ(w.rows(), 0);
}

TEST(OAuth, ShopifyShopAndHmacAreCheckedBeforeTheCodeIsUsed) {
  oauth_world w;
  expect_refused(w.authorize("shopify", w.alice, allowed, "&shop=evil.com/x"), 400, "shop");
  expect_refused(w.authorize("shopify", w.alice, allowed), 400, "shop");
  auto r = w.authorize("shopify", w.alice, allowed, "&shop=acme-store.myshopify.com");
  ASSERT_EQ(r.status, 200) << r.body;
  auto url = r.json()["auth_url"].get<std::string>();
  EXPECT_NE(url.find("/acme-store/admin/oauth/authorize"), std::string::npos) << url;
  auto q = w.approve(r);
  q["shop"] = "acme-store.myshopify.com";
  q["timestamp"] = std::to_string(std::time(nullptr));
  auto sign = [](std::map<std::string, std::string> query) {
    std::string message;
    for (auto& [k, v] : query)
      if (k != "hmac")
        message += (message.empty() ? "" : "&") + k + "=" + v;
    unsigned char digest[32];
    unsigned int len = 0;
    std::string key = "cm-test-secret";
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &len);
    char hex[65];
    for (unsigned i = 0; i < len; ++i)
      std::snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return std::string(hex);
  };
  // Tampered: signed, then the shop changed.
  auto tampered = q;
  tampered["hmac"] = sign(q);
  tampered["shop"] = "other-store.myshopify.com";
  expect_refused(w.callback("shopify", tampered), 400, "signature");
  // Signed correctly but for another shop than the flow started with.
  auto r2 = w.authorize("shopify", w.alice, allowed, "&shop=acme-store");
  auto q2 = w.approve(r2);
  q2["shop"] = "other-store.myshopify.com";
  q2["timestamp"] = std::to_string(std::time(nullptr));
  q2["hmac"] = sign(q2);
  expect_refused(w.callback("shopify", q2), 400, "another shop");
  EXPECT_EQ(w.rows(), 0);
  EXPECT_EQ(w.fake.refresh_calls(), 0);
  // Correct: connects.
  auto r3 = w.authorize("shopify", w.alice, allowed, "&shop=acme-store");
  auto q3 = w.approve(r3);
  q3["shop"] = "acme-store.myshopify.com";
  q3["timestamp"] = std::to_string(std::time(nullptr));
  q3["hmac"] = sign(q3);
  auto ok = w.callback("shopify", q3);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(w.rows(), 1);
}

// Issue 16: `tenant=..` matched Microsoft's pattern; libcurl then resolved
// .../{tenant}/oauth2/v2.0/token to another path on the provider's host,
// and the code, the PKCE verifier and the client secret went there. Every
// value that would change a URL's shape is refused before a state exists.
TEST(OAuth, TemplateValuesThatWouldReshapeAUrlAre400AndNothingIsStored) {
  oauth_world w{"  microsoft:\n    client_id: cm-test-client\n    client_secret: cm-test-secret\n"
                "    authorization_url: http://127.0.0.1:1/{tenant}/oauth2/v2.0/authorize\n"
                "    token_url: http://127.0.0.1:1/{tenant}/oauth2/v2.0/token\n"};
  auto ada = "Bearer " + w.server->mint("ada", "acme", true);
  for (auto tenant : {"..", ".", "%2E%2E", "%2e", "a%2Fb", "a%5Cb", "a%3Fb", "a%23b",
                      "%252e%252e", "a%00", "a%20b", ""}) {
    SCOPED_TRACE(tenant);
    auto r = w.authorize("microsoft", w.alice, allowed, std::string("&tenant=") + tenant);
    expect_refused(r, 400, "tenant");
    EXPECT_EQ(r.json()["error"]["code"], "bad_request");
    // The team flow reads the same values.
    auto team = http_call(w.port(), "GET",
                          "/api/v1/connectors/microsoft/oauth/authorize?redirect_uri=" +
                            oauth::form_encode({{"", allowed}}).substr(1) + "&tenant=" + tenant,
                          {{"Authorization", ada}});
    expect_refused(team, 400, "tenant");
  }
  EXPECT_EQ(psql_int(w.db, "SELECT count(*) FROM oauth_states"), 0);
  EXPECT_EQ(w.rows(), 0);
  // Real tenants, and the catalog's default, still work.
  for (auto tenant : {"&tenant=contoso.onmicrosoft.com",
                      "&tenant=72f988bf-86f1-41af-91ab-2d7cd011db47", ""}) {
    auto r = w.authorize("microsoft", w.alice, allowed, tenant);
    ASSERT_EQ(r.status, 200) << tenant << ": " << r.body;
  }
  auto url = w.authorize("microsoft", w.alice, allowed, "&tenant=contoso.onmicrosoft.com")
               .json()["auth_url"].get<std::string>();
  EXPECT_EQ(url.rfind("http://127.0.0.1:1/contoso.onmicrosoft.com/oauth2/v2.0/authorize?", 0), 0u)
    << url;
  EXPECT_EQ(psql_int(w.db, "SELECT count(*) FROM oauth_states"), 4);
}

TEST(OAuth, TeamFlowNeedsAnAdmin) {
  oauth_world w;
  auto path = "/api/v1/connectors/github/oauth/authorize?redirect_uri=" +
              oauth::form_encode({{"", allowed}}).substr(1);
  EXPECT_EQ(http_call(w.port(), "GET", path, {{"Authorization", w.alice}}).status, 403);
  auto admin = "Bearer " + w.server->mint("carol", "acme", true);
  auto r = http_call(w.port(), "GET", path, {{"Authorization", admin}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto q = w.approve(r);
  EXPECT_EQ(query_of(r.json()["auth_url"].get<std::string>())["redirect_uri"],
            "https://cm.example/api/v1/connectors/github/oauth/callback");
  // The team flow's state does not work on the user route.
  expect_refused(w.callback("github", q), 400, "another flow");
}

TEST(OAuth, DisconnectStillDeletesWhenRevocationFails) {
  oauth_world w;
  ASSERT_EQ(w.callback("google-workspace", w.approve(w.authorize("google-workspace", w.alice))).status,
            200);
  w.server->stop();
  // Point revocation at a closed port by restarting with another URL.
  server_options o{w.db};
  o.key_file = w.server->dir().file("master.key");
  o.extra_yaml = "providers:\n  google-workspace:\n    client_id: cm-test-client\n"
                 "    client_secret: cm-test-secret\n    revoke_url: http://127.0.0.1:1/revoke\n";
  server_process second{o};
  ASSERT_TRUE(second.wait_ready()) << second.log();
  auto user = "Bearer " + second.mint("alice", "acme");
  auto del = http_call(second.port(), "DELETE", "/api/connectors/google-workspace",
                       {{"Authorization", user}});
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(del.json()["revoked"], false);
  EXPECT_NE(del.json()["reason"].get<std::string>().find("revocation failed"), std::string::npos);
  EXPECT_EQ(w.rows(), 0);
}

TEST(OAuth, TikTokEnvelopeAuthCodeAndAdvertisers) {
  oauth_world w;
  auto r = w.authorize("tiktok-ads", w.alice);
  ASSERT_EQ(r.status, 200) << r.body;
  auto q = query_of(r.json()["auth_url"].get<std::string>());
  EXPECT_EQ(q["app_id"], "cm-test-client") << "TikTok's name for client_id";
  EXPECT_EQ(q.count("client_id"), 0u);
  auto back = w.approve(r);
  back.erase("code"); // TikTok sends auth_code
  ASSERT_EQ(back.count("auth_code"), 1u);
  auto done = w.callback("tiktok-ads", back);
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(done.json()["account_name"], "Acme TikTok");
  auto token = http_call(w.port(), "GET", "/api/internal/tokens/tiktok-ads?user_id=alice",
                         {{"X-Services-Token", service_token}});
  ASSERT_EQ(token.status, 200) << token.body;
  EXPECT_EQ(token.json()["access_token"], "tt-" + back["auth_code"]);
  EXPECT_TRUE(token.json()["expires_at"].is_null()) << "long-term token, no expiry";
  EXPECT_EQ(token.json()["metadata"]["advertiser_ids"], nlohmann::json::array({"7001", "7002"}));
  EXPECT_EQ(token.json()["metadata"]["accounts"], nlohmann::json::array({"Acme TikTok", "Acme EU"}));
  auto del = http_call(w.port(), "DELETE", "/api/connectors/tiktok-ads", {{"Authorization", w.alice}});
  EXPECT_EQ(del.json()["revoked"], true) << del.body;
}

TEST(OAuth, TikTokEnvelopeErrorIsAFailureEvenWithHttp200) {
  oauth_world w;
  auto back = w.approve(w.authorize("tiktok-ads", w.alice));
  back["auth_code"] = "code-unknown";
  back.erase("code");
  auto done = w.callback("tiktok-ads", back);
  EXPECT_EQ(done.status, 502) << done.body;
  EXPECT_NE(done.json()["error"]["message"].get<std::string>().find("code 40110"),
            std::string::npos) << done.body;
  EXPECT_EQ(w.rows(), 0);
}

TEST(OAuth, MetaExchangesForALongLivedToken) {
  oauth_world w;
  auto r = w.authorize("meta", w.alice);
  auto q = query_of(r.json()["auth_url"].get<std::string>());
  EXPECT_EQ(q["scope"], "ads_management,pages_read_engagement");
  auto back = w.approve(r);
  auto done = w.callback("meta", back);
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(done.json()["account_name"], "Acme Ads");
  auto token = http_call(w.port(), "GET", "/api/internal/tokens/meta?user_id=alice",
                         {{"X-Services-Token", service_token}});
  ASSERT_EQ(token.status, 200) << token.body;
  EXPECT_EQ(token.json()["access_token"], "ll-sl-" + back["code"]) << "the long-lived token";
  // About 60 days from now.
  auto list = http_call(w.port(), "GET", "/api/connectors/list", {{"Authorization", w.alice}});
  auto expires = parse_rfc3339(list.json()["connections"][0]["expires_at"].get<std::string>());
  auto days = (expires - std::time(nullptr) * 1000LL) / 86400000LL;
  EXPECT_GE(days, 59);
  EXPECT_LE(days, 60);
  auto del = http_call(w.port(), "DELETE", "/api/connectors/meta", {{"Authorization", w.alice}});
  EXPECT_EQ(del.json()["revoked"], true) << del.body;
}

TEST(OAuth, AtlassianSitesComeFromAccessibleResources) {
  oauth_world w;
  auto r = w.authorize("atlassian", w.alice);
  auto q = query_of(r.json()["auth_url"].get<std::string>());
  EXPECT_EQ(q["audience"], "api.atlassian.com");
  EXPECT_EQ(q["prompt"], "consent");
  auto done = w.callback("atlassian", w.approve(r));
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(done.json()["account_name"], "acme");
  auto list = http_call(w.port(), "GET", "/api/connectors/list", {{"Authorization", w.alice}});
  EXPECT_EQ(list.json()["connections"][0]["metadata"]["accounts"],
            nlohmann::json::array({"acme", "acme-eu"}));
  auto del = http_call(w.port(), "DELETE", "/api/connectors/atlassian", {{"Authorization", w.alice}});
  EXPECT_EQ(del.json()["revoked"], false);
  EXPECT_EQ(del.json()["reason"], "the provider has no revocation endpoint");
  EXPECT_EQ(w.rows(), 0);
}

TEST(OAuth, GitHubExpiringTokensRefreshWithRotation) {
  oauth_world w;
  auto back = w.approve(w.authorize("github", w.alice));
  ASSERT_EQ(w.callback("github", back).status, 200);
  auto r = http_call(w.port(), "POST", "/api/connectors/github/refresh", {{"Authorization", w.alice}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto token = http_call(w.port(), "GET", "/api/internal/tokens/github?user_id=alice",
                         {{"X-Services-Token", service_token}});
  EXPECT_NE(token.json()["access_token"], "at-" + back["code"]) << "rotated";
  auto stats = nlohmann::json::parse(w.fake.admin("/__stats", ""));
  bool any_revoked = false;
  for (auto& [id, f] : stats["families"].items())
    any_revoked = any_revoked || f["revoked"].get<bool>();
  EXPECT_FALSE(any_revoked) << "the rotated refresh token was never reused";
}

/// The Connect page's files come from the binary, with a policy that runs
/// only the service's own scripts; the SDK can be imported from any origin.
TEST(OAuth, TheConnectPageAndItsSdkAreServedUnderAStrictPolicy) {
  oauth_world w;
  auto page = http_call(w.port(), "GET", "/connect");
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.header("content-type"), "text/html; charset=utf-8");
  auto policy = page.header("content-security-policy");
  EXPECT_NE(policy.find("script-src 'self'"), std::string::npos) << policy;
  EXPECT_EQ(policy.find("unsafe-inline"), std::string::npos) << policy;
  EXPECT_NE(policy.find("frame-ancestors 'self'"), std::string::npos) << policy;
  EXPECT_NE(page.body.find("src=\"/connect/page.js\""), std::string::npos);
  EXPECT_EQ(page.header("x-content-type-options"), "nosniff");
  auto sdk = http_call(w.port(), "GET", "/connect/sdk.js", {{"Origin", "https://host.example"}});
  ASSERT_EQ(sdk.status, 200);
  EXPECT_EQ(sdk.header("content-type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(sdk.header("access-control-allow-origin"), "*");
  EXPECT_NE(sdk.body.find("export function connect("), std::string::npos);
  auto done = http_call(w.port(), "GET", "/connect/done?origin=https%3A%2F%2Fcm.example");
  EXPECT_EQ(done.status, 200);
  EXPECT_NE(done.body.find("/connect/done.js"), std::string::npos);
  EXPECT_EQ(http_call(w.port(), "GET", "/connect/page.js").header("content-type"),
            "text/javascript; charset=utf-8");
  EXPECT_EQ(http_call(w.port(), "GET", "/connect/connect.css").header("content-type"),
            "text/css; charset=utf-8");
  // Only the embedded files exist.
  EXPECT_EQ(http_call(w.port(), "GET", "/connect/index").status, 404);
  EXPECT_EQ(http_call(w.port(), "GET", "/connect/..%2Fservice.yaml").status, 404);
  EXPECT_EQ(http_call(w.port(), "GET", "/connect/sdk.js/x").status, 404);
}

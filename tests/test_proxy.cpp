// The proxy (/api/proxy/{provider}/{path}): where a proxied call may go,
// what crosses it in each direction, and, end to end against the fake
// provider and stripe-stateful-mock, the credential injected in each
// provider's scheme, the refresh after a 401, Retry-After, timeouts, the
// refused paths, the audit rows and the canaries.
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "config/provider_catalog.hpp"
#include "config/yaml_schema.hpp"
#include "http/router.hpp"
#include "provider/oauth_protocol.hpp"
#include "proxy/headers.hpp"
#include "proxy/redacting_window.hpp"
#include "proxy/target.hpp"
#include "tests/support/test_env.hpp"

using namespace cm;

TEST(ProxyTarget, APathAndQueryGoUnderTheProvidersApiBase) {
  struct row {
    const char* base;
    const char* path;
    const char* query;
    const char* url;
  };
  std::vector<row> rows = {
    {"https://api.github.com", "repos/octo/hello/issues", "state=open&per_page=5",
     "https://api.github.com/repos/octo/hello/issues?state=open&per_page=5"},
    {"https://acme.zendesk.com/api/v2/", "users/me.json", "",
     "https://acme.zendesk.com/api/v2/users/me.json"},
    // No path: the base itself, not the base with a slash (Railway).
    {"http://127.0.0.1:8123/api", "", "", "http://127.0.0.1:8123/api"},
    {"https://backboard.railway.com/graphql/v2", "", "", "https://backboard.railway.com/graphql/v2"},
    {"https://api.github.com", "", "per_page=1", "https://api.github.com/?per_page=1"},
    {"http://[::1]:8123", "v1/me", "", "http://[::1]:8123/v1/me"},
    // GA4's custom methods, encoded spaces, a name starting with a dot,
    // an '@' inside the path: all stay under the base.
    {"https://analyticsdata.googleapis.com", "v1beta/properties/123:runReport", "",
     "https://analyticsdata.googleapis.com/v1beta/properties/123:runReport"},
    {"https://api.figma.com", "v1/files/a%20b", "", "https://api.figma.com/v1/files/a%20b"},
    {"https://api.github.com", "repos/o/r/contents/%2Egithub", "",
     "https://api.github.com/repos/o/r/contents/%2Egithub"},
    {"https://api.github.com", "@evil.example/x", "", "https://api.github.com/@evil.example/x"},
    {"https://api.github.com", "users/", "", "https://api.github.com/users/"},
  };
  for (auto& r : rows) {
    auto t = proxy::target_under(r.base, r.path, r.query);
    EXPECT_TRUE(t.allowed()) << r.base << " + " << r.path << ": " << t.problem;
    EXPECT_EQ(t.url, r.url);
  }
}

TEST(ProxyTarget, EveryWayOutOfTheBaseIsRefusedWithAReason) {
  const char* base = "https://acme.zendesk.com/api/v2";
  std::vector<std::string> paths = {
    "../admin",           "a/../../b",       "%2e%2e/admin",     "%2E%2E/x",
    ".%2e/x",             "a/./b",           ".",                "..",
    "a%2fb",              "a%2Fb",           "a%5cb",            "a\\b",
    "/etc/passwd",        "//evil.example/x", "a//b",            "http://evil.example/x",
    "https:%2f%2fevil.example", "a%zz",      "a%2",              "a%",
    "a b",                "a#b",             "a\r\nb",           "a%00b",
    "a%0d%0aHost:%20evil", std::string("a\0b", 3),
    // One decode away from a refused one, or a dot to servers that decode
    // more than once, take path parameters or overlong UTF-8.
    "%252e%252e/admin",   "a%252fb",         "a%255c..",         "%25252e",
    "..;/admin",          "a/..;x/b",        ".;/x",             "%c0%ae%c0%ae/x",
    "%C0%AE/x",
  };
  for (auto& p : paths) {
    auto t = proxy::target_under(base, p, "");
    EXPECT_FALSE(t.allowed()) << "allowed: " << p << " -> " << t.url;
    EXPECT_EQ(t.url, "");
    if (p.size() >= 6) {
      EXPECT_EQ(t.problem.find(p), std::string::npos) << "the reason never echoes the path";
    }
  }
  for (const char* q : {"a=1#frag", "a=%zz", "a=1 2", "a=1\r\nHost: evil"}) {
    auto t = proxy::target_under(base, "users/me.json", q);
    EXPECT_FALSE(t.allowed()) << "allowed query: " << q;
  }
  for (const char* bad_base : {"ftp://files.example", "https://x.example/?q=1",
                               "https://u:p@x.example", "not a url", ""}) {
    auto t = proxy::target_under(bad_base, "users", "");
    EXPECT_FALSE(t.allowed()) << bad_base;
  }
}

// ---------------------------------------------------------------------------
// What crosses the proxy, in each direction.

TEST(ProxyHeaders, OnlyContentHeadersAndTheProvidersOwnGoOut) {
  proxy::header_list caller = {
    {"Authorization", "Bearer the-callers-own"}, {"Cookie", "session=abc"},
    {"X-Services-Token", "svc"},                 {"Connection", "keep-alive, X-Secret"},
    {"Keep-Alive", "timeout=5"},                 {"Transfer-Encoding", "chunked"},
    {"Upgrade", "websocket"},                    {"Proxy-Authorization", "Basic x"},
    {"Host", "evil.example"},                    {"Content-Length", "12"},
    {"X-Connection-User-Id", "alice"},           {"Content-Type", "application/json"},
    {"accept", "application/json"},              {"Idempotency-Key", "k-1"},
    {"If-None-Match", "\"v1\""},                 {"X-GitHub-Api-Version", "2022-11-28"},
    {"Stripe-Version", "2024-06-20"},            {"X-Forwarded-For", "10.0.0.1"},
  };
  auto out = proxy::forwarded_request_headers(caller, {"x-github-api-version"});
  std::map<std::string, std::string> got(out.begin(), out.end());
  std::map<std::string, std::string> want = {{"Content-Type", "application/json"},
                                             {"accept", "application/json"},
                                             {"Idempotency-Key", "k-1"},
                                             {"If-None-Match", "\"v1\""},
                                             {"X-GitHub-Api-Version", "2022-11-28"}};
  EXPECT_EQ(got, want);
  // A value with a line break would split the provider's request.
  auto split = proxy::forwarded_request_headers({{"Accept", "a\r\nHost: evil"}}, {});
  EXPECT_TRUE(split.empty());
}

TEST(ProxyHeaders, OnlySafeHeadersComeBackAndNeverTheCredential) {
  std::map<std::string, std::string> answer = {
    {"content-type", "application/json"}, {"set-cookie", "s=1"},
    {"retry-after", "7"},                 {"x-ratelimit-remaining", "41"},
    {"etag", "\"abc\""},                  {"link", "<https://x/?page=2>; rel=\"next\""},
    {"connection", "close"},              {"transfer-encoding", "chunked"},
    {"content-length", "99"},             {"content-encoding", "gzip"},
    {"x-internal-trace", "t"},            {"location", "https://x/?access_token=tok%2B123"},
    {"x-shopify-shop-api-call-limit", "1/40"}, {"cache-control", "max-age=60"},
    {"x-ratelimit-limit", "a\rb"},
  };
  std::string type;
  auto out = proxy::returned_headers(answer, proxy::credential_forms({"tok+123"}), type);
  std::map<std::string, std::string> got(out.begin(), out.end());
  std::map<std::string, std::string> want = {{"retry-after", "7"},
                                             {"x-ratelimit-remaining", "41"},
                                             {"etag", "\"abc\""},
                                             {"link", "<https://x/?page=2>; rel=\"next\""},
                                             {"x-shopify-shop-api-call-limit", "1/40"}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(type, "application/json");
}

TEST(ProxyHeaders, TheCredentialIsRedactedInEveryFormItCanComeBackIn) {
  auto forms = proxy::credential_forms({"EAA+x/y"});
  std::string body = R"({"next":"https://g/?access_token=EAA%2Bx%2Fy","lower":"EAA%2bx%2fy",)"
                     R"("raw":"EAA+x/y","json":"EAA\u002bx\/y","n":1})";
  EXPECT_EQ(proxy::redact(body, forms), 4u);
  EXPECT_EQ(body, R"({"next":"https://g/?access_token=[redacted]","lower":"[redacted]",)"
                  R"("raw":"[redacted]","json":"[redacted]","n":1})");
  // The Basic value a key went out in, and its base64 alone.
  auto basic = proxy::credential_forms({"zd_good", "Basic b3BzQGFjbWUudGVzdC90b2tlbjp6ZF9nb29k"});
  std::string echoed = R"({"auth":"Basic b3BzQGFjbWUudGVzdC90b2tlbjp6ZF9nb29k","b64":"b3BzQGFjbWUudGVzdC90b2tlbjp6ZF9nb29k"})";
  EXPECT_EQ(proxy::redact(echoed, basic), 2u);
  EXPECT_EQ(echoed.find("b3BzQGFjbWUudGVzdC90b2tlbjp6ZF9nb29k"), std::string::npos) << echoed;
  std::string clean = "nothing here";
  EXPECT_EQ(proxy::redact(clean, forms), 0u);
  EXPECT_EQ(proxy::redact(clean, proxy::credential_forms({""})), 0u);
  EXPECT_EQ(clean, "nothing here");
}

// A streamed body is redacted piece by piece: wherever the pieces split
// it, a credential (in any of its forms) never comes out, and everything
// else comes out unchanged and in order.
TEST(ProxyRedaction, ACredentialSplitBetweenPiecesIsRedactedWhereverTheSplitFalls) {
  auto forms = proxy::credential_forms({"tok/en+1", "Bearer tok/en+1"});
  std::string body = "{\"a\":\"tok/en+1\",\"b\":\"tok%2Fen%2B1\",\"c\":\"tok\\/en\\u002b1\"}";
  std::string whole = body;
  auto expected_count = proxy::redact(whole, forms);
  ASSERT_EQ(expected_count, 3u);
  for (size_t first = 0; first <= body.size(); ++first)
    for (size_t second = first; second <= body.size(); second += 3) {
      proxy::redacting_window window{forms};
      std::string out = window.push(std::string_view(body).substr(0, first));
      out += window.push(std::string_view(body).substr(first, second - first));
      out += window.push(std::string_view(body).substr(second));
      out += window.finish();
      ASSERT_EQ(out, whole) << "split at " << first << " and " << second;
      EXPECT_EQ(window.redactions(), expected_count);
    }
  // Nothing held back beyond what may begin a credential.
  proxy::redacting_window window{forms};
  auto out = window.push(std::string(1000, 'x'));
  size_t longest = 0;
  for (auto& form : forms)
    longest = std::max(longest, form.size());
  EXPECT_EQ(out.size(), 1000 - (longest - 1));
  EXPECT_EQ(window.finish(), std::string(longest - 1, 'x'));
}

TEST(ProxyHeaders, NoCatalogEntryCanForwardACredentialOrFramingHeader) {
  proxy::header_list caller = {{"Authorization", "Bearer x"}, {"Cookie", "a=b"},
                               {"Host", "evil"},              {"Transfer-Encoding", "chunked"},
                               {"X-Services-Token", "svc"},   {"Stripe-Version", "2024"}};
  auto out = proxy::forwarded_request_headers(
    caller, {"authorization", "cookie", "host", "transfer-encoding", "x-services-token",
             "stripe-version"});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, "Stripe-Version");
}

TEST(ProxyRoutes, TheRestOfThePathIsOneParameter) {
  http::route_params params;
  ASSERT_TRUE(http::match_path("/api/proxy/{provider}/{path*}", "/api/proxy/github/repos/o/r",
                               params));
  EXPECT_EQ(params["provider"], "github");
  EXPECT_EQ(params["path"], "repos/o/r");
  ASSERT_TRUE(http::match_path("/api/proxy/{provider}/{path*}", "/api/proxy/railway", params));
  EXPECT_EQ(params["path"], "");
  EXPECT_FALSE(http::match_path("/api/proxy/{provider}/{path*}", "/api/proxy", params));
  EXPECT_FALSE(http::match_path("/api/proxy/{provider}/{path*}", "/api/other/github/x", params));
  // Patterns without a rest keep matching segment for segment.
  EXPECT_FALSE(http::match_path("/api/connectors/{provider}", "/api/connectors/a/b", params));
}

TEST(ProxyCatalog, EveryProviderHasAnApiBaseAndAScheme) {
  auto catalog = config::load_provider_catalog(test::source_dir() + "/config/providers.yaml");
  ASSERT_FALSE(catalog.providers.empty());
  for (auto& [name, entry] : catalog.providers) {
    ASSERT_TRUE(entry.api.has_value()) << name;
    EXPECT_EQ(entry.api->base_url.rfind("https://", 0), 0u) << name;
    if (entry.mode == config::auth_mode::api_key) {
      EXPECT_EQ(entry.api_auth(), "api_key") << name;
    }
  }
  EXPECT_EQ(catalog.find("meta")->api_auth(), "query:access_token");
  EXPECT_EQ(catalog.find("shopify")->api_auth(), "header:X-Shopify-Access-Token");
  EXPECT_EQ(catalog.find("tiktok-ads")->api_auth(), "header:Access-Token");
  EXPECT_EQ(catalog.find("github")->api_auth(), "bearer");
  EXPECT_EQ(catalog.find("google-analytics")->api_auth(), "bearer");
  // Atlassian's site id comes from the account lookup and must fit its
  // placeholder; a URL-shaped value never does.
  auto& atlassian = *catalog.find("atlassian");
  EXPECT_EQ(atlassian.account->metadata.at("cloud_id"), "/0/id");
  EXPECT_TRUE(oauth::expand_url(atlassian, atlassian.api->base_url, {{"cloud_id", "1a2b-3c"}}));
  EXPECT_FALSE(oauth::expand_url(atlassian, atlassian.api->base_url,
                                 {{"cloud_id", "x.evil.example/y"}}));
  EXPECT_FALSE(oauth::expand_url(atlassian, atlassian.api->base_url, nlohmann::json::object()));
}

TEST(ProxyCatalog, AnApiBlockIsParsedStrictly) {
  auto parse = [](const std::string& api) {
    return config::parse_provider_catalog(
      "providers:\n  p:\n    auth_mode: api_key\n    api_key:\n      validate_url: "
      "https://x.example/me\n    api:\n" + api,
      "t.yaml");
  };
  EXPECT_NO_THROW(parse("      base_url: https://x.example/v1\n      forward_headers: [X-Ok]\n"));
  EXPECT_THROW(parse("      forward_headers: [X-Ok]\n"), config::config_error);
  EXPECT_THROW(parse("      base_url: ftp://x.example\n"), config::config_error);
  EXPECT_THROW(parse("      base_url: https://x.example/?q=1\n"), config::config_error);
  EXPECT_THROW(parse("      base_url: https://{undeclared}.example\n"), config::config_error);
  EXPECT_THROW(parse("      base_url: https://x.example\n      auth: cookie\n"),
               config::config_error);
  EXPECT_THROW(parse("      base_url: https://x.example\n      forward_headers: [\"A: b\"]\n"),
               config::config_error);
  EXPECT_THROW(parse("      base_url: https://x.example\n      extra: 1\n"), config::config_error);
}

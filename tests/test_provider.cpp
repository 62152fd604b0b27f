// The OAuth wire protocol (pure functions) and the libcurl provider client
// against the fake provider on loopback.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>

#include "actors/actor_config.hpp"
#include "actors/provider_client_actor.hpp"
#include "config/template_value.hpp"
#include "provider/curl_engine.hpp"
#include "provider/oauth_flow.hpp"
#include "provider/oauth_protocol.hpp"
#include "tests/support/actor_doubles.hpp"
#include "tests/support/child_process.hpp"

using namespace cm;
using namespace std::chrono_literals;

namespace {

config::provider_entry entry(config::client_auth_style style = config::client_auth_style::post) {
  config::provider_entry e;
  e.name = "github";
  e.token_url = "https://provider.test/token";
  e.client_auth = style;
  e.default_expires_in_s = 3600;
  e.token_params = {{"audience", "api.example"}};
  return e;
}

oauth::client_credentials client() {
  oauth::client_credentials c;
  c.client_id = "client 1";
  c.client_secret = secret{"s3cr&t"};
  return c;
}

std::string header(const outbound_request& r, const std::string& name) {
  for (auto& [k, v] : r.headers)
    if (k == name)
      return v;
  return {};
}

outbound_response answer(int status, const std::string& body) {
  outbound_response r;
  r.status = status;
  r.body = body;
  return r;
}

} // namespace

TEST(OAuthProtocol, RefreshRequestForEachClientAuthStyle) {
  auto post = oauth::refresh_request(entry(), client(), secret{"rt/1+2"}, {}, 5000);
  ASSERT_TRUE(post);
  EXPECT_EQ(post->method, "POST");
  EXPECT_EQ(post->url, "https://provider.test/token");
  EXPECT_EQ(post->timeout_ms, 5000);
  EXPECT_EQ(post->body, "grant_type=refresh_token&refresh_token=rt%2F1%2B2&client_id=client%201"
                        "&client_secret=s3cr%26t&audience=api.example");
  EXPECT_EQ(header(*post, "Accept"), "application/json");
  EXPECT_EQ(header(*post, "Content-Type"), "application/x-www-form-urlencoded");

  auto basic = oauth::refresh_request(entry(config::client_auth_style::basic), client(),
                                      secret{"rt"}, {}, 5000);
  ASSERT_TRUE(basic);
  // base64("client%201:s3cr%26t")
  EXPECT_EQ(header(*basic, "Authorization"), "Basic Y2xpZW50JTIwMTpzM2NyJTI2dA==");
  EXPECT_EQ(basic->body.find("client_secret"), std::string::npos);

  auto json = oauth::refresh_request(entry(config::client_auth_style::json), client(),
                                     secret{"rt"}, {}, 5000);
  ASSERT_TRUE(json);
  auto body = nlohmann::json::parse(json->body);
  EXPECT_EQ(body["grant_type"], "refresh_token");
  EXPECT_EQ(body["client_secret"], "s3cr&t");
  EXPECT_EQ(body["audience"], "api.example");
  EXPECT_EQ(header(*json, "Content-Type"), "application/json");
}

TEST(OAuthProtocol, UrlTemplatesAreFilledOnlyWithValidValues) {
  auto e = entry();
  e.token_url = "https://{shop}.myshopify.com/admin/oauth/access_token";
  e.template_params = {{"shop", "^[a-zA-Z0-9][a-zA-Z0-9-]*$"}};
  EXPECT_EQ(*oauth::expand_url(e, e.token_url, {{"shop", "acme-store"}}),
            "https://acme-store.myshopify.com/admin/oauth/access_token");
  EXPECT_FALSE(oauth::expand_url(e, e.token_url, {{"shop", "evil.com/x"}}));
  EXPECT_FALSE(oauth::expand_url(e, e.token_url, nlohmann::json::object()));
  EXPECT_FALSE(oauth::refresh_request(e, client(), secret{"rt"}, {{"shop", "a b"}}, 5000));
}

// Found by fuzz/fuzz_callback_query: std::regex_match recurses per character,
// so `?shop=` + 30,000 letters on /api/oauth/shopify/authorize crashed the
// server (stack overflow). Values are now bounded before the pattern runs.
TEST(OAuthProtocol, LongTemplateValuesAreRefusedBeforeThePattern) {
  auto e = entry();
  e.token_url = "https://{shop}.myshopify.com/admin/oauth/access_token";
  e.template_params = {{"shop", "^[a-zA-Z0-9][a-zA-Z0-9-_]*$"}};
  std::string longest(config::max_template_value_bytes, 'a');
  std::string huge(200000, 'a');
  EXPECT_TRUE(oauth::expand_url(e, e.token_url, {{"shop", longest}}));
  EXPECT_FALSE(oauth::expand_url(e, e.token_url, {{"shop", longest + "a"}}));
  EXPECT_FALSE(oauth::expand_url(e, e.token_url, {{"shop", huge}}));
  std::string problem;
  EXPECT_TRUE(oauth::template_values(e, {{"shop", longest + ".myshopify.com"}}, problem));
  EXPECT_FALSE(oauth::template_values(e, {{"shop", huge}}, problem));
  EXPECT_EQ(problem, "shop is not valid: it must be 1 to 256 characters");
}

// Issue 16: `tenant=..` matched Microsoft's pattern, and libcurl resolved
// https://login.microsoftonline.com/../oauth2/v2.0/token to another path on
// the provider's host, code, verifier and client secret included. A value
// fills one segment or label and nothing else, whatever the catalog's
// pattern allows.
TEST(TemplateValues, KeepTheUrlsShapeWhateverThePattern) {
  for (const std::string& refused :
       {std::string(""), std::string("."), std::string(".."), std::string("a/b"),
        std::string("/"), std::string("a\\b"), std::string("a?b"), std::string("a#b"),
        std::string("%2e%2e"), std::string("%2F"), std::string("%5c"), std::string("a%00"),
        std::string("a\nb"), std::string("a\x01"), std::string(1, '\0'), std::string("a b"),
        std::string("evil.com@x"), std::string("x:443"), std::string("caf\xc3\xa9"),
        std::string("a&b=c"), std::string(config::max_template_value_bytes + 1, 'a')}) {
    EXPECT_NE(config::template_value_shape_problem(refused), "") << refused;
    EXPECT_NE(config::template_value_problem(refused, "^.*$"), "") << refused;
  }
  for (const char* accepted :
       {"common", "contoso.onmicrosoft.com", "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "Iv1.0123abcd_-~", "...", ".a", "a..b"})
    EXPECT_EQ(config::template_value_problem(accepted, "^.*$"), "") << accepted;
  EXPECT_EQ(config::template_value_problem("acme", "^[0-9]+$"),
            "does not match the expected format");
}

TEST(TemplateValues, NeitherATenantNorAClientIdIsADotSegment) {
  // Microsoft's tenant, as the catalog declares it.
  auto e = entry();
  e.name = "microsoft";
  e.authorization_url = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize";
  e.token_url = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token";
  e.template_params = {{"tenant", "^[A-Za-z0-9.-]+$"}};
  e.template_defaults = {{"tenant", "common"}};
  for (auto tenant : {"..", "."}) {
    EXPECT_FALSE(oauth::expand_url(e, e.token_url, {{"tenant", tenant}})) << tenant;
    EXPECT_FALSE(oauth::refresh_request(e, client(), secret{"rt"}, {{"tenant", tenant}}, 5000));
    EXPECT_FALSE(oauth::code_request(e, client(), "code", "https://cm.test/cb", "verifier",
                                     {{"tenant", tenant}}, 5000));
    std::string problem;
    EXPECT_FALSE(oauth::template_values(e, {{"tenant", tenant}}, problem)) << tenant;
    EXPECT_EQ(problem, "tenant is not valid: it must not be '.' or '..'");
  }
  EXPECT_EQ(*oauth::expand_url(e, e.token_url, {{"tenant", "contoso.onmicrosoft.com"}}),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");

  // GitHub's revocation path holds the client id, a team admin's included.
  auto github = entry();
  github.revoke_url = "https://api.github.com/applications/{client_id}/token";
  github.revoke_style = "github_token";
  github.template_params = {{"client_id", "^[A-Za-z0-9._-]+$"}};
  token_record grant;
  grant.access_token = secret{"gho_access"};
  auto team_app = client();
  team_app.client_id = "..";
  EXPECT_FALSE(oauth::revoke_request(github, team_app, grant, 5000));
  team_app.client_id = "Iv1.0123abcd";
  auto revoke = oauth::revoke_request(github, team_app, grant, 5000);
  ASSERT_TRUE(revoke);
  EXPECT_EQ(revoke->url, "https://api.github.com/applications/Iv1.0123abcd/token");
}

TEST(OAuthProtocol, ReadsTokensAndKeepsMissingRefreshTokenEmpty) {
  auto ok = oauth::read_token_answer(
    entry(), answer(200, R"({"access_token":"at","refresh_token":"rt","expires_in":120,
                             "token_type":"bearer","scope":"repo actions"})"));
  EXPECT_EQ(ok.result, oauth::outcome::ok);
  EXPECT_EQ(ok.access_token.reveal(), "at");
  EXPECT_EQ(ok.refresh_token.reveal(), "rt");
  EXPECT_EQ(ok.expires_in_s, 120);
  EXPECT_EQ(ok.scopes, (std::vector<std::string>{"repo", "actions"}));
  auto no_refresh = oauth::read_token_answer(entry(), answer(200, R"({"access_token":"at"})"));
  EXPECT_EQ(no_refresh.result, oauth::outcome::ok);
  EXPECT_TRUE(no_refresh.refresh_token.empty());
  EXPECT_EQ(no_refresh.expires_in_s, 3600) << "missing expires_in -> provider default";
}

TEST(OAuthProtocol, ExpiresInIsClamped) {
  EXPECT_EQ(oauth::clamp_expires_in(nlohmann::json(), 3600), 3600);
  EXPECT_EQ(oauth::clamp_expires_in(0, 3600), 3600);
  EXPECT_EQ(oauth::clamp_expires_in(-5, 3600), 3600);
  EXPECT_EQ(oauth::clamp_expires_in("abc", 3600), 3600);
  EXPECT_EQ(oauth::clamp_expires_in("7200", 3600), 7200);
  EXPECT_EQ(oauth::clamp_expires_in(1e12, 3600), oauth::max_expires_in_s);
  EXPECT_EQ(oauth::clamp_expires_in(59.9, 3600), 59);
  // Found by fuzz/fuzz_token_response: a sub-second value truncated to 0,
  // "expires now" with a refresh token (a refresh loop), "never" without.
  EXPECT_EQ(oauth::clamp_expires_in(0.5, 3600), 3600);
  EXPECT_EQ(oauth::clamp_expires_in("1e-3", 3600), 3600);
  EXPECT_EQ(oauth::clamp_expires_in(1.0, 3600), 1);
  auto half = oauth::read_token_answer(
    entry(), answer(200, R"({"access_token":"at","refresh_token":"rt","expires_in":0.5})"));
  EXPECT_EQ(half.expires_in_s, 3600);
  EXPECT_FALSE(half.expires_in_given);
}

TEST(OAuthProtocol, ClassifiesFailures) {
  auto e = entry();
  EXPECT_EQ(oauth::read_token_answer(e, answer(400, R"({"error":"invalid_grant"})")).result,
            oauth::outcome::invalid_grant);
  EXPECT_EQ(oauth::read_token_answer(e, answer(403, R"({"error":"invalid_grant"})")).result,
            oauth::outcome::invalid_grant) << "Atlassian answers 403";
  EXPECT_EQ(oauth::read_token_answer(e, answer(200, R"({"error":"bad_refresh_token"})")).result,
            oauth::outcome::invalid_grant) << "GitHub answers 200";
  EXPECT_EQ(oauth::read_token_answer(e, answer(401, R"({"error":"invalid_client"})")).result,
            oauth::outcome::rejected);
  auto limited = answer(429, "{}");
  limited.headers["retry-after"] = "30";
  auto rl = oauth::read_token_answer(e, limited);
  EXPECT_EQ(rl.result, oauth::outcome::rate_limited);
  EXPECT_EQ(rl.retry_after_s, 30);
  EXPECT_EQ(oauth::read_token_answer(e, answer(503, "<html>down</html>")).result,
            oauth::outcome::unavailable);
  EXPECT_EQ(oauth::read_token_answer(e, answer(200, "{not json")).result,
            oauth::outcome::malformed);
  EXPECT_EQ(oauth::read_token_answer(e, answer(200, R"({"token":"x"})")).result,
            oauth::outcome::malformed);
  EXPECT_EQ(oauth::read_token_answer(e, test::transport_failure(transport_error::timeout_after_send))
              .result,
            oauth::outcome::possibly_consumed);
  EXPECT_EQ(oauth::read_token_answer(e, test::transport_failure(transport_error::connect_failed))
              .result,
            oauth::outcome::unavailable);
}

TEST(OAuthProtocol, ReasonsNeverQuoteTheAnswer) {
  auto r = oauth::read_token_answer(
    entry(), answer(400, R"({"error":"invalid_grant refresh_token=SECRET-rt","error_description":"SECRET-rt"})"));
  EXPECT_EQ(r.reason.find("SECRET"), std::string::npos) << r.reason;
}

TEST(OAuthProtocol, TikTokEnvelopeIsUnwrapped) {
  auto e = entry();
  e.token_style = "tiktok_envelope";
  auto ok = oauth::read_token_answer(
    e, answer(200, R"({"code":0,"message":"OK","data":{"access_token":"tt-at"}})"));
  EXPECT_EQ(ok.result, oauth::outcome::ok);
  EXPECT_EQ(ok.access_token.reveal(), "tt-at");
  auto bad = oauth::read_token_answer(e, answer(200, R"({"code":40105,"message":"bad"})"));
  EXPECT_EQ(bad.result, oauth::outcome::rejected);
}

TEST(OAuthProtocol, RetryAfterFormats) {
  EXPECT_EQ(oauth::parse_retry_after(""), 0);
  EXPECT_EQ(oauth::parse_retry_after("17"), 17);
  EXPECT_EQ(oauth::parse_retry_after("999999"), 3600);
  EXPECT_EQ(oauth::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), 0) << "in the past";
  EXPECT_EQ(oauth::parse_retry_after("soon"), 0);
}

// -- the libcurl client against a real loopback server -----------------------

namespace {

struct client_fixture : ::testing::Test {
  actor_config cfg{false};
  caf::actor_system sys{cfg};
  provider_client_actor client_actor = sys.spawn(provider_client);
  test::fake_provider_process fake;

  outbound_response fetch(outbound_request req) {
    caf::scoped_actor self{sys};
    outbound_response out;
    out.error = transport_error::cancelled;
    self->request(client_actor, 30s, std::move(req))
      .receive([&](outbound_response& r) { out = std::move(r); }, [&](caf::error&) {});
    return out;
  }
  ~client_fixture() override { caf::anon_send_exit(client_actor, caf::exit_reason::user_shutdown); }
};

outbound_request get(const std::string& url, int64_t timeout_ms = 5000) {
  outbound_request r;
  r.url = url;
  r.timeout_ms = timeout_ms;
  return r;
}

} // namespace

TEST_F(client_fixture, RefreshAgainstTheFakeRotates) {
  fake.admin("/__seed", R"({"refresh_token":"rt-0","access_token":"at-0"})");
  oauth::client_credentials creds;
  creds.client_id = "cm-test-client";
  creds.client_secret = secret{"cm-test-secret"};
  auto e = entry();
  e.token_url = fake.url("/token");
  e.token_params.clear();
  auto res = fetch(*oauth::refresh_request(e, creds, secret{"rt-0"}, {}, 5000));
  auto tokens = oauth::read_token_answer(e, res);
  ASSERT_EQ(tokens.result, oauth::outcome::ok) << res.body;
  EXPECT_EQ(tokens.refresh_token.reveal(), "rt-f1-1");
  // The used refresh token presented again revokes the family.
  auto reuse = oauth::read_token_answer(e, fetch(*oauth::refresh_request(e, creds, secret{"rt-0"}, {}, 5000)));
  EXPECT_EQ(reuse.result, oauth::outcome::invalid_grant);
  auto after = oauth::read_token_answer(e, fetch(*oauth::refresh_request(e, creds, tokens.refresh_token, {}, 5000)));
  EXPECT_EQ(after.result, oauth::outcome::invalid_grant) << "family revoked";
  EXPECT_EQ(fake.refresh_calls(), 3);
}

namespace {

/// A loopback listener that answers one request with `{}` and keeps its
/// request line as it arrived on the wire.
class one_request_server {
public:
  one_request_server() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 1) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      throw std::runtime_error("cannot listen on loopback");
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~one_request_server() {
    if (thread_.joinable())
      thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  /// Waits for the request (at most 5 s) and returns its first line.
  std::string request_line() {
    if (thread_.joinable())
      thread_.join();
    return head_.substr(0, head_.find("\r\n"));
  }

private:
  void serve() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0)
      return;
    int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0)
      return;
    char buf[4096];
    while (head_.find("\r\n\r\n") == std::string::npos) {
      pollfd c{client, POLLIN, 0};
      if (::poll(&c, 1, 5000) <= 0)
        break;
      auto n = ::recv(client, buf, sizeof buf, 0);
      if (n <= 0)
        break;
      head_.append(buf, static_cast<size_t>(n));
    }
    std::string answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    [[maybe_unused]] auto sent = ::send(client, answer.data(), answer.size(), MSG_NOSIGNAL);
    ::close(client);
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::string head_;
  std::thread thread_;
};

} // namespace

// Issue 16: libcurl resolved "." and ".." path segments before sending, so
// a URL's path was not what went out. CURLOPT_PATH_AS_IS sends it as built.
TEST_F(client_fixture, DotSegmentsGoOutAsWrittenNotResolvedByLibcurl) {
  one_request_server provider;
  auto res = fetch(get("http://127.0.0.1:" + std::to_string(provider.port()) +
                       "/applications/../token/./x"));
  EXPECT_EQ(res.error, transport_error::none);
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(provider.request_line(), "GET /applications/../token/./x HTTP/1.1");
}

TEST_F(client_fixture, ConnectionRefusedIsConnectFailed) {
  auto res = fetch(get("http://127.0.0.1:1/token"));
  EXPECT_EQ(res.error, transport_error::connect_failed);
}

TEST_F(client_fixture, SlowAnswerAfterSendingIsTimeoutAfterSend) {
  fake.admin("/__behavior", R"({"mode":"slow","delay_ms":1500})");
  outbound_request req = get(fake.url("/token"), 300);
  req.method = "POST";
  req.body = "grant_type=refresh_token";
  auto start = std::chrono::steady_clock::now();
  auto res = fetch(req);
  EXPECT_EQ(res.error, transport_error::timeout_after_send);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1400ms) << "bounded by the timeout";
}

TEST_F(client_fixture, OversizedAnswerIsCutOff) {
  auto req = get(fake.url("/__stats"));
  req.max_response_bytes = 8;
  EXPECT_EQ(fetch(req).error, transport_error::too_large);
}

TEST_F(client_fixture, HeadersAndStatusArrive) {
  fake.admin("/__behavior", R"({"mode":"rate_limit","retry_after":42,"count":1})");
  outbound_request req = get(fake.url("/token"));
  req.method = "POST";
  auto res = fetch(req);
  EXPECT_EQ(res.error, transport_error::none);
  EXPECT_EQ(res.status, 429);
  EXPECT_EQ(res.header("retry-after"), "42");
}

TEST_F(client_fixture, ManyRequestsInFlightAtOnce) {
  fake.admin("/__behavior", R"({"mode":"slow","delay_ms":300})");
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> callers;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i)
    callers.emplace_back([&] {
      outbound_request req = get(fake.url("/token"));
      req.method = "POST";
      if (fetch(req).error == transport_error::none)
        ++ok;
    });
  for (auto& t : callers)
    t.join();
  EXPECT_EQ(ok.load(), 4);
  // Four 300 ms answers in parallel (the fake runs 4 threads): well under 4 x 300 ms.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1100ms);
}

namespace {

/// Takes a streamed answer; pauses once, on the first piece, until resumed.
struct pausing_consumer : cm::stream_consumer {
  std::mutex mutex;
  std::condition_variable changed;
  std::string body;
  int64_t status = 0;
  bool paused_once = false;
  bool done = false;
  cm::transport_error error = cm::transport_error::none;

  verdict on_body(const cm::outbound_response& head, std::string_view bytes) override {
    std::lock_guard<std::mutex> lock{mutex};
    status = head.status;
    if (!paused_once) {
      paused_once = true;
      changed.notify_all();
      return verdict::pause;
    }
    body.append(bytes);
    return verdict::taken;
  }
  void on_done(cm::outbound_response res) override {
    std::lock_guard<std::mutex> lock{mutex};
    error = res.error;
    done = true;
    changed.notify_all();
  }
  template <class Pred>
  bool wait(Pred pred) {
    std::unique_lock<std::mutex> lock{mutex};
    return changed.wait_for(lock, 5s, pred);
  }
};

} // namespace

// A streaming transfer: a paused consumer gets nothing more until resumed,
// then the same bytes again and the rest; a resumer kept past the engine's
// end does nothing.
TEST(CurlEngine, AStreamingTransferPausesUntilResumedAndAResumerOutlivesTheEngine) {
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string body(200000, 'b');
  std::thread server([&] {
    int client = ::accept(listener, nullptr, nullptr);
    char buf[4096];
    ::recv(client, buf, sizeof buf, 0);
    auto answer = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                  "\r\nConnection: close\r\n\r\n" + body;
    ::send(client, answer.data(), answer.size(), MSG_NOSIGNAL);
    ::close(client);
  });
  auto consumer = std::make_shared<pausing_consumer>();
  std::function<void()> resume;
  {
    cm::curl_engine engine{"cm-curl-test"};
    cm::outbound_request req;
    req.url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/big";
    auto id = engine.submit_streaming(req, consumer);
    EXPECT_EQ(consumer->transfer_id, id);
    ASSERT_TRUE(consumer->wait([&] { return consumer->paused_once; }));
    std::this_thread::sleep_for(200ms);
    {
      std::lock_guard<std::mutex> lock{consumer->mutex};
      EXPECT_TRUE(consumer->body.empty()) << "nothing while paused";
      EXPECT_FALSE(consumer->done);
    }
    resume = engine.resumer(id);
    resume();
    ASSERT_TRUE(consumer->wait([&] { return consumer->done; }));
    EXPECT_EQ(consumer->error, cm::transport_error::none);
    EXPECT_EQ(consumer->status, 200);
    EXPECT_EQ(consumer->body, body);
  }
  resume(); // the engine is gone: nothing happens (ASan would see a use after free)
  server.join();
  ::close(listener);
}

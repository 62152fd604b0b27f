// A stand-in OAuth token endpoint for tests, with behaviours a real
// authorization server will not show on demand.
//
//   fake_provider [--port N]     prints "listening <port>" and serves:
//
//   POST /token           grant_type=refresh_token (form or JSON body,
//                         client_secret_post or Basic); rotates refresh
//                         tokens; presenting a used refresh token again
//                         revokes the whole family (RFC 9700 §4.14.2)
//   GET  /userinfo        Bearer access token -> 200 {"login":…} or 401
//   GET  /authorize       auto-approves: 302 to redirect_uri?code=…&state=…
//                         (remembers redirect_uri, scope, nonce and the PKCE
//                         challenge)
//   POST /__code          {"redirect_uri" (default "postmessage"), "scope",
//                         "nonce"} -> {"code"}: a code minted without a
//                         browser, as Google's JS code flow (redirect_uri
//                         "postmessage") hands one to getTokenFromCode; it has
//                         no PKCE challenge
//   POST /token, …/access_token   grant_type=authorization_code too: checks
//                         redirect_uri (when the request gives one) and
//                         code_verifier (S256, when the code has a challenge);
//                         a code works once, its reuse revokes what it issued.
//                         When the code's scope or the request's "scope" has
//                         "openid", the answer carries an OpenID Connect
//                         id_token (RS256, kid "fake-1", iss this fake's own
//                         origin http://127.0.0.1:<port>, aud and azp the
//                         client id, sub, email, email_verified, iat, exp
//                         now+3600, nonce if the code has one, hd if set)
//   GET  /jwks, …/oauth2/v3/certs   {"keys":[the RS256 key, kid "fake-1"]}
//   POST /__id_token      what the next id_tokens say, until changed again;
//                         every call starts from the defaults:
//                         {"email" (default "ops@acme.test"; null omits it),
//                         "email_verified" (true), "sub" ("fake-user-1"),
//                         "hd" (none), "aud" (string or array; default the
//                         client id), "iss" (default the fake's origin),
//                         "kid" ("fake-1"; "" omits the header),
//                         "sign_with": "published" | "other" (a second key,
//                         never in /jwks, for bad-signature tests)}
//                         The RSA-2048 keys are generated on first use, not
//                         at start-up: most tests never ask for them.
//   POST /revoke          RFC 7009: revokes the token's whole family
//   DELETE /applications/{client_id}/token   GitHub style, JSON access_token
//   Quirks: TikTok (…/oauth2/access_token/ JSON app_id/secret/auth_code in a
//   {code,message,data} envelope; …/oauth2/advertiser/get/ with Access-Token),
//   Meta (GET …/oauth/access_token, fb_exchange_token, …/me/adaccounts and
//   DELETE …/me/permissions with access_token in the query), Atlassian
//   (…/accessible-resources).
//   API-key checks, each accepting exactly one header shape (see key_checks):
//   Stripe /v1/balance, PostHog /api/users/@me/, Klaviyo /api/accounts/ (needs
//   the revision header), Gorgias /api/account, Zendesk /api/v2/users/me.json,
//   Vercel /v2/user, Railway /graphql/v2, Figma /v1/me. Behaviours html (an
//   HTML 200 page) and big (2 MiB) apply to them too.
//   Google service accounts: grant_type=jwt-bearer verifies the RS256
//   assertion against the key registered with POST /__ga4 {"client_email",
//   "public_key"}; …/v1beta/properties/123456/metadata answers 200 to its
//   tokens, 403 for any other property.
//   POST /__seed          {"refresh_token","access_token"} starts a family
//   POST /__behavior      {"mode": normal|rate_limit|error500|slow|
//                         invalid_grant|malformed|no_expires_in|hang (5 s),
//                         "count": N (then back to normal; -1 forever),
//                         "delay_ms", "retry_after", "expires_in",
//                         "rotate": bool, "reuse_detection": bool,
//                         "parent_valid_until_child_used": bool (Shopify:
//                         the previous refresh token works until the new
//                         one is used), "answer_delay_ms" (after rotating,
//                         before answering)}
//   GET  /__stats         {"refresh_calls", "families": {...}, "revocations",
//                         "parent_reuses", "api_calls", "stream_sent",
//                         "stream_broken"}
//   Any /papi/...         the API the proxy calls: an echo of the request,
//                         or by the path's segments /status/N, /slow/MS,
//                         /big/N, /redirect, /echo-credential,
//                         /needs-current, /stream/N[/chunked][/with-credential]
//                         (N bytes written in pieces by a thread, blocking
//                         when the reader stops reading)
//
// Client credentials must be client_id "cm-test-client" and secret
// "cm-test-secret".
#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/peer.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jwt.h>
#include <nlohmann/json.hpp>
#include <openssl/sha.h>
#include <sodium.h>

#include "http/answer_writer.hpp"
#include "http/auth.hpp"
#include "http/exchange.hpp"
#include "http/pistache_headers.hpp"
#include "tests/support/rsa_test_key.hpp"

using namespace Pistache;

namespace {

struct family {
  std::string current_refresh;
  std::string current_access;
  std::set<std::string> used_refresh;
  // The token whose use issued current_refresh, and whether current_refresh
  // has been presented since (for parent_valid_until_child_used).
  std::string parent_refresh;
  bool current_presented = false;
  bool revoked = false;
  int generation = 0;
};

struct behaviour {
  std::string mode = "normal";
  int count = -1;
  int delay_ms = 0;
  int retry_after = 0;
  int expires_in = 3600;
  bool rotate = true;
  bool reuse_detection = true;
  // Shopify's rule: the previous refresh token stays valid until the new
  // one is used. Its use issues another pair and voids the unused one.
  bool parent_valid_until_child_used = false;
  // Sleeps after the family has rotated and before answering, so a client
  // killed meanwhile never sees the token the provider now expects.
  int answer_delay_ms = 0;
};

std::mutex mutex;
std::map<std::string, family> families;          // by family id
std::map<std::string, std::string> by_refresh;   // refresh token -> family id
std::map<std::string, std::string> by_access;    // access token -> family id
struct pending_code {
  std::string redirect_uri;
  std::string challenge;
  std::string scope;
  bool used = false;
  std::string family;
  std::string nonce;
};
std::map<std::string, pending_code> codes;

const std::string client_id = "cm-test-client";
const std::string published_kid = "fake-1";

/// What the next ID tokens say (POST /__id_token).
struct id_token_settings {
  std::optional<std::string> email = std::string{"ops@acme.test"}; // nullopt: omitted
  bool email_verified = true;
  std::string sub = "fake-user-1";
  std::string hd;                              // empty: omitted
  nlohmann::json aud;                          // null: the client id
  std::string iss;                             // empty: own_origin
  std::string kid = published_kid;             // empty: no kid header
  bool sign_with_other = false;
};
id_token_settings id_settings;
/// "http://127.0.0.1:<port>", the ID tokens' issuer; set once listening.
std::string own_origin;

// Key generation takes up to a second on a busy machine, so it must not start
// inside a token request: the service under test allows its provider 1 s,
// and a first OpenID code exchange under a loaded `ctest -j2` ran out of it
// (502). The published key is made on a thread started with the server;
// a request that needs it sooner waits for it (function statics are
// initialised once, thread-safely; a failure throws and is retried on the
// next call). The unpublished one, for forged-signature tests, on first use.
const cm::test::rsa_test_key& published_key() {
  static const auto key = cm::test::generate_rsa_test_key(2048);
  return key;
}
const cm::test::rsa_test_key& unpublished_key() {
  static const auto key = cm::test::generate_rsa_test_key(2048);
  return key;
}

/// Scope strings come space- or comma-separated.
bool has_scope(const std::string& scopes, const std::string& wanted) {
  size_t start = 0;
  while (start <= scopes.size()) {
    auto end = scopes.find_first_of(" ,", start);
    if (end == std::string::npos)
      end = scopes.size();
    if (scopes.compare(start, end - start, wanted) == 0 && end - start == wanted.size())
      return true;
    start = end + 1;
  }
  return false;
}

/// An ID token as the settings say; the caller holds the mutex.
std::string mint_id_token(const std::string& nonce) {
  auto now = static_cast<int64_t>(std::time(nullptr));
  const auto& s = id_settings;
  nlohmann::json claims = {{"iss", s.iss.empty() ? own_origin : s.iss},
                           {"aud", s.aud.is_null() ? nlohmann::json(client_id) : s.aud},
                           {"azp", client_id},
                           {"sub", s.sub},
                           {"email_verified", s.email_verified},
                           {"iat", now},
                           {"exp", now + 3600}};
  if (s.email)
    claims["email"] = *s.email;
  if (!s.hd.empty())
    claims["hd"] = s.hd;
  if (!nonce.empty())
    claims["nonce"] = nonce;
  return cm::test::sign_rs256(s.sign_with_other ? unpublished_key() : published_key(), claims,
                              s.kid);
}

std::string ga4_email;
std::string ga4_public_key;
std::set<std::string> ga4_tokens;
int ga4_counter = 0;
int next_family = 0;
long revocations = 0;
long parent_reuses = 0; // parent tokens presented again before their child
int next_code = 0;

/// Delayed answers ("answer_delay_ms"), written by one thread of their
/// own so the delay never blocks a reactor thread (whose other clients,
/// the test's admin calls among them, would wait behind it), and through
/// a duplicate of the client's socket, so an answer whose client died
/// meanwhile goes nowhere rather than to whoever gets its descriptor
/// number next (see http/answer_writer.hpp).
class delayed_answers {
public:
  delayed_answers() : thread_([this] { run(); }) { thread_.detach(); }

  void post(std::chrono::steady_clock::time_point at, std::function<void()> write) {
    std::lock_guard<std::mutex> lock(mutex_);
    due_.emplace(at, std::move(write));
    wake_.notify_one();
  }

private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (due_.empty()) {
        wake_.wait(lock);
        continue;
      }
      auto next = due_.begin();
      if (wake_.wait_until(lock, next->first) == std::cv_status::no_timeout)
        continue; // something new may be due earlier
      auto write = std::move(next->second);
      due_.erase(next);
      lock.unlock();
      write();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> due_;
  std::thread thread_;
};

delayed_answers& delayed() {
  static delayed_answers* answers = new delayed_answers; // lives until exit
  return *answers;
}

/// A 200 with `body`, written `after` from now by the delayed answers'
/// thread. The socket is taken here, on the reactor thread, while the
/// descriptor is certainly this client's.
void answer_later(Http::ResponseWriter& w, std::chrono::milliseconds after,
                  const nlohmann::json& body) {
  auto socket = std::make_shared<cm::http::answer_socket>(w.peer()->fd());
  w.peer()->setIdle(true);
  auto text = body.dump();
  delayed().post(std::chrono::steady_clock::now() + after, [socket, text] {
    socket->write(cm::http::serialize_response("HTTP/1.1", 200, "OK",
                                               {{"Content-Type", "application/json"}}, text),
                  std::chrono::milliseconds(500));
  });
}

/// Body bytes /papi/.../stream/ answers have sent, and streams whose
/// client went away before the end (what the proxy's back-pressure and
/// cancellation tests read).
std::atomic<long> stream_sent{0};
std::atomic<long> stream_broken{0};

/// A 200 of `total` bytes ('y'), written by a thread of its own in pieces
/// of 16 KiB through a blocking duplicate of the socket, so a reader that
/// stops reading stops the writer (stream_sent shows where). `secret`, when
/// given, sits in the middle of the body, its two halves written in two
/// pieces 50 ms apart: a redaction that looks at one piece at a time
/// misses it. `chunked`: chunked framing instead of a Content-Length.
void stream_body(Http::ResponseWriter& w, size_t total, bool chunked, std::string secret) {
  int fd = ::fcntl(w.peer()->fd(), F_DUPFD_CLOEXEC, 0);
  w.peer()->setIdle(true);
  if (fd < 0)
    return;
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval patience{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &patience, sizeof patience);
  std::thread([fd, total, chunked, secret] {
    auto send_all = [fd](std::string_view bytes) {
      while (!bytes.empty()) {
        auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
          continue;
        if (n <= 0)
          return false;
        bytes.remove_prefix(static_cast<size_t>(n));
      }
      return true;
    };
    std::string body(total, 'y');
    size_t split = total;
    if (!secret.empty() && secret.size() < total) {
      auto at = total / 2 - secret.size() / 2;
      body.replace(at, secret.size(), secret);
      split = at + secret.size() / 2;
    }
    std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";
    head += chunked ? "Transfer-Encoding: chunked\r\n"
                    : "Content-Length: " + std::to_string(total) + "\r\n";
    bool ok = send_all(head + "\r\n");
    size_t at = 0;
    while (ok && at < total) {
      auto piece = std::min<size_t>(16384, total - at);
      if (at < split && at + piece > split)
        piece = split - at;
      std::string_view bytes(body.data() + at, piece);
      if (chunked) {
        char size[24];
        std::snprintf(size, sizeof size, "%zx\r\n", piece);
        ok = send_all(size) && send_all(bytes) && send_all("\r\n");
      } else {
        ok = send_all(bytes);
      }
      if (ok)
        stream_sent += static_cast<long>(piece);
      at += piece;
      if (at == split)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (ok && chunked)
      ok = send_all("0\r\n\r\n");
    if (!ok)
      ++stream_broken;
    ::close(fd);
  }).detach();
}

std::string s256(const std::string& verifier) {
  unsigned char digest[32];
  SHA256(reinterpret_cast<const unsigned char*>(verifier.data()), verifier.size(), digest);
  char b64[64];
  sodium_bin2base64(b64, sizeof b64, digest, sizeof digest, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  return b64;
}

/// Starts a token family; the caller holds the mutex.
std::string start_family(const std::string& refresh, const std::string& access) {
  auto id = "f" + std::to_string(++next_family);
  family f;
  f.current_refresh = refresh;
  f.current_access = access;
  by_refresh[refresh] = id;
  if (!access.empty())
    by_access[access] = id;
  families[id] = f;
  return id;
}
behaviour current;
long refresh_calls = 0;
/// Calls of the API under /papi/ (what the proxy sends).
long api_calls = 0;

void reply(Http::ResponseWriter& w, Http::Code code, const nlohmann::json& body,
           int retry_after = 0) {
  if (retry_after > 0)
    w.headers().add(std::make_shared<cm::http::named_header>("Retry-After",
                                                            std::to_string(retry_after)));
  w.send(code, body.dump(), MIME(Application, Json));
}

std::map<std::string, std::string> form(const std::string& body) {
  std::map<std::string, std::string> out;
  cm::http::parse_query(body, out);
  return out;
}

std::string basic(const std::string& user, const std::string& password) {
  auto plain = user + ":" + password;
  char b64[512];
  sodium_bin2base64(b64, sizeof b64, reinterpret_cast<const unsigned char*>(plain.data()),
                    plain.size(), sodium_base64_VARIANT_ORIGINAL);
  return std::string("Basic ") + b64;
}

struct key_check {
  std::string path;
  std::string header;
  std::string expected;
  nlohmann::json ok_body;
};

const std::vector<key_check>& key_checks() {
  static const std::vector<key_check> checks = {
    {"/v1/balance", "Authorization", "Bearer sk_test_good", {{"object", "balance"}}},
    {"/api/users/@me/", "Authorization", "Bearer phx_good", {{"email", "ops@acme.test"}}},
    {"/api/accounts/", "Authorization", "Klaviyo-API-Key pk_good",
     {{"data", {{{"attributes", {{"contact_information", {{"organization_name", "Acme"}}}}}}}}}},
    {"/api/account", "Authorization", basic("ops@acme.test", "gorgias_good"), {{"domain", "acme"}}},
    {"/api/v2/users/me.json", "Authorization", basic("ops@acme.test/token", "zd_good"),
     {{"user", {{"id", 1}, {"name", "Ops Agent"}}}}},
    {"/v2/user", "Authorization", "Bearer vcp_good", {{"user", {{"username", "acme-vercel"}}}}},
    {"/graphql/v2", "Authorization", "Bearer rw_good",
     {{"data", {{"me", {{"name", "Acme Ops"}, {"email", "ops@acme.test"}}}}}}},
    {"/v1/me", "X-Figma-Token", "figd_good", {{"handle", "acme-figma"}}},
  };
  return checks;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

class handler : public Http::Handler {
public:
  HTTP_PROTOTYPE(handler)

  void onRequest(const Http::Request& req, Http::ResponseWriter w) override {
    try {
      route(req, w);
    } catch (const std::exception&) {
      reply(w, Http::Code::Internal_Server_Error, {{"error", "fake_failure"}});
    }
    // Pistache 0.0.5 queues every answer by descriptor number and writes it
    // later. When a client dies meanwhile (a test SIGKILLs the server, or
    // the server gives up on a "slow" or "hang" answer), Pistache closes the
    // descriptor, a new client gets the same number, and the stale answer
    // reaches that new client. Writing now, on this reactor thread, while
    // the descriptor is still the asking client's, sends it where it
    // belongs or nowhere. (Delayed answers take their own path, above.)
    transport()->flush();
  }

private:
  void route(const Http::Request& req, Http::ResponseWriter& w) {
    auto path = req.resource();
    if (path == "/__seed") {
      auto body = nlohmann::json::parse(req.body());
      std::lock_guard<std::mutex> g{mutex};
      auto id = start_family(body.at("refresh_token").get<std::string>(),
                             body.value("access_token", ""));
      reply(w, Http::Code::Ok, {{"family", id}});
      return;
    }
    if (path == "/__behavior") {
      auto body = nlohmann::json::parse(req.body());
      std::lock_guard<std::mutex> g{mutex};
      behaviour b;
      b.mode = body.value("mode", "normal");
      b.count = body.value("count", -1);
      b.delay_ms = body.value("delay_ms", 0);
      b.retry_after = body.value("retry_after", 0);
      b.expires_in = body.value("expires_in", 3600);
      b.rotate = body.value("rotate", true);
      b.reuse_detection = body.value("reuse_detection", true);
      b.parent_valid_until_child_used = body.value("parent_valid_until_child_used", false);
      b.answer_delay_ms = body.value("answer_delay_ms", 0);
      current = b;
      reply(w, Http::Code::Ok, {{"ok", true}});
      return;
    }
    if (path == "/__stale_access") {
      // A token the provider no longer takes, as if revoked or rotated
      // elsewhere: its family's refresh token still works.
      auto body = nlohmann::json::parse(req.body());
      std::lock_guard<std::mutex> g{mutex};
      auto it = by_access.find(body.at("access_token").get<std::string>());
      if (it != by_access.end())
        families[it->second].current_access.clear();
      reply(w, Http::Code::Ok, {{"ok", it != by_access.end()}});
      return;
    }
    if (path.rfind("/papi/", 0) == 0) {
      provider_api(req, w, path);
      return;
    }
    if (path == "/__ga4") {
      auto body = nlohmann::json::parse(req.body());
      std::lock_guard<std::mutex> g{mutex};
      ga4_email = body.at("client_email").get<std::string>();
      ga4_public_key = body.at("public_key").get<std::string>();
      reply(w, Http::Code::Ok, {{"ok", true}});
      return;
    }
    if (contains(path, "/v1beta/properties/") && contains(path, "/metadata")) {
      auto auth = req.headers().tryGetRaw("Authorization");
      std::string token = auth ? auth->value() : "";
      if (token.rfind("Bearer ", 0) == 0)
        token = token.substr(7);
      std::lock_guard<std::mutex> g{mutex};
      if (!ga4_tokens.count(token)) {
        reply(w, Http::Code::Unauthorized, {{"error", {{"code", 401}, {"status", "UNAUTHENTICATED"}}}});
        return;
      }
      if (!contains(path, "/properties/123456/")) {
        reply(w, Http::Code::Forbidden, {{"error", {{"code", 403}, {"status", "PERMISSION_DENIED"}}}});
        return;
      }
      reply(w, Http::Code::Ok, {{"name", "properties/123456/metadata"}});
      return;
    }
    if (path == "/__id_token") {
      auto body = nlohmann::json::parse(req.body());
      id_token_settings s;
      if (body.contains("email"))
        s.email = body["email"].is_null() ? std::nullopt
                                          : std::optional{body["email"].get<std::string>()};
      s.email_verified = body.value("email_verified", true);
      s.sub = body.value("sub", s.sub);
      s.hd = body.value("hd", "");
      if (body.contains("aud"))
        s.aud = body["aud"];
      s.iss = body.value("iss", "");
      s.kid = body.value("kid", s.kid);
      auto sign_with = body.value("sign_with", "published");
      if (sign_with != "published" && sign_with != "other") {
        reply(w, Http::Code::Bad_Request, {{"error", "sign_with is published or other"}});
        return;
      }
      s.sign_with_other = sign_with == "other";
      std::lock_guard<std::mutex> g{mutex};
      id_settings = s;
      reply(w, Http::Code::Ok, {{"ok", true}});
      return;
    }
    if (path == "/__code") {
      auto body = nlohmann::json::parse(req.body().empty() ? "{}" : req.body());
      std::lock_guard<std::mutex> g{mutex};
      auto code = "code-" + std::to_string(++next_code);
      // No challenge: the postmessage flow's verifier stays in the browser.
      codes[code] = {body.value("redirect_uri", "postmessage"), "", body.value("scope", ""),
                     false, "", body.value("nonce", "")};
      reply(w, Http::Code::Ok, {{"code", code}});
      return;
    }
    if (path == "/jwks" || contains(path, "/oauth2/v3/certs")) {
      const auto& key = published_key(); // outside the mutex: may take a while
      reply(w, Http::Code::Ok, {{"keys", {cm::test::jwk_of(key, published_kid)}}});
      return;
    }
    if (path == "/__stats") {
      std::lock_guard<std::mutex> g{mutex};
      nlohmann::json fams = nlohmann::json::object();
      for (auto& [id, f] : families)
        fams[id] = {{"current_refresh", f.current_refresh}, {"current_access", f.current_access},
                    {"revoked", f.revoked}, {"generation", f.generation}};
      reply(w, Http::Code::Ok, {{"refresh_calls", refresh_calls}, {"families", fams},
                                {"revocations", revocations},
                                {"parent_reuses", parent_reuses}, {"api_calls", api_calls},
                                {"stream_sent", stream_sent.load()},
                                {"stream_broken", stream_broken.load()}});
      return;
    }
    if (path.size() >= 10 && path.compare(path.size() - 10, 10, "/authorize") == 0) {
      std::map<std::string, std::string> q;
      cm::http::parse_query(req.query().as_str(), q);
      std::lock_guard<std::mutex> g{mutex};
      auto code = "code-" + std::to_string(++next_code);
      codes[code] = {q["redirect_uri"], q["code_challenge"], q["scope"], false, "", q["nonce"]};
      auto location = q["redirect_uri"] + "?code=" + code + "&state=" + q["state"];
      if (q.count("app_id"))
        location += "&auth_code=" + code; // TikTok names it auth_code
      w.headers().add<Http::Header::Location>(location);
      w.send(Http::Code::Found, "");
      return;
    }
    if (path == "/revoke" || path.rfind("/applications/", 0) == 0) {
      std::string token;
      if (path == "/revoke") {
        token = form(req.body())["token"];
      } else {
        auto body = nlohmann::json::parse(req.body(), nullptr, false);
        token = body.is_object() ? body.value("access_token", "") : "";
      }
      std::lock_guard<std::mutex> g{mutex};
      std::string id;
      if (by_refresh.count(token)) id = by_refresh[token];
      if (by_access.count(token)) id = by_access[token];
      if (!id.empty()) {
        families[id].revoked = true;
        ++revocations;
      }
      if (path == "/revoke")
        reply(w, Http::Code::Ok, nlohmann::json::object());
      else
        w.send(id.empty() ? Http::Code::Not_Found : Http::Code::No_Content, "");
      return;
    }
    for (auto& check : key_checks()) {
      if (path.size() < check.path.size() ||
          path.compare(path.size() - check.path.size(), check.path.size(), check.path) != 0)
        continue;
      behaviour b;
      {
        std::lock_guard<std::mutex> g{mutex};
        b = current;
        if (current.count > 0 && --current.count == 0)
          current = behaviour{};
      }
      if (b.delay_ms > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(b.delay_ms));
      if (b.mode == "error500") {
        reply(w, Http::Code::Internal_Server_Error, {{"error", "server_error"}});
        return;
      }
      if (b.mode == "html") {
        w.send(Http::Code::Ok, "<html><body>Maintenance</body></html>", MIME(Text, Html));
        return;
      }
      if (b.mode == "big") {
        w.send(Http::Code::Ok, "{\"pad\":\"" + std::string(2 << 20, 'x') + "\"}",
               MIME(Application, Json));
        return;
      }
      auto given = req.headers().tryGetRaw(check.header);
      bool ok = given && given->value() == check.expected;
      if (check.path == "/api/accounts/" && !req.headers().tryGetRaw("revision")) {
        reply(w, Http::Code::Bad_Request, {{"errors", {{{"detail", "missing revision"}}}}});
        return;
      }
      if (check.path == "/graphql/v2") {
        // GraphQL: HTTP 200 either way, errors without data when refused.
        if (ok && contains(req.body(), "me"))
          reply(w, Http::Code::Ok, check.ok_body);
        else
          reply(w, Http::Code::Ok, {{"data", nullptr}, {"errors", {{{"message", "Not Authorized"}}}}});
        return;
      }
      if (ok)
        reply(w, Http::Code::Ok, check.ok_body);
      else
        reply(w, Http::Code::Unauthorized, {{"error", "unauthorized"}});
      return;
    }
    if (contains(path, "/oauth2/advertiser/get")) {
      auto token = req.headers().tryGetRaw("Access-Token");
      std::lock_guard<std::mutex> g{mutex};
      if (!token || !by_access.count(token->value())) {
        reply(w, Http::Code::Ok, {{"code", 40105}, {"message", "access token invalid"}});
        return;
      }
      reply(w, Http::Code::Ok,
            {{"code", 0}, {"message", "OK"},
             {"data", {{"list", {{{"advertiser_id", "7001"}, {"advertiser_name", "Acme TikTok"}},
                                 {{"advertiser_id", "7002"}, {"advertiser_name", "Acme EU"}}}}}}});
      return;
    }
    if (contains(path, "/me/adaccounts") || contains(path, "/me/permissions")) {
      std::map<std::string, std::string> q;
      cm::http::parse_query(req.query().as_str(), q);
      std::lock_guard<std::mutex> g{mutex};
      auto it = by_access.find(q["access_token"]);
      if (it == by_access.end() || families[it->second].revoked) {
        reply(w, Http::Code::Bad_Request, {{"error", {{"message", "Invalid OAuth access token"}}}});
        return;
      }
      if (contains(path, "/me/permissions")) {
        families[it->second].revoked = true;
        ++revocations;
        reply(w, Http::Code::Ok, {{"success", true}});
        return;
      }
      reply(w, Http::Code::Ok, {{"data", {{{"name", "Acme Ads"}, {"account_id", "act_1"}},
                                          {{"name", "Acme Brand"}, {"account_id", "act_2"}}}}});
      return;
    }
    if (contains(path, "/accessible-resources")) {
      reply(w, Http::Code::Ok,
            nlohmann::json::array({{{"id", "cloud-1"}, {"url", "https://acme.atlassian.net"},
                                    {"name", "acme"}, {"scopes", {"read:jira-work"}}},
                                   {{"id", "cloud-2"}, {"url", "https://acme-eu.atlassian.net"},
                                    {"name", "acme-eu"}, {"scopes", {"read:jira-work"}}}}));
      return;
    }
    if (contains(path, "/oauth2/revoke_token")) {
      auto body = nlohmann::json::parse(req.body(), nullptr, false);
      std::lock_guard<std::mutex> g{mutex};
      auto token = body.is_object() ? body.value("access_token", "") : "";
      if (by_access.count(token)) {
        families[by_access[token]].revoked = true;
        ++revocations;
      }
      reply(w, Http::Code::Ok, {{"code", 0}, {"message", "OK"}});
      return;
    }
    if (path == "/userinfo" || path == "/me") {
      auto auth = req.headers().tryGetRaw("Authorization");
      std::string token = auth ? auth->value() : "";
      if (token.rfind("Bearer ", 0) == 0)
        token = token.substr(7);
      std::lock_guard<std::mutex> g{mutex};
      auto it = by_access.find(token);
      if (it == by_access.end() || families[it->second].revoked ||
          families[it->second].current_access != token) {
        reply(w, Http::Code::Unauthorized, {{"error", "invalid_token"}});
        return;
      }
      reply(w, Http::Code::Ok, {{"login", "octocat"}, {"id", 1}});
      return;
    }
    auto ends_with = [&](const std::string& suffix) {
      return path.size() >= suffix.size() &&
             path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with("/token") || ends_with("/access_token") ||
        contains(path, "/oauth2/access_token")) {
      token(req, w);
      return;
    }
    reply(w, Http::Code::Not_Found, {{"error", "not_found"}});
  }

  /// What the proxy calls: an API under /papi/ that echoes what it got
  /// (method, path, query, headers, body), and answers a status, a delay,
  /// a size, a redirect, a stream, or a 401 for any token that is not
  /// current, on request by the path's last segments.
  void provider_api(const Http::Request& req, Http::ResponseWriter& w, const std::string& path) {
    auto segment_after = [&](const std::string& marker) -> std::string {
      auto at = path.find(marker);
      if (at == std::string::npos)
        return {};
      auto rest = path.substr(at + marker.size());
      return rest.substr(0, rest.find('/'));
    };
    auto header = [&](const char* name) {
      auto h = req.headers().tryGetRaw(name);
      return h ? h->value() : std::string{};
    };
    nlohmann::json echo = {{"method", Http::methodString(req.method())},
                           {"path", path},
                           {"body", req.body()}};
    echo["query"] = nlohmann::json::object();
    for (auto it = req.query().parameters_begin(); it != req.query().parameters_end(); ++it)
      echo["query"][it->first] = it->second;
    echo["headers"] = nlohmann::json::object();
    for (auto& [name, raw] : req.headers().rawList()) {
      std::string lower = name;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      echo["headers"][lower] = raw.value();
    }
    {
      std::lock_guard<std::mutex> g{mutex};
      ++api_calls;
    }
    // The credential as presented, by where it came, as digests: the
    // echo would otherwise carry it back (and the proxy redacts that).
    echo["credentials"] = nlohmann::json::object();
    for (auto name : {"authorization", "x-figma-token", "x-shopify-access-token", "access-token"})
      if (auto value = header(name); !value.empty())
        echo["credentials"][name] = cm::http::sha256_hex(value);
    if (auto token = req.query().get("access_token"))
      echo["credentials"]["query:access_token"] = cm::http::sha256_hex(*token);
    auto add = [&](const std::string& name, const std::string& value) {
      w.headers().add(std::make_shared<cm::http::named_header>(name, value));
    };
    // Headers the proxy must drop, and some it must pass on.
    add("Set-Cookie", "provider_session=s3cr3t; HttpOnly");
    add("X-RateLimit-Remaining", "41");
    add("X-Internal-Trace", "not-for-callers");
    if (auto code = segment_after("/status/"); !code.empty()) {
      int status = std::stoi(code);
      if (status == 429 || status == 503)
        add("Retry-After", "7");
      w.send(static_cast<Http::Code>(status), nlohmann::json{{"status", status}}.dump(),
             MIME(Application, Json));
      return;
    }
    if (path.find("/redirect") != std::string::npos) {
      add("Location", "http://127.0.0.1:9/elsewhere");
      w.send(Http::Code::Found, "", MIME(Text, Plain));
      return;
    }
    if (auto size = segment_after("/stream/"); !size.empty()) {
      auto secret = path.find("/with-credential") != std::string::npos ? header("Authorization")
                                                                         : std::string{};
      if (secret.rfind("Bearer ", 0) == 0)
        secret = secret.substr(7);
      stream_body(w, std::stoul(size), path.find("/chunked") != std::string::npos, secret);
      return;
    }
    if (auto size = segment_after("/big/"); !size.empty()) {
      w.send(Http::Code::Ok, std::string(std::stoul(size), 'x'), MIME(Text, Plain));
      return;
    }
    if (path.find("/echo-credential") != std::string::npos) {
      // Graph API's paging links carry the token given in the query.
      auto token = req.query().get("access_token").value_or(header("Authorization"));
      echo["paging"] = {{"next", "https://graph.example/v22.0/me?access_token=" + token}};
      reply(w, Http::Code::Ok, echo);
      return;
    }
    if (path.find("/needs-current") != std::string::npos) {
      auto token = header("Authorization");
      if (token.rfind("Bearer ", 0) == 0)
        token = token.substr(7);
      std::lock_guard<std::mutex> g{mutex};
      auto it = by_access.find(token);
      if (it == by_access.end() || families[it->second].current_access != token) {
        reply(w, Http::Code::Unauthorized, {{"error", "invalid_token"}});
        return;
      }
    }
    if (auto ms = segment_after("/slow/"); !ms.empty()) {
      answer_later(w, std::chrono::milliseconds(std::stoi(ms)), echo);
      return;
    }
    reply(w, Http::Code::Ok, echo);
  }

  void token(const Http::Request& req, Http::ResponseWriter& w) {
    std::map<std::string, std::string> params;
    auto type = req.headers().tryGetRaw("Content-Type");
    if (type && type->value().find("json") != std::string::npos) {
      auto body = nlohmann::json::parse(req.body());
      for (auto& [k, v] : body.items())
        if (v.is_string())
          params[k] = v.get<std::string>();
    } else {
      params = form(req.body());
    }
    // Meta sends everything in the query of a GET.
    std::map<std::string, std::string> query;
    cm::http::parse_query(req.query().as_str(), query);
    for (auto& [k, v] : query)
      params.insert({k, v});
    bool tiktok = contains(req.resource(), "/oauth2/access_token");
    if (tiktok) {
      params["client_id"] = params["app_id"];
      params["client_secret"] = params["secret"];
    }
    auto basic = req.headers().tryGetRaw("Authorization");
    bool client_ok = (params["client_id"] == "cm-test-client" &&
                      params["client_secret"] == "cm-test-secret") ||
                     (basic && basic->value() == "Basic Y20tdGVzdC1jbGllbnQ6Y20tdGVzdC1zZWNyZXQ=");
    behaviour b;
    if (params["grant_type"] != "urn:ietf:params:oauth:grant-type:jwt-bearer") {
      std::lock_guard<std::mutex> g{mutex};
      ++refresh_calls;
      b = current;
      if (current.count > 0 && --current.count == 0)
        current = behaviour{};
    }
    if (b.delay_ms > 0 || b.mode == "slow")
      std::this_thread::sleep_for(std::chrono::milliseconds(b.delay_ms > 0 ? b.delay_ms : 2000));
    if (b.mode == "hang")
      std::this_thread::sleep_for(std::chrono::seconds(5));
    if (b.mode == "rate_limit") {
      reply(w, Http::Code::Too_Many_Requests, {{"error", "rate_limited"}}, b.retry_after);
      return;
    }
    if (b.mode == "error500") {
      reply(w, Http::Code::Internal_Server_Error, {{"error", "server_error"}}, b.retry_after);
      return;
    }
    if (b.mode == "malformed") {
      w.send(Http::Code::Ok, "{not json", MIME(Application, Json));
      return;
    }
    if (b.mode == "invalid_grant") {
      reply(w, Http::Code::Bad_Request, {{"error", "invalid_grant"}});
      return;
    }
    bool jwt_bearer = params["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer";
    if (!client_ok && !jwt_bearer) { // a JWT-bearer assertion is its own client proof
      reply(w, Http::Code::Unauthorized, {{"error", "invalid_client"}});
      return;
    }
    if (jwt_bearer) {
      std::lock_guard<std::mutex> g{mutex};
      ++refresh_calls;
      jwt_t* raw = nullptr;
      auto& assertion = params["assertion"];
      bool ok = !ga4_public_key.empty() &&
                jwt_decode(&raw, assertion.c_str(),
                           reinterpret_cast<const unsigned char*>(ga4_public_key.data()),
                           static_cast<int>(ga4_public_key.size())) == 0 &&
                jwt_get_alg(raw) == JWT_ALG_RS256;
      if (ok) {
        auto iss = jwt_get_grant(raw, "iss");
        auto scope = jwt_get_grant(raw, "scope");
        auto aud = jwt_get_grant(raw, "aud");
        ok = iss && ga4_email == iss && scope && contains(scope, "analytics.readonly") && aud &&
             contains(aud, "/token");
      }
      if (raw)
        jwt_free(raw);
      if (!ok) {
        reply(w, Http::Code::Bad_Request, {{"error", "invalid_grant"}});
        return;
      }
      auto token = "ya29-" + std::to_string(++ga4_counter);
      ga4_tokens.insert(token);
      reply(w, Http::Code::Ok, {{"access_token", token}, {"token_type", "Bearer"}, {"expires_in", 3600}});
      return;
    }
    std::unique_lock<std::mutex> g{mutex};
    if (params["grant_type"] == "fb_exchange_token") {
      auto it = by_access.find(params["fb_exchange_token"]);
      if (it == by_access.end()) {
        reply(w, Http::Code::Bad_Request, {{"error", {{"message", "Invalid OAuth access token"}}}});
        return;
      }
      auto long_lived = "ll-" + params["fb_exchange_token"];
      families[it->second].current_access = long_lived;
      by_access[long_lived] = it->second;
      reply(w, Http::Code::Ok, {{"access_token", long_lived}, {"token_type", "bearer"},
                                {"expires_in", 5183944}});
      return;
    }
    if (params["grant_type"] == "authorization_code" || params.count("auth_code") ||
        (params.count("code") && params["grant_type"].empty())) {
      auto code = params.count("code") ? params["code"] : params["auth_code"];
      auto it = codes.find(code);
      if (it == codes.end() && tiktok) {
        // TikTok reports failures inside a 200 envelope.
        reply(w, Http::Code::Ok, {{"code", 40110}, {"message", "auth_code is invalid"}});
        return;
      }
      if (it == codes.end()) {
        reply(w, Http::Code::Bad_Request, {{"error", "invalid_grant"}});
        return;
      }
      auto& pc = it->second;
      if (pc.used) {
        // RFC 6749 §4.1.2: a reused code revokes what it issued.
        if (!pc.family.empty())
          families[pc.family].revoked = true;
        reply(w, Http::Code::Bad_Request, {{"error", "invalid_grant"}});
        return;
      }
      pc.used = true;
      if (params.count("redirect_uri") && params["redirect_uri"] != pc.redirect_uri) {
        reply(w, Http::Code::Bad_Request, {{"error", "invalid_grant"}});
        return;
      }
      if (!pc.challenge.empty() && s256(params["code_verifier"]) != pc.challenge) {
        reply(w, Http::Code::Bad_Request, {{"error", "invalid_grant"}});
        return;
      }
      pc.family = start_family("rt-" + code, "at-" + code);
      if (tiktok) {
        // Long-term advertiser token, no refresh token, inside an envelope.
        pc.family = start_family("unused-" + code, "tt-" + code);
        reply(w, Http::Code::Ok,
              {{"code", 0}, {"message", "OK"}, {"request_id", "r-1"},
               {"data", {{"access_token", "tt-" + code}, {"advertiser_ids", {"7001", "7002"}},
                         {"scope", {4, 5}}}}});
        return;
      }
      if (params.count("grant_type") == 0 || params["grant_type"].empty()) {
        // Meta's short-lived user token: no refresh token.
        pc.family = start_family("unused-" + code, "sl-" + code);
        reply(w, Http::Code::Ok, {{"access_token", "sl-" + code}, {"token_type", "bearer"},
                                  {"expires_in", 5183}});
        return;
      }
      // Grants what was asked (comma-separated scopes come back spaced).
      auto scope = pc.scope.empty() ? std::string{"repo actions"} : pc.scope;
      std::replace(scope.begin(), scope.end(), ',', ' ');
      nlohmann::json body = {{"access_token", "at-" + code}, {"token_type", "bearer"},
                             {"scope", scope}, {"refresh_token", "rt-" + code}};
      if (b.mode != "no_expires_in")
        body["expires_in"] = b.expires_in;
      if (has_scope(pc.scope, "openid") || has_scope(params["scope"], "openid"))
        body["id_token"] = mint_id_token(pc.nonce);
      reply(w, Http::Code::Ok, body);
      return;
    }
    if (params["grant_type"] != "refresh_token") {
      reply(w, Http::Code::Bad_Request, {{"error", "unsupported_grant_type"}});
      return;
    }
    auto presented = params["refresh_token"];
    auto it = by_refresh.find(presented);
    if (it == by_refresh.end()) {
      reply(w, Http::Code::Bad_Request, {{"error", "invalid_grant"}});
      return;
    }
    auto& f = families[it->second];
    if (f.revoked) {
      reply(w, Http::Code::Bad_Request, {{"error", "invalid_grant"}});
      return;
    }
    bool parent_again = b.parent_valid_until_child_used && presented == f.parent_refresh &&
                        !f.current_presented;
    if (parent_again) {
      // The child was never used: void it, answer as if it were the first use.
      ++parent_reuses;
      by_refresh.erase(f.current_refresh);
      f.used_refresh.insert(f.current_refresh);
    } else if (presented == f.current_refresh) {
      f.current_presented = true;
    }
    if (f.used_refresh.count(presented) && b.reuse_detection && !parent_again) {
      // Reuse of a rotated refresh token: assume theft, revoke everything.
      f.revoked = true;
      reply(w, Http::Code::Bad_Request, {{"error", "invalid_grant"}});
      return;
    }
    ++f.generation;
    auto suffix = std::to_string(f.generation);
    f.current_access = "at-" + it->second + "-" + suffix;
    by_access[f.current_access] = it->second;
    nlohmann::json body = {{"access_token", f.current_access}, {"token_type", "bearer"},
                           {"scope", "repo actions"}};
    if (b.mode != "no_expires_in")
      body["expires_in"] = b.expires_in;
    if (b.rotate) {
      f.used_refresh.insert(presented);
      f.parent_refresh = presented;
      f.current_presented = false;
      f.current_refresh = "rt-" + it->second + "-" + suffix;
      by_refresh[f.current_refresh] = it->second;
      body["refresh_token"] = f.current_refresh;
    }
    g.unlock();
    if (b.answer_delay_ms > 0) {
      answer_later(w, std::chrono::milliseconds(b.answer_delay_ms), body);
      return;
    }
    reply(w, Http::Code::Ok, body);
  }
};

} // namespace

int main(int argc, char** argv) {
  uint16_t port = 0;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--port")
      port = static_cast<uint16_t>(std::stoi(argv[i + 1]));
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  Http::Endpoint endpoint(Address("127.0.0.1", Port(port)));
  endpoint.init(Http::Endpoint::options().threads(16).maxRequestSize(1 << 20));
  endpoint.setHandler(Http::make_handler<handler>());
  endpoint.serveThreaded();
  std::thread warm_up([] {
    try {
      published_key();
    } catch (const std::exception&) {
      // Retried by the first request that needs the key.
    }
  });
  {
    std::lock_guard<std::mutex> g{mutex};
    own_origin = "http://127.0.0.1:" + std::to_string(static_cast<uint16_t>(endpoint.getPort()));
  }
  std::cout << "listening " << endpoint.getPort() << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  endpoint.shutdown();
  warm_up.join();
  return 0;
}

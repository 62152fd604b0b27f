#include "api/proxy_routes.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string_view>

#include <strings.h>

#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include "api/token_routes.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/time.hpp"
#include "provider/credential_scheme.hpp"
#include "provider/curl_engine.hpp"
#include "provider/oauth_protocol.hpp"
#include "proxy/headers.hpp"
#include "proxy/redacting_window.hpp"
#include "proxy/target.hpp"
#include "storage/audit_rows.hpp"

namespace cm {

namespace {

constexpr std::string_view route_prefix = "/api/proxy/";

/// The proxy's own parameters, never forwarded.
constexpr std::string_view user_param = "cm_user_id";
constexpr std::string_view team_param = "cm_team_id";
constexpr const char* user_header = "X-Connection-User-Id";
constexpr const char* team_header = "X-Connection-Team-Id";

/// One proxied call, shared by the continuations of its steps.
struct proxied {
  call c;
  const config::provider_entry* entry = nullptr;
  connection_key key;
  /// After /api/proxy/{provider}/, as sent (still encoded).
  std::string path;
  /// The query as sent, without the proxy's own parameters.
  std::string query;
  proxy::header_list forwarded;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  proxy::team_in_flight::slot slot;
  /// The call, lookups and every attempt included, ends by then (504).
  std::chrono::steady_clock::time_point deadline;
  /// Every form of the credential the last attempt presented (to redact
  /// it from the answer).
  std::vector<std::string> credential_forms;
  bool refreshed = false;
  /// The front actor that made the call: the engine's thread hands the
  /// answer back to it (take_proxy_answer), never touching `c.self`.
  front_actor front;
};
using proxied_ptr = std::shared_ptr<proxied>;

} // namespace

/// What the engine's thread hands back (actors/fwd.hpp).
struct proxy_answer {
  proxied_ptr call;
  token_grant grant;
  /// Its body when it was held whole; empty when it was streamed.
  outbound_response response;
  /// Streamed to the caller already: only the audit row and the metric
  /// are left, with this outcome ("2xx", …, or why the body was cut).
  bool streamed = false;
  std::string outcome;
  /// Why a streamed body was cut short ("" when it was not).
  std::string cut;
};

namespace {

/// The part of the raw target after "/api/proxy/<provider>", split into
/// path and query; false when the raw target does not start that way
/// (e.g. "//" or an encoded provider name, which normalization hid).
bool split_target(const std::string& raw, const std::string& provider, std::string& path,
                  std::string& query) {
  auto head = std::string(route_prefix) + provider;
  if (raw.compare(0, head.size(), head) != 0)
    return false;
  auto rest = std::string_view(raw).substr(head.size());
  if (!rest.empty() && rest.front() != '/' && rest.front() != '?')
    return false;
  if (!rest.empty() && rest.front() == '/')
    rest.remove_prefix(1);
  auto mark = rest.find('?');
  path = std::string(rest.substr(0, mark));
  query = mark == std::string_view::npos ? std::string{} : std::string(rest.substr(mark + 1));
  return true;
}

/// `query` without the proxy's own parameters, the rest in its order.
std::string strip_own_params(std::string_view query) {
  std::string out;
  size_t start = 0;
  while (start <= query.size() && !query.empty()) {
    auto end = query.find('&', start);
    if (end == std::string_view::npos)
      end = query.size();
    auto piece = query.substr(start, end - start);
    std::string name;
    bool own = http::percent_decode(piece.substr(0, piece.find('=')), name) &&
               (name == user_param || name == team_param);
    if (!own && !piece.empty()) {
      if (!out.empty())
        out += '&';
      out.append(piece);
    }
    start = end + 1;
  }
  return out;
}

std::string status_class(int64_t status) {
  return std::to_string(status / 100) + "xx";
}

int64_t elapsed_ms(const proxied& p) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               p.started)
    .count();
}

/// Records a call made (audit row, metric) and answers. Audit rows of
/// calls already made are always taken: refusing one would not undo the
/// call (and there was room when it was made, `attempt`).
void record(const proxied_ptr& p, int status, std::string_view outcome, std::string_view cut) {
  auto& ctx = p->c.ctx();
  auto& req = p->c.ex->req();
  auto row = storage::proxy_call_row(p->c.who.subject, p->key, req.remote_address,
                                     req.request_id, req.method, "/" + p->path, status,
                                     elapsed_ms(*p), std::string(cut));
  if (ctx.audit) {
    if (ctx.audit->push(std::move(row)) == storage::audit_queue::pushed::queued_wake)
      caf::anon_send(ctx.configs, audit_atom_v);
  } else {
    caf::anon_send(ctx.configs, audit_atom_v, std::move(row));
  }
  metrics::proxy_call(p->entry->name, outcome);
}

void finish(const proxied_ptr& p, http::response res, std::string_view outcome) {
  record(p, res.status, outcome, "");
  p->c.ex->reply(std::move(res));
}

/// A refusal of ours before any call: counted, not audited (nothing was
/// done on the connection, and a flood of refusals must not become a
/// flood of rows).
void refuse(const proxied_ptr& p, http::response res) {
  metrics::proxy_call(p->entry->name, "refused");
  p->c.ex->reply(std::move(res));
}

http::response timeout_response() {
  auto res = http::json_response(
    504, {{"error",
           {{"code", "provider_timeout"},
            {"message", "the provider did not answer in time (proxy.timeout_ms)"}}}});
  res.error_code = "provider_timeout";
  return res;
}

void attempt(const proxied_ptr& p, const token_grant& grant);

/// The provider's answer, or ours when none usable came.
void answer(const proxied_ptr& p, const token_grant& grant, outbound_response res) {
  switch (res.error) {
    case transport_error::none:
      break;
    case transport_error::timeout_before_send:
    case transport_error::timeout_after_send:
      finish(p, timeout_response(), "timeout");
      return;
    case transport_error::cancelled:
      finish(p, http::error_response(ec::unavailable, "shutting down"), "unreachable");
      return;
    case transport_error::too_large:
      finish(p,
             http::error_response(ec::provider_failed,
                                  "the provider's answer exceeds proxy.max_response_bytes"),
             "too_large");
      return;
    default:
      finish(p, http::error_response(ec::provider_failed, "the provider could not be reached"),
             "unreachable");
      return;
  }
  // A 401 may mean the token died early (revoked at the provider, rotated
  // elsewhere): one forced refresh, shared with any other forced refresh of
  // the connection, then one retry. Keys cannot be refreshed.
  if (res.status == 401 && !p->refreshed && grant.kind != connection_kind::api_key) {
    p->refreshed = true;
    metrics::proxy_refresh(p->entry->name);
    auto old = std::make_shared<outbound_response>(std::move(res));
    p->c.self->request(p->c.ctx().registry, budget(p->c), get_token_atom_v, p->key, true)
      .then(
        [p, old, grant](const token_grant& fresh) {
          if (fresh.access_token.reveal() == grant.access_token.reveal()) {
            answer(p, grant, std::move(*old));
            return;
          }
          attempt(p, fresh);
        },
        // No new token (needs_reauth, the provider down): the provider's
        // own 401 is the truth the caller gets.
        [p, old, grant](const caf::error&) { answer(p, grant, std::move(*old)); });
    return;
  }
  http::response out;
  out.status = static_cast<int>(res.status);
  out.headers = proxy::returned_headers(res.headers, p->credential_forms, out.content_type);
  if (out.content_type.empty())
    out.content_type = "application/octet-stream";
  out.body = std::move(res.body);
  if (proxy::redact(out.body, p->credential_forms) > 0)
    log::warn("proxy", "the provider's answer carried the credential; redacted",
              {{"request_id", p->c.ex->req().request_id}, {"provider", p->entry->name}});
  auto outcome = status_class(res.status);
  finish(p, std::move(out), outcome);
}

/// Takes a provider's answer as it comes, on the proxy engine's thread.
/// While it is small (up to proxy.stream_after_bytes), or a 401 that may
/// be retried, it is held, and the front actor answers with it whole (and
/// a Content-Length). Past that size it is streamed: the head (status, safe
/// headers) goes out, then each piece, redacted through a window that
/// holds back what may be the start of a credential. The whole body stays
/// within proxy.max_response_bytes: an answer that announces more is a
/// 502, one that grows past it mid-stream is cut (the chunked body never
/// ends, so the caller sees it is short). A caller that reads slowly
/// pauses the transfer; one that is gone stops it.
class answer_taker : public stream_consumer {
public:
  answer_taker(proxied_ptr p, token_grant grant, curl_engine& engine, int64_t cap,
               int64_t stream_after)
    : p_(std::move(p)), grant_(std::move(grant)), engine_(engine), cap_(cap),
      stream_after_(stream_after) {}

  verdict on_body(const outbound_response& head, std::string_view bytes) override {
    if (!stream_) {
      if (held_.empty() && announced_length(head) > cap_) {
        cut_ = "too_large";
        return verdict::stop;
      }
      if (static_cast<int64_t>(held_.size() + bytes.size()) > cap_) {
        cut_ = "too_large";
        return verdict::stop;
      }
      held_.append(bytes);
      total_ = static_cast<int64_t>(held_.size());
      if (total_ >= stream_after_ && !may_retry(head) && !cannot_stream_)
        return start_streaming(head);
      return verdict::taken;
    }
    if (stream_->failed()) {
      cut_ = "client_gone";
      return verdict::stop;
    }
    // The caller is behind: wait for it to read (the bytes come again).
    if (stream_->full()) {
      if (stream_->wait_for_room(engine_.resumer(transfer_id)))
        return verdict::pause;
    }
    total_ += static_cast<int64_t>(bytes.size());
    if (total_ > cap_) {
      cut_ = "too_large";
      return verdict::stop;
    }
    if (!stream_->push(window_->push(bytes))) {
      cut_ = "client_gone";
      return verdict::stop;
    }
    return verdict::taken;
  }

  void on_done(outbound_response res) override {
    auto answer = std::make_shared<proxy_answer>();
    answer->call = p_;
    answer->grant = grant_;
    if (!stream_) {
      if (cut_ == "too_large")
        res.error = transport_error::too_large;
      else if (res.error == transport_error::none)
        res.body = std::move(held_);
      answer->response = std::move(res);
    } else {
      bool complete = res.error == transport_error::none && cut_.empty();
      if (complete && !stream_->push(window_->finish())) {
        complete = false;
        cut_ = "client_gone";
      }
      stream_->end(complete);
      if (window_->redactions() > 0)
        log::warn("proxy", "the provider's answer carried the credential; redacted",
                  {{"request_id", p_->c.ex->req().request_id}, {"provider", p_->entry->name}});
      if (cut_.empty() && !complete)
        cut_ = res.error == transport_error::timeout_after_send ||
                   res.error == transport_error::timeout_before_send
                 ? "timeout"
                 : "unreachable";
      answer->streamed = true;
      answer->response.status = res.status;
      answer->cut = cut_;
      answer->outcome = cut_.empty() ? status_class(res.status) : cut_;
    }
    // The front actor records it (and answers a held answer).
    auto front = p_->front;
    caf::anon_send(front, proxied_atom_v, std::move(answer));
  }

private:
  static int64_t announced_length(const outbound_response& head) {
    auto length = head.header("content-length");
    if (length.empty() || length.size() > 18 ||
        length.find_first_not_of("0123456789") != std::string::npos)
      return -1;
    return std::stoll(length);
  }

  /// A 401 the front actor may answer with a refresh and a retry: held.
  bool may_retry(const outbound_response& head) const {
    return head.status == 401 && !p_->refreshed && grant_.kind != connection_kind::api_key;
  }

  verdict start_streaming(const outbound_response& head) {
    http::response out;
    out.status = static_cast<int>(head.status);
    out.headers = proxy::returned_headers(head.headers, p_->credential_forms, out.content_type);
    if (out.content_type.empty())
      out.content_type = "application/octet-stream";
    http::body_stream::options opts;
    opts.room = static_cast<size_t>(stream_after_);
    // The transfer ends by the deadline; what is left then has a second
    // to reach the caller.
    opts.deadline = p_->deadline + std::chrono::seconds(1);
    if (!p_->c.ex->can_stream_body()) {
      cannot_stream_ = true; // held whole, within the cap
      return verdict::taken;
    }
    stream_ = p_->c.ex->start_body(std::move(out), opts);
    if (!stream_) {
      cut_ = "client_gone";
      return verdict::stop;
    }
    window_.emplace(p_->credential_forms);
    bool open = stream_->push(window_->push(held_));
    std::string{}.swap(held_);
    if (!open) {
      cut_ = "client_gone";
      return verdict::stop;
    }
    return verdict::taken;
  }

  proxied_ptr p_;
  token_grant grant_;
  curl_engine& engine_;
  int64_t cap_;
  int64_t stream_after_;
  std::string held_;
  int64_t total_ = 0;
  bool cannot_stream_ = false;
  std::shared_ptr<http::body_stream> stream_;
  std::optional<proxy::redacting_window> window_;
  std::string cut_;
};

/// One call to the provider with `grant`'s credential.
void attempt(const proxied_ptr& p, const token_grant& grant) {
  auto& ctx = p->c.ctx();
  auto& entry = *p->entry;
  auto values = nlohmann::json::parse(grant.metadata, nullptr, false);
  if (!values.is_object())
    values = nlohmann::json::object();
  for (auto& [k, v] : entry.template_defaults)
    if (!values.contains(k))
      values[k] = v;
  auto base = oauth::expand_url(entry, entry.api->base_url, values);
  if (!base) {
    refuse(p, http::error_response(ec::conflict,
                                   "the connection lacks what the provider's API base URL needs "
                                   "(e.g. the shop or site); connect it again"));
    return;
  }
  auto target = proxy::target_under(*base, p->path, p->query);
  if (!target.allowed()) {
    refuse(p, http::error_response(ec::bad_request, target.problem));
    return;
  }
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                p->deadline - std::chrono::steady_clock::now())
                .count();
  if (left <= 0) {
    finish(p, timeout_response(), "timeout");
    return;
  }
  // A call is audited once made; when the audit log cannot keep up, no
  // call is made (as a token read is not served unaudited).
  if (ctx.audit && ctx.audit->size() >= ctx.audit->capacity()) {
    refuse(p, http::error_response(ec::unavailable,
                                   "the audit log is behind; nothing was called, retry later", 1));
    return;
  }
  outbound_request out;
  auto& req = p->c.ex->req();
  out.method = req.method;
  out.url = target.url;
  out.headers = p->forwarded;
  out.timeout_ms = left;
  out.max_response_bytes = ctx.cfg.proxy.max_response_bytes;
  out.provider = entry.name;
  if (req.method != "GET" && req.method != "HEAD")
    out.body = req.body;
  auto token = grant.access_token.reveal();
  auto before = out.headers.size();
  bool key = grant.kind == connection_kind::api_key && entry.api_key;
  if (key)
    credential::present_api_key(*entry.api_key, token, values, out);
  else
    credential::present_token(entry.api_auth(), token, out);
  // The credential, and the header values it went out in.
  std::vector<std::string> presented = {token};
  for (auto i = before; i < out.headers.size(); ++i)
    presented.push_back(out.headers[i].second);
  // The catalog's constant headers (Klaviyo's revision), unless the caller
  // chose its own value of a header the provider lets it choose.
  if (key)
    for (auto& [name, value] : entry.api_key->headers) {
      bool chosen = false;
      for (auto& [sent, ignored] : p->forwarded)
        chosen = chosen || strcasecmp(sent.c_str(), name.c_str()) == 0;
      if (!chosen)
        out.headers.emplace_back(name, value);
    }
  p->credential_forms = proxy::credential_forms(presented);
  // The engine enforces the deadline (504 below). The answer comes to an
  // answer_taker on the engine's thread, which never waits there: a small
  // answer goes to the front actor whole, a large one is streamed through
  // the writer thread of the HTTP server (http/body_stream.hpp).
  auto taker = std::make_shared<answer_taker>(p, grant, *ctx.proxy_engine,
                                              ctx.cfg.proxy.max_response_bytes,
                                              ctx.cfg.proxy.stream_after_bytes);
  ctx.proxy_engine->submit_streaming(std::move(out), std::move(taker));
}

/// The connection is known: the team's limits, then its token.
void with_connection(const proxied_ptr& p, const connection_key& key) {
  p->key = key;
  auto& ctx = p->c.ctx();
  const auto& cfg = ctx.cfg.proxy;
  // One bucket per (service, team): a team that floods the proxy through a
  // shared service empties its own bucket, not the other teams'.
  if (ctx.cfg.rate_limit.enabled && ctx.limiter) {
    auto bucket = "proxy:" + std::to_string(p->c.who.subject.size()) + ":" + p->c.who.subject +
                  key.team_id;
    auto verdict = ctx.limiter->take(bucket, {cfg.burst, cfg.per_minute},
                                     http::rate_limiter::clock::now());
    if (!verdict.allowed) {
      refuse(p, http::error_response(ec::rate_limited,
                                     "too many proxied calls for this team; retry later",
                                     verdict.retry_after_s));
      return;
    }
  }
  p->slot = ctx.proxy_calls ? ctx.proxy_calls->enter(key.team_id, cfg.team_in_flight) : nullptr;
  if (ctx.proxy_calls && !p->slot) {
    refuse(p, http::error_response(ec::rate_limited,
                                   "too many proxied calls of this team are open; retry later",
                                   1));
    return;
  }
  // The token as a token read gets it: the snapshot when it is current,
  // else the connection actor (which refreshes first inside the window).
  if (ctx.board)
    if (auto snapshot = ctx.board->serve(key, unix_now_ms())) {
      attempt(p, snapshot->grant);
      return;
    }
  p->c.self->request(ctx.registry, budget(p->c), get_token_atom_v, key, false)
    .then([p](const token_grant& g) { attempt(p, g); },
          [p](const caf::error& err) { refuse(p, http::error_response(err)); });
}

void proxy_call(const call& c) {
  auto& ctx = c.ctx();
  if (!ctx.cfg.proxy.enabled) {
    c.ex->reply_error(ec::not_found, "the proxy is off (proxy.enabled)");
    return;
  }
  auto entry = known_provider(c, c.params.at("provider"));
  if (!entry)
    return;
  if (!entry->api) {
    c.ex->reply_error(ec::not_found, "the catalog names no API base URL for this provider");
    return;
  }
  if (ctx.proxy_engine == nullptr) {
    c.ex->reply_error(ec::unavailable, "the proxy has no engine in this process");
    return;
  }
  auto p = std::make_shared<proxied>();
  p->c = c;
  p->entry = entry;
  p->front = caf::actor_cast<front_actor>(c.self);
  // From the request's arrival: Pistache answers 408 for a request not
  // answered within listen.request_timeout + 5 s, and proxy.timeout_ms is
  // at most request_timeout (config/service_config.cpp).
  p->deadline = c.ex->req().received + std::chrono::milliseconds(ctx.cfg.proxy.timeout_ms);
  auto& req = c.ex->req();
  std::string raw_query;
  if (!split_target(req.raw_target, entry->name, p->path, raw_query)) {
    c.ex->reply_error(ec::bad_request,
                      "the path must be /api/proxy/<provider>/<path under the provider's API>");
    return;
  }
  p->query = strip_own_params(raw_query);
  if (auto problem = proxy::request_problem(p->path, p->query); !problem.empty()) {
    c.ex->reply_error(ec::bad_request, problem);
    return;
  }
  // Where the token goes in the query (Meta), the caller cannot put a
  // value of its own: the provider would read one of two.
  if (auto auth = entry->api_auth(); auth.rfind("query:", 0) == 0) {
    std::map<std::string, std::string> params;
    if (!http::parse_query(p->query, params) || params.count(auth.substr(6)) > 0) {
      c.ex->reply_error(ec::bad_request,
                        "the query parameter " + auth.substr(6) + " is the proxy's to set");
      return;
    }
  }
  auto named = [&](const char* header, std::string_view param) {
    auto value = req.header(header);
    return value.empty() ? req.query_param(std::string(param)).value_or("") : value;
  };
  auto user = named(user_header, user_param);
  auto team = named(team_header, team_param);
  if (user.empty()) {
    c.ex->reply_error(ec::bad_request, std::string("name the connection's user: ") + user_header +
                                         " or the query parameter " + std::string(user_param));
    return;
  }
  p->forwarded = proxy::forwarded_request_headers(req.headers, entry->api->forward_headers);
  find_connection(c, team, user, entry->name,
                  [p](const call&, const connection_key& key) { with_connection(p, key); });
}

api::route proxy_route(const std::string& method) {
  std::string lower = method;
  for (auto& ch : lower)
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  bool with_body = method == "POST" || method == "PUT" || method == "PATCH";
  api::route_doc doc{
    "proxy" + std::string(1, method[0]) + lower.substr(1),
    "proxy",
    method + " through the proxy, with the connection's stored credential",
    "Calls the provider's API base URL (the catalog's api.base_url, with the connection's shop, "
    "site, host or domain filled in) joined with {path} and the query, with the caller's " +
      method +
      ", body and content headers, and the connection's credential in the provider's own "
      "scheme. Name the connection with X-Connection-User-Id (and X-Connection-Team-Id when the "
      "user has the provider in several teams) or the query parameters cm_user_id and "
      "cm_team_id; neither reaches the provider, nor do the caller's Authorization, cookies or "
      "hop-by-hop headers. A path that would leave the base (dot segments, encoded slashes, "
      "another host) is 400. The provider's status, body and safe headers come back as they "
      "are (Retry-After included); a 401 forces one refresh of an OAuth token and one retry. "
      "Redirects are not followed. Each call is audited. Draws from the (service, team) bucket "
      "proxy.burst / proxy.per_minute and the team's proxy.team_in_flight.",
    {{std::string(user_param), "the connection's user (or the X-Connection-User-Id header)"},
     {std::string(team_param), "the connection's team (or the X-Connection-Team-Id header)"}},
    with_body ? nlohmann::json::object() : nlohmann::json(nullptr),
    {{200, "the provider's answer as it came: any status, its body and safe headers",
      nlohmann::json::object(), "*/*",
      {{"Retry-After", "the provider's, unchanged (429, 503)"}}}},
    {404, 409, 429, 502, 504},
    false,
    "*/*"};
  return {method, "/api/proxy/{provider}/{path*}", http::access::service, http::scope_proxy,
          proxy_call, http::metering::by_handler, std::move(doc)};
}

} // namespace

void take_proxy_answer(const proxy_answer_ptr& a) {
  if (a->streamed)
    record(a->call, static_cast<int>(a->response.status), a->outcome, a->cut);
  else
    answer(a->call, a->grant, std::move(a->response));
}

std::vector<api::route> proxy_routes() {
  std::vector<api::route> routes;
  for (auto method : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
    routes.push_back(proxy_route(method));
  return routes;
}

} // namespace cm

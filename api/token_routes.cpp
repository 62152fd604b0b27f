#include "api/token_routes.hpp"

#include "common/metrics.hpp"
#include "storage/audit_rows.hpp"

#include <string_view>

#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include "common/time.hpp"

namespace cm {

namespace {

constexpr std::string_view route_prefix = "/api/internal/tokens/";

/// Seconds a service waits before asking again when the audit log cannot
/// keep up: long enough for a batch or two to be written.
constexpr int64_t audit_retry_after_s = 1;

nlohmann::json grant_json(const token_grant& g) {
  auto metadata = nlohmann::json::parse(g.metadata, nullptr, false);
  return {{"provider", g.key.provider},
          {"user_id", g.key.user_id},
          {"team_id", g.key.team_id},
          {"type", name_of(g.kind)},
          {"access_token", g.access_token.reveal()},
          {"token_type", g.token_type},
          {"expires_at", g.expires_at_ms ? nlohmann::json(rfc3339(g.expires_at_ms)) : nlohmann::json()},
          {"scopes", g.scopes},
          {"metadata", metadata.is_object() ? metadata : nlohmann::json::object()}};
}

/// Whether answers of the team lookup cache may be used: only while this
/// instance is alone, since another instance's connect reaches the cache
/// only when its event does.
bool use_team_cache(const front_context& ctx) {
  return ctx.teams && (!ctx.board || ctx.board->alone());
}

/// The team named by the request, or the user's only team for the
/// provider as the cache knows it; "" when neither is known yet.
std::string team_of(const front_context& ctx, const http::request& req, std::string_view user,
                    std::string_view provider) {
  auto team = req.query_param("team_id").value_or(req.query_param("org_id").value_or(""));
  if (!team.empty() || !use_team_cache(ctx))
    return team;
  auto teams = ctx.teams->find(user, provider);
  if (!teams || teams->size() != 1)
    return {};
  return teams->front();
}

void serve_token(const call& c, const connection_key& key) {
  auto ex = c.ex;
  auto copy = c;
  c.self->request(c.ctx().registry, budget(c), get_token_atom_v, key, false)
    .then(
      [copy](const token_grant& g) {
        // Audited before anyone sees it; never served unaudited.
        if (!record_token_read(copy.ctx(), copy.who.subject, g.key, copy.ex->req(), "http")) {
          copy.ex->reply(audit_full_response());
          return;
        }
        http::response res;
        res.body = render_token_body(g);
        metrics::token_read(metrics::token_read_via::actor);
        copy.ex->reply(std::move(res));
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

} // namespace

std::string render_token_body(const token_grant& g) {
  // Invalid UTF-8 from a provider must not turn into an exception here.
  return grant_json(g).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool record_token_read(const front_context& ctx, const std::string& service,
                       const connection_key& key, const http::request& req, const char* via) {
  auto entry = storage::token_read_row(service, key, req.remote_address, req.request_id, via);
  if (!ctx.audit) {
    caf::anon_send(ctx.configs, audit_atom_v, std::move(entry));
    return true;
  }
  switch (ctx.audit->try_push(std::move(entry))) {
    case storage::audit_queue::pushed::full:
      return false;
    case storage::audit_queue::pushed::queued_wake:
      caf::anon_send(ctx.configs, audit_atom_v);
      return true;
    case storage::audit_queue::pushed::queued:
      return true;
  }
  return true;
}

http::response audit_full_response() {
  return http::error_response(ec::unavailable,
                              "the audit log is behind; the token was not handed out, retry later",
                              audit_retry_after_s);
}

void find_connection(const call& c, const std::string& team, const std::string& user,
                     const std::string& provider, connection_found found) {
  if (!team.empty()) {
    found(c, {team, user, provider});
    return;
  }
  auto answer = [found](const call& c, const std::string& user, const std::string& provider,
                        const std::vector<std::string>& teams) {
    if (teams.empty())
      c.ex->reply_error(ec::not_found, "no such connection");
    else if (teams.size() > 1)
      c.ex->reply_error(ec::bad_request,
                        "the user has this provider in several teams; pass team_id");
    else
      found(c, {teams.front(), user, provider});
  };
  auto cache = use_team_cache(c.ctx()) ? c.ctx().teams : nullptr;
  if (cache)
    if (auto teams = cache->find(user, provider)) {
      answer(c, user, provider, *teams);
      return;
    }
  // Read before asking: a connect or disconnect meanwhile makes the
  // answer too old to keep.
  auto generation = cache ? cache->generation() : 0;
  auto ex = c.ex;
  auto copy = c;
  c.self->request(c.ctx().storage, budget(c), teams_atom_v, user, provider)
    .then(
      [copy, user, provider, answer, generation, cache](const std::vector<std::string>& teams) {
        if (cache)
          cache->store(user, provider, teams, generation);
        answer(copy, user, provider, teams);
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

void internal_token(const call& c) {
  auto entry = known_provider(c, c.params.at("provider"));
  if (!entry)
    return;
  auto& req = c.ex->req();
  auto user = req.query_param("user_id").value_or("");
  if (user.empty()) {
    c.ex->reply_error(ec::bad_request, "user_id is required");
    return;
  }
  auto team = req.query_param("team_id").value_or(req.query_param("org_id").value_or(""));
  find_connection(c, team, user, entry->name,
                  [](const call& c, const connection_key& key) { serve_token(c, key); });
}

front_context_ptr token_fast_lane::context() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return ctx_;
}

void token_fast_lane::configure(front_context_ptr ctx) {
  std::lock_guard<std::mutex> guard{mutex_};
  ctx_ = std::move(ctx);
}

bool token_fast_lane::answer(const http::request& req, http::response& out,
                             const char*& caller) {
  // Only GET /api/internal/tokens/{provider}, already normalized.
  if (req.method != "GET" || req.path.size() <= route_prefix.size() ||
      req.path.compare(0, route_prefix.size(), route_prefix) != 0)
    return false;
  std::string_view provider_name = std::string_view(req.path).substr(route_prefix.size());
  if (provider_name.find('/') != std::string_view::npos)
    return false;
  auto ctx = context();
  if (!ctx->board)
    return false;
  // Everything the front would refuse, it refuses itself, with its words.
  auto who = ctx->auth->authenticate(req);
  if (!who || http::require_service(*who, http::scope_fetch_config))
    return false;
  auto entry = ctx->catalog.find(std::string(provider_name));
  if (entry == nullptr)
    return false;
  auto user_it = req.query.find("user_id");
  if (user_it == req.query.end() || user_it->second.empty())
    return false;
  const auto& user = user_it->second;
  auto team = team_of(*ctx, req, user, entry->name);
  if (team.empty())
    return false;
  auto snapshot = ctx->board->serve(team, user, entry->name, unix_now_ms());
  if (!snapshot)
    return false;
  caller = "service";
  if (!record_token_read(*ctx, who->subject, snapshot->grant.key, req, "http")) {
    out = audit_full_response();
    return true;
  }
  out.status = 200;
  out.body = snapshot->body(render_token_body);
  answered_.fetch_add(1, std::memory_order_relaxed);
  metrics::token_read(metrics::token_read_via::snapshot);
  return true;
}


std::vector<api::route> token_routes() {
  return {
    {"GET", "/api/internal/tokens/{provider}", http::access::service, http::scope_fetch_config,
     internal_token, http::metering::unmetered,
     {"getToken", "tokens", "A valid token of a member's connection (services)",
      "The access token (or API key) of user_id's connection, refreshed first when it is "
      "inside its refresh window; never the refresh token. Every answer is audited first: "
      "when the audit queue is full the answer is 503 with Retry-After.",
      {{"user_id", "the member", true},
       {"team_id", "the member's team; optional when the member has this provider in one "
                   "team only"},
       {"org_id", "the same as team_id"}},
      nullptr, {{200, "the token", api::ref("Token")}}, {404, 409, 502}}},
  };
}

} // namespace cm

#include "actors/front_actor.hpp"

#include "actors/front_call.hpp"
#include "api/connection_json.hpp"
#include "actors/api_key_routes.hpp"
#include "actors/connector_routes.hpp"
#include "actors/oauth_routes.hpp"
#include "actors/token_route.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/log.hpp"
#include "common/time.hpp"
#include "http/cors.hpp"
#include "http/json_body.hpp"
#include "http/exchange.hpp"
#include "http/router.hpp"

namespace cm {

namespace {

// -- handlers ----------------------------------------------------------------

/// GET /api/v1/health: reachability and latency of every dependency.
void health(const call& c) {
  auto ex = c.ex;
  auto shards = c.ctx().shards;
  auto forwarding = c.ctx().forwarding;
  auto board = c.ctx().board;
  auto audit = c.ctx().audit;
  c.self->request(c.ctx().storage, std::min(budget(c), std::chrono::milliseconds{3000}),
                  ping_atom_v)
    .then(
      [ex, shards, forwarding, board, audit](int64_t latency_us) {
        nlohmann::json body = {
          {"status", "healthy"},
          {"checks", {{"postgres", {{"status", "up"}, {"latency_ms", latency_us / 1000.0}}}}}};
        // How the work is split (docs/DECISIONS.md, "Shards and their owners").
        if (shards) {
          body["shards"] = {{"owned", shards->owned_count()},
                            {"total", shards->shard_count()},
                            {"instances", shards->members()}};
          // Requests for other instances' shards: answered by the owner,
          // or served here after the owner did not answer in time.
          if (forwarding)
            body["shards"]["forwarded"] = {
              {"answered", forwarding->forwarded.load(std::memory_order_relaxed)},
              {"served_here", forwarding->fallbacks.load(std::memory_order_relaxed)}};
        }
        // Token reads served from snapshots, and their audit rows waiting
        // to be written (docs/DECISIONS.md, "The token route at wire speed").
        if (board && audit)
          body["tokens"] = {{"served_from_snapshots", board->served()},
                            {"audit_waiting", audit->size()},
                            {"audit_refused", audit->refused()}};
        ex->reply_json(200, body);
      },
      [ex](const caf::error& err) {
        auto res = http::json_response(
          503, {{"status", "unhealthy"},
                {"checks", {{"postgres", {{"status", "down"}, {"error", message_of(err)}}}}}});
        res.headers.emplace_back("Retry-After", "1");
        ex->reply(std::move(res));
      });
}

/// GET /api/connectors/list[?scope=team]: the caller's connections, or every
/// member's for aggregation. Never a secret.
void list_connections(const call& c) {
  auto ex = c.ex;
  auto scope = ex->req().query_param("scope").value_or("user");
  if (scope != "user" && scope != "team") {
    ex->reply_error(ec::bad_request, "scope must be 'user' or 'team'");
    return;
  }
  bool team = scope == "team";
  auto user = team ? std::string{} : c.who.subject;
  c.self->request(c.ctx().storage, budget(c), list_atom_v, c.who.team, user)
    .then(
      [ex, team, ctx = c.self->state.ctx](const token_summaries& rows) {
        auto list = nlohmann::json::array();
        for (auto& row : rows)
          list.push_back(api::connection_json(row, ctx->catalog, team));
        ex->reply_json(200, {{"connections", std::move(list)}});
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

/// POST /api/connectors/{provider}/refresh (user): refreshes now.
void refresh_own(const call& c) {
  auto entry = known_provider(c, c.params.at("provider"));
  if (!entry)
    return;
  auto ex = c.ex;
  c.self->request(c.ctx().registry, budget(c), get_token_atom_v,
                  connection_key{c.who.team, c.who.subject, entry->name}, true)
    .then(
      [ex](const token_grant& g) {
        ex->reply_json(200, {{"refreshed", true},
                             {"provider", g.key.provider},
                             {"expires_at", g.expires_at_ms ? nlohmann::json(rfc3339(g.expires_at_ms))
                                                            : nlohmann::json()}});
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

constexpr int32_t service_refresh_attempts = 3;

void service_refresh_attempt(front_self self, const exchange_ptr& ex, const connection_key& key,
                             int32_t attempt) {
  // Three attempts and their pauses must fit in one request's budget.
  auto per_attempt = (self->state.ctx->cfg.listen.request_timeout - std::chrono::milliseconds(750)) /
                     service_refresh_attempts;
  self->request(self->state.ctx->registry, per_attempt, get_token_atom_v, key, true)
    .then(
      [ex, attempt](const token_grant& g) {
        ex->reply_json(200, {{"success", true},
                             {"provider", g.key.provider},
                             {"userId", g.key.user_id},
                             {"orgId", g.key.team_id},
                             {"attempts", attempt},
                             {"expiresAt", g.expires_at_ms ? nlohmann::json(rfc3339(g.expires_at_ms))
                                                            : nlohmann::json()}});
      },
      [self, ex, key, attempt](const caf::error& err) {
        auto code = code_of(err);
        bool transient = code == ec::unavailable || code == ec::provider_failed;
        if (transient && attempt < service_refresh_attempts) {
          // 250 ms, then 500 ms: exponential, short enough for one request.
          auto delay = std::chrono::milliseconds(250 << (attempt - 1));
          self->delayed_send(self, delay, retry_atom_v, ex, key, attempt + 1);
          return;
        }
        ex->reply_error(err);
      });
}

/// POST /api/v1/connectors/internal/refreshIndividualConnectorToken
/// (service, FETCH_CONFIG): {"userId","connectorName","orgId"} (snake_case
/// and "provider"/"teamId" accepted too); up to 3 attempts.
void service_refresh(const call& c) {
  nlohmann::json body;
  std::string problem;
  if (!http::parse_json_object(c.ex->req().body, body, problem)) {
    c.ex->reply_error(ec::bad_request, problem);
    return;
  }
  auto field = [&](std::initializer_list<const char*> names) -> std::string {
    for (auto n : names)
      if (body.contains(n) && body[n].is_string())
        return body[n].get<std::string>();
    return {};
  };
  auto user = field({"userId", "user_id"});
  auto provider = field({"connectorName", "provider"});
  auto team = field({"orgId", "teamId", "team_id"});
  for (auto& [name, value] : {std::pair<const char*, std::string&>{"userId", user},
                              {"connectorName", provider},
                              {"orgId", team}})
    if (value.empty()) {
      c.ex->reply_error(ec::bad_request, std::string(name) + " is required");
      return;
    }
  if (known_provider(c, provider) == nullptr)
    return;
  service_refresh_attempt(c.self, c.ex, {team, user, provider}, 1);
}

// -- routing -------------------------------------------------------------------

// Metered routes write or call providers and draw from the caller's token
// bucket. Reads are not metered: each is one indexed query scoped to the
// caller, and services fetch tokens (served from memory) on their hot path.
// Callbacks carry no session to meter by; each one that reaches a provider
// needs a fresh single-use state, which only a metered authorize creates.
const std::vector<http::route<handler_fn>>& routes() {
  using http::access;
  constexpr auto metered = http::metering::metered;
  static const std::vector<http::route<handler_fn>> table = {
    {"GET", "/api/v1/health", access::open, "", health},
    {"GET", "/api/connectors/list", access::user, "", list_connections},
    {"POST", "/api/connectors/{provider}/refresh", access::user, "", refresh_own, metered},
    {"GET", "/api/internal/tokens/{provider}", access::service, http::scope_fetch_config,
     internal_token},
    {"GET", "/api/oauth/{provider}/authorize", access::user, "", oauth_authorize, metered},
    {"GET", "/api/oauth/{provider}/callback", access::open, "", oauth_callback},
    {"GET", "/api/v1/connectors/{connectorName}/oauth/authorize", access::admin, "",
     oauth_authorize, metered},
    {"GET", "/api/v1/connectors/{connectorName}/oauth/callback", access::open, "",
     oauth_callback},
    {"DELETE", "/api/connectors/{provider}", access::user, "", disconnect, metered},
    {"POST", "/api/connectors/connect", access::user, "", connect_api_key, metered},
    {"POST", "/api/v1/connectors/internal/refreshIndividualConnectorToken", access::service,
     http::scope_fetch_config, service_refresh, metered},
    // Team connector management (admins of the caller's team).
    {"GET", "/api/v1/connectors", access::admin, "", connectors_all},
    {"GET", "/api/v1/connectors/active", access::admin, "", connectors_active},
    {"GET", "/api/v1/connectors/inactive", access::admin, "", connectors_inactive},
    {"GET", "/api/v1/connectors/config/{connectorName}", access::admin, "", connector_config_get},
    {"PUT", "/api/v1/connectors/config/{connectorName}", access::admin, "", connector_config_put,
     metered},
    {"GET", "/api/v1/connectors/schema/{connectorName}", access::admin, "", connector_schema_get},
    {"POST", "/api/v1/connectors/toggle/{connectorName}", access::admin, "", connector_toggle,
     metered},
    {"GET", "/api/v1/connectors/filters/{connectorName}", access::admin, "", connector_filters_get},
    {"POST", "/api/v1/connectors/filters/{connectorName}", access::admin, "",
     connector_filters_post, metered},
    {"POST", "/api/v1/connectors/getTokenFromCode", access::admin, "", get_token_from_code,
     metered},
    {"POST", "/api/v1/connectors/updateAppConfig", access::service, http::scope_fetch_config,
     update_app_config, metered},
    {"GET", "/api/v1/audit", access::admin, "", audit_list},
    {"GET", "/api/v1/events", access::admin_or_service, http::scope_fetch_config, events_stream},
  };
  return table;
}

caf::error check_access(const http::route<handler_fn>& r, const http::identity& who) {
  switch (r.who) {
    case http::access::open: return {};
    case http::access::user: return http::require_user(who);
    case http::access::admin: return http::require_admin(who);
    case http::access::service: return http::require_service(who, r.scope);
    case http::access::admin_or_service: return http::require_admin_or_service(who, r.scope);
  }
  return make_error(ec::forbidden, "forbidden");
}

/// The bucket a caller draws from: a member by (team, user), a service by
/// name. Length-prefixed, so no two identities share a key.
std::string caller_key(const http::identity& who) {
  if (who.is_service())
    return "service:" + who.subject;
  return "member:" + std::to_string(who.team.size()) + ":" + who.team + who.subject;
}

/// Takes one request from the caller's bucket; answers 429 with
/// Retry-After and returns false when it is empty.
bool within_rate_limit(front_self self, const exchange_ptr& ex, const http::identity& who) {
  auto& ctx = *self->state.ctx;
  const auto& cfg = ctx.cfg.rate_limit;
  if (!cfg.enabled || !ctx.limiter)
    return true;
  auto limits = who.is_service() ? http::bucket_limits{cfg.service_burst, cfg.service_per_minute}
                                 : http::bucket_limits{cfg.user_burst, cfg.user_per_minute};
  auto verdict = ctx.limiter->take(caller_key(who), limits, http::rate_limiter::clock::now());
  if (verdict.allowed)
    return true;
  ex->reply(http::error_response(ec::rate_limited,
                                 "too many requests that write or call providers; retry later",
                                 verdict.retry_after_s));
  return false;
}

/// The methods the routes whose pattern matches `path` answer, in table
/// order; empty for an unknown path.
std::vector<std::string> methods_for(const std::string& path) {
  std::vector<std::string> methods;
  for (auto& r : routes()) {
    http::route_params ignored;
    if (http::match_path(r.pattern, path, ignored) &&
        std::find(methods.begin(), methods.end(), r.method) == methods.end())
      methods.push_back(r.method);
  }
  return methods;
}

void dispatch(front_self self, const exchange_ptr& ex) {
  const auto& req = ex->req();
  const auto& cfg = self->state.ctx->cfg;
  for (auto& [name, value] : http::cors_headers(cfg.cors, req))
    ex->add_header(name, value);
  for (auto& r : routes()) {
    http::route_params params;
    if (r.method != req.method || !http::match_path(r.pattern, req.path, params))
      continue;
    call c{self, ex, std::move(params), {}, self->state.ctx};
    if (r.who != http::access::open) {
      auto who = self->state.ctx->auth->authenticate(req);
      if (!who) {
        ex->reply_error(who.error());
        return;
      }
      ex->set_caller(who->is_service() ? "service" : "user");
      if (auto denied = check_access(r, *who)) {
        ex->reply_error(denied);
        return;
      }
      if (r.cost == http::metering::metered && !within_rate_limit(self, ex, *who))
        return;
      c.who = std::move(*who);
    }
    r.handler(c);
    return;
  }
  // A known path asked with another method: 405 naming the methods it
  // answers (RFC 9110 §15.5.6), and OPTIONS answers for any known path.
  auto methods = methods_for(req.path);
  if (methods.empty()) {
    ex->reply_error(ec::not_found, "no such route");
    return;
  }
  if (req.method == "OPTIONS") {
    ex->reply(http::options_response(cfg.cors, req, methods));
    return;
  }
  methods.push_back("OPTIONS");
  auto res = http::error_response(ec::method_not_allowed,
                                  req.method + " is not allowed here; use " +
                                    http::join_methods(methods));
  res.headers.emplace_back("Allow", http::join_methods(methods));
  ex->reply(std::move(res));
}

} // namespace

std::vector<route_shape> route_table() {
  std::vector<route_shape> out;
  for (auto& r : routes())
    out.push_back({r.method, r.pattern, r.who, r.scope, r.cost});
  return out;
}

front_actor::behavior_type front(front_actor::stateful_pointer<front_state> self,
                                 std::shared_ptr<const front_context> ctx) {
  self->state.ctx = std::move(ctx);
  return {
    [=](http_atom, const exchange_ptr& ex) {
      try {
        dispatch(self, ex);
      } catch (const std::exception&) {
        log::error("http", "handler failed", {{"request_id", ex->req().request_id}});
        ex->reply_error(ec::internal, "internal error");
      }
    },
    [=](retry_atom, const exchange_ptr& ex, const connection_key& key, int32_t attempt) {
      service_refresh_attempt(self, ex, key, attempt);
    },
    [=](configure_atom, front_context_ptr& ctx) { self->state.ctx = std::move(ctx); },
  };
}

} // namespace cm

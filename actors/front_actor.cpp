#include "actors/front_actor.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/log.hpp"
#include "http/exchange.hpp"
#include "http/router.hpp"

namespace cm {

namespace {

using self_ptr = front_actor::stateful_pointer<front_state>;

/// What a handler receives besides the exchange.
struct call {
  self_ptr self;
  exchange_ptr ex;
  http::route_params params;
  http::identity who;
  const front_context& ctx() const { return *self->state.ctx; }
};

using handler_fn = void (*)(const call&);

/// Budget for a single internal request on behalf of an HTTP call.
std::chrono::milliseconds budget(const call& c) {
  return c.ctx().cfg.listen.request_timeout;
}

// -- handlers ----------------------------------------------------------------

/// GET /api/v1/health: reachability and latency of every dependency.
void health(const call& c) {
  auto ex = c.ex;
  c.self->request(c.ctx().storage, std::min(budget(c), std::chrono::milliseconds{3000}),
                  ping_atom_v)
    .then(
      [ex](int64_t latency_us) {
        ex->reply_json(200, {{"status", "healthy"},
                             {"checks",
                              {{"postgres",
                                {{"status", "up"}, {"latency_ms", latency_us / 1000.0}}}}}});
      },
      [ex](const caf::error& err) {
        auto res = http::json_response(
          503, {{"status", "unhealthy"},
                {"checks", {{"postgres", {{"status", "down"}, {"error", message_of(err)}}}}}});
        res.headers.emplace_back("Retry-After", "1");
        ex->reply(std::move(res));
      });
}

nlohmann::json summary_json(const token_summary& s, bool with_user) {
  auto metadata = nlohmann::json::parse(s.metadata, nullptr, false);
  if (!metadata.is_object())
    metadata = nlohmann::json::object();
  nlohmann::json out = {
    {"provider", s.key.provider},
    {"type", s.kind == "api_key" ? "api_key" : "oauth"},
    {"status", s.status},
    {"account", metadata.value("account_name", "")},
    {"scopes", s.scopes},
    {"metadata", metadata},
    {"updated_at", s.updated_at_ms},
  };
  out["expires_at"] = s.expires_at_ms == 0 ? nlohmann::json(nullptr) : nlohmann::json(s.expires_at_ms);
  if (!s.reason.empty())
    out["reason"] = s.reason;
  if (with_user)
    out["user_id"] = s.key.user_id;
  return out;
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
      [ex, team](const token_summaries& rows) {
        auto list = nlohmann::json::array();
        for (auto& row : rows)
          list.push_back(summary_json(row, team));
        ex->reply_json(200, {{"connections", std::move(list)}});
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

// -- routing -------------------------------------------------------------------

const std::vector<http::route<handler_fn>>& routes() {
  using http::access;
  static const std::vector<http::route<handler_fn>> table = {
    {"GET", "/api/v1/health", access::open, "", health},
    {"GET", "/api/connectors/list", access::user, "", list_connections},
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

void dispatch(self_ptr self, const exchange_ptr& ex) {
  const auto& req = ex->req();
  for (auto& r : routes()) {
    http::route_params params;
    if (r.method != req.method || !http::match_path(r.pattern, req.path, params))
      continue;
    call c{self, ex, std::move(params), {}};
    if (r.who != http::access::open) {
      auto who = self->state.ctx->auth->authenticate(req);
      if (!who) {
        ex->reply_error(who.error());
        return;
      }
      if (auto denied = check_access(r, *who)) {
        ex->reply_error(denied);
        return;
      }
      c.who = std::move(*who);
    }
    r.handler(c);
    return;
  }
  ex->reply_error(ec::not_found, "no such route");
}

} // namespace

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
  };
}

} // namespace cm

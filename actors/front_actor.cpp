#include "actors/front_actor.hpp"

#include "api/proxy_routes.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "api/connection_routes.hpp"
#include "api/route_table.hpp"
#include "common/log.hpp"
#include "http/cors.hpp"
#include "http/exchange.hpp"
#include "http/html_page.hpp"
#include "http/router.hpp"

namespace cm {

namespace {

// -- routing -------------------------------------------------------------------

caf::error check_access(const api::route& r, const http::identity& who) {
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

/// A refusal for a page's form: the route's own answer, or an HTML page.
http::response form_refusal(const api::route& r, const call& c, ec code,
                            const std::string& message) {
  return r.refusal ? r.refusal(c, code, message) : http::html_error_page(code, message);
}

/// Takes one request from the caller's bucket; answers 429 with
/// Retry-After (a page's form: the route's refusal) and returns false when
/// it is empty.
bool within_rate_limit(front_self self, const exchange_ptr& ex, const api::route& r,
                       const call& c, const http::identity& who) {
  auto& ctx = *self->state.ctx;
  const auto& cfg = ctx.cfg.rate_limit;
  if (!cfg.enabled || !ctx.limiter)
    return true;
  auto limits = who.is_service() ? http::bucket_limits{cfg.service_burst, cfg.service_per_minute}
                                 : http::bucket_limits{cfg.user_burst, cfg.user_per_minute};
  auto verdict = ctx.limiter->take(caller_key(who), limits, http::rate_limiter::clock::now());
  if (verdict.allowed)
    return true;
  const char* why = "too many requests that write or call providers; retry later";
  if (r.read_by == api::reader::browser_form) {
    auto page = form_refusal(r, c, ec::rate_limited, why);
    page.headers.emplace_back("Retry-After", std::to_string(verdict.retry_after_s));
    ex->reply(std::move(page));
  } else {
    ex->reply(http::error_response(ec::rate_limited, why, verdict.retry_after_s));
  }
  return false;
}

/// The methods the routes whose pattern matches `path` answer, in table
/// order; empty for an unknown path.
std::vector<std::string> methods_for(const std::string& path) {
  std::vector<std::string> methods;
  for (auto& r : api::route_table()) {
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
  for (auto& r : api::route_table()) {
    http::route_params params;
    if (r.method != req.method || !http::match_path(r.pattern, req.path, params))
      continue;
    call c{self, ex, std::move(params), {}, self->state.ctx};
    ex->set_route(r.pattern);
    if (r.who != http::access::open) {
      // A page's form carries the session in a field and reads refusals
      // as pages (api/route.hpp).
      bool form = r.read_by == api::reader::browser_form;
      auto refuse = [&](const caf::error& err) {
        if (form)
          ex->reply(form_refusal(r, c, code_of(err), message_of(err)));
        else
          ex->reply_error(err);
      };
      auto& auth = *self->state.ctx->auth;
      auto who = form ? auth.authenticate_form(req) : auth.authenticate(req);
      if (!who) {
        refuse(who.error());
        return;
      }
      ex->set_caller(who->is_service() ? "service" : "user");
      if (auto denied = check_access(r, *who)) {
        refuse(denied);
        return;
      }
      if (r.cost == http::metering::metered && !within_rate_limit(self, ex, r, c, *who))
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
  for (auto& r : api::route_table())
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
    [=](proxied_atom, const proxy_answer_ptr& answer) { take_proxy_answer(answer); },
  };
}

} // namespace cm

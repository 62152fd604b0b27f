// What every HTTP route handler of the front actor receives, shared by the
// files that implement routes (front_actor.cpp, oauth_routes.cpp).
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "actors/front_actor.hpp"
#include "http/exchange.hpp"
#include "http/router.hpp"

namespace cm {

using front_self = front_actor::stateful_pointer<front_state>;

/// One routed request.
struct call {
  front_self self;
  exchange_ptr ex;
  http::route_params params;
  http::identity who;
  /// The configuration this request started with: a hot reload swaps the
  /// actor's context, and continuations must keep reading (and keeping
  /// alive) the one they began with.
  front_context_ptr snapshot;
  const front_context& ctx() const { return *snapshot; }
};

using handler_fn = void (*)(const call&);

/// Budget for a single internal request on behalf of an HTTP call.
inline std::chrono::milliseconds budget(const call& c) {
  return c.ctx().cfg.listen.request_timeout;
}

/// The catalog entry named by the route, or a 404 reply and nullptr.
inline const config::provider_entry* known_provider(const call& c, const std::string& name) {
  auto entry = c.ctx().catalog.find(name);
  if (entry == nullptr)
    c.ex->reply_error(ec::not_found, "unknown provider");
  return entry;
}

/// Around storing a new row for `key` (connect, reconnect, disconnect),
/// before the write and again once it is done: no snapshot of the old row
/// is served from here on (a connection actor that read it must read it
/// again, actors/token_board.hpp), and the user's teams are looked up
/// afresh (storage/team_lookup_cache.hpp).
inline void fence_connection(const front_context& ctx, const connection_key& key) {
  if (ctx.board)
    ctx.board->hold(key);
  if (ctx.teams)
    ctx.teams->forget(key.user_id, key.provider);
}

} // namespace cm

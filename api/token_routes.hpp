// GET /api/internal/tokens/{provider}?user_id=…[&team_id=…]: what every
// internal service calls before every provider call, so it is answered at
// wire speed (issue 18).
//
// The fast lane runs on the Pistache thread that read the request: it
// checks the service token, finds the team (from the team lookup cache
// when team_id is absent), takes the token's snapshot from the board,
// queues the audit row and answers, with no actor message, no database
// and no JSON parse. Anything it cannot answer that way (no snapshot, the
// refresh window open, the team not cached, another instance live, any
// error) goes to the front actors, whose `internal_token` does the same
// through the registry and the connection actor.
//
// Every token answered is audited first: when the audit queue is full the
// answer is 503 with Retry-After, never an unaudited token.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <vector>

#include "api/route.hpp"
#include "http/server.hpp"

namespace cm {

/// The token route's answer body (never the refresh token).
std::string render_token_body(const token_grant& g);

/// Records a token read answered to `service` before the answer goes out;
/// false when the audit queue is full (the caller answers 503).
bool record_token_read(const front_context& ctx, const std::string& service,
                       const connection_key& key, const http::request& req, const char* via);

/// The refusal when the audit queue is full.
http::response audit_full_response();

/// What to do with a connection once its team is known.
using connection_found = std::function<void(const call&, const connection_key&)>;

/// The connection (team, user, provider); when `team` is empty, the
/// user's only team with the provider (the team lookup cache, else
/// storage). Calls `found`, or answers 404 (none) or 400 (several teams)
/// itself.
void find_connection(const call& c, const std::string& team, const std::string& user,
                     const std::string& provider, connection_found found);

/// The front actors' handler of the route (slow path, and every error).
void internal_token(const call& c);

class token_fast_lane : public http::fast_lane {
public:
  explicit token_fast_lane(front_context_ptr ctx) : ctx_(std::move(ctx)) {}

  bool answer(const http::request& req, http::response& out, const char*& caller) override;
  const char* route() const override { return "/api/internal/tokens/{provider}"; }

  /// A hot reload: requests from now on use the new context.
  void configure(front_context_ptr ctx);

  /// Answers given here, and passed on (tests, health).
  int64_t answered() const { return answered_.load(std::memory_order_relaxed); }

private:
  front_context_ptr context() const;

  mutable std::mutex mutex_;
  front_context_ptr ctx_;
  std::atomic<int64_t> answered_{0};
};

/// GET /api/internal/tokens/{provider} with its documentation.
std::vector<api::route> token_routes();

} // namespace cm

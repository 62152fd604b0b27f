// The Pistache endpoint. Every byte a client sends passes the request guard
// (http/request_guard.hpp) before Pistache's parser; each request is copied
// into an `exchange` and sent to a front actor; the Pistache thread returns
// at once and the response is written later from whichever thread finishes
// the work, in the order the connection's requests came.
//
// A `fast_lane` may answer a request first, on the Pistache thread itself,
// when it can from memory without waiting for anything (the token route,
// issue 18); whatever it declines goes to the front actors unchanged.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "actors/front_actor.hpp"
#include "config/service_config.hpp"
#include "http/exchange.hpp"

namespace Pistache::Http {
class Endpoint;
}

namespace cm::http {

/// Answers some requests on the thread that read them. Must never block:
/// no database, no actor round trip, no waiting on a lock held for long.
class fast_lane {
public:
  virtual ~fast_lane() = default;
  /// Fills `out` and returns true to answer now, naming the caller's kind
  /// in `caller` for the access line; false passes the request on.
  virtual bool answer(const request& req, response& out, const char*& caller) = 0;
  /// The route pattern of what it answers, for GET /metrics.
  virtual const char* route() const = 0;
};

class server {
public:
  server(const config::listen_config& cfg, std::vector<front_actor> fronts,
         std::shared_ptr<fast_lane> lane = nullptr);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds and starts serving on background threads. Throws on bind failure.
  void start();
  /// Stops accepting and joins the threads.
  void stop();
  /// The bound port (useful with port 0).
  uint16_t port() const;

private:
  config::listen_config cfg_;
  std::vector<front_actor> fronts_;
  std::shared_ptr<fast_lane> lane_;
  std::shared_ptr<Pistache::Http::Endpoint> endpoint_;
  bool running_ = false;
};

} // namespace cm::http

// The Pistache endpoint. Every byte a client sends passes the request guard
// (http/request_guard.hpp) before Pistache's parser; each request is copied
// into an `exchange` and sent to a front actor; the Pistache thread returns
// at once and the response is written later from whichever thread finishes
// the work, in the order the connection's requests came.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "actors/front_actor.hpp"
#include "config/service_config.hpp"

namespace Pistache::Http {
class Endpoint;
}

namespace cm::http {

class server {
public:
  server(const config::listen_config& cfg, std::vector<front_actor> fronts);
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
  std::shared_ptr<Pistache::Http::Endpoint> endpoint_;
  bool running_ = false;
};

} // namespace cm::http

// The load both HTTP benches drive (bench_token_http, bench_proxy):
// keep-alive connections on loopback, one request in flight on each, for a
// set time, from one thread with poll(2); and the baseline server they
// measure against, Pistache answering a constant body.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <pistache/endpoint.h>
#include <pistache/http.h>

namespace cm::bench {

/// The baseline: Pistache answering a constant, keep-alive like ours.
class constant_handler : public Pistache::Http::Handler {
public:
  HTTP_PROTOTYPE(constant_handler)
  explicit constant_handler(std::string body) : body_(std::move(body)) {}
  void onRequest(const Pistache::Http::Request&, Pistache::Http::ResponseWriter w) override;

private:
  std::string body_;
};

struct figures {
  double per_second = 0;
  double p50_us = 0;
  double p99_us = 0;
  /// Answers other than 200, and connections the server closed.
  long errors = 0;
};

/// A TCP connection to 127.0.0.1:port with TCP_NODELAY; -1 on failure.
int connect_to(uint16_t port);

/// Keeps `connections` keep-alive connections busy, one request in flight
/// on each (connection i sends requests[i % size]), for `duration`.
figures load(uint16_t port, const std::vector<std::string>& requests, int connections,
             std::chrono::milliseconds duration);

/// The baseline's and the measured server's figures over `duration`
/// each, in two interleaved rounds so drift on a shared machine hits both
/// alike: rates averaged, latencies and errors the worse of the rounds.
struct pair_figures {
  figures base;
  figures real;
};
pair_figures load_pair(uint16_t base_port, const std::vector<std::string>& base_requests,
                       uint16_t real_port, const std::vector<std::string>& real_requests,
                       int connections, std::chrono::milliseconds duration);

} // namespace cm::bench

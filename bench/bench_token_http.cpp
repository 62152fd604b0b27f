// Token over HTTP: GET /api/internal/tokens/{provider} through the real
// front (Pistache, front actors, registry, connection actors, storage
// against PostgreSQL) with keep-alive connections, against a bare Pistache
// handler returning a constant body of the same size — measured in the
// same run by the same load client.
//
//   CONNECTOR_BENCH_DATABASE_URL=… bench_token_http [--seconds S] [--connections N]
//                                                    [--policy sharing|stealing]
//
// Prints requests/s, p50 and p99 for both and their ratio.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <pistache/endpoint.h>
#include <pistache/http.h>

#include "actors/actor_config.hpp"
#include "actors/front_actor.hpp"
#include "actors/provider_client_actor.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "api/token_routes.hpp"
#include "bench/bench_support.hpp"
#include "bench/front_stack.hpp"
#include "bench/http_load.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "config/provider_catalog.hpp"
#include "http/auth.hpp"
#include "http/server.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/migrations.hpp"

using namespace cm;
using namespace cm::bench;

namespace {

const std::string service_token = "bench-service-token-0123456789";

} // namespace

int main(int argc, char** argv) {
  double seconds = 3.0;
  int connections = 64;
  std::string policy = "sharing";
  std::string log_level = "info";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seconds"))
      seconds = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--connections"))
      connections = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--policy"))
      policy = argv[i + 1];
    else if (!std::strcmp(argv[i], "--log-level"))
      log_level = argv[i + 1];
  }
  seconds = std::min(std::max(seconds, 0.5), 30.0);
  connections = std::min(std::max(connections, 1), 1024);
  const char* url = bench::database_url();
  // Served as in production: an access line per request (to /dev/null, by
  // the asynchronous writer), unless told otherwise.
  log::level level = log::level::info;
  if (!log::parse_level(log_level, level)) {
    std::fprintf(stderr, "--log-level: debug, info, warn or error\n");
    return 2;
  }
  std::FILE* devnull = std::fopen("/dev/null", "w");
  log::set_sink(devnull);
  log::set_level(level);
  storage::ensure_sodium();

  config::service_config cfg;
  cfg.database.url = url;
  cfg.listen.port = 0;
  cfg.listen.threads = 2;
  cfg.scheduler.policy = policy;
  cfg.scheduler.max_threads = 2;
  cfg.auth.service_tokens.push_back({"bench", http::sha256_hex(service_token), {"FETCH_CONFIG"}});
  // One stored API key per load connection, so requests spread over actors.
  auto stack = std::make_unique<front_stack>(
    cfg, config::load_provider_catalog(CM_SOURCE_DIR "/config/providers.yaml"),
    [&](caf::scoped_actor& self, const storage_actor& store) {
      for (int i = 0; i < connections; ++i) {
        token_record r;
        r.key = {"acme", "user-" + std::to_string(i), "stripe"};
        r.kind = connection_kind::api_key;
        r.access_token = secret{"sk_test_" + std::string(100, 'k')};
        r.metadata = R"({"account_name":"acme"})";
        self->request(store, std::chrono::seconds(10), save_atom_v, std::move(r))
          .receive([](token_record&) {}, [](caf::error&) { std::exit(1); });
      }
    });
  auto lane = std::make_shared<token_fast_lane>(stack->context());
  http::server server{cfg.listen, stack->fronts(), lane};
  server.start();

  // The real answer's size, for a like-for-like constant.
  auto probe = "GET /api/internal/tokens/stripe?user_id=user-0&team_id=acme HTTP/1.1\r\n"
               "Host: 127.0.0.1\r\nX-Services-Token: " + service_token + "\r\n\r\n";
  std::string sample_body;
  {
    int fd = connect_to(server.port());
    ::send(fd, probe.data(), probe.size(), MSG_NOSIGNAL);
    std::string in;
    char buf[8192];
    while (in.find("\r\n\r\n") == std::string::npos || in.size() < in.find("\r\n\r\n") + 4 + 10) {
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0)
        break;
      in.append(buf, static_cast<size_t>(n));
      if (in.find("\r\n\r\n") != std::string::npos && in.back() == '}')
        break;
    }
    ::close(fd);
    if (in.compare(9, 3, "200") != 0) {
      std::fprintf(stderr, "the token route did not answer 200:\n%s\n", in.c_str());
      return 1;
    }
    sample_body = in.substr(in.find("\r\n\r\n") + 4);
  }

  Pistache::Address addr("127.0.0.1", Pistache::Port(0));
  auto baseline = std::make_shared<Pistache::Http::Endpoint>(addr);
  baseline->init(Pistache::Http::Endpoint::options().threads(2).flags(Pistache::Tcp::Options::ReuseAddr));
  baseline->setHandler(Pistache::Http::make_handler<constant_handler>(sample_body));
  baseline->serveThreaded();
  uint16_t baseline_port = static_cast<uint16_t>(baseline->getPort());

  auto duration = std::chrono::milliseconds(static_cast<long>(seconds * 1000));
  std::printf("token over HTTP: %d keep-alive connections, %.1f s per cell, scheduler %s, "
              "log level %s, body %zu bytes\n",
              connections, seconds, policy.c_str(), log_level.c_str(), sample_body.size());
  // Each connection asks for its own user's token, so requests spread over
  // connections as they would in production.
  auto requests_for = [&](bool with_team) {
    std::vector<std::string> out;
    for (int i = 0; i < connections; ++i)
      out.push_back("GET /api/internal/tokens/stripe?user_id=user-" + std::to_string(i) +
                    (with_team ? "&team_id=acme" : "") +
                    " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Services-Token: " + service_token +
                    "\r\n\r\n");
    return out;
  };
  std::printf("%-34s %12s %9s %9s %7s %8s %8s\n", "server", "requests/s", "p50 us", "p99 us",
              "errors", "ratio", "p99 x");
  for (bool with_team : {true, false}) {
    auto requests = requests_for(with_team);
    // The same number of requests to the baseline, which ignores them.
    auto [base_total, real_total] =
      load_pair(baseline_port, requests, server.port(), requests, connections, duration);
    std::printf("%-34s %12.0f %9.1f %9.1f %7ld %8s %8s\n", "bare Pistache constant",
                base_total.per_second, base_total.p50_us, base_total.p99_us, base_total.errors, "",
                "");
    std::printf("%-34s %12.0f %9.1f %9.1f %7ld %8.2f %8.2f\n",
                with_team ? "GET /api/internal/tokens, team_id" : "GET /api/internal/tokens, no team",
                real_total.per_second, real_total.p50_us, real_total.p99_us, real_total.errors,
                real_total.per_second / base_total.per_second, real_total.p99_us / base_total.p99_us);
    std::fflush(stdout);
  }
  std::printf("served from snapshots: %lld; audit rows written: %lld, refused: %lld\n",
              static_cast<long long>(stack->context()->board->served()),
              static_cast<long long>(stack->context()->audit->written_total()),
              static_cast<long long>(stack->context()->audit->refused()));
  baseline->shutdown();
  server.stop();
  stack.reset();
  log::set_sink(nullptr);
  std::fclose(devnull);
  return 0;
}

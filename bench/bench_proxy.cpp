// The proxy: GET /api/proxy/stripe/v1/charges through the real front
// (Pistache, front actors, the token board, the provider client's libcurl
// multi thread, audit rows to PostgreSQL) to a fake provider, against the
// same GET sent to that fake provider directly — measured in the same run
// by the same load client, interleaved.
//
//   CONNECTOR_BENCH_DATABASE_URL=… bench_proxy [--seconds S] [--connections N]
//                                              [--profile 1] [--provider-latency-ms L]
//
// --profile 1 only drives the proxy for S seconds (to attach perf to).
//
// The fake provider is a Pistache handler that checks the credential (as a
// provider would) and answers a constant JSON body. Each load connection
// names its own connection (one stored API key per team), so calls spread
// over teams as they would in production. The tenant limits (rate buckets,
// per-team calls in flight) are off: this measures capacity.
//
// With --provider-latency-ms L the fake provider answers each call L ms
// after it came, as a real provider's API does (tens to hundreds of ms):
// the figure services see, where the proxy's own cost is added to the
// provider's time rather than competing with it for the CPU.
//
// Prints requests/s, p50 and p99 for both and their ratio.
#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/peer.h>

#include "actors/actor_config.hpp"
#include "actors/front_actor.hpp"
#include "actors/provider_client_actor.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "bench/bench_support.hpp"
#include "bench/front_stack.hpp"
#include "bench/http_load.hpp"
#include "common/log.hpp"
#include "config/provider_catalog.hpp"
#include "http/answer_writer.hpp"
#include "http/auth.hpp"
#include "http/server.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/migrations.hpp"

using namespace cm;
using namespace cm::bench;

namespace {

const std::string service_token = "bench-proxy-token-0123456789";
const std::string stored_key = "sk_test_" + std::string(32, 'k');

/// Answers written later by one thread, in due order (the provider's
/// latency), straight to a duplicate of the connection's socket: Pistache
/// has two threads and must not sleep on them.
class delayed_answers {
public:
  delayed_answers() : thread_([this] { run(); }) {}
  ~delayed_answers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  void post(std::chrono::steady_clock::time_point at, std::shared_ptr<http::answer_socket> socket,
            std::string bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    due_.emplace(at, std::make_pair(std::move(socket), std::move(bytes)));
    wake_.notify_one();
  }

private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      if (due_.empty()) {
        wake_.wait(lock);
        continue;
      }
      auto next = due_.begin();
      if (wake_.wait_until(lock, next->first) == std::cv_status::no_timeout)
        continue;
      auto answer = std::move(next->second);
      due_.erase(next);
      lock.unlock();
      answer.first->write(answer.second, std::chrono::milliseconds(500));
      lock.lock();
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::multimap<std::chrono::steady_clock::time_point,
                std::pair<std::shared_ptr<http::answer_socket>, std::string>>
    due_;
  std::thread thread_;
};

/// The fake provider: refuses a call without the stored key, as Stripe
/// would, and answers a constant list otherwise, at once or `latency` later.
class provider_handler : public Pistache::Http::Handler {
public:
  HTTP_PROTOTYPE(provider_handler)
  provider_handler(std::string body, std::chrono::milliseconds latency,
                   std::shared_ptr<delayed_answers> later)
    : body_(std::move(body)), latency_(latency), later_(std::move(later)) {}
  void onRequest(const Pistache::Http::Request& req, Pistache::Http::ResponseWriter w) override {
    if (w.headers().has<Pistache::Http::Header::Connection>())
      w.headers().remove<Pistache::Http::Header::Connection>();
    auto auth = req.headers().tryGetRaw("Authorization");
    if (!auth || auth->value() != "Bearer " + stored_key) {
      w.send(Pistache::Http::Code::Unauthorized, R"({"error":{"type":"invalid_request_error"}})",
             MIME(Application, Json));
      return;
    }
    if (latency_.count() == 0) {
      w.send(Pistache::Http::Code::Ok, body_, MIME(Application, Json));
      return;
    }
    // Taken now, on the reactor thread: the descriptor is this client's.
    auto socket = std::make_shared<http::answer_socket>(w.peer()->fd());
    w.peer()->setIdle(true);
    later_->post(std::chrono::steady_clock::now() + latency_, std::move(socket),
                 http::serialize_response("HTTP/1.1", 200, "OK",
                                          {{"Content-Type", "application/json"}}, body_));
  }

private:
  std::string body_;
  std::chrono::milliseconds latency_;
  std::shared_ptr<delayed_answers> later_;
};

} // namespace

int main(int argc, char** argv) {
  double seconds = 3.0;
  int connections = 64;
  bool profile = false;
  int latency_ms = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seconds"))
      seconds = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--connections"))
      connections = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--provider-latency-ms"))
      latency_ms = std::min(std::max(std::atoi(argv[i + 1]), 0), 1000);
    else if (!std::strcmp(argv[i], "--profile"))
      profile = std::atoi(argv[i + 1]) != 0;
  }
  seconds = std::min(std::max(seconds, 0.5), 30.0);
  connections = std::min(std::max(connections, 1), 1024);
  const char* url = bench::database_url();
  // Served as in production: an access line per request (to /dev/null).
  std::FILE* devnull = std::fopen("/dev/null", "w");
  log::set_sink(devnull);
  log::set_level(log::level::info);
  storage::ensure_sodium();

  // The fake provider, a list of charges of a realistic size.
  std::string body = R"({"object":"list","url":"/v1/charges","has_more":false,"data":[)";
  for (int i = 0; i < 3; ++i)
    body += std::string(i ? "," : "") + R"({"id":"ch_)" + std::to_string(1000 + i) +
            R"(","object":"charge","amount":2000,"currency":"usd","status":"succeeded"})";
  body += "]}";
  Pistache::Address addr("127.0.0.1", Pistache::Port(0));
  auto provider = std::make_shared<Pistache::Http::Endpoint>(addr);
  provider->init(
    Pistache::Http::Endpoint::options().threads(2).flags(Pistache::Tcp::Options::ReuseAddr));
  auto later = std::make_shared<delayed_answers>();
  provider->setHandler(Pistache::Http::make_handler<provider_handler>(
    body, std::chrono::milliseconds(latency_ms), later));
  provider->serveThreaded();
  uint16_t provider_port = static_cast<uint16_t>(provider->getPort());

  config::service_config cfg;
  cfg.database.url = url;
  cfg.listen.port = 0;
  cfg.listen.threads = 2;
  cfg.scheduler.max_threads = 2;
  cfg.rate_limit.enabled = false;
  cfg.proxy.team_in_flight = 1024;
  cfg.auth.service_tokens.push_back({"bench", http::sha256_hex(service_token), {"PROXY"}});
  auto catalog = config::load_provider_catalog(CM_SOURCE_DIR "/config/providers.yaml");
  auto provider_base = "http://127.0.0.1:" + std::to_string(provider_port);
  config::apply_provider_settings(catalog, {{"stripe", {{}, {}, {}, {{"api_base_url", provider_base}}}}});
  // One stored key per load connection, each in a team of its own.
  auto stack = std::make_unique<front_stack>(
    cfg, std::move(catalog), [&](caf::scoped_actor& self, const storage_actor& store) {
      for (int i = 0; i < connections; ++i) {
        token_record r;
        r.key = {"team-" + std::to_string(i), "user-" + std::to_string(i), "stripe"};
        r.kind = connection_kind::api_key;
        r.access_token = secret{stored_key};
        r.metadata = R"({"account_name":"acme"})";
        self->request(store, std::chrono::seconds(10), save_atom_v, std::move(r))
          .receive([](token_record&) {}, [](caf::error&) { std::exit(1); });
      }
    });
  http::server server{cfg.listen, stack->fronts(), nullptr};
  server.start();

  // The same GET, to the proxy (naming the connection) and to the provider
  // directly (with the key, as a service holding it would send it).
  std::vector<std::string> proxied, direct;
  for (int i = 0; i < connections; ++i) {
    auto n = std::to_string(i);
    proxied.push_back("GET /api/proxy/stripe/v1/charges?limit=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "X-Services-Token: " + service_token + "\r\nX-Connection-User-Id: user-" + n +
                      "\r\nX-Connection-Team-Id: team-" + n + "\r\n\r\n");
    direct.push_back("GET /v1/charges?limit=3 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                     stored_key + "\r\n\r\n");
  }
  // Warm both (connections to the provider, snapshots, the audit writer).
  auto warm = load(server.port(), proxied, connections, std::chrono::milliseconds(500));
  load(provider_port, direct, connections, std::chrono::milliseconds(200));
  if (warm.errors > 0 || warm.per_second <= 0) {
    std::fprintf(stderr, "the proxy did not answer 200 (%ld errors)\n", warm.errors);
    return 1;
  }

  auto duration = std::chrono::milliseconds(static_cast<long>(seconds * 1000));
  if (profile) {
    auto alone = load(server.port(), proxied, connections, duration);
    std::printf("proxy alone: %.0f requests/s, %ld errors\n", alone.per_second, alone.errors);
    std::fflush(stdout);
    std::_Exit(0);
  }
  std::printf("proxy: %d keep-alive connections (one team each), %.1f s per side, body %zu "
              "bytes, provider latency %d ms\n",
              connections, seconds, body.size(), latency_ms);
  std::printf("%-34s %12s %9s %9s %7s %8s %8s\n", "path", "requests/s", "p50 us", "p99 us",
              "errors", "ratio", "p99 x");
  auto [base_total, real_total] =
    load_pair(provider_port, direct, server.port(), proxied, connections, duration);
  std::printf("%-34s %12.0f %9.1f %9.1f %7ld %8s %8s\n", "GET the provider directly",
              base_total.per_second, base_total.p50_us, base_total.p99_us, base_total.errors, "",
              "");
  std::printf("%-34s %12.0f %9.1f %9.1f %7ld %8.2f %8.2f\n", "GET /api/proxy/stripe/...",
              real_total.per_second, real_total.p50_us, real_total.p99_us, real_total.errors,
              real_total.per_second / base_total.per_second, real_total.p99_us / base_total.p99_us);
  std::printf("audit rows written: %lld\n",
              static_cast<long long>(stack->context()->audit->written_total()));
  std::fflush(stdout);
  provider->shutdown();
  server.stop();
  stack.reset();
  log::set_sink(nullptr);
  std::fclose(devnull);
  return 0;
}

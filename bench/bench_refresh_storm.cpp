// Refresh storm: N OAuth connections (100,000 by default) whose tokens all
// expire within the same minute, loaded by the real registry (every shard
// owned, loaded on the loader connections as `serve` does), connection
// actors and storage actor over PostgreSQL, refreshing against a loopback
// token endpoint that rotates refresh tokens and refuses a used one.
//
//   CONNECTOR_BENCH_DATABASE_URL=… bench_refresh_storm [--connections N]
//
// The refresh margin (2 minutes) is longer than the minute the tokens have
// left, so every refresh is due the moment its connection is loaded: the
// storm starts with the hydration, and lateness counts from the moment the
// server started loading. Prints the end-to-end refresh rate (the provider
// call and both transactions: lease, then tokens + event), the worst
// lateness, whether every refresh beat its token's expiry, and checks that
// every stored refresh token is the last one the provider issued (none lost)
// and that none was presented twice (none reused). Baseline in the same run:
// single-row UPDATE transactions per second on one connection to the same
// PostgreSQL.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <pistache/endpoint.h>
#include <pistache/http.h>

#include "actors/actor_config.hpp"
#include "actors/provider_client_actor.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "bench/bench_support.hpp"
#include "common/log.hpp"
#include "config/provider_catalog.hpp"
#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/migrations.hpp"
#include "storage/outbox.hpp"
#include "storage/token_store.hpp"

using namespace cm;
using clock_type = std::chrono::steady_clock;

namespace {

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string refresh_token_of(int64_t n, int64_t generation) {
  return "rt-" + std::to_string(n) + "-" + std::to_string(generation);
}

/// A token endpoint that rotates refresh tokens: "rt-<n>-<g>" is answered
/// with "rt-<n>-<g+1>" once; any other presentation is refused and counted.
struct rotating_provider {
  std::mutex mutex;
  std::vector<int64_t> generation;
  std::atomic<int64_t> issued{0};
  std::atomic<int64_t> refused{0};

  explicit rotating_provider(int64_t count) : generation(static_cast<size_t>(count), 0) {}

  /// The answer's body and status for a form body.
  std::pair<int, std::string> token(const std::string& body) {
    auto at = body.find("refresh_token=");
    if (at == std::string::npos)
      return {400, R"({"error":"invalid_request"})"};
    auto value = body.substr(at + 14, body.find('&', at) - (at + 14));
    int64_t n = -1, g = -1;
    if (std::sscanf(value.c_str(), "rt-%ld-%ld", &n, &g) != 2 || n < 0 ||
        n >= static_cast<int64_t>(generation.size())) {
      ++refused;
      return {400, R"({"error":"invalid_grant"})"};
    }
    {
      std::lock_guard<std::mutex> guard{mutex};
      if (generation[static_cast<size_t>(n)] != g) {
        ++refused;
        return {400, R"({"error":"invalid_grant"})"};
      }
      generation[static_cast<size_t>(n)] = g + 1;
    }
    ++issued;
    return {200, R"({"access_token":"ya29.storm-)" + std::to_string(n) + "-" +
                   std::to_string(g + 1) + R"(","token_type":"Bearer","expires_in":3600,)"
                   R"("refresh_token":")" + refresh_token_of(n, g + 1) + R"("})"};
  }
};

class provider_handler : public Pistache::Http::Handler {
public:
  HTTP_PROTOTYPE(provider_handler)
  explicit provider_handler(std::shared_ptr<rotating_provider> p) : provider_(std::move(p)) {}
  void onRequest(const Pistache::Http::Request& req, Pistache::Http::ResponseWriter w) override {
    auto [status, body] = provider_->token(req.body());
    w.headers().add<Pistache::Http::Header::ContentType>(MIME(Application, Json));
    w.send(static_cast<Pistache::Http::Code>(status), body);
  }

private:
  std::shared_ptr<rotating_provider> provider_;
};

/// Single-row UPDATE transactions per second on one connection, for `seconds`.
double update_baseline(storage::database& db, int64_t rows, double seconds) {
  const storage::statement update{"bench_single_update",
    "UPDATE connector_tokens SET refresh_failures = 0, updated_at = now() "
    "WHERE team_id = $1 AND id = $2::uuid"};
  std::mt19937_64 rng(3);
  int64_t done = 0;
  auto t0 = clock_type::now();
  auto until = t0 + std::chrono::milliseconds(static_cast<long>(seconds * 1000));
  while (clock_type::now() < until) {
    auto n = static_cast<int64_t>(rng() % static_cast<uint64_t>(rows));
    db.exec(update, {storage::param::text(bench::team_of(n)),
                     storage::param::text(bench::uuid_of(n))});
    ++done;
  }
  return static_cast<double>(done) /
         std::chrono::duration<double>(clock_type::now() - t0).count();
}

} // namespace

int main(int argc, char** argv) {
  int64_t connections = 100000;
  std::string policy = "sharing"; // serve's default (docs/DECISIONS.md)
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--connections"))
      connections = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--policy"))
      policy = argv[i + 1];
  }
  connections = std::min<int64_t>(std::max<int64_t>(connections, 1), 1000000);
  const char* url = bench::database_url();
  log::set_level(log::level::error);
  storage::ensure_sodium();

  // The provider.
  auto provider_state = std::make_shared<rotating_provider>(connections);
  Pistache::Address addr("127.0.0.1", Pistache::Port(0));
  auto endpoint = std::make_shared<Pistache::Http::Endpoint>(addr);
  endpoint->init(Pistache::Http::Endpoint::options().threads(1).flags(
    Pistache::Tcp::Options::ReuseAddr));
  endpoint->setHandler(Pistache::Http::make_handler<provider_handler>(provider_state));
  endpoint->serveThreaded();
  auto token_url = "http://127.0.0.1:" + std::to_string(static_cast<uint16_t>(endpoint->getPort())) +
                   "/token";

  // The rows: every token expires 60 to 120 s from now and was issued an
  // hour ago.
  config::service_config cfg;
  cfg.database.url = url;
  cfg.scheduler.policy = policy;
  cfg.scheduler.max_threads = 2;
  cfg.refresh.margin_override_ms = 120000;
  cfg.providers["google-ads"].client_id = "storm-client";
  cfg.providers["google-ads"].client_secret = "storm-client-secret";
  storage::database db{cfg.database};
  storage::apply_migrations(db);
  db.exec_script("TRUNCATE event_outbox CASCADE");
  auto keys = storage::keyring::parse(bench::key_ring_text);
  storage::column_cipher cipher{keys};
  // Baseline first, on rows like the storm's, which are then written again.
  std::vector<int64_t> expires_at_s(static_cast<size_t>(connections));
  bench::connection_rows rows;
  rows.count = connections;
  rows.refresh_token = [](int64_t n) { return refresh_token_of(n, 0); };
  rows.expires_at_s = [&](int64_t n) { return expires_at_s[static_cast<size_t>(n)]; };
  rows.issued_ago_s = 3600;
  bench::write_connections(db, cipher, rows);
  double baseline = update_baseline(db, connections, 3.0);
  // Every token expires 60 to 120 s from now and was issued an hour ago.
  std::mt19937_64 rng(11);
  auto load_at_s = unix_ms() / 1000;
  for (auto& e : expires_at_s)
    e = load_at_s + 60 + static_cast<int64_t>(rng() % 60);
  auto write_start = clock_type::now();
  bench::write_connections(db, cipher, rows);
  double write_s = std::chrono::duration<double>(clock_type::now() - write_start).count();

  auto catalog = config::load_provider_catalog(CM_SOURCE_DIR "/config/providers.yaml");
  catalog.providers["google-ads"].token_url = token_url;
  catalog.providers["google-ads"].revoke_url.clear();

  actor_config actor_cfg{false};
  actor_cfg.apply(cfg.scheduler);
  caf::actor_system sys{actor_cfg};
  // As `serve` wires it: leases and completions on one storage actor,
  // loading on loader actors with connections of their own, every shard
  // owned by this one instance.
  auto store = *spawn_storage(sys, cfg.database, keys);
  std::vector<storage_actor> loaders;
  for (int32_t i = 0; i < cfg.cluster.loaders; ++i)
    loaders.push_back(*spawn_storage(sys, cfg.database, keys));
  auto client = sys.spawn(provider_client);
  auto deps = make_registry_deps(cfg, catalog);
  deps.storage = store;
  deps.loaders = loaders;
  deps.provider_client = client;
  std::vector<int32_t> every_shard(static_cast<size_t>(storage::stored_shard_count(db)));
  for (size_t s = 0; s < every_shard.size(); ++s)
    every_shard[s] = static_cast<int32_t>(s);

  // The storm starts as the registry loads the connections.
  auto start_ms = unix_ms();
  auto t0 = clock_type::now();
  auto registry_handle = sys.spawn(registry, std::move(deps));
  {
    caf::scoped_actor self{sys};
    self->request(registry_handle, std::chrono::minutes(5), own_atom_v, every_shard)
      .receive([](int64_t) {}, [](caf::error&) { std::exit(1); });
  }
  double hydrated_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  // Wait (bounded) until every connection has been refreshed once.
  const storage::statement refreshed_count{"bench_refreshed_count",
    "SELECT count(*) FROM connector_tokens WHERE version > 1 AND last_refresh_at IS NOT NULL"};
  // The provider's own count first: counting rows every 100 ms scans the
  // table, which took a sixth of a core from the storm it measures.
  int64_t done = 0;
  while (std::chrono::duration<double>(clock_type::now() - t0).count() < 180 &&
         provider_state->issued.load() < connections)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  while (std::chrono::duration<double>(clock_type::now() - t0).count() < 180) {
    done = std::atoll(std::string(db.exec(refreshed_count).text(0, 0)).c_str());
    if (done >= connections)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  caf::anon_send_exit(registry_handle, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(client, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
  for (auto& l : loaders)
    caf::anon_send_exit(l, caf::exit_reason::user_shutdown);
  sys.await_all_actors_done();

  // When each connection was refreshed, against its token's expiry.
  const storage::statement outcomes{"bench_outcomes",
    "SELECT team_id, user_id, (extract(epoch FROM last_refresh_at) * 1000)::bigint "
    "FROM connector_tokens"};
  auto res = db.exec(outcomes);
  int64_t refreshed = 0, late_for_expiry = 0, last_ms = start_ms;
  int64_t worst_lateness_ms = 0;
  for (int i = 0; i < res.rows(); ++i) {
    int64_t n = std::atoll(std::string(res.text(i, 0)).c_str() + 5) * 1000 +
             std::atoll(std::string(res.text(i, 1)).c_str() + 5);
    if (res.is_null(i, 2))
      continue;
    ++refreshed;
    int64_t at = std::atoll(std::string(res.text(i, 2)).c_str());
    last_ms = std::max(last_ms, at);
    worst_lateness_ms = std::max(worst_lateness_ms, at - start_ms);
    if (at >= expires_at_s[static_cast<size_t>(n)] * 1000)
      ++late_for_expiry;
  }
  // Every stored refresh token must be the provider's latest for its row.
  int64_t lost = 0, checked = 0;
  {
    storage::outbox events{db};
    storage::token_store tokens{db, cipher, events};
    std::string team, id;
    for (;;) {
      auto batch = tokens.load_batch(team, id, 1000);
      for (auto& r : batch.rows) {
        int64_t n = std::atoll(r.key.team_id.c_str() + 5) * 1000 + std::atoll(r.key.user_id.c_str() + 5);
        ++checked;
        if (r.refresh_token.reveal() !=
            refresh_token_of(n, provider_state->generation[static_cast<size_t>(n)]))
          ++lost;
      }
      team = batch.last_team;
      id = batch.last_id;
      if (batch.done)
        break;
    }
  }
  endpoint->shutdown();

  double storm_s = static_cast<double>(last_ms - start_ms) / 1000.0;
  double rate = storm_s > 0 ? static_cast<double>(refreshed) / storm_s : 0;
  std::printf("refresh storm: %lld connections expiring 60-120 s after loading, refresh margin "
              "120 s (all due at load), scheduler %s; rows written in %.1f s\n",
              static_cast<long long>(connections), policy.c_str(), write_s);
  std::printf("%-52s %12s\n", "", "per second");
  std::printf("%-52s %12.0f\n", "baseline: single-row UPDATE transactions (1 conn)", baseline);
  std::printf("%-52s %12.0f\n", "refreshes end to end (provider + lease + store)", rate);
  std::printf("ratio (refreshes / baseline): %.2f\n", rate / baseline);
  std::printf("refreshed %lld of %lld in %.1f s (hydration took %.1f s); worst lateness %.1f s "
              "after load\n",
              static_cast<long long>(refreshed), static_cast<long long>(connections), storm_s,
              hydrated_s, static_cast<double>(worst_lateness_ms) / 1000.0);
  std::printf("refreshed after their token expired: %lld\n",
              static_cast<long long>(late_for_expiry));
  std::printf("provider: %lld refresh tokens issued (one per connection expected), %lld "
              "presentations refused (reuse)\n",
              static_cast<long long>(provider_state->issued.load()),
              static_cast<long long>(provider_state->refused.load()));
  std::printf("stored refresh tokens checked: %lld; not the provider's latest (lost): %lld\n",
              static_cast<long long>(checked), static_cast<long long>(lost));
  std::printf("targets: every refresh before its expiry: %s; ratio >= 1.0: %s\n",
              late_for_expiry == 0 ? "met" : "NOT met", rate / baseline >= 1.0 ? "met" : "NOT met");
  // A missed target is a figure; a lost or reused token is a failure.
  bool ok = refreshed == connections && lost == 0 && provider_state->refused.load() == 0 &&
            checked == connections && provider_state->issued.load() == connections;
  db.exec_script("TRUNCATE connector_tokens");
  return ok ? 0 : 1;
}

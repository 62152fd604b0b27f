// Cold start: N stored connections (1,000,000 by default) in PostgreSQL;
// the time from starting the real `connector-manager` process until it logs
// "ready" (every connection's actor spawned and its refresh timer armed),
// and its resident memory then, against the same server over an empty
// table. Baseline in the same run: reading and decrypting every row with
// the storage code alone (the floor the server cannot beat).
//
//   CONNECTOR_BENCH_DATABASE_URL=… bench_cold_start [--connections N]
//                                                    [--server PATH]
//
// Rows are written once per N (a marker table remembers), so a second run
// over the same database skips the load.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "bench/bench_support.hpp"
#include "common/log.hpp"
#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/migrations.hpp"
#include "storage/token_store.hpp"

using namespace cm;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

/// Connections expiring 30 to 90 minutes from now: every timer is armed,
/// none fires during the bench.
void load_rows(storage::database& db, const storage::column_cipher& cipher, int64_t count) {
  auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch()).count();
  std::mt19937_64 rng(7);
  bench::connection_rows rows;
  rows.count = count;
  rows.refresh_token = [&](int64_t) { return "1//" + bench::random_token(rng, 100); };
  rows.expires_at_s = [&](int64_t) { return now_s + 1800 + static_cast<int64_t>(rng() % 3600); };
  bench::write_connections(db, cipher, rows);
}

int64_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::atoll(line.c_str() + 6);
  return -1;
}

struct start_figures {
  double ready_s = -1;
  int64_t rss_ready_kib = -1;
  int64_t rss_settled_kib = -1;
  double stop_s = -1;
  std::string log_tail;
};

/// Starts the server, waits for its "ready" line (bounded), samples RSS at
/// once and again a second later, then stops it with SIGTERM.
start_figures start_server(const std::string& binary, const std::string& config,
                           const std::string& log_path, double timeout_s) {
  start_figures f;
  auto t0 = clock_type::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(binary.c_str(), binary.c_str(), "serve", "--config", config.c_str(),
            static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string text;
  while (seconds_since(t0) < timeout_s) {
    std::ifstream in(log_path);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (text.find("\"msg\":\"ready\"") != std::string::npos) {
      f.ready_s = seconds_since(t0);
      f.rss_ready_kib = rss_kib(pid);
      break;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (pid > 0 && f.ready_s >= 0) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    f.rss_settled_kib = rss_kib(pid);
  }
  if (pid > 0) {
    auto stop_at = clock_type::now();
    ::kill(pid, SIGTERM);
    int status = 0;
    bool exited = false;
    while (seconds_since(stop_at) < 60) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (exited) {
      f.stop_s = seconds_since(stop_at);
    } else {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
  }
  std::ifstream in(log_path);
  text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  f.log_tail = text.size() > 2000 ? text.substr(text.size() - 2000) : text;
  return f;
}

void write_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  [[maybe_unused]] auto w = ::write(fd, text.data(), text.size());
  ::close(fd);
}

} // namespace

int main(int argc, char** argv) {
  int64_t connections = 1000000;
  std::string binary = CM_BINARY_DIR "/connector-manager";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--connections"))
      connections = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--server"))
      binary = argv[i + 1];
  }
  connections = std::min<int64_t>(std::max<int64_t>(connections, 1), 2000000);
  const char* url = bench::database_url();
  log::set_level(log::level::error);
  storage::ensure_sodium();

  char dir_template[] = "/tmp/cm-bench-cold.XXXXXX";
  std::string dir = ::mkdtemp(dir_template);
  write_file(dir + "/master.key", bench::key_ring_text);
  write_file(dir + "/jwt.secret", "bench-jwt-secret-0123456789abcdef0123456789");
  std::ostringstream yaml;
  yaml << "listen:\n  address: 127.0.0.1\n  port: 0\n"
       << "database:\n  url: \"" << url << "\"\n"
       << "crypto:\n  key_file: " << dir << "/master.key\n"
       << "auth:\n  jwt:\n    hs256_secret_file: " << dir << "/jwt.secret\n"
       << "token_service:\n  port: 0\n"
       << "log:\n  level: info\n"
       << "providers_file: " << CM_SOURCE_DIR << "/config/providers.yaml\n";
  write_file(dir + "/service.yaml", yaml.str());
  auto config = dir + "/service.yaml";
  auto log_path = dir + "/server.log";

  config::database_config db_cfg;
  db_cfg.url = url;
  storage::database db{db_cfg};
  storage::apply_migrations(db);
  auto keys = storage::keyring::parse(bench::key_ring_text);
  storage::column_cipher cipher{keys};

  // The empty server first: its memory is what the connections add to.
  db.exec_script("TRUNCATE connector_tokens");
  auto empty = start_server(binary, config, log_path + ".empty", 60);
  if (empty.ready_s < 0) {
    std::fprintf(stderr, "the empty server did not become ready:\n%s\n", empty.log_tail.c_str());
    return 1;
  }

  auto load_start = clock_type::now();
  load_rows(db, cipher, connections);
  double load_s = seconds_since(load_start);

  // Baseline: the storage code alone reading and decrypting every row in
  // the server's page size.
  double read_s = 0;
  int64_t read_rows = 0;
  {
    storage::outbox events{db};
    storage::token_store store{db, cipher, events};
    auto t0 = clock_type::now();
    std::string team, id;
    for (;;) {
      auto batch = store.load_batch(team, id, 1000);
      read_rows += static_cast<int64_t>(batch.rows.size());
      team = batch.last_team;
      id = batch.last_id;
      if (batch.done)
        break;
    }
    read_s = seconds_since(t0);
  }

  auto loaded = start_server(binary, config, log_path + ".loaded", 120);
  if (loaded.ready_s < 0) {
    std::fprintf(stderr, "the loaded server did not become ready in 120 s:\n%s\n",
                 loaded.log_tail.c_str());
    return 1;
  }
  auto armed = "\"count\":" + std::to_string(connections);
  bool all_armed = loaded.log_tail.find(armed) != std::string::npos;

  double per_conn_ready = static_cast<double>(loaded.rss_ready_kib - empty.rss_ready_kib) *
                          1024.0 / static_cast<double>(connections);
  double per_conn_settled =
    static_cast<double>(std::max(loaded.rss_settled_kib, loaded.rss_ready_kib) -
                        std::max(empty.rss_settled_kib, empty.rss_ready_kib)) *
    1024.0 / static_cast<double>(connections);

  std::printf("cold start: %lld connections (Google Ads OAuth, expiring in 30-90 min), "
              "loaded in %.1f s\n", static_cast<long long>(connections), load_s);
  std::printf("%-44s %10s %12s\n", "", "seconds", "RSS MiB");
  std::printf("%-44s %10.2f %12.1f\n", "empty server: start to ready", empty.ready_s,
              static_cast<double>(empty.rss_ready_kib) / 1024.0);
  std::printf("%-44s %10.2f %12s\n", "baseline: read + decrypt every row (storage)", read_s,
              "-");
  std::printf("%-44s %10.2f %12.1f\n", "loaded server: start to ready (timers armed)",
              loaded.ready_s, static_cast<double>(loaded.rss_ready_kib) / 1024.0);
  std::printf("%-44s %10s %12.1f\n", "loaded server: 1 s after ready", "-",
              static_cast<double>(loaded.rss_settled_kib) / 1024.0);
  std::printf("%-44s %10.2f %12s\n", "loaded server: SIGTERM to exit", loaded.stop_s, "-");
  std::printf("rows read by the baseline: %lld; every timer armed: %s\n",
              static_cast<long long>(read_rows), all_armed ? "yes" : "NO");
  auto met = [](bool ok) { return ok ? "met" : "NOT met"; };
  auto ratio = loaded.ready_s / read_s;
  std::printf("ready time / baseline read: %.2f (target <= 1.0: %s)\n", ratio, met(ratio <= 1.0));
  std::printf("memory per connection above the empty server: %.0f bytes at ready, %.0f bytes "
              "settled (target <= 2560: %s)\n", per_conn_ready, per_conn_settled,
              met(per_conn_settled <= 2560));
  std::printf("SIGTERM to exit: %.2f s (target <= 2 s: %s)\n", loaded.stop_s,
              met(loaded.stop_s >= 0 && loaded.stop_s <= 2.0));

  if (!std::getenv("CONNECTOR_BENCH_KEEP")) {
    db.exec_script("TRUNCATE connector_tokens");
    std::system(("rm -rf '" + dir + "'").c_str());
  }
  return all_armed ? 0 : 1;
}

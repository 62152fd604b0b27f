// Helpers shared by the test suites: temporary directories, shell commands,
// PostgreSQL clusters and fresh databases.
#pragma once

#include <chrono>

#include <cstdint>
#include <memory>
#include <string>

namespace cm::test {

std::string source_dir();
std::string server_binary();

/// Runs a shell command; returns its exit status (or -1).
int run_command(const std::string& command);

/// Runs a shell command and returns what it printed on stdout.
std::string command_output(const std::string& command);

/// A fresh directory under /tmp, removed with everything in it.
class temp_dir {
public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& text, unsigned mode = 0600);
std::string read_file(const std::string& path);

/// A PostgreSQL cluster driven through scripts/pg-cluster.
class pg_cluster {
public:
  /// Uses an existing cluster directory (not stopped on destruction).
  static std::unique_ptr<pg_cluster> attach(const std::string& dir);
  /// Creates and starts a private cluster, stopped and removed on destruction.
  static std::unique_ptr<pg_cluster> create();
  ~pg_cluster();

  void start();
  void stop();
  /// libpq connection string for a database.
  std::string url(const std::string& dbname = "postgres") const;
  /// Creates a database with a unique name; returns its connection string.
  std::string fresh_database(const std::string& prefix);

private:
  pg_cluster(std::string dir, bool owned) : dir_(std::move(dir)), owned_(owned) {}
  std::string dir_;
  bool owned_;
};

/// The cluster shared by a test run: $CONNECTOR_TEST_PG_DIR (started by
/// scripts/test) or, when a test binary runs alone, one created on first use.
pg_cluster& shared_cluster();

/// A fresh empty database in the shared cluster.
std::string fresh_database(const std::string& prefix);

/// Prints a measured figure and, when $CONNECTOR_TEST_FIGURES names a file,
/// appends it there so scripts/test can show it after the run.
void report_figure(const std::string& name, const std::string& value);

/// Runs SQL with psql against a connection string; returns its unaligned
/// output. The SQL goes through a file, so it needs no shell quoting.
std::string psql(const std::string& db, const std::string& sql);

/// The single integer a query returns (e.g. a count).
int64_t psql_int(const std::string& db, const std::string& sql);

/// psql_int until it returns `expected` or `timeout` passes (for rows
/// written asynchronously, such as batched audit rows); the last value.
int64_t psql_int_eventually(const std::string& db, const std::string& sql, int64_t expected,
                            std::chrono::milliseconds timeout = std::chrono::seconds(5));

/// A random lower-case hex string of `bytes` random bytes.
std::string random_hex(size_t bytes);

} // namespace cm::test

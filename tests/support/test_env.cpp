#include "tests/support/test_env.hpp"

#include <thread>

#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <stdexcept>

#include <sodium.h>

namespace cm::test {

std::string source_dir() { return CM_SOURCE_DIR; }
std::string server_binary() {
  // Lets a test run against another build of the server (e.g. to compare).
  if (const char* other = std::getenv("CONNECTOR_TEST_SERVER_BINARY"))
    return other;
  return CM_SERVER_BINARY;
}

int run_command(const std::string& command) {
  int rc = std::system(command.c_str());
  if (rc == -1 || !WIFEXITED(rc))
    return -1;
  return WEXITSTATUS(rc);
}

std::string command_output(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr)
    throw std::runtime_error("popen failed: " + command);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0)
    out.append(buf, n);
  pclose(pipe);
  return out;
}

temp_dir::temp_dir() {
  char tmpl[] = "/tmp/cm-test.XXXXXX";
  if (mkdtemp(tmpl) == nullptr)
    throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

temp_dir::~temp_dir() { run_command("rm -rf '" + path_ + "'"); }

void write_file(const std::string& path, const std::string& text, unsigned mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out)
      throw std::runtime_error("cannot write " + path);
    out << text;
  }
  ::chmod(path.c_str(), mode);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string psql(const std::string& db, const std::string& sql) {
  temp_dir dir;
  write_file(dir.file("query.sql"), sql);
  auto out =
    command_output("psql '" + db + "' -Atq -v ON_ERROR_STOP=1 -f '" + dir.file("query.sql") + "'");
  // The last row's newline is not part of any value.
  if (!out.empty() && out.back() == '\n')
    out.pop_back();
  return out;
}

int64_t psql_int(const std::string& db, const std::string& sql) {
  return std::stoll(psql(db, sql));
}

int64_t psql_int_eventually(const std::string& db, const std::string& sql, int64_t expected,
                            std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto value = psql_int(db, sql);
  while (value != expected && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    value = psql_int(db, sql);
  }
  return value;
}

void report_figure(const std::string& name, const std::string& value) {
  std::printf("%s: %s\n", name.c_str(), value.c_str());
  if (const char* path = std::getenv("CONNECTOR_TEST_FIGURES"); path && *path) {
    std::ofstream out(path, std::ios::app);
    out << name << ": " << value << "\n";
  }
}

std::string random_hex(size_t bytes) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    auto b = static_cast<unsigned char>(randombytes_uniform(256));
    out.push_back(hex[b >> 4]);
    out.push_back(hex[b & 0xf]);
  }
  return out;
}

namespace {

std::string script() { return source_dir() + "/scripts/pg-cluster"; }

void must(const std::string& command) {
  if (run_command(command) != 0)
    throw std::runtime_error("command failed: " + command);
}

} // namespace

std::unique_ptr<pg_cluster> pg_cluster::attach(const std::string& dir) {
  return std::unique_ptr<pg_cluster>(new pg_cluster(dir, false));
}

std::unique_ptr<pg_cluster> pg_cluster::create() {
  char tmpl[] = "/tmp/cm-pg.XXXXXX";
  if (mkdtemp(tmpl) == nullptr)
    throw std::runtime_error("mkdtemp failed");
  std::unique_ptr<pg_cluster> c(new pg_cluster(tmpl, true));
  must(script() + " init '" + c->dir_ + "' --fast");
  c->start();
  return c;
}

pg_cluster::~pg_cluster() {
  if (owned_) {
    run_command(script() + " stop '" + dir_ + "' >/dev/null 2>&1");
    run_command("rm -rf '" + dir_ + "'");
  }
}

void pg_cluster::start() { must(script() + " start '" + dir_ + "'"); }
void pg_cluster::stop() { must(script() + " stop '" + dir_ + "'"); }

std::string pg_cluster::url(const std::string& dbname) const {
  return "host=" + dir_ + "/socket dbname=" + dbname + " user=postgres";
}

std::string pg_cluster::fresh_database(const std::string& prefix) {
  auto name = prefix + "_" + random_hex(6);
  must(script() + " createdb '" + dir_ + "' " + name);
  return url(name);
}

pg_cluster& shared_cluster() {
  static std::once_flag once;
  static std::unique_ptr<pg_cluster> cluster;
  std::call_once(once, [] {
    if (const char* dir = std::getenv("CONNECTOR_TEST_PG_DIR"); dir && *dir)
      cluster = pg_cluster::attach(dir);
    else
      cluster = pg_cluster::create();
  });
  return *cluster;
}

std::string fresh_database(const std::string& prefix) {
  return shared_cluster().fresh_database(prefix);
}

} // namespace cm::test

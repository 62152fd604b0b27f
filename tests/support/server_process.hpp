// Runs the real connector-manager executable for end-to-end tests: writes a
// service file, key file and JWT secret into a temporary directory, starts
// `serve` with its log captured, and waits for its "ready" line.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/child_process.hpp"
#include "tests/support/test_env.hpp"

namespace cm::test {

struct server_options {
  explicit server_options(std::string url = {}) : database_url(std::move(url)) {}
  std::string database_url;
  /// Appended to the generated service file (top-level YAML keys).
  std::string extra_yaml;
  /// Extra lines under `token_service:` (each indented two spaces).
  std::string token_service_yaml;
  /// Extra environment variables for the server process.
  std::map<std::string, std::string> env;
  bool create_key = true;
  std::string log_level = "debug";
  /// Plaintext service tokens to configure: name -> (token, scopes).
  struct service_token {
    std::string name;
    std::string token;
    std::vector<std::string> scopes;
  };
  std::vector<service_token> service_tokens;
  /// Copy this key file instead of generating one (several instances
  /// sharing one database must share the key).
  std::string key_file;
  int max_request_bytes = 1 << 20;
  int request_timeout_ms = 5000;
};

class server_process {
public:
  explicit server_process(server_options opts);
  ~server_process();
  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;

  /// Waits for the "ready" log line; false if the process exited or the
  /// deadline passed.
  bool wait_ready(std::chrono::seconds timeout = std::chrono::seconds(30));
  /// Waits for the process to exit; returns its exit code, or -1 on timeout.
  int wait_exit(std::chrono::seconds timeout = std::chrono::seconds(30));
  /// Sends SIGTERM and waits.
  int stop();
  /// SIGKILL, no shutdown.
  void kill_now();

  uint16_t port() const { return port_; }
  /// The server's process id while it runs, else -1.
  pid_t pid() const;
  uint16_t token_service_port() const { return token_service_port_; }
  std::string log() const;
  const std::string& config_path() const { return config_path_; }
  const temp_dir& dir() const { return dir_; }

  /// Runs `connector-manager mint-token` against this server's config.
  std::string mint(const std::string& user, const std::string& team, bool admin = false,
                   const std::string& email = "") const;

private:
  server_options opts_;
  temp_dir dir_;
  std::string config_path_;
  std::unique_ptr<child_process> child_;
  uint16_t port_ = 0;
  uint16_t token_service_port_ = 0;
};

/// The service file the harness writes (exposed for config tests).
std::string service_yaml(const server_options& opts, const temp_dir& dir);

} // namespace cm::test

// A child process for tests: started with arguments and extra environment,
// its stdout and stderr captured in a file, stopped with SIGTERM (then
// SIGKILL) when the object goes away.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cm::test {

class child_process {
public:
  /// `drop_cm_env`: remove inherited CM_* variables first.
  child_process(const std::vector<std::string>& argv, const std::string& log_path,
                const std::map<std::string, std::string>& env = {}, bool drop_cm_env = true);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  /// Polls the captured output until `found` accepts a line, the process
  /// exits, or the deadline passes.
  bool wait_for_line(const std::function<bool(const std::string&)>& found,
                     std::chrono::milliseconds timeout);
  /// Exit code, or -1 if still running after `timeout`.
  int wait_exit(std::chrono::milliseconds timeout);
  /// SIGTERM, then SIGKILL after 15 s; returns the exit code.
  int stop();
  /// SIGKILL at once.
  void kill_now();
  bool running() const { return pid_ > 0; }
  /// The process id while running, else -1.
  pid_t pid() const { return pid_; }
  std::string output() const;

private:
  std::string log_path_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

/// The fake provider executable on a free loopback port.
class fake_provider_process {
public:
  fake_provider_process();
  uint16_t port() const { return port_; }
  std::string url(const std::string& path) const;
  /// POSTs JSON to an admin route; returns the parsed answer.
  std::string admin(const std::string& path, const std::string& json_body);
  long refresh_calls();
  std::string output() const { return child_.output(); }

private:
  std::string log_path_;
  child_process child_;
  uint16_t port_ = 0;
};

} // namespace cm::test

#include "tests/support/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/http_client.hpp"
#include "tests/support/test_env.hpp"

extern char** environ;

namespace cm::test {

child_process::child_process(const std::vector<std::string>& argv, const std::string& log_path,
                             const std::map<std::string, std::string>& env, bool drop_cm_env)
  : log_path_(log_path) {
  pid_ = fork();
  if (pid_ < 0)
    throw std::runtime_error("fork failed");
  if (pid_ != 0)
    return;
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  dup2(fd, STDOUT_FILENO);
  dup2(fd, STDERR_FILENO);
  if (drop_cm_env) {
    std::vector<std::string> inherited;
    for (char** e = environ; *e != nullptr; ++e)
      if (std::string_view(*e).rfind("CM_", 0) == 0)
        inherited.emplace_back(std::string_view(*e).substr(0, std::string_view(*e).find('=')));
    for (auto& name : inherited)
      unsetenv(name.c_str());
  }
  for (auto& [k, v] : env)
    setenv(k.c_str(), v.c_str(), 1);
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

child_process::~child_process() { stop(); }

std::string child_process::output() const { return read_file(log_path_); }

bool child_process::wait_for_line(const std::function<bool(const std::string&)>& found,
                                  std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::istringstream lines(output());
    std::string line;
    while (std::getline(lines, line))
      if (found(line))
        return true;
    if (wait_exit(std::chrono::milliseconds(0)) != -1)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

int child_process::wait_exit(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pid_ > 0) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exit_code_;
}

int child_process::stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    if (wait_exit(std::chrono::seconds(15)) == -1)
      kill_now();
  }
  return exit_code_;
}

void child_process::kill_now() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    exit_code_ = 128 + SIGKILL;
    pid_ = -1;
  }
}

namespace {

std::string fresh_log_path() {
  static temp_dir dir;
  static int n = 0;
  return dir.file("fake-provider-" + std::to_string(++n) + ".log");
}

} // namespace

fake_provider_process::fake_provider_process()
  : log_path_(fresh_log_path()), child_({CM_FAKE_PROVIDER_BINARY, "--port", "0"}, log_path_) {
  bool ok = child_.wait_for_line(
    [this](const std::string& line) {
      if (line.rfind("listening ", 0) != 0)
        return false;
      port_ = static_cast<uint16_t>(std::stoi(line.substr(10)));
      return true;
    },
    std::chrono::seconds(10));
  if (!ok)
    throw std::runtime_error("fake provider did not start: " + child_.output());
}

std::string fake_provider_process::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

std::string fake_provider_process::admin(const std::string& path, const std::string& json_body) {
  auto reply = http_call(port_, json_body.empty() ? "GET" : "POST", path,
                         {{"Content-Type", "application/json"}}, json_body);
  if (reply.status != 200)
    throw std::runtime_error("fake provider admin call failed: " + reply.body);
  return reply.body;
}

long fake_provider_process::refresh_calls() {
  return nlohmann::json::parse(admin("/__stats", ""))["refresh_calls"].get<long>();
}

} // namespace cm::test

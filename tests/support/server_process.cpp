#include "tests/support/server_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <sstream>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "http/auth.hpp"

namespace cm::test {

std::string service_yaml(const server_options& opts, const temp_dir& dir) {
  std::ostringstream y;
  y << "listen:\n  address: 127.0.0.1\n  port: 0\n  threads: 2\n"
    << "  max_request_bytes: " << opts.max_request_bytes << "\n"
    << "  request_timeout_ms: " << opts.request_timeout_ms << "\n"
    << "database:\n  url: \"" << opts.database_url << "\"\n"
    << "  connect_timeout_s: 2\n  reconnect_min_backoff_ms: 50\n  reconnect_max_backoff_ms: 500\n"
    << "crypto:\n  key_file: " << dir.file("master.key") << "\n"
    << "auth:\n  jwt:\n    hs256_secret_file: " << dir.file("jwt.secret") << "\n"
    << "  service_tokens:\n";
  for (auto& t : opts.service_tokens) {
    y << "    - name: " << t.name << "\n      sha256: " << http::sha256_hex(t.token)
      << "\n      scopes: [";
    for (size_t i = 0; i < t.scopes.size(); ++i)
      y << (i ? ", " : "") << t.scopes[i];
    y << "]\n";
  }
  if (opts.service_tokens.empty())
    y << "    []\n";
  y << "token_service:\n  port: 0\n"
    << "log:\n  level: " << opts.log_level << "\n"
    << "providers_file: " << source_dir() << "/config/providers.yaml\n"
    << opts.extra_yaml;
  return y.str();
}

server_process::server_process(server_options opts) : opts_(std::move(opts)) {
  config_path_ = dir_.file("service.yaml");
  write_file(config_path_, service_yaml(opts_, dir_));
  write_file(dir_.file("jwt.secret"), "test-secret-" + random_hex(24));
  if (opts_.create_key) {
    if (run_command(server_binary() + " keygen --out " + dir_.file("master.key") +
                    " >/dev/null") != 0)
      throw std::runtime_error("keygen failed");
  }
  auto log_path = dir_.file("server.log");
  pid_ = fork();
  if (pid_ < 0)
    throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    // Only the overrides this test asks for: drop inherited CM_* variables.
    std::vector<std::string> inherited;
    for (char** e = environ; *e != nullptr; ++e)
      if (std::string_view(*e).rfind("CM_", 0) == 0)
        inherited.emplace_back(std::string_view(*e).substr(0, std::string_view(*e).find('=')));
    for (auto& name : inherited)
      unsetenv(name.c_str());
    for (auto& [k, v] : opts_.env)
      setenv(k.c_str(), v.c_str(), 1);
    auto bin = server_binary();
    execl(bin.c_str(), bin.c_str(), "serve", "--config", config_path_.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
}

server_process::~server_process() { stop(); }

std::string server_process::log() const { return read_file(dir_.file("server.log")); }

bool server_process::wait_ready(std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::istringstream lines(log());
    std::string line;
    while (std::getline(lines, line)) {
      auto json = nlohmann::json::parse(line, nullptr, false);
      if (json.is_object() && json.value("msg", "") == "ready" && json.contains("port")) {
        port_ = json["port"].get<uint16_t>();
        return true;
      }
    }
    int status = 0;
    if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
      pid_ = -1;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

int server_process::wait_exit(std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pid_ > 0 ? -1 : exit_code_;
}

int server_process::stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    if (wait_exit(std::chrono::seconds(15)) == -1) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  return exit_code_;
}

std::string server_process::mint(const std::string& user, const std::string& team,
                                 bool admin) const {
  auto out = command_output(server_binary() + " mint-token --config " + config_path_ +
                            " --user " + user + " --team " + team + (admin ? " --admin" : ""));
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
    out.pop_back();
  return out;
}

} // namespace cm::test

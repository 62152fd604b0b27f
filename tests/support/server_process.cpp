#include "tests/support/server_process.hpp"

#include <sstream>
#include <stdexcept>

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
  y << "token_service:\n  port: 0\n" << opts.token_service_yaml
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
    if (opts_.key_file.empty()) {
      if (run_command(server_binary() + " keygen --out " + dir_.file("master.key") +
                      " >/dev/null") != 0)
        throw std::runtime_error("keygen failed");
    } else {
      run_command("cp -p '" + opts_.key_file + "' '" + dir_.file("master.key") + "'");
    }
  }
  child_ = std::make_unique<child_process>(
    std::vector<std::string>{server_binary(), "serve", "--config", config_path_},
    dir_.file("server.log"), opts_.env);
}

server_process::~server_process() { stop(); }

std::string server_process::log() const { return read_file(dir_.file("server.log")); }

bool server_process::wait_ready(std::chrono::seconds timeout) {
  return child_->wait_for_line(
    [this](const std::string& line) {
      auto json = nlohmann::json::parse(line, nullptr, false);
      if (!json.is_object() || json.value("msg", "") != "ready" || !json.contains("port"))
        return false;
      port_ = json["port"].get<uint16_t>();
      token_service_port_ = json.value("token_service_port", uint16_t{0});
      return true;
    },
    timeout);
}

int server_process::wait_exit(std::chrono::seconds timeout) { return child_->wait_exit(timeout); }

int server_process::stop() { return child_->stop(); }

void server_process::kill_now() { child_->kill_now(); }

pid_t server_process::pid() const { return child_->pid(); }

std::string server_process::mint(const std::string& user, const std::string& team, bool admin,
                                 const std::string& email) const {
  auto out = command_output(server_binary() + " mint-token --config " + config_path_ +
                            " --user " + user + " --team " + team + (admin ? " --admin" : "") +
                            (email.empty() ? "" : " --email " + email));
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
    out.pop_back();
  return out;
}

} // namespace cm::test

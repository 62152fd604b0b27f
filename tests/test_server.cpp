// The real executable end to end: start-up checks, the README's demo
// (health, minted token accepted, forged refused), structured logs, and
// canary secrets that must never reach a log line or a response.
#include <sstream>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>

#include "actors/actor_config.hpp"
#include "actors/storage_actor.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

std::vector<nlohmann::json> log_lines(const std::string& log) {
  std::vector<nlohmann::json> out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty())
      out.push_back(nlohmann::json::parse(line, nullptr, false));
  return out;
}

} // namespace

TEST(Server, HealthAndMintedTokenAcceptedForgedRefused) {
  server_process server{server_options{fresh_database("server")}};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto health = http_call(server.port(), "GET", "/api/v1/health");
  EXPECT_EQ(health.status, 200) << health.body;
  EXPECT_EQ(health.json()["status"], "healthy");

  auto token = server.mint("alice", "acme");
  ASSERT_EQ(std::count(token.begin(), token.end(), '.'), 2) << token;
  auto ok = http_call(server.port(), "GET", "/api/connectors/list",
                      {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_TRUE(ok.json()["connections"].is_array());

  // Same claims, signed with another secret.
  auto forged = token.substr(0, token.rfind('.') + 1) + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
  auto refused = http_call(server.port(), "GET", "/api/connectors/list",
                           {{"Authorization", "Bearer " + forged}});
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.json()["error"]["code"], "unauthenticated");
  EXPECT_EQ(server.stop(), 0) << "SIGTERM is a clean shutdown";
}

TEST(Server, LogsAreJsonLinesWithRequestIds) {
  server_process server{server_options{fresh_database("logs")}};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto r = http_call(server.port(), "GET", "/api/v1/health");
  auto request_id = r.header("x-request-id");
  ASSERT_FALSE(request_id.empty());
  server.stop();
  bool found = false;
  for (auto& line : log_lines(server.log())) {
    ASSERT_TRUE(line.is_object()) << server.log();
    EXPECT_TRUE(line.contains("time"));
    EXPECT_TRUE(line.contains("level"));
    EXPECT_TRUE(line.contains("component"));
    EXPECT_TRUE(line.contains("msg"));
    if (line.value("request_id", "") == request_id)
      found = true;
  }
  EXPECT_TRUE(found) << "no log line carries request id " << request_id;
}

TEST(Server, RefusesToStartWithoutAKey) {
  server_options opts{fresh_database("nokey")};
  opts.create_key = false;
  server_process server{opts};
  EXPECT_FALSE(server.wait_ready(20s));
  EXPECT_EQ(server.wait_exit(), 2);
  EXPECT_NE(server.log().find("master.key"), std::string::npos) << server.log();
  EXPECT_NE(server.log().find("keygen"), std::string::npos) << server.log();
}

TEST(Server, BadConfigurationStopsStartupNamingFileLineAndKey) {
  temp_dir dir;
  auto path = dir.file("bad.yaml");
  write_file(path, "database:\n  url: x\ncrypto:\n  key_file: k\nauth:\n  jwt:\n"
                   "    hs256_secret_file: s\nlisten:\n  prot: 1\n");
  auto out = command_output(server_binary() + " serve --config " + path + " 2>&1; echo \"exit=$?\"");
  EXPECT_NE(out.find(path + ":9:3"), std::string::npos) << out;
  EXPECT_NE(out.find("listen.prot"), std::string::npos) << out;
  EXPECT_NE(out.find("exit=2"), std::string::npos) << out;
  auto env = command_output("CM_LISTEN__PORT=notaport " + server_binary() +
                            " check-config --config " + source_dir() +
                            "/config/connector-manager.yaml 2>&1; echo \"exit=$?\"");
  EXPECT_NE(env.find("CM_LISTEN__PORT"), std::string::npos) << env;
  EXPECT_NE(env.find("exit=2"), std::string::npos) << env;
}

TEST(Server, MigrateSubcommandIsIdempotent) {
  server_process server{server_options{fresh_database("migrate")}};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto cmd = server_binary() + " migrate --config " + server.config_path() + " 2>&1";
  auto first = command_output(cmd);
  EXPECT_NE(first.find("\"applied_now\":0"), std::string::npos) << first;
  // PostgreSQL's notices ("already exists, skipping") arrive as JSON lines too.
  for (auto& line : log_lines(first))
    EXPECT_TRUE(line.is_object()) << first;
  EXPECT_EQ(run_command(cmd + " >/dev/null"), 0);
}

TEST(Server, CanarySecretsNeverReachLogsOrResponses) {
  const std::string client_secret = "CANARY-client-secret-7f3a";
  const std::string service_token = "CANARY-service-token-91bc";
  const std::string access_token = "CANARY-access-token-22d1";
  const std::string refresh_token = "CANARY-refresh-token-5e0f";
  const std::string api_key = "CANARY-api-key-sk_test_4b1d";
  const std::string state = "CANARY-state-8c2e";
  const std::string code = "CANARY-code-3a9f";
  const std::string bad_bearer = "CANARY-bearer-6d7e";
  const std::vector<std::string> canaries = {client_secret, service_token, access_token,
                                             refresh_token, api_key, state, code, bad_bearer};

  server_options opts{fresh_database("canary")};
  opts.log_level = "debug";
  opts.extra_yaml = "providers:\n  github:\n    client_id: cm-test-client\n    client_secret: " +
                    client_secret + "\n";
  opts.service_tokens.push_back({"reporting", service_token, {"FETCH_CONFIG"}});
  server_process server{opts};
  ASSERT_TRUE(server.wait_ready()) << server.log();

  // A stored connection whose tokens are canaries, written with the
  // server's own key through a storage actor.
  {
    actor_config cfg;
    caf::actor_system sys{cfg};
    config::database_config db;
    db.url = opts.database_url;
    auto store = spawn_storage(sys, db, storage::keyring::load(server.dir().file("master.key")));
    ASSERT_TRUE(store);
    token_record r;
    r.key = {"acme", "alice", "github"};
    r.access_token = secret{access_token};
    r.refresh_token = secret{refresh_token};
    caf::scoped_actor self{sys};
    bool saved = false;
    self->request(*store, 10s, save_atom_v, r)
      .receive([&](token_record&) { saved = true; }, [&](caf::error&) {});
    ASSERT_TRUE(saved);
    caf::anon_send_exit(*store, caf::exit_reason::user_shutdown);
  }

  std::vector<http_reply> replies;
  auto user = "Bearer " + server.mint("alice", "acme");
  replies.push_back(http_call(server.port(), "GET", "/api/connectors/list", {{"Authorization", user}}));
  replies.push_back(http_call(server.port(), "GET", "/api/connectors/list?scope=team", {{"Authorization", user}}));
  replies.push_back(http_call(server.port(), "GET", "/api/connectors/list",
                              {{"X-Services-Token", service_token}}));
  replies.push_back(http_call(server.port(), "GET", "/api/connectors/list",
                              {{"Authorization", "Bearer " + bad_bearer}}));
  replies.push_back(http_call(server.port(), "POST", "/api/connectors/connect",
                              {{"Authorization", user}, {"Content-Type", "application/json"}},
                              R"({"provider":"stripe","api_key":")" + api_key + R"("})"));
  replies.push_back(http_call(server.port(), "GET",
                              "/api/oauth/github/callback?code=" + code + "&state=" + state));
  replies.push_back(http_call(server.port(), "GET", "/api/connectors/list?scope=" + state,
                              {{"Authorization", user}}));
  server.stop();

  EXPECT_EQ(replies[0].status, 200);
  EXPECT_EQ(replies[0].json()["connections"].size(), 1u) << "the canary row is listed";
  EXPECT_EQ(replies[2].status, 403) << "the service token was accepted, then refused for the route";
  EXPECT_EQ(replies[3].status, 401);
  auto log = server.log();
  ASSERT_FALSE(log.empty());
  for (auto& canary : canaries) {
    EXPECT_EQ(log.find(canary), std::string::npos) << canary << " leaked into the log";
    for (auto& r : replies)
      EXPECT_EQ(r.raw.find(canary), std::string::npos) << canary << " leaked into a response";
  }
}

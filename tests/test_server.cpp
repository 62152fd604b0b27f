// The real executable end to end: start-up checks, the README's demo
// (health, minted token accepted, forged refused), structured logs, and
// canary secrets that must never reach a log line or a response.
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <sstream>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>
#include <jwt.h>

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

// Issue 16: the HS256 secret signs every session; a group- or
// world-readable one is refused at start and by check-config, as the
// keyring is.
TEST(Server, GroupOrWorldReadableJwtSecretStopsStartupAndCheckConfig) {
  temp_dir dir;
  server_options opts{"dbname=never-reached"};
  write_file(dir.file("service.yaml"), service_yaml(opts, dir));
  ASSERT_EQ(run_command(server_binary() + " keygen --out " + dir.file("master.key") + " >/dev/null"),
            0);
  const std::string secret = "loose-secret-" + random_hex(24);
  for (unsigned mode : {0644u, 0640u, 0604u}) {
    ::unlink(dir.file("jwt.secret").c_str());
    write_file(dir.file("jwt.secret"), secret, mode);
    for (auto command : {"serve", "check-config", "mint-token --user a --team t"}) {
      auto out = command_output(server_binary() + " " + command + " --config " +
                                dir.file("service.yaml") + " 2>&1; echo \"exit=$?\"");
      EXPECT_NE(out.find("exit=2"), std::string::npos) << command << ": " << out;
      EXPECT_NE(out.find(dir.file("jwt.secret")), std::string::npos) << out;
      EXPECT_NE(out.find("chmod 600"), std::string::npos) << out;
      EXPECT_EQ(out.find(secret), std::string::npos) << "the secret is never quoted";
    }
  }
  ::unlink(dir.file("jwt.secret").c_str());
  write_file(dir.file("jwt.secret"), secret, 0600);
  auto ok = command_output(server_binary() + " check-config --config " + dir.file("service.yaml") +
                           " 2>&1; echo \"exit=$?\"");
  EXPECT_NE(ok.find("configuration OK"), std::string::npos) << ok;
}

// Issue 16: auth.jwt.issuer and auth.jwt.audience apply from the next
// request after a hot reload, mint-token sets them, and a reload that
// finds the secret file readable by others is refused whole.
TEST(Server, JwtIssuerAndAudienceFollowHotReload) {
  const std::string reload_token = "svc-token-reload-jwt-000000001";
  server_options opts{fresh_database("jwtreload")};
  opts.log_level = "info";
  opts.service_tokens.push_back({"reloader", reload_token, {"FETCH_CONFIG"}});
  server_process server{opts};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto list = [&](const std::string& token) {
    return http_call(server.port(), "GET", "/api/connectors/list",
                     {{"Authorization", "Bearer " + token}})
      .status;
  };
  auto reload = [&] {
    return http_call(server.port(), "POST", "/api/v1/connectors/updateAppConfig",
                     {{"X-Services-Token", reload_token}}, "{}");
  };
  auto before = server.mint("alice", "acme");
  ASSERT_EQ(list(before), 200);

  auto original = read_file(server.config_path());
  auto with_claims = original;
  auto line = "    hs256_secret_file: " + server.dir().file("jwt.secret") + "\n";
  auto at = with_claims.find(line);
  ASSERT_NE(at, std::string::npos) << with_claims;
  with_claims.insert(at + line.size(),
                     "    issuer: https://cm.test\n    audience: connector-manager\n");
  write_file(server.config_path(), with_claims);
  auto applied = reload();
  ASSERT_EQ(applied.status, 200) << applied.body;
  EXPECT_EQ(applied.json()["restartRequired"], nlohmann::json::array()) << applied.body;

  EXPECT_EQ(list(before), 401) << "a token without iss and aud";
  auto minted = server.mint("alice", "acme");
  EXPECT_EQ(list(minted), 200) << "mint-token sets the configured iss and aud";
  // Tokens signed with the same key for another service.
  auto key = read_file(server.dir().file("jwt.secret"));
  auto signed_for = [&](const nlohmann::json& aud) {
    nlohmann::json claims = {{"sub", "alice"}, {"team", "acme"}, {"iss", "https://cm.test"},
                             {"exp", static_cast<long>(std::time(nullptr)) + 600}};
    if (!aud.is_null())
      claims["aud"] = aud;
    jwt_t* jwt = nullptr;
    jwt_new(&jwt);
    jwt_add_grants_json(jwt, claims.dump().c_str());
    jwt_set_alg(jwt, JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(key.data()),
                static_cast<int>(key.size()));
    char* out = jwt_encode_str(jwt);
    std::string token = out;
    free(out);
    jwt_free(jwt);
    return token;
  };
  auto billing = http_call(server.port(), "GET", "/api/connectors/list",
                           {{"Authorization", "Bearer " + signed_for("billing-service")}});
  EXPECT_EQ(billing.status, 401) << billing.body;
  EXPECT_EQ(billing.json()["error"]["code"], "unauthenticated");
  EXPECT_EQ(list(signed_for(nlohmann::json::array({"billing-service", "connector-manager"}))),
            200);
  EXPECT_EQ(list(signed_for(nullptr)), 401);

  // A secret file others may read: the reload is refused, nothing changes.
  ::chmod(server.dir().file("jwt.secret").c_str(), 0644);
  write_file(server.config_path(), original);
  auto refused = reload();
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_NE(refused.body.find("chmod 600"), std::string::npos) << refused.body;
  EXPECT_EQ(refused.body.find(key), std::string::npos);
  EXPECT_EQ(list(minted), 200) << "the running settings stay";
  EXPECT_EQ(list(before), 401) << "the running settings stay";
  // Fixed: the original settings apply again.
  ::chmod(server.dir().file("jwt.secret").c_str(), 0600);
  ASSERT_EQ(reload().status, 200);
  EXPECT_EQ(list(before), 200);
  EXPECT_EQ(server.log().find(key), std::string::npos) << "the secret never reaches the log";
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

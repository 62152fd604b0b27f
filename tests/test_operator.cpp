// What an operator runs: `connections` and `service-tokens` against a real
// server process and PostgreSQL, every command's --help, and the words a
// start-up that cannot proceed uses (a port in use, a database that cannot
// be reached).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/time.hpp"
#include "http/auth.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/token_world.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

struct cli_result {
  int code = -1;
  std::string out;
  std::string err;
};

/// Runs `connector-manager ARGS --config CONFIG`, capturing both streams.
cli_result cli(const std::string& config, const std::string& args) {
  temp_dir dir;
  cli_result r;
  r.code = run_command(server_binary() + " " + args + (config.empty() ? "" : " --config " + config) +
                       " >" + dir.file("out") + " 2>" + dir.file("err"));
  r.out = read_file(dir.file("out"));
  r.err = read_file(dir.file("err"));
  return r;
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

int token_status(uint16_t port, const std::string& token) {
  return http_call(port, "GET", "/api/internal/tokens/github?user_id=alice&team_id=acme",
                   {{"X-Services-Token", token}})
    .status;
}

/// Polls until the token route answers `wanted` for `token` (bounded).
bool eventually_status(uint16_t port, const std::string& token, int wanted) {
  for (int i = 0; i < 100; ++i) {
    if (token_status(port, token) == wanted)
      return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

} // namespace

TEST(Operator, AServiceTokenCreatedByTheCliWorksWithoutARestartAndStopsWhenRevoked) {
  token_world w;
  w.seed("alice", 3600'000);
  auto opts = w.options();
  opts.env["CM_AUTH__SERVICE_TOKEN_POLL_MS"] = "200";
  server_process server{opts};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto config = server.config_path();

  auto created = cli(config, "service-tokens create --name billing-sync --scopes FETCH_CONFIG");
  ASSERT_EQ(created.code, 0) << created.err;
  auto token = first_line(created.out);
  ASSERT_EQ(token.size(), 5u + 43u) << created.out;
  EXPECT_EQ(token.rfind("cmst_", 0), 0u);
  EXPECT_NE(created.err.find("shown this once"), std::string::npos) << created.err;
  // Only its hash is stored.
  EXPECT_EQ(w.count("SELECT count(*) FROM service_tokens WHERE name = 'billing-sync' AND "
                    "token_sha256 = '" + http::sha256_hex(token) + "'"),
            1);
  EXPECT_EQ(psql(w.db, "SELECT * FROM service_tokens").find(token), std::string::npos);

  // Effective on the running server within a poll; by HTTP a token comes back.
  ASSERT_TRUE(eventually_status(server.port(), token, 200)) << server.log();
  auto fetched = http_call(server.port(), "GET", "/api/internal/tokens/github?user_id=alice",
                           {{"X-Services-Token", token}});
  EXPECT_EQ(fetched.json()["access_token"], "at-seed-alice");
  // Audited under the token's name.
  EXPECT_GE(psql_int_eventually(w.db,
                                "SELECT count(*) FROM audit_log WHERE actor_id = 'billing-sync'", 2),
            2);

  // A second live token of the same name is refused; a bad name or scope too.
  EXPECT_EQ(cli(config, "service-tokens create --name billing-sync").code, 1);
  EXPECT_EQ(cli(config, "service-tokens create --name 'bad name'").code, 2);
  EXPECT_EQ(cli(config, "service-tokens create --name x --scopes fetch").code, 2);
  EXPECT_EQ(cli(config, "service-tokens create").code, 2);

  // Listed with the configured ones, never with a token or hash.
  auto listed = cli(config, "service-tokens list --json");
  ASSERT_EQ(listed.code, 0) << listed.err;
  auto list = nlohmann::json::parse(listed.out)["service_tokens"];
  bool stored = false, configured = false;
  for (auto& t : list) {
    if (t["name"] == "billing-sync" && t["source"] == "database") {
      stored = true;
      EXPECT_EQ(t["scopes"], nlohmann::json::array({"FETCH_CONFIG"}));
      EXPECT_GT(parse_rfc3339(t["created_at"].get<std::string>()), 0);
    }
    if (t["source"] == "config")
      configured = true;
  }
  EXPECT_TRUE(stored) << listed.out;
  EXPECT_TRUE(configured) << listed.out;
  EXPECT_EQ(listed.out.find(token), std::string::npos);
  EXPECT_EQ(listed.out.find(http::sha256_hex(token)), std::string::npos);
  auto table = cli(config, "service-tokens list");
  EXPECT_NE(table.out.find("billing-sync"), std::string::npos) << table.out;

  // Revoked: refused within a poll, on a server that never restarted; the
  // configured token keeps working.
  auto revoked = cli(config, "service-tokens revoke --name billing-sync");
  ASSERT_EQ(revoked.code, 0) << revoked.err;
  EXPECT_TRUE(eventually_status(server.port(), token, 401));
  EXPECT_EQ(token_status(server.port(), world_service_token), 200);
  EXPECT_EQ(cli(config, "service-tokens revoke --name billing-sync").code, 1) << "nothing live left";
  EXPECT_NE(cli(config, "service-tokens list --all").out.find("billing-sync"), std::string::npos);
  // A new token may take the name again, and the old one stays refused.
  auto again = cli(config, "service-tokens create --name billing-sync --json");
  ASSERT_EQ(again.code, 0) << again.err;
  auto second = nlohmann::json::parse(again.out)["token"].get<std::string>();
  EXPECT_NE(second, token);
  EXPECT_TRUE(eventually_status(server.port(), second, 200));
  EXPECT_EQ(token_status(server.port(), token), 401);

  server.stop();
  EXPECT_EQ(server.log().find(token), std::string::npos) << "no token in the log";
  EXPECT_EQ(server.log().find(second), std::string::npos);
}

TEST(Operator, ConnectionsAreListedShownRefreshedAndDisconnectedWithoutASecret) {
  token_world w;
  w.seed("alice", 3600'000);
  w.seed("bob", 3600'000, "globex");
  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto config = server.config_path();

  auto all = cli(config, "connections list --json");
  ASSERT_EQ(all.code, 0) << all.err;
  auto rows = nlohmann::json::parse(all.out)["connections"];
  ASSERT_EQ(rows.size(), 2u) << all.out;
  for (auto& row : rows) {
    EXPECT_FALSE(row["id"].get<std::string>().empty());
    EXPECT_GT(parse_rfc3339(row["expires_at"].get<std::string>()), 0);
    EXPECT_EQ(row["status"], "connected");
  }
  EXPECT_EQ(all.out.find("at-seed-"), std::string::npos) << "never a token";
  EXPECT_EQ(all.out.find("rt-seed-"), std::string::npos);
  // The same id the HTTP list gives.
  auto http_list = http_call(server.port(), "GET", "/api/connectors/list",
                             {{"Authorization", "Bearer " + server.mint("alice", "acme")}});
  auto alice_id = http_list.json()["connections"][0]["id"];
  auto only_acme = nlohmann::json::parse(cli(config, "connections list --team acme --json").out);
  ASSERT_EQ(only_acme["connections"].size(), 1u);
  EXPECT_EQ(only_acme["connections"][0]["id"], alice_id);
  EXPECT_EQ(only_acme["connections"][0]["team_id"], "acme");
  EXPECT_EQ(only_acme["connections"][0]["user_id"], "alice");
  EXPECT_EQ(nlohmann::json::parse(cli(config, "connections list --provider stripe --json").out)
              ["connections"].size(),
            0u);
  auto table = cli(config, "connections list --user bob");
  EXPECT_NE(table.out.find("globex"), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find("acme"), std::string::npos) << table.out;
  EXPECT_EQ(cli(config, "connections list --limit 0").code, 2);

  auto shown = cli(config, "connections show --team acme --user alice --provider github");
  ASSERT_EQ(shown.code, 0) << shown.err;
  EXPECT_NE(shown.out.find("connected"), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find(alice_id.get<std::string>()), std::string::npos);
  EXPECT_EQ(shown.out.find("at-seed-alice"), std::string::npos);
  EXPECT_EQ(cli(config, "connections show --team acme --user nobody --provider github").code, 1);
  EXPECT_EQ(cli(config, "connections show --team acme").code, 2);

  auto calls = w.fake.refresh_calls();
  // The server listens on a port it picked (listen.port 0): named by --url.
  auto url = " --url http://127.0.0.1:" + std::to_string(server.port());
  auto no_port = cli(config, "connections refresh --team acme --user alice --provider github");
  EXPECT_EQ(no_port.code, 2);
  EXPECT_NE(no_port.err.find("--url"), std::string::npos) << no_port.err;
  auto refreshed =
    cli(config, "connections refresh --team acme --user alice --provider github" + url);
  ASSERT_EQ(refreshed.code, 0) << refreshed.err << server.log();
  EXPECT_NE(refreshed.out.find("refreshed acme/alice/github"), std::string::npos) << refreshed.out;
  EXPECT_EQ(w.fake.refresh_calls(), calls + 1);
  EXPECT_NE(w.stored_refresh("alice"), "rt-seed-alice") << "the rotated refresh token is stored";
  // A failure says the service's words and exits 1.
  auto missing =
    cli(config, "connections refresh --team acme --user nobody --provider github" + url);
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("404"), std::string::npos) << missing.err;

  auto gone =
    cli(config, "connections disconnect --team globex --user bob --provider github" + url);
  ASSERT_EQ(gone.code, 0) << gone.err;
  EXPECT_EQ(w.count("SELECT count(*) FROM connector_tokens WHERE user_id = 'bob'"), 0);
  EXPECT_EQ(w.count("SELECT count(*) FROM event_outbox WHERE payload->>'eventType' = "
                    "'TOKEN_REVOKED' AND payload->>'userId' = 'bob'"),
            1);
  // A session JWT goes to a remote service over https only.
  auto remote = cli(config, "connections refresh --team acme --user alice --provider github "
                            "--url http://service.example:8080");
  EXPECT_EQ(remote.code, 2);
  EXPECT_NE(remote.err.find("https://"), std::string::npos) << remote.err;
  // A service that is not there is said so.
  auto away = cli(config, "connections refresh --team acme --user alice --provider github "
                          "--url http://127.0.0.1:1");
  EXPECT_EQ(away.code, 1);
  EXPECT_NE(away.err.find("cannot reach the service"), std::string::npos) << away.err;
}

TEST(Operator, EveryCommandAndSubcommandHasHelp) {
  const std::vector<std::pair<std::string, std::string>> commands = {
    {"serve", ""},          {"migrate", ""},         {"check-config", ""},
    {"keygen", ""},         {"rekey", ""},           {"mint-token", ""},
    {"hash-token", ""},     {"openapi", ""},         {"connections", ""},     {"connections", "list"},
    {"connections", "show"}, {"connections", "refresh"}, {"connections", "disconnect"},
    {"service-tokens", ""}, {"service-tokens", "create"}, {"service-tokens", "list"},
    {"service-tokens", "revoke"}};
  for (auto& [command, sub] : commands) {
    auto words = command + (sub.empty() ? "" : " " + sub);
    auto r = cli("", words + " --help");
    EXPECT_EQ(r.code, 0) << words;
    EXPECT_EQ(r.out.rfind("usage: connector-manager " + words, 0), 0u) << words << ":\n" << r.out;
    EXPECT_NE(r.out.find("--config FILE"), std::string::npos) << words;
  }
  auto overview = cli("", "--help");
  EXPECT_EQ(overview.code, 0);
  for (auto& [command, sub] : commands)
    EXPECT_NE(overview.out.find("  " + command + " "), std::string::npos) << command;
  EXPECT_EQ(cli("", "help").out, overview.out);
  EXPECT_EQ(cli("", "help connections list").out, cli("", "connections list --help").out);
  EXPECT_EQ(cli("", "help service-tokens").out, cli("", "service-tokens --help").out);
  EXPECT_EQ(cli("", "help frobnicate").code, 2);
  EXPECT_EQ(cli("", "frobnicate --help").code, 2);
  auto unknown = cli("", "connections frobnicate --config /nonexistent.yaml");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_EQ(cli("", "service-tokens --bogus").code, 2);
}

TEST(Operator, APortInUseIsSaidInThoseWordsBeforeAnythingStarts) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto busy = std::to_string(ntohs(addr.sin_port));
  for (auto variable : {"CM_LISTEN__PORT", "CM_TOKEN_SERVICE__PORT"}) {
    server_options opts{fresh_database("port_in_use")};
    opts.env[variable] = busy;
    server_process server{opts};
    EXPECT_EQ(server.wait_exit(30s), 1) << variable;
    auto log = server.log();
    EXPECT_NE(log.find("127.0.0.1:" + busy + " is already in use"), std::string::npos)
      << variable << "\n" << log;
    EXPECT_EQ(log.find("\"msg\":\"ready\""), std::string::npos);
  }
  ::close(fd);
}

TEST(Operator, ADatabaseThatCannotBeReachedSaysLibpqsReasonButNeverThePassword) {
  temp_dir dir;
  const std::string password = "CANARY-db-password-5e1d";
  auto url = "host=" + dir.path() + " dbname=none user=nobody password=" + password;
  // The service logs the reason while it waits for PostgreSQL.
  server_process server{server_options{url}};
  std::string log;
  for (int i = 0; i < 200 && log.find("cannot connect to the database") == std::string::npos; ++i) {
    std::this_thread::sleep_for(50ms);
    log = server.log();
  }
  server.stop();
  log = server.log();
  EXPECT_NE(log.find("cannot connect to the database"), std::string::npos) << log;
  EXPECT_NE(log.find(dir.path() + "/.s.PGSQL"), std::string::npos) << "libpq's reason\n" << log;
  EXPECT_NE(log.find("No such file or directory"), std::string::npos) << log;
  EXPECT_EQ(log.find(password), std::string::npos) << log;
  // An operator's command says it at once.
  auto r = cli(server.config_path(), "connections list");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot connect to the database: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(password), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find(password), std::string::npos);
}

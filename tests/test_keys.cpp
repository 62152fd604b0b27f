// Tampering and key rotation end to end (issue 8, item 6): real server
// processes, a real PostgreSQL, the fake provider on loopback, and the real
// `connector-manager keygen` / `rekey` commands.
//
// Tampering: ciphertexts swapped between rows, between users of two teams,
// a flipped bit, a header naming a key nobody has, a tampered team secret,
// and a bit flipped under a running server. Each is detected, never served
// (a fixed 500 answer without any value), and alarmed in the log with the
// row it concerns; untouched rows keep being served and refreshed.
//
// Rotation: two instances on one database serve and refresh under load
// while a key is added (decrypt-only), activated and the rows re-encrypted
// by `rekey`, which is killed with SIGKILL halfway and rerun; then the old
// key is retired. Nothing is lost, every token stays readable, no request
// fails. CONNECTOR_KEYS_CONNECTIONS scales the number of connections (200 by
// default; scripts/soak runs more).
//
// OAuth flows started before a rotation complete after it, and the old key
// is not retired while a pending state still uses it.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "http/exchange.hpp"
#include "provider/oauth_flow.hpp"
#include "storage/cipher.hpp"
#include "storage/connector_config_store.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/migrations.hpp"
#include "storage/outbox.hpp"
#include "storage/token_store.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/unbound_format.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

const std::string service_token = "svc-token-keys-fetch-0001";
const std::string integrity_message = "stored credentials failed integrity check";
const std::string allowed_redirect = "https://app.example/integrations/done";

config::database_config db_config(const std::string& url) {
  config::database_config c;
  c.url = url;
  return c;
}

/// A database, a key file (the master copy every new server copies), the
/// fake provider, and a service file for the command-line tools.
struct key_world {
  temp_dir dir;
  std::string db = fresh_database("keys");
  std::string key_file = dir.file("master.key");
  std::string tool_config = dir.file("service.yaml");
  fake_provider_process fake;
  /// Fake provider family of each user seeded with one.
  std::map<std::string, std::string> family_of;

  key_world() {
    storage::keyring::generate_file(key_file);
    storage::database conn{db_config(db)};
    storage::apply_migrations(conn);
    // service_yaml points crypto.key_file at dir/master.key: the tools see
    // the master copy.
    write_file(dir.file("jwt.secret"), "test-secret-" + random_hex(24));
    // The tools get a patient connect timeout: on a loaded machine a
    // backend can take seconds to start, and a tool has no one waiting.
    auto yaml = service_yaml(options(), dir);
    auto at = yaml.find("connect_timeout_s: 2");
    if (at != std::string::npos)
      yaml.replace(at, 20, "connect_timeout_s: 15");
    write_file(tool_config, yaml);
  }

  server_options options() const {
    server_options o{db};
    o.key_file = key_file;
    o.log_level = "info";
    o.service_tokens.push_back({"reporting", service_token, {"FETCH_CONFIG"}});
    o.extra_yaml = "oauth:\n  public_base_url: https://cm.example\n"
                   "  allowed_redirect_uris: [" + allowed_redirect + "]\n"
                   "providers:\n  github:\n    client_id: cm-test-client\n"
                   "    client_secret: cm-test-secret\n"
                   "    authorization_url: " + fake.url("/authorize") + "\n"
                   "    token_url: " + fake.url("/token") + "\n"
                   "    account_url: " + fake.url("/me") + "\n"
                   "refresh:\n  provider_timeout_ms: 3000\n  lease_ms: 10000\n"
                   "  lease_poll_ms: 50\n"
                   // Each forced refresh must reach the provider: the rows
                   // are re-sealed by refreshes on either instance.
                   "  min_forced_interval_ms: 0\n"
                   // The rotation test drives forced refreshes through one
                   // service on purpose (scripts/soak: for minutes); the
                   // limits have tests of their own (test_tenant_limits).
                   "rate_limit:\n  enabled: false\n";
    return o;
  }

  /// Stores connections the way the service does (token_store under the
  /// key file's active key); `with_family` users also get a token family at
  /// the fake provider, so they can be refreshed.
  void seed(const std::vector<std::pair<std::string, std::string>>& team_users,
            bool with_family) {
    storage::database conn{db_config(db)};
    storage::column_cipher cipher{storage::keyring::load(key_file)};
    storage::outbox events{conn};
    storage::token_store store{conn, cipher, events};
    for (auto& [team, user] : team_users) {
      if (with_family) {
        auto answer = nlohmann::json::parse(fake.admin(
          "/__seed", nlohmann::json{{"refresh_token", "rt-seed-" + user},
                                    {"access_token", "at-seed-" + user}}
                       .dump()));
        family_of[user] = answer["family"].get<std::string>();
      }
      token_record r;
      r.key = {team, user, "github"};
      r.access_token = secret{"at-seed-" + user};
      r.refresh_token = secret{"rt-seed-" + user};
      r.expires_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count() +
                        3600'000;
      r.scopes = {"repo"};
      store.save(r);
    }
  }

  /// `team`'s own OAuth app secret for github, stored as an admin would.
  void store_team_secret(const std::string& team, const std::string& value) {
    storage::database conn{db_config(db)};
    storage::column_cipher cipher{storage::keyring::load(key_file)};
    storage::outbox events{conn};
    storage::token_store tokens{conn, cipher, events};
    storage::connector_config_store configs{conn, cipher, events, tokens};
    connector_change change;
    change.team_id = team;
    change.connector_name = "github";
    change.what = "config";
    change.client_secret = secret{value};
    change.audit = {team, "system", "test", "connector.config", "github", "", "", "{}"};
    configs.apply(change);
  }

  /// acme's users user0 … user<n-1>, the first `refreshing` of them with a
  /// token family at the fake provider.
  std::vector<std::string> seed_acme_users(int n, int refreshing) {
    std::vector<std::string> users;
    std::vector<std::pair<std::string, std::string>> static_rows, refreshing_rows;
    for (int i = 0; i < n; ++i) {
      users.push_back("user" + std::to_string(i));
      (i < refreshing ? refreshing_rows : static_rows).push_back({"acme", users.back()});
    }
    seed(refreshing_rows, true);
    seed(static_rows, false);
    return users;
  }

  std::string row_id(const std::string& user) {
    return psql(db, "SELECT id FROM connector_tokens WHERE user_id = '" + user + "'");
  }

  /// Runs a connector-manager command with the tools' service file;
  /// returns its exit status, output in `out`.
  int tool(const std::string& args, std::string* out = nullptr) {
    auto log = dir.file("tool.out");
    int rc = run_command(server_binary() + " " + args + " --config " + tool_config + " >" + log +
                         " 2>&1");
    if (out)
      *out = read_file(log);
    return rc;
  }

  nlohmann::json families() {
    return nlohmann::json::parse(fake.admin("/__stats", ""))["families"];
  }

  /// Whether `token` is one of `user`'s own access tokens: the seeded one,
  /// or one its provider family issued.
  bool is_own_token(const std::string& user, const std::string& token) const {
    auto it = family_of.find(user);
    return token == "at-seed-" + user ||
           (it != family_of.end() && token.rfind("at-" + it->second + "-", 0) == 0);
  }

  /// The (access, refresh) tokens `user` must hold now: the provider's
  /// latest for a user with a family, whose family must not be revoked (no
  /// refresh token was reused); the seeded ones otherwise.
  std::pair<std::string, std::string> expected_tokens(const nlohmann::json& all_families,
                                                      const std::string& user) {
    auto it = family_of.find(user);
    if (it == family_of.end())
      return {"at-seed-" + user, "rt-seed-" + user};
    auto& f = all_families[it->second];
    EXPECT_FALSE(f["revoked"].get<bool>()) << user;
    return {f["current_access"].get<std::string>(), f["current_refresh"].get<std::string>()};
  }
};

/// The row of acme's `user` decrypts to exactly (access, refresh).
void expect_stored(storage::token_store& store, const std::string& user,
                   const std::pair<std::string, std::string>& tokens) {
  std::optional<token_record> row;
  EXPECT_NO_THROW(row = store.find({"acme", user, "github"})) << user;
  ASSERT_TRUE(row) << user;
  EXPECT_EQ(row->access_token.reveal(), tokens.first) << user;
  EXPECT_EQ(row->refresh_token.reveal(), tokens.second) << user;
}

http_reply service_get(uint16_t port, const std::string& team, const std::string& user) {
  return http_call(port, "GET",
                   "/api/internal/tokens/github?user_id=" + user + "&team_id=" + team,
                   {{"X-Services-Token", service_token}});
}

http_reply service_refresh(uint16_t port, const std::string& team, const std::string& user) {
  return http_call(port, "POST", "/api/v1/connectors/internal/refreshIndividualConnectorToken",
                   {{"X-Services-Token", service_token}, {"Content-Type", "application/json"}},
                   nlohmann::json{{"userId", user}, {"connectorName", "github"}, {"orgId", team}}
                     .dump());
}

http_reply user_refresh(const server_process& server, const std::string& team,
                        const std::string& user) {
  return http_call(server.port(), "POST", "/api/connectors/github/refresh",
                   {{"Authorization", "Bearer " + server.mint(user, team)}});
}

/// Counts log lines that contain every one of `parts`.
int lines_with(const std::string& log, const std::vector<std::string>& parts) {
  int n = 0;
  size_t start = 0;
  while (start < log.size()) {
    auto end = log.find('\n', start);
    if (end == std::string::npos)
      end = log.size();
    auto line = log.substr(start, end - start);
    bool all = true;
    for (auto& p : parts)
      all = all && line.find(p) != std::string::npos;
    n += all ? 1 : 0;
    start = end + 1;
  }
  return n;
}

/// The tampered-row answer: 500, the fixed message, and nothing else.
void expect_refused(const http_reply& r, const std::string& what,
                    const std::vector<std::string>& must_not_contain) {
  EXPECT_EQ(r.status, 500) << what << ": " << r.body;
  auto json = r.json();
  EXPECT_EQ(json["error"]["code"], "internal") << what;
  auto message = json["error"].value("message", "");
  EXPECT_NE(message.find(integrity_message), std::string::npos) << what << ": " << r.body;
  for (auto& s : must_not_contain)
    EXPECT_EQ(r.raw.find(s), std::string::npos) << what << " leaks " << s;
}

} // namespace

// ---------------------------------------------------------------------------

TEST(Keys, TamperedCiphertextsAreDetectedAlarmedAndNeverServed) {
  key_world w;
  // swap_a/swap_b: access tokens swapped. flip: one bit of the refresh
  // token. row_a (acme) / row_b (globex): whole rows' ciphertexts swapped
  // between users of two teams. wrong_key: the header names key 9. plain1,
  // plain2: untouched (plain2 is tampered later, under a running server).
  w.seed({{"acme", "swap_a"}, {"acme", "swap_b"}, {"acme", "flip"}, {"acme", "row_a"},
          {"globex", "row_b"}, {"acme", "wrong_key"}, {"acme", "plain1"}, {"acme", "plain2"}},
         true);
  w.store_team_secret("acme", "team-app-secret-canary");
  // A piece of every ciphertext as stored (past the header), and every
  // plaintext: none may ever show up in an answer, the log or the tools.
  std::vector<std::string> never_shown;
  {
    auto text = psql(w.db, "SELECT substr(encode(c, 'hex'), 11, 40) FROM (SELECT access_token "
                           "AS c FROM connector_tokens UNION ALL SELECT refresh_token FROM "
                           "connector_tokens UNION ALL SELECT secrets FROM connector_configs) x");
    size_t start = 0;
    while (start < text.size()) {
      auto end = text.find('\n', start);
      if (end == std::string::npos)
        end = text.size();
      never_shown.push_back(text.substr(start, end - start));
      start = end + 1;
    }
    EXPECT_EQ(never_shown.size(), 17u);
  }
  for (auto user : {"swap_a", "swap_b", "flip", "row_a", "row_b", "wrong_key", "plain1", "plain2"}) {
    never_shown.push_back(std::string("at-seed-") + user);
    never_shown.push_back(std::string("rt-seed-") + user);
  }
  never_shown.push_back("team-app-secret-canary");

  psql(w.db,
       // (i) two rows' access tokens swapped.
       "UPDATE connector_tokens t SET access_token = CASE t.user_id "
       "WHEN 'swap_a' THEN (SELECT access_token FROM connector_tokens WHERE user_id = 'swap_b') "
       "ELSE (SELECT access_token FROM connector_tokens WHERE user_id = 'swap_a') END "
       "WHERE t.user_id IN ('swap_a', 'swap_b');"
       // (ii) one bit of a refresh token flipped (in the ciphertext body).
       "UPDATE connector_tokens SET refresh_token = "
       "set_byte(refresh_token, 40, get_byte(refresh_token, 40) # 1) WHERE user_id = 'flip';"
       // (iii) a whole row's ciphertexts swapped with another team's user's.
       "UPDATE connector_tokens t SET access_token = o.access_token, "
       "refresh_token = o.refresh_token FROM connector_tokens o "
       "WHERE (t.user_id, o.user_id) IN (('row_a', 'row_b'), ('row_b', 'row_a'));"
       // A header naming a key that no key file holds.
       "UPDATE connector_tokens SET access_token = set_byte(access_token, 4, 9) "
       "WHERE user_id = 'wrong_key';"
       // (iv) the team's OAuth app secret, one bit flipped.
       "UPDATE connector_configs SET secrets = set_byte(secrets, 30, get_byte(secrets, 30) # 128) "
       "WHERE team_id = 'acme' AND connector_name = 'github';");

  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto port = server.port();

  const std::vector<std::pair<std::string, std::string>> tampered = {
    {"acme", "swap_a"}, {"acme", "swap_b"}, {"acme", "flip"}, {"acme", "row_a"},
    {"globex", "row_b"}, {"acme", "wrong_key"}};
  auto calls_before = w.fake.refresh_calls();
  for (auto& [team, user] : tampered) {
    expect_refused(service_get(port, team, user), "service token route for " + user, never_shown);
    expect_refused(user_refresh(server, team, user), "user refresh for " + user, never_shown);
    expect_refused(service_refresh(port, team, user), "service refresh for " + user, never_shown);
  }
  EXPECT_EQ(w.fake.refresh_calls(), calls_before) << "no tampered refresh token reached the provider";

  // The team's tampered app secret: refused to its admin, the rest of the
  // team's connectors still listed.
  auto admin = "Bearer " + server.mint("boss", "acme", true);
  expect_refused(http_call(port, "GET", "/api/v1/connectors/config/github",
                           {{"Authorization", admin}}),
                 "connector config", never_shown);
  EXPECT_EQ(http_call(port, "GET", "/api/v1/connectors", {{"Authorization", admin}}).status, 200);

  // Untouched rows: served and refreshed as usual.
  auto plain = service_get(port, "acme", "plain1");
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(plain.json()["access_token"], "at-seed-plain1");
  auto refreshed = user_refresh(server, "acme", "plain1");
  ASSERT_EQ(refreshed.status, 200) << refreshed.body;
  EXPECT_EQ(service_get(port, "acme", "plain1").json()["access_token"],
            "at-" + w.family_of["plain1"] + "-1");

  // Tampered under a running server: the access token it loaded (and
  // authenticated) before stays valid, but the refresh that would use the
  // tampered refresh token is refused and alarmed; nothing reaches the
  // provider.
  ASSERT_EQ(service_get(port, "acme", "plain2").json()["access_token"], "at-seed-plain2");
  psql(w.db, "UPDATE connector_tokens SET refresh_token = "
             "set_byte(refresh_token, 50, get_byte(refresh_token, 50) # 4) "
             "WHERE user_id = 'plain2'");
  calls_before = w.fake.refresh_calls();
  expect_refused(user_refresh(server, "acme", "plain2"), "refresh after live tampering",
                 never_shown);
  EXPECT_EQ(w.fake.refresh_calls(), calls_before);
  auto still = service_get(port, "acme", "plain2");
  EXPECT_EQ(still.status, 200) << still.body;
  EXPECT_EQ(still.json()["access_token"], "at-seed-plain2") << "the authenticated value, not the tampered one";

  server.stop();
  auto log = server.log();
  // Each tampered row alarmed by its row id and column, never a value.
  for (auto& [team, user] : tampered) {
    EXPECT_GE(lines_with(log, {"ALARM", "\"row_id\":\"" + w.row_id(user) + "\"",
                               "\"user_id\":\"" + user + "\""}),
              1)
      << user << "\n" << log;
  }
  EXPECT_GE(lines_with(log, {"ALARM", w.row_id("flip"), "\"column\":\"refresh_token\""}), 1);
  EXPECT_GE(lines_with(log, {"ALARM", w.row_id("swap_a"), "\"column\":\"access_token\""}), 1);
  EXPECT_GE(lines_with(log, {"ALARM", w.row_id("wrong_key"), "unknown key 9"}), 1);
  EXPECT_GE(lines_with(log, {"ALARM", w.row_id("plain2"), "\"column\":\"refresh_token\""}), 1);
  EXPECT_GE(lines_with(log, {"ALARM", "connector secret", "\"connector\":\"github\""}), 1);
  EXPECT_EQ(lines_with(log, {"ALARM", w.row_id("plain1")}), 0) << "untouched rows never alarm";
  for (auto& s : never_shown)
    EXPECT_EQ(log.find(s), std::string::npos) << "log leaks " << s;

  // The re-encryption job leaves tampered rows alone, alarms them, and
  // fails, so the old key cannot be retired over them.
  ASSERT_EQ(run_command(server_binary() + " keygen --out " + w.key_file + " --add >/dev/null"), 0);
  ASSERT_EQ(run_command(server_binary() + " keygen --out " + w.key_file +
                        " --activate 2 >/dev/null"),
            0);
  std::string out;
  EXPECT_EQ(w.tool("rekey", &out), 1) << out;
  EXPECT_NE(out.find("connector_tokens: 1 rows re-encrypted, 7 failed to decrypt"),
            std::string::npos)
    << out;
  EXPECT_NE(out.find("connector_configs: 0 rows re-encrypted, 1 failed to decrypt"),
            std::string::npos)
    << out;
  EXPECT_GE(lines_with(out, {"ALARM", "rekey", w.row_id("row_b"), "\"team_id\":\"globex\""}), 1);
  EXPECT_EQ(w.tool("keygen --retire 1", &out), 1) << out;
  for (auto& s : never_shown)
    EXPECT_EQ(out.find(s), std::string::npos) << "rekey output leaks " << s;
  // Untouched and the refreshed row moved to key 2; nothing tampered did.
  EXPECT_EQ(psql(w.db, "SELECT string_agg(user_id, ',' ORDER BY user_id) FROM connector_tokens "
                       "WHERE key_id = 2"),
            "plain1");
}

// ---------------------------------------------------------------------------

namespace {

/// Two server instances on one database, restarted one at a time (each
/// restart copies the key file as it is then); load goes to whichever is up.
class fleet {
public:
  explicit fleet(key_world& w) : w_(w) {
    for (int slot = 0; slot < 2; ++slot)
      start(slot);
  }
  ~fleet() {
    for (auto& s : servers_)
      if (s)
        s->stop();
  }

  /// A live instance for one request (its slot is returned, and counted in
  /// flight until release()).
  int acquire(int preferred, uint16_t& port) {
    std::lock_guard<std::mutex> g{mutex_};
    int slot = ports_[preferred] != 0 ? preferred : 1 - preferred;
    port = ports_[slot];
    ++in_flight_[slot];
    return slot;
  }
  void release(int slot) { --in_flight_[slot]; }

  /// Takes `slot` out of the load, lets its requests finish, stops it
  /// (SIGTERM) and starts a fresh instance in its place.
  void restart(int slot) {
    {
      std::lock_guard<std::mutex> g{mutex_};
      ports_[slot] = 0;
    }
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (in_flight_[slot] > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    EXPECT_EQ(servers_[slot]->stop(), 0) << "instance " << slot << " did not stop cleanly";
    past_logs_ += servers_[slot]->log();
    start(slot);
  }

  void restart_all() {
    restart(0);
    restart(1);
  }

  server_process& server(int slot) { return *servers_[slot]; }

  /// Every instance's log so far, stopped ones included.
  std::string logs() const {
    return past_logs_ + servers_[0]->log() + servers_[1]->log();
  }

private:
  void start(int slot) {
    auto opts = w_.options();
    // The instance asked is the one that refreshes and seals: the test
    // reads each instance's rows with the other's key. Forwarded to the
    // owner, every refresh of a connection would seal under one instance's
    // key, whichever was asked.
    opts.extra_yaml += "cluster:\n  forward: false\n";
    servers_[slot] = std::make_unique<server_process>(opts);
    if (!servers_[slot]->wait_ready())
      throw std::runtime_error("instance did not start: " + servers_[slot]->log());
    std::lock_guard<std::mutex> g{mutex_};
    ports_[slot] = servers_[slot]->port();
  }

  key_world& w_;
  std::mutex mutex_;
  std::unique_ptr<server_process> servers_[2];
  uint16_t ports_[2] = {0, 0};
  std::atomic<int> in_flight_[2] = {{0}, {0}};
  std::string past_logs_;
};

/// What the load saw.
struct load_stats {
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::atomic<long> reads{0};
  std::atomic<long> refreshes{0};
  std::atomic<long> server_errors{0};
  std::atomic<long> other_failures{0};
  std::atomic<long> transport_errors{0};
  std::atomic<long> wrong_values{0};
  std::mutex mutex;
  std::vector<std::string> problems;

  std::vector<std::string> timeline;

  std::string stamp() const {
    return "+" + std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - started)
                                  .count()) +
           " ms ";
  }
  void note(const std::string& what) {
    std::lock_guard<std::mutex> g{mutex};
    if (problems.size() < 10)
      problems.push_back(stamp() + what);
  }
  /// Marks a phase, so problems can be placed in time.
  void phase(const std::string& name) {
    std::lock_guard<std::mutex> g{mutex};
    timeline.push_back(stamp() + name);
  }
  void count(const http_reply& r, const std::string& what) {
    if (r.status >= 500) {
      ++server_errors;
      note(what + ": " + std::to_string(r.status) + " " + r.body);
    } else if (r.status != 200) {
      ++other_failures;
      note(what + ": " + std::to_string(r.status) + " " + r.body);
    }
  }
};

/// The test process catches SIGCHLD, and a recv on a socket with a receive
/// timeout is never restarted after a handler ran (signal(7)): each child
/// that exits (psql, the tools, a stopped server) would fail a request in
/// flight with EINTR. Load threads leave SIGCHLD to the main thread.
void block_child_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int connection_count() {
  if (const char* n = std::getenv("CONNECTOR_KEYS_CONNECTIONS"))
    return std::max(20, std::atoi(n));
  return 200;
}

/// Rows with a ciphertext under `key_id`, by header (not by key_id column).
int64_t rows_under_key(storage::database& db, uint32_t key_id) {
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", key_id);
  std::string h = hex;
  return db
    .exec_script("SELECT count(*) FROM connector_tokens WHERE substring(access_token FROM 2 FOR "
                 "4) = decode('" + h + "', 'hex') OR substring(refresh_token FROM 2 FOR 4) = "
                 "decode('" + h + "', 'hex')")
    .integer(0, 0);
}

} // namespace

TEST(Keys, RotationUnderLoadWithTheJobKilledHalfwayLosesNothing) {
  const int n = connection_count();
  const int refreshing = std::max(10, n / 10);
  key_world w;
  auto users = w.seed_acme_users(n, refreshing);
  auto started = std::chrono::steady_clock::now();

  fleet instances{w};
  load_stats stats;
  std::atomic<bool> stop_reads{false}, stop_refreshes{false};
  auto load_deadline = std::chrono::steady_clock::now() + 180s;
  auto reader = [&](int offset) {
    block_child_signals();
    for (long i = offset; !stop_reads && i < 10'000'000 &&
                          std::chrono::steady_clock::now() < load_deadline;
         i += 2) {
      auto& user = users[static_cast<size_t>(i) % users.size()];
      uint16_t port = 0;
      int slot = instances.acquire(static_cast<int>(i % 2), port);
      http_reply r;
      bool sent = true;
      try {
        r = service_get(port, "acme", user);
      } catch (const std::exception& e) {
        sent = false;
        stats.note(std::string("read ") + user + ": " + e.what());
      }
      instances.release(slot);
      if (!sent) {
        ++stats.transport_errors;
        continue;
      }
      ++stats.reads;
      stats.count(r, "read " + user);
      if (r.status != 200)
        continue;
      auto token = r.json().value("access_token", "");
      if (!w.is_own_token(user, token)) {
        ++stats.wrong_values;
        stats.note("read " + user + " served a token that is not its own");
      }
      // A steady stream, not a flood: the machine is shared with the
      // servers, PostgreSQL and the job under test.
      std::this_thread::sleep_for(2ms);
    }
  };
  // -1: refreshes alternate between the instances; otherwise all go to
  // that one.
  std::atomic<int> refresh_slot{-1};
  auto refresher = [&] {
    block_child_signals();
    for (long i = 0; !stop_refreshes && i < 100'000 &&
                     std::chrono::steady_clock::now() < load_deadline;
         ++i) {
      // users[0] is left to the explicit cross-key check below.
      auto& user =
        users[1 + static_cast<size_t>(i) % static_cast<size_t>(refreshing - 1)];
      uint16_t port = 0;
      int fixed = refresh_slot;
      int slot = instances.acquire(fixed >= 0 ? fixed : static_cast<int>(i % 2), port);
      http_reply r;
      bool sent = true;
      try {
        r = service_refresh(port, "acme", user);
      } catch (const std::exception& e) {
        sent = false;
        stats.note(std::string("refresh ") + user + ": " + e.what());
      }
      instances.release(slot);
      if (!sent) {
        ++stats.transport_errors;
        continue;
      }
      ++stats.refreshes;
      stats.count(r, "refresh " + user);
      std::this_thread::sleep_for(20ms);
    }
  };
  std::thread readers[2] = {std::thread(reader, 0), std::thread(reader, 1)};
  std::thread refreshes(refresher);
  auto stop_all = [&] {
    stop_reads = stop_refreshes = true;
    for (auto& t : readers)
      if (t.joinable())
        t.join();
    if (refreshes.joinable())
      refreshes.join();
  };
  struct joiner {
    std::function<void()> f;
    ~joiner() { f(); }
  } join_on_exit{stop_all};

  stats.phase("add key 2 decrypt-only, restart both");
  // 1. A new key, decrypt-only, rolled out: every instance can read it
  //    before any instance writes with it.
  std::string out;
  ASSERT_EQ(w.tool("keygen --out " + w.key_file + " --add", &out), 0) << out;
  EXPECT_NE(out.find("added key 2"), std::string::npos) << out;
  EXPECT_EQ(storage::keyring::load(w.key_file)->active_id(), 1u);
  instances.restart_all();
  // 2. Activated, rolled out: meanwhile one instance writes under key 2 and
  //    the other, still writing under key 1, reads those rows.
  stats.phase("activate key 2, restart instance 0");
  ASSERT_EQ(w.tool("keygen --out " + w.key_file + " --activate 2", &out), 0) << out;
  instances.restart(0);
  {
    // A row instance 0 seals under key 2 is read (leased and refreshed) by
    // instance 1, which still seals under key 1, and the other way round.
    auto& user = users[0];
    auto key_of = [&] {
      return psql_int(w.db, "SELECT key_id FROM connector_tokens WHERE user_id = '" + user + "'");
    };
    auto first = service_refresh(instances.server(0).port(), "acme", user);
    EXPECT_EQ(first.status, 200) << first.body;
    EXPECT_EQ(key_of(), 2);
    auto second = service_refresh(instances.server(1).port(), "acme", user);
    EXPECT_EQ(second.status, 200) << second.body;
    EXPECT_EQ(key_of(), 1);
    auto third = service_refresh(instances.server(0).port(), "acme", user);
    EXPECT_EQ(third.status, 200) << third.body;
    EXPECT_EQ(key_of(), 2);
  }
  // Neither key can be retired yet: key 1 protects rows, key 2 is active.
  EXPECT_EQ(w.tool("keygen --retire 1", &out), 1) << out;
  EXPECT_EQ(w.tool("keygen --retire 2", &out), 2) << out;

  // 3. The re-encryption job, slowed down, killed with SIGKILL halfway.
  //    Harsher than the procedure asks: instance 1 has not restarted yet,
  //    and every refresh goes to it, so refreshes keep sealing rows under
  //    key 1 while the job moves them to key 2: the job and the refreshes
  //    race for the same rows (a job that wrote back what it read without
  //    checking the version would put rotated-out refresh tokens back).
  storage::database db{db_config(w.db)};
  refresh_slot = 1;
  stats.phase("rekey, slowed");
  auto moved_before = rows_under_key(db, 2);
  auto refreshes_before_job = stats.refreshes.load();
  long refreshes_during_job = 0;
  {
    // Some 40 batches 150 ms apart (6 s): the kill at half way lands with
    // seconds to spare on a loaded machine.
    auto batch = std::to_string(std::max(5, n / 40));
    child_process job{{server_binary(), "rekey", "--config", w.tool_config, "--batch-size", batch,
                       "--pause-ms", "150"},
                      w.dir.file("rekey-killed.log")};
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (rows_under_key(db, 2) < moved_before + n / 2 &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    job.kill_now();
    refreshes_during_job = stats.refreshes.load() - refreshes_before_job;
    stats.phase("rekey killed");
  }
  // The race this phase is about took place (a count over the whole test
  // would depend on the machine's speed, not on the race).
  EXPECT_GE(refreshes_during_job, 1) << "no refresh raced the job";
  refresh_slot = -1;
  auto old_rows = rows_under_key(db, 1);
  auto new_rows = rows_under_key(db, 2);
  EXPECT_GT(old_rows, 0) << "the job finished before it could be killed; slow it down more";
  // (Refreshes through instance 1 may have moved a few back to key 1.)
  EXPECT_GT(new_rows, moved_before + n / 4);
  EXPECT_EQ(db.exec_script("SELECT count(*) FROM connector_tokens").integer(0, 0), n);

  // Partial state: every row decrypts, a freshly started instance (the
  // activation's roll-out finishing) loads all of them, and every token is
  // served.
  {
    storage::column_cipher cipher{storage::keyring::load(w.key_file)};
    storage::outbox events{db};
    storage::token_store store{db, cipher, events};
    for (auto& user : users) {
      std::optional<token_record> row;
      EXPECT_NO_THROW(row = store.find({"acme", user, "github"})) << user;
      EXPECT_TRUE(row && !row->access_token.empty() && !row->refresh_token.empty()) << user;
    }
  }
  stats.phase("restart instance 1 in the half-rotated state");
  instances.restart(1);
  // It takes over its share of the shards from the other instance and
  // reads every row it is asked for; none fails to decrypt.
  for (auto& user : users) {
    uint16_t port = 0;
    int slot = instances.acquire(1, port);
    auto r = service_get(port, "acme", user);
    instances.release(slot);
    EXPECT_EQ(r.status, 200) << user << " in the half-rotated state: " << r.body;
  }
  EXPECT_EQ(lines_with(instances.server(1).log(), {"ALARM"}), 0) << instances.server(1).log();

  // 4. Rerun to completion.
  stats.phase("rekey rerun");
  auto rekey_started = std::chrono::steady_clock::now();
  ASSERT_EQ(w.tool("rekey --batch-size 50", &out), 0) << out;
  auto rekey_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - rekey_started)
                    .count();
  // The job's own summary (its lines that are not log lines), for the record.
  for (size_t start = 0; start < out.size();) {
    auto end = std::min(out.find('\n', start), out.size());
    if (out[start] != '{')
      std::cerr << out.substr(start, end - start) << "\n";
    start = end + 1;
  }
  EXPECT_NE(out.find("no stored value uses an old key"), std::string::npos) << out;
  EXPECT_NE(out.find("key 1 is unused"), std::string::npos) << out;
  EXPECT_EQ(rows_under_key(db, 1), 0);
  EXPECT_EQ(db.exec_script("SELECT count(*) FROM connector_tokens WHERE key_id <> 2").integer(0, 0),
            0);
  EXPECT_EQ(out.find("at-"), std::string::npos) << "no value in the job's output";
  EXPECT_EQ(out.find("rt-"), std::string::npos) << "no value in the job's output";

  // 5. The old key retired, rolled out; refreshes stop first so both
  //    instances load the final rows. Reads go on throughout.
  ASSERT_EQ(w.tool("keygen --retire 1", &out), 0) << out;
  EXPECT_EQ(storage::keyring::load(w.key_file)->key_ids(), std::vector<uint32_t>{2});
  stop_refreshes = true;
  refreshes.join();
  stats.phase("key 1 retired, restart both");
  instances.restart_all();
  stats.phase("final checks");
  std::this_thread::sleep_for(200ms);
  stop_reads = true;
  for (auto& t : readers)
    t.join();

  // Nothing lost: every row there, every token readable with key 2 alone
  // and equal to the provider's latest, no family revoked (no refresh
  // token was ever reused), no request failed, no alarm.
  EXPECT_EQ(db.exec_script("SELECT count(*) FROM connector_tokens WHERE status = 'connected'")
              .integer(0, 0),
            n);
  auto families = w.families();
  storage::column_cipher final_cipher{storage::keyring::load(w.key_file)};
  storage::outbox final_events{db};
  storage::token_store final_store{db, final_cipher, final_events};
  for (auto& user : users) {
    auto tokens = w.expected_tokens(families, user);
    auto& access = tokens.first;
    expect_stored(final_store, user, tokens);
    for (int slot = 0; slot < 2; ++slot) {
      auto r = service_get(instances.server(slot).port(), "acme", user);
      EXPECT_EQ(r.status, 200) << user << ": " << r.body;
      EXPECT_EQ(r.json().value("access_token", ""), access) << user << " on instance " << slot;
    }
  }
  EXPECT_EQ(stats.server_errors, 0);
  EXPECT_EQ(stats.other_failures, 0);
  EXPECT_EQ(stats.transport_errors, 0);
  EXPECT_EQ(stats.wrong_values, 0);
  for (auto& p : stats.problems)
    ADD_FAILURE() << p;
  if (!stats.problems.empty()) {
    for (auto& t : stats.timeline)
      std::cerr << t << "\n";
    auto all = instances.logs();
    for (size_t start = 0; start < all.size();) {
      auto end = std::min(all.find('\n', start), all.size());
      auto line = all.substr(start, end - start);
      if (line.find("\"level\":\"info\"") == std::string::npos)
        std::cerr << line << "\n";
      start = end + 1;
    }
  }
  EXPECT_GE(stats.reads, n);
  auto logs = instances.logs();
  EXPECT_EQ(logs.find("ALARM"), std::string::npos) << logs;
  auto total_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - started)
                    .count();
  report_figure("keys.rotation_connections", std::to_string(n));
  report_figure("keys.rotation_reads", std::to_string(stats.reads.load()));
  report_figure("keys.rotation_refreshes", std::to_string(stats.refreshes.load()));
  report_figure("keys.rotation_refreshes_during_the_job", std::to_string(refreshes_during_job));
  report_figure("keys.rekey_rerun_ms", std::to_string(rekey_ms));
  report_figure("keys.rotation_total_ms", std::to_string(total_ms));
}

// ---------------------------------------------------------------------------

namespace {

/// Starts an OAuth authorization on `server` and lets the fake provider
/// approve it: the callback's query (code and state).
std::vector<std::pair<std::string, std::string>> approved_flow(key_world& w,
                                                               const server_process& server,
                                                               const std::string& user) {
  auto started = http_call(server.port(), "GET",
                           "/api/oauth/github/authorize?redirect_uri=" +
                             oauth::form_encode({{"", allowed_redirect}}).substr(1),
                           {{"Authorization", "Bearer " + server.mint(user, "acme")}});
  if (started.status != 200)
    throw std::runtime_error("authorize failed: " + started.body);
  auto url = started.json()["auth_url"].get<std::string>();
  auto path = url.substr(url.find('/', url.find("://") + 3));
  auto approved = http_call(w.fake.port(), "GET", path);
  if (approved.status != 302)
    throw std::runtime_error("the fake did not approve: " + approved.body);
  auto location = approved.header("location");
  std::map<std::string, std::string> q;
  http::parse_query(location.substr(location.find('?') + 1), q);
  return {q.begin(), q.end()};
}

http_reply finish_flow(const server_process& server,
                       const std::vector<std::pair<std::string, std::string>>& query) {
  return http_call(server.port(), "GET", "/api/oauth/github/callback?" + oauth::form_encode(query));
}

} // namespace

TEST(Keys, OAuthFlowsStartedBeforeARotationStillComplete) {
  key_world w;
  std::vector<std::pair<std::string, std::string>> alice_flow, bob_flow;
  {
    server_process before{w.options()};
    ASSERT_TRUE(before.wait_ready()) << before.log();
    alice_flow = approved_flow(w, before, "alice");
    bob_flow = approved_flow(w, before, "bob");
  }
  // An expired state under the old key: the job may delete it.
  psql(w.db, "INSERT INTO oauth_states (team_id, state_hash, user_id, provider, redirect_uri, "
             "key_id, expires_at) VALUES ('acme', decode('00ff', 'hex'), 'carol', 'github', "
             "'https://app.example/integrations/done', 1, now() - interval '1 minute')");
  std::string out;
  ASSERT_EQ(w.tool("keygen --out " + w.key_file + " --add", &out), 0) << out;
  ASSERT_EQ(w.tool("keygen --out " + w.key_file + " --activate 2", &out), 0) << out;

  // Another instance, key 2 active: the states were hashed (and their
  // verifiers sealed) under key 1, and are still found.
  server_process after{w.options()};
  ASSERT_TRUE(after.wait_ready()) << after.log();
  auto alice = finish_flow(after, alice_flow);
  ASSERT_EQ(alice.status, 200) << alice.body;
  EXPECT_EQ(alice.json()["connected"], true);

  // Bob's state still lives under key 1: the job says so and the key
  // cannot be retired yet; the expired one is gone.
  EXPECT_EQ(w.tool("rekey", &out), 1) << out;
  EXPECT_NE(out.find("oauth_states: 1 expired under an old key deleted, 1 live"),
            std::string::npos)
    << out;
  EXPECT_EQ(w.tool("keygen --retire 1", &out), 1) << out;
  EXPECT_NE(out.find("still protects 1 stored values"), std::string::npos) << out;

  auto bob = finish_flow(after, bob_flow);
  ASSERT_EQ(bob.status, 200) << bob.body;
  EXPECT_EQ(w.tool("rekey", &out), 0) << out;
  EXPECT_EQ(w.tool("keygen --retire 1", &out), 0) << out;
  EXPECT_EQ(psql_int(w.db, "SELECT count(*) FROM connector_tokens WHERE key_id = 2"), 2);
  after.stop();
  EXPECT_EQ(after.log().find("ALARM"), std::string::npos) << after.log();
}

// ---------------------------------------------------------------------------
// Ciphertexts bound to their team (issue 16, item 7).

namespace {

/// Copies `where`'s rows of `table` into team `to`, changing nothing else
/// (same id, user, provider, ciphertexts): what someone with write access
/// to the database, or a bug in a migration, could do.
std::string copy_into_team(const std::string& table, const std::string& where,
                           const std::string& to) {
  return "CREATE TEMP TABLE copied AS SELECT * FROM " + table + " WHERE " + where +
         "; UPDATE copied SET team_id = '" + to + "'; INSERT INTO " + table +
         " SELECT * FROM copied; DROP TABLE copied;";
}

/// A digest of what a table holds (to show a refused request changed
/// nothing).
std::string table_digest(const std::string& db, const std::string& table) {
  return psql(db, "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM " +
                    table + " t");
}

std::string values_of_format_sql(int format) {
  auto f = "'\\x0" + std::to_string(format) + "'::bytea";
  auto is = [&](const std::string& column) {
    return "count(*) FILTER (WHERE substring(" + column + " FROM 1 FOR 1) = " + f + ")";
  };
  return "SELECT (SELECT " + is("access_token") + " + " + is("refresh_token") +
         " FROM connector_tokens) + (SELECT " + is("secrets") +
         " FROM connector_configs) + (SELECT " + is("code_verifier") + " FROM oauth_states)";
}

int64_t values_of_format(const std::string& db, int format) {
  return psql_int(db, values_of_format_sql(format));
}

/// The same on an open connection: cheap enough to poll a running job
/// (a psql process per poll can take longer than the job under load).
int64_t values_of_format(storage::database& db, int format) {
  return db.exec_script(values_of_format_sql(format)).integer(0, 0);
}

} // namespace

TEST(Keys, ACopyIntoAnotherTeamUnderTheSameIdIsRefusedAndAlarmed) {
  key_world w;
  w.seed({{"acme", "alice"}}, true);
  w.store_team_secret("acme", "team-app-secret-canary");
  std::vector<std::pair<std::string, std::string>> bob_flow;
  {
    server_process before{w.options()};
    ASSERT_TRUE(before.wait_ready()) << before.log();
    bob_flow = approved_flow(w, before, "bob");
  }
  auto alice_row = w.row_id("alice");
  // Only the team differs: the primary key is (team_id, id), so the copy
  // keeps its id. A state's hash is unique across teams (migration 0002),
  // so Bob's pending state is moved to globex rather than copied.
  psql(w.db, copy_into_team("connector_tokens", "user_id = 'alice'", "globex") +
               copy_into_team("connector_configs", "team_id = 'acme'", "globex") +
               "UPDATE oauth_states SET team_id = 'globex' WHERE user_id = 'bob';");
  ASSERT_EQ(psql(w.db, "SELECT team_id FROM oauth_states WHERE user_id = 'bob'"), "globex");
  ASSERT_EQ(psql(w.db, "SELECT string_agg(team_id, ',' ORDER BY team_id) FROM connector_tokens "
                       "WHERE id = '" + alice_row + "'"),
            "acme,globex");
  auto tokens_before = table_digest(w.db, "connector_tokens");
  auto configs_before = table_digest(w.db, "connector_configs");
  std::vector<std::string> never_shown = {"at-seed-alice", "rt-seed-alice",
                                          "team-app-secret-canary"};
  for (auto& [name, value] : bob_flow)
    never_shown.push_back(value);

  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto port = server.port();
  auto calls_before = w.fake.refresh_calls();
  expect_refused(service_get(port, "globex", "alice"), "the copied row by service", never_shown);
  expect_refused(user_refresh(server, "globex", "alice"), "the copied row refreshed by its user",
                 never_shown);
  expect_refused(service_refresh(port, "globex", "alice"), "the copied row refreshed by service",
                 never_shown);
  EXPECT_EQ(w.fake.refresh_calls(), calls_before) << "the copied refresh token never left";
  expect_refused(http_call(port, "GET", "/api/v1/connectors/config/github",
                           {{"Authorization", "Bearer " + server.mint("boss", "globex", true)}}),
                 "the copied team secret", never_shown);
  auto callback = finish_flow(server, bob_flow);
  EXPECT_EQ(callback.status, 500) << callback.body;
  for (auto& s : never_shown)
    EXPECT_EQ(callback.raw.find(s), std::string::npos) << "the callback's answer leaks " << s;
  EXPECT_EQ(psql_int(w.db, "SELECT count(*) FROM connector_tokens WHERE user_id = 'bob'"), 0)
    << "a copied state's flow connects no one";

  // The original is untouched and served.
  auto original = service_get(port, "acme", "alice");
  ASSERT_EQ(original.status, 200) << original.body;
  EXPECT_EQ(original.json()["access_token"], "at-seed-alice");
  // Nothing refused changed a row.
  EXPECT_EQ(table_digest(w.db, "connector_tokens"), tokens_before);
  EXPECT_EQ(table_digest(w.db, "connector_configs"), configs_before);

  server.stop();
  auto log = server.log();
  EXPECT_GE(lines_with(log, {"ALARM", "\"row_id\":\"" + alice_row + "\"",
                             "\"team_id\":\"globex\"", "does not authenticate"}),
            1)
    << log;
  EXPECT_GE(lines_with(log, {"ALARM", "connector secret", "\"team_id\":\"globex\""}), 1) << log;
  EXPECT_GE(lines_with(log, {"ALARM", "OAuth verifier", "\"team_id\":\"globex\""}), 1) << log;
  EXPECT_EQ(lines_with(log, {"ALARM", "\"team_id\":\"acme\""}), 0) << "the originals never alarm";
  for (auto& s : never_shown)
    EXPECT_EQ(log.find(s), std::string::npos) << "log leaks " << s;
}

TEST(Keys, TeamUnboundValuesAreResealedOnlineAndTheFormatIsThenRefused) {
  const int n = 60, refreshing = 10;
  key_world w;
  auto users = w.seed_acme_users(n, refreshing);
  w.store_team_secret("acme", "team-app-secret-canary");
  std::vector<std::pair<std::string, std::string>> carol_flow;
  {
    server_process before{w.options()};
    ASSERT_TRUE(before.wait_ready()) << before.log();
    carol_flow = approved_flow(w, before, "carol");
  }
  // The deployment as it was before this version: every value sealed in
  // format 1, migration 0007 not applied yet.
  {
    storage::database db{db_config(w.db)};
    storage::column_cipher cipher{storage::keyring::load(w.key_file)};
    EXPECT_GE(make_deployment_before_team_binding(db, cipher), 2 * n + 1);
  }
  auto unbound_at_start = values_of_format(w.db, 1);
  EXPECT_EQ(values_of_format(w.db, 2), 0);

  // The upgrade: instances of this version start (and migrate); rows
  // exist, so format 1 stays readable.
  fleet instances{w};
  EXPECT_EQ(psql(w.db, "SELECT unbound_refused_since IS NULL FROM cipher_formats"), "t");
  for (auto& user : users)
    for (int slot = 0; slot < 2; ++slot) {
      auto r = service_get(instances.server(slot).port(), "acme", user);
      ASSERT_EQ(r.status, 200) << user << " in format 1: " << r.body;
      EXPECT_TRUE(w.is_own_token(user, r.json().value("access_token", ""))) << user;
    }

  // Reads and forced refreshes on both instances throughout.
  load_stats stats;
  std::atomic<bool> stop{false};
  auto deadline = std::chrono::steady_clock::now() + 120s;
  std::thread load([&] {
    block_child_signals();
    for (long i = 0; !stop && i < 1'000'000 && std::chrono::steady_clock::now() < deadline; ++i) {
      uint16_t port = 0;
      int slot = instances.acquire(static_cast<int>(i % 2), port);
      try {
        if (i % 5 == 4) {
          auto& user = users[static_cast<size_t>(i / 5) % static_cast<size_t>(refreshing)];
          auto r = service_refresh(port, "acme", user);
          ++stats.refreshes;
          stats.count(r, "refresh " + user);
        } else {
          auto& user = users[static_cast<size_t>(i) % users.size()];
          auto r = service_get(port, "acme", user);
          ++stats.reads;
          stats.count(r, "read " + user);
          if (r.status == 200 && !w.is_own_token(user, r.json().value("access_token", ""))) {
            ++stats.wrong_values;
            stats.note("read " + user + " served a token that is not its own");
          }
        }
      } catch (const std::exception& e) {
        ++stats.transport_errors;
        stats.note(e.what());
      }
      instances.release(slot);
      std::this_thread::sleep_for(5ms);
    }
  });
  struct joiner {
    std::function<void()> f;
    ~joiner() { f(); }
  } join_on_exit{[&] {
    stop = true;
    if (load.joinable())
      load.join();
  }};

  // The job, slowed down and killed with SIGKILL a third of the way
  // (about 120 values in batches of 2, 150 ms apart: some 9 s, so the kill
  // lands with seconds to spare on a loaded machine): resumable.
  {
    storage::database poll{db_config(w.db)};
    child_process job{{server_binary(), "rekey", "--config", w.tool_config, "--batch-size", "2",
                       "--pause-ms", "150"},
                      w.dir.file("rekey-killed.log")};
    auto until = std::chrono::steady_clock::now() + 30s;
    // Refreshes re-seal at most 2 values of each refreshing user on their
    // own; beyond those, the job has done its share.
    while (values_of_format(poll, 2) < 2 * refreshing + n / 2 &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(5ms);
    job.kill_now();
  }
  auto left_after_kill = values_of_format(w.db, 1);
  EXPECT_GT(left_after_kill, 0) << "the job finished before it could be killed";
  EXPECT_LT(left_after_kill, unbound_at_start);
  EXPECT_EQ(psql(w.db, "SELECT unbound_refused_since IS NULL FROM cipher_formats"), "t")
    << "an interrupted job refuses nothing";

  std::string out;
  ASSERT_EQ(w.tool("rekey --batch-size 20", &out), 0) << out;
  EXPECT_NE(out.find("every stored value is bound to its team"), std::string::npos) << out;
  EXPECT_EQ(values_of_format(w.db, 1), 0);
  EXPECT_EQ(psql(w.db, "SELECT unbound_refused_since IS NOT NULL FROM cipher_formats"), "t");
  for (auto& s : {"at-seed-", "rt-seed-", "team-app-secret-canary"})
    EXPECT_EQ(out.find(s), std::string::npos) << "the job's output leaks " << s;

  // A flow started before the upgrade completes after it: its verifier
  // was re-sealed in place.
  auto carol = finish_flow(instances.server(0), carol_flow);
  ASSERT_EQ(carol.status, 200) << carol.body;
  EXPECT_EQ(carol.json()["connected"], true);
  EXPECT_EQ(http_call(instances.server(1).port(), "GET", "/api/v1/connectors/config/github",
                      {{"Authorization", "Bearer " + instances.server(1).mint("boss", "acme", true)}})
              .status,
            200);

  stop = true;
  load.join();
  EXPECT_EQ(stats.server_errors, 0);
  EXPECT_EQ(stats.other_failures, 0);
  EXPECT_EQ(stats.transport_errors, 0);
  EXPECT_EQ(stats.wrong_values, 0);
  for (auto& p : stats.problems)
    ADD_FAILURE() << p;
  EXPECT_GE(stats.refreshes, 1);
  // Nothing lost, no refresh token reused: every row holds the provider's
  // latest tokens.
  auto families = w.families();
  {
    storage::database db{db_config(w.db)};
    storage::column_cipher cipher{storage::keyring::load(w.key_file)};
    storage::outbox events{db};
    storage::token_store store{db, cipher, events};
    for (auto& user : users)
      expect_stored(store, user, w.expected_tokens(families, user));
  }
  auto logs = instances.logs();
  EXPECT_EQ(logs.find("ALARM"), std::string::npos) << logs;

  // From now on a format-1 value can only be a copy: one sealed the old
  // way for another team (the team was not in its binding) is refused by
  // the running instances, by a fresh one, and by the job, which does not
  // launder it. A running instance that still allowed format 1 re-checks
  // at most every 5 s (storage/unbound_format.hpp); the copy arrives after
  // that (a value read inside the window stays in memory until its next
  // refresh, like any row tampered under a running server).
  std::this_thread::sleep_for(6s);
  auto donor = w.row_id(users[refreshing]);
  {
    storage::database db{db_config(w.db)};
    auto keys = storage::keyring::load(w.key_file);
    auto sealed = [&](const std::string& value, const char* column) {
      return storage::param::bytes(seal_unbound(
        *keys, value, {"connector_tokens", "globex", donor, "mallory", "github", column}));
    };
    db.exec({"test_insert_unbound_copy",
             "INSERT INTO connector_tokens (team_id, id, user_id, provider, kind, access_token, "
             "refresh_token, expires_at, scopes, key_id) VALUES ('globex', $1::uuid, 'mallory', "
             "'github', 'oauth', $2, $3, now() + interval '1 hour', '[]', 1)"},
            {storage::param::text(donor), sealed("at-copied-canary", "access_token"),
             sealed("rt-copied-canary", "refresh_token")});
  }
  expect_refused(service_get(instances.server(0).port(), "globex", "mallory"),
                 "a format-1 copy on a running instance", {"at-copied-canary"});
  instances.restart(1);
  expect_refused(service_get(instances.server(1).port(), "globex", "mallory"),
                 "a format-1 copy on a fresh instance", {"at-copied-canary"});
  EXPECT_EQ(w.tool("rekey", &out), 1) << out;
  EXPECT_NE(out.find("connector_tokens: 0 rows re-encrypted, 1 failed to decrypt"),
            std::string::npos)
    << out;
  EXPECT_EQ(values_of_format(w.db, 1), 2) << "the copy stays as it was, alarmed";
  logs = instances.logs() + out;
  EXPECT_GE(lines_with(logs, {"ALARM", "\"team_id\":\"globex\"", "retired team-unbound format"}),
            2)
    << logs;
  for (auto& s : {"at-copied-canary", "rt-copied-canary"})
    EXPECT_EQ(logs.find(s), std::string::npos) << "leaks " << s;
}

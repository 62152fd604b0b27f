#include "tests/support/token_world.hpp"

#include <stdexcept>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/actor_config.hpp"
#include "actors/storage_actor.hpp"
#include "common/time.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/migrations.hpp"

using namespace std::chrono_literals;

namespace cm::test {

const std::string world_service_token = "svc-token-fetch-config-0001";
const std::string world_weak_token = "svc-token-without-scope-0002";

namespace {

/// A short-lived actor system with one storage actor on the world's database.
struct storage_session {
  actor_config cfg{false};
  caf::actor_system sys{cfg};
  storage_actor store;
  caf::scoped_actor self{sys};

  storage_session(const std::string& db, const std::string& key_file) {
    config::database_config dbc;
    dbc.url = db;
    auto spawned = spawn_storage(sys, dbc, storage::keyring::load(key_file));
    if (!spawned)
      throw std::runtime_error("storage actor did not start");
    store = *spawned;
  }
  ~storage_session() { caf::anon_send_exit(store, caf::exit_reason::user_shutdown); }
};

} // namespace

token_world::token_world(std::string database_url)
  : db(database_url.empty() ? fresh_database("tokens") : std::move(database_url)) {
  storage::keyring::generate_file(key_file);
  config::database_config dbc;
  dbc.url = db;
  storage::database conn{dbc};
  storage::apply_migrations(conn);
}

server_options token_world::options(const std::string& extra_refresh) const {
  server_options o{db};
  o.key_file = key_file;
  o.log_level = "info";
  o.service_tokens.push_back({"reporting", world_service_token, {"FETCH_CONFIG"}});
  o.service_tokens.push_back({"metrics", world_weak_token, {}});
  o.extra_yaml = "providers:\n  github:\n    client_id: cm-test-client\n"
                 "    client_secret: cm-test-secret\n    token_url: " +
                 fake.url("/token") + "\n" +
                 // Fault tests force every connection's refresh through one
                 // service (1,000 in scripts/soak); the limits have tests
                 // of their own (test_tenant_limits).
                 "rate_limit:\n  enabled: false\n"
                 "refresh:\n  provider_timeout_ms: 3000\n  lease_ms: 10000\n"
                 "  lease_poll_ms: 50\n" + extra_refresh;
  return o;
}

void token_world::seed(const std::string& user, int64_t expires_in_ms, const std::string& team) {
  seed_many({user}, expires_in_ms, team);
}

void token_world::seed_many(const std::vector<std::string>& users, int64_t expires_in_ms,
                            const std::string& team) {
  storage_session s{db, key_file};
  for (auto& user : users) {
    auto refresh = "rt-seed-" + user;
    auto access = "at-seed-" + user;
    fake.admin("/__seed",
               nlohmann::json{{"refresh_token", refresh}, {"access_token", access}}.dump());
    token_record r;
    r.key = {team, user, "github"};
    r.access_token = secret{access};
    r.refresh_token = secret{refresh};
    r.expires_at_ms = unix_now_ms() + expires_in_ms;
    r.scopes = {"repo"};
    r.metadata = R"({"account_name":"octocat"})";
    bool ok = false;
    s.self->request(s.store, 10s, save_atom_v, r)
      .receive([&](token_record&) { ok = true; }, [&](caf::error&) {});
    if (!ok)
      throw std::runtime_error("seeding failed");
  }
}

void token_world::store(const std::string& team, const std::string& user,
                        const std::string& provider, const std::string& access,
                        const std::string& refresh, const std::string& metadata, bool api_key,
                        int64_t expires_in_ms) {
  storage_session s{db, key_file};
  token_record r;
  r.key = {team, user, provider};
  r.kind = api_key ? connection_kind::api_key : connection_kind::oauth;
  r.access_token = secret{access};
  r.refresh_token = secret{refresh};
  r.expires_at_ms = api_key ? 0 : unix_now_ms() + expires_in_ms;
  r.metadata = metadata;
  bool ok = false;
  s.self->request(s.store, 10s, save_atom_v, r)
    .receive([&](token_record&) { ok = true; }, [&](caf::error&) {});
  if (!ok)
    throw std::runtime_error("storing a connection failed");
}

std::string token_world::stored_refresh(const std::string& user, const std::string& team) {
  return stored_refreshes({user}, team)[user];
}

std::map<std::string, std::string>
token_world::stored_refreshes(const std::vector<std::string>& users, const std::string& team) {
  storage_session s{db, key_file};
  std::map<std::string, std::string> out;
  for (auto& user : users)
    s.self->request(s.store, 10s, find_atom_v, connection_key{team, user, "github"})
      .receive([&](token_record& r) { out[user] = r.refresh_token.reveal(); },
               [&](caf::error&) { out[user] = ""; });
  return out;
}

void token_world::backdate(const std::string& user) {
  psql(db, "UPDATE connector_tokens SET updated_at = now() - interval '1 hour' "
           "WHERE user_id = '" + user + "'");
}

void token_world::backdate_all() {
  psql(db, "UPDATE connector_tokens SET updated_at = now() - interval '1 hour'");
}

} // namespace cm::test

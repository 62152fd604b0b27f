#include "bench/front_stack.hpp"

#include <cstdio>
#include <cstdlib>

#include <unistd.h>

#include "actors/provider_client_actor.hpp"
#include "bench/bench_support.hpp"
#include "http/auth.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/migrations.hpp"

namespace cm::bench {

front_stack::front_stack(config::service_config cfg, config::provider_catalog catalog,
                         const seeder& seed) {
  char secret_path[] = "/tmp/cm-bench-jwt.XXXXXX";
  int fd = ::mkstemp(secret_path);
  std::string jwt_secret = "bench-jwt-secret-0123456789abcdef0123456789";
  [[maybe_unused]] auto written = ::write(fd, jwt_secret.data(), jwt_secret.size());
  ::close(fd);
  secret_path_ = secret_path;
  cfg.auth.hs256_secret_file = secret_path_;
  {
    storage::database db{cfg.database};
    storage::apply_migrations(db);
    db.exec_script("TRUNCATE connector_tokens");
  }
  auto keys = storage::keyring::parse(key_ring_text);
  actor_cfg_.apply(cfg.scheduler);
  sys_ = std::make_unique<caf::actor_system>(actor_cfg_);
  auto& sys = *sys_;
  auto audit = std::make_shared<storage::audit_queue>(default_audit_queue_rows);
  auto store = *spawn_storage(sys, cfg.database, keys, {}, audit);
  {
    caf::scoped_actor self{sys};
    seed(self, store);
  }
  auto client = sys.spawn(provider_client);
  auto deps = make_registry_deps(cfg, catalog);
  deps.storage = store;
  deps.provider_client = client;
  // As serve wires them: the board the fast lane reads, the team lookup
  // cache, the audit queue the storage actor writes.
  auto board = std::make_shared<token_board>();
  auto teams = std::make_shared<storage::team_lookup_cache>(std::chrono::seconds(60), 100000);
  deps.board = board;
  deps.teams = teams;
  auto registry_handle = sys.spawn(registry, std::move(deps));
  {
    caf::scoped_actor self{sys};
    self->request(registry_handle, std::chrono::minutes(1), hydrate_atom_v)
      .receive([](int64_t) {},
               [](caf::error&) {
                 std::fprintf(stderr, "the registry did not load the connections\n");
                 std::exit(1);
               });
  }
  proxy_engine_ = std::make_unique<curl_engine>("cm-curl-proxy");
  ctx_ = std::make_shared<front_context>();
  ctx_->cfg = cfg;
  ctx_->catalog = std::move(catalog);
  ctx_->auth = std::make_shared<const http::authenticator>(cfg.auth);
  ctx_->storage = store;
  ctx_->states = store;
  ctx_->configs = store;
  ctx_->registry = registry_handle;
  ctx_->provider_client = client;
  ctx_->keys = keys;
  ctx_->board = board;
  ctx_->audit = audit;
  ctx_->teams = teams;
  ctx_->proxy_engine = proxy_engine_.get();
  for (int i = 0; i < cfg.listen.threads; ++i)
    fronts_.push_back(sys.spawn(front, std::shared_ptr<const front_context>(ctx_)));
}

front_stack::~front_stack() {
  for (auto& f : fronts_)
    caf::anon_send_exit(f, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(ctx_->registry, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(ctx_->provider_client, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(ctx_->storage, caf::exit_reason::user_shutdown);
  fronts_.clear();
  ctx_.reset();
  sys_->await_all_actors_done();
  proxy_engine_.reset();
  sys_.reset();
  ::unlink(secret_path_.c_str());
}

} // namespace cm::bench

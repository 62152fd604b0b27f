// The front as `serve` wires it (app/commands.cpp), inside a bench's
// process: a storage actor with its audit queue, the provider client, the
// registry with its token board and team lookup cache (hydrated), the
// proxy's engine, and front actors over one context. The HTTP benches
// (bench_token_http, bench_proxy) put their own listener in front of it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/actor_config.hpp"
#include "actors/front_actor.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "config/provider_catalog.hpp"
#include "provider/curl_engine.hpp"

namespace cm::bench {

class front_stack {
public:
  /// Stores the bench's connections through the storage actor, before the
  /// registry loads them.
  using seeder = std::function<void(caf::scoped_actor&, const storage_actor&)>;

  /// Writes a JWT secret file into `cfg.auth` (removed again by the
  /// destructor), applies the migrations, empties connector_tokens, seeds,
  /// and starts everything; exits the process when a step fails.
  front_stack(config::service_config cfg, config::provider_catalog catalog, const seeder& seed);
  /// Stops every actor (the listener in front must be stopped first).
  ~front_stack();
  front_stack(const front_stack&) = delete;
  front_stack& operator=(const front_stack&) = delete;

  const std::shared_ptr<front_context>& context() const { return ctx_; }
  const std::vector<front_actor>& fronts() const { return fronts_; }

private:
  std::string secret_path_;
  actor_config actor_cfg_{false};
  std::unique_ptr<caf::actor_system> sys_;
  std::unique_ptr<curl_engine> proxy_engine_;
  std::shared_ptr<front_context> ctx_;
  std::vector<front_actor> fronts_;
};

} // namespace cm::bench

// Hot reload of the service file and providers.yaml
// (POST /api/v1/connectors/updateAppConfig).
//
// Everything is loaded and validated first — both files, the JWT keys, the
// OAuth client secrets, the webhook secrets — and only when all of it is
// good are the new snapshots handed to the running actors (front actors,
// registry and its connection actors, storage, webhook dispatcher). A bad
// file changes nothing. Settings that only take effect at start-up
// (listen, database, crypto, scheduler, token_service) keep their running
// values and are reported as needing a restart when they changed.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "actors/front_actor.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "api/token_routes.hpp"
#include "actors/token_service_actor.hpp"
#include "actors/webhook_dispatcher.hpp"

namespace cm {

struct reload_outcome {
  bool ok = false;
  /// Why the new configuration was rejected (file:line and key).
  std::string error;
  /// Changed settings that keep their running value until a restart.
  std::vector<std::string> restart_required;
  int64_t providers = 0;
  int64_t webhooks = 0;
};

class config_reloader {
public:
  explicit config_reloader(std::string service_file) : file_(std::move(service_file)) {}

  /// The actors to update and the configuration they run with now.
  void attach(front_context_ptr current, std::vector<front_actor> fronts, registry_actor registry,
              std::vector<storage_actor> event_writers, webhook_dispatcher_actor webhooks,
              std::shared_ptr<shared_authenticator> token_service_auth);

  /// The token route's fast lane follows reloads too.
  void follow(std::shared_ptr<token_fast_lane> lane);

  /// Drops every actor handle (at shutdown: a handle to a detached actor
  /// held past the actor system's end would keep it waiting forever).
  void detach();

  /// Loads, validates and applies; thread-safe (reloads are serialized).
  reload_outcome reload();

private:
  std::mutex mutex_;
  std::string file_;
  front_context_ptr current_;
  std::vector<front_actor> fronts_;
  registry_actor registry_;
  /// Storage actors that write events: each enqueues webhook deliveries.
  std::vector<storage_actor> event_writers_;
  webhook_dispatcher_actor webhooks_;
  std::shared_ptr<shared_authenticator> token_service_auth_;
  std::shared_ptr<token_fast_lane> lane_;
};

} // namespace cm

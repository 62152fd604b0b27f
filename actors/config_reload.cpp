#include "actors/config_reload.hpp"

#include <caf/send.hpp>

#include "common/log.hpp"
#include "config/provider_catalog.hpp"
#include "config/yaml_schema.hpp"

extern char** environ;

namespace cm {

void config_reloader::attach(front_context_ptr current, std::vector<front_actor> fronts,
                             registry_actor registry, std::vector<storage_actor> event_writers,
                             webhook_dispatcher_actor webhooks,
                             std::shared_ptr<shared_authenticator> token_service_auth) {
  std::lock_guard<std::mutex> guard{mutex_};
  current_ = std::move(current);
  fronts_ = std::move(fronts);
  registry_ = std::move(registry);
  event_writers_ = std::move(event_writers);
  webhooks_ = std::move(webhooks);
  token_service_auth_ = std::move(token_service_auth);
}

void config_reloader::follow(std::shared_ptr<token_fast_lane> lane) {
  std::lock_guard<std::mutex> guard{mutex_};
  lane_ = std::move(lane);
}

void config_reloader::detach() {
  std::lock_guard<std::mutex> guard{mutex_};
  lane_.reset();
  current_.reset();
  fronts_.clear();
  registry_ = nullptr;
  event_writers_.clear();
  webhooks_ = nullptr;
  token_service_auth_.reset();
}

reload_outcome config_reloader::reload() {
  std::lock_guard<std::mutex> guard{mutex_};
  reload_outcome out;
  if (!current_) {
    out.error = "the service is shutting down";
    return out;
  }
  try {
    auto cfg = config::load_service_config(file_, environ);
    auto catalog = config::load_provider_catalog(cfg.providers_file);
    config::apply_provider_settings(catalog, cfg.providers);
    // The operator's stored tokens carry over: they are not in the file.
    auto auth = std::make_shared<const http::authenticator>(
      cfg.auth, current_->auth ? current_->auth->stored_tokens() : nullptr);
    auto deps = std::make_shared<registry_deps>(make_registry_deps(cfg, catalog));
    auto hooks = load_webhook_settings(cfg.events);

    // Start-up-only settings keep their running values.
    const auto& running = current_->cfg;
    auto keep = [&](bool changed, const char* name) {
      if (changed)
        out.restart_required.push_back(name);
    };
    keep(cfg.listen.address != running.listen.address || cfg.listen.port != running.listen.port ||
           cfg.listen.threads != running.listen.threads ||
           cfg.listen.max_header_bytes != running.listen.max_header_bytes ||
           cfg.listen.header_timeout != running.listen.header_timeout ||
           cfg.listen.body_timeout != running.listen.body_timeout,
         "listen");
    keep(cfg.database.url != running.database.url, "database");
    keep(cfg.metrics.address != running.metrics.address || cfg.metrics.port != running.metrics.port,
         "metrics.address/port");
    keep(cfg.auth.service_token_poll_ms != running.auth.service_token_poll_ms,
         "auth.service_token_poll_ms");
    keep(cfg.key_file != running.key_file, "crypto");
    keep(cfg.scheduler.policy != running.scheduler.policy ||
           cfg.scheduler.max_threads != running.scheduler.max_threads,
         "scheduler");
    keep(cfg.events.poll_ms != running.events.poll_ms ||
           cfg.events.heartbeat_ms != running.events.heartbeat_ms ||
           cfg.events.max_subscribers != running.events.max_subscribers ||
           cfg.events.max_subscribers_per_team != running.events.max_subscribers_per_team ||
           cfg.events.max_subscribers_per_service != running.events.max_subscribers_per_service ||
           cfg.events.reserved_service_subscribers != running.events.reserved_service_subscribers,
         "events (stream settings)");
    keep(cfg.key_signing.threads != running.key_signing.threads ||
           cfg.key_signing.max_queued != running.key_signing.max_queued,
         "key_signing");
    const auto& ts = cfg.token_service;
    const auto& running_ts = running.token_service;
    keep(ts.enabled != running_ts.enabled || ts.address != running_ts.address ||
           ts.port != running_ts.port || ts.max_peers != running_ts.max_peers ||
           ts.max_message_bytes != running_ts.max_message_bytes ||
           ts.handshake_timeout_ms != running_ts.handshake_timeout_ms ||
           ts.stall_timeout_ms != running_ts.stall_timeout_ms ||
           ts.idle_timeout_ms != running_ts.idle_timeout_ms,
         "token_service");
    keep(cfg.cluster.heartbeat_ms != running.cluster.heartbeat_ms ||
           cfg.cluster.loaders != running.cluster.loaders ||
           cfg.cluster.guest_idle_ms != running.cluster.guest_idle_ms ||
           cfg.cluster.forward != running.cluster.forward ||
           cfg.cluster.forward_timeout_ms != running.cluster.forward_timeout_ms ||
           cfg.cluster.advertise_address != running.cluster.advertise_address,
         "cluster");
    // Read once by the SIGTERM handler in app/commands.cpp.
    keep(cfg.refresh.shutdown_grace_ms != running.refresh.shutdown_grace_ms,
         "refresh.shutdown_grace_ms");
    cfg.refresh.shutdown_grace_ms = running.refresh.shutdown_grace_ms;
    keep(cfg.audit_queue_rows != running.audit_queue_rows, "audit.queue_rows");
    cfg.audit_queue_rows = running.audit_queue_rows;
    cfg.listen = running.listen;
    cfg.database = running.database;
    cfg.key_file = running.key_file;
    cfg.scheduler = running.scheduler;
    cfg.token_service = running.token_service;
    cfg.cluster = running.cluster;
    cfg.key_signing = running.key_signing;

    auto ctx = std::make_shared<front_context>(*current_);
    ctx->cfg = cfg;
    ctx->catalog = std::move(catalog);
    ctx->auth = std::move(auth);
    ctx->clients = deps->clients;
    front_context_ptr snapshot = ctx;

    // Everything is valid: hand the snapshots over.
    for (auto& f : fronts_)
      caf::anon_send(f, configure_atom_v, snapshot);
    if (lane_)
      lane_->configure(snapshot);
    caf::anon_send(registry_, configure_atom_v, registry_deps_ptr{deps});
    for (auto& writer : event_writers_)
      caf::anon_send(writer, webhooks_atom_v, webhook_targets_of(*hooks));
    if (webhooks_)
      caf::anon_send(webhooks_, configure_atom_v, webhook_settings_ptr{hooks});
    // Service tokens and keys revoked by the reload stop working by message too.
    if (token_service_auth_)
      token_service_auth_->set(snapshot->auth);
    log::set_level(cfg.log_level);
    current_ = snapshot;
    out.ok = true;
    out.providers = static_cast<int64_t>(snapshot->catalog.providers.size());
    out.webhooks = static_cast<int64_t>(hooks->endpoints.size());
    log::info("config", "configuration reloaded",
              {{"providers", out.providers}, {"webhooks", out.webhooks},
               {"restart_required", out.restart_required}});
  } catch (const std::exception& e) {
    // Config errors name file, line and key; none quotes a value.
    out.ok = false;
    out.error = e.what();
    log::warn("config", "configuration reload rejected", {{"error", out.error}});
  }
  return out;
}

} // namespace cm

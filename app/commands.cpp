#include "app/commands.hpp"

#include "api/openapi.hpp"
#include "api/system_routes.hpp"
#include "app/arguments.hpp"
#include "app/help.hpp"
#include "app/operator_commands.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/actor_config.hpp"
#include "actors/config_reload.hpp"
#include "actors/event_hub.hpp"
#include "actors/webhook_dispatcher.hpp"
#include "actors/front_actor.hpp"
#include "actors/key_signer_actor.hpp"
#include "actors/provider_client_actor.hpp"
#include "actors/refresh_drain.hpp"
#include "actors/registry_actor.hpp"
#include "actors/token_port_gate.hpp"
#include "api/token_routes.hpp"
#include "actors/token_service_actor.hpp"
#include "actors/storage_actor.hpp"
#include "common/log.hpp"
#include "common/port_probe.hpp"
#include "config/provider_catalog.hpp"
#include "config/service_config.hpp"
#include "config/yaml_schema.hpp"
#include "http/auth.hpp"
#include "http/server.hpp"
#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"
#include "storage/rekey.hpp"
#include "storage/service_token_store.hpp"
#include "storage/service_token_watcher.hpp"
#include "kafka/relay.hpp"
#include "kafka/settings.hpp"
#include "common/private_file.hpp"
#include "storage/unbound_format.hpp"
#include "storage/migrations.hpp"
#include "storage/instance_heartbeat.hpp"
#include "storage/peer_token.hpp"
#include "storage/shard_ownership.hpp"
#include "storage/notify_listener.hpp"

namespace cm::app {

namespace {

/// From this many connections loaded, a stop skips tearing down the
/// connection actors once everything durable is done (see cmd_serve).
/// Below it (every test) the process stops actor by actor, so the
/// sanitizers' leak check at exit still sees everything.
constexpr int64_t quick_exit_connections = 50'000;

/// How long a token read without team_id trusts a cached answer to "which
/// teams?" when no event has said otherwise, and how many pairs it keeps.
constexpr std::chrono::seconds team_lookup_ttl{60};
constexpr size_t team_lookup_capacity = 100'000;

/// Waits until every actor in `actors` has terminated, at most `limit`;
/// false when the limit ran out first.
bool wait_for_exit(caf::actor_system& sys, const std::vector<caf::actor>& actors,
                   std::chrono::milliseconds limit) {
  caf::scoped_actor self{sys};
  for (auto& a : actors)
    self->monitor(a);
  auto give_up = std::chrono::steady_clock::now() + limit;
  for (size_t down = 0; down < actors.size();) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      give_up - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return false;
    bool timed_out = false;
    self->receive([&](caf::down_msg&) { ++down; },
                  caf::after(left) >> [&] { timed_out = true; });
    if (timed_out)
      return false;
  }
  return true;
}

/// host:port the other instances dial to reach this one's token service.
std::string advertised_address(const config::service_config& cfg, uint16_t port) {
  auto host = cfg.cluster.advertise_address.empty() ? cfg.token_service.address
                                                    : cfg.cluster.advertise_address;
  // A wildcard says nothing about how other machines reach this one, and
  // 127.0.0.1 would send every instance to itself: publish nothing (the
  // others then serve this one's shards from the database).
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]")
    return {};
  if (host.find(':') != std::string::npos && host.front() != '[')
    host = "[" + host + "]";
  return host + ":" + std::to_string(port);
}

/// Waits until the event hub has read where the outbox stands, so "ready"
/// means GET /api/v1/events is served too; false if `patience` ran out.
bool wait_for_event_hub(caf::actor_system& sys, const event_hub_actor& hub,
                        std::chrono::milliseconds patience) {
  caf::scoped_actor self{sys};
  auto give_up = std::chrono::steady_clock::now() + patience;
  while (std::chrono::steady_clock::now() < give_up) {
    bool started = false;
    self->request(hub, std::chrono::seconds(5), head_atom_v)
      .receive([&](bool yes) { started = yes; }, [](caf::error&) {});
    if (started)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}


} // namespace

bool parse_arguments(int argc, char** argv, arguments& out, std::string& problem) {
  static const std::vector<std::string> valued = {
    "--config",   "--out",        "--user",       "--team",     "--email",
    "--ttl",      "--activate",   "--retire",     "--batch-size", "--pause-ms",
    "--max-passes", "--name",     "--scopes",     "--provider", "--limit",
    "--url",      "--event"};
  static const std::vector<std::string> switches = {"--admin", "--add", "--help", "--json",
                                                    "--all"};
  int i = 1;
  if (i < argc && argv[i][0] != '-')
    out.command = argv[i++];
  if (has_subcommands(out.command) && i < argc && argv[i][0] != '-')
    out.subcommand = argv[i++];
  if (out.command == "help" && i < argc && argv[i][0] != '-')
    out.help_topic = argv[i++];
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (std::find(valued.begin(), valued.end(), arg) != valued.end()) {
      if (i + 1 >= argc) {
        problem = arg + " needs a value";
        return false;
      }
      out.options[arg] = argv[++i];
    } else if (std::find(switches.begin(), switches.end(), arg) != switches.end()) {
      out.flags.push_back(arg);
    } else {
      problem = "unknown argument " + arg;
      return false;
    }
  }
  return true;
}

namespace {

std::string config_path(const arguments& args) {
  auto path = args.option("--config");
  if (!path.empty())
    return path;
  if (const char* env = std::getenv(config::config_path_variable))
    return env;
  return "config/connector-manager.yaml";
}

/// Keeps secrets out of core dumps and away from ptrace by other users.
void harden_process() {
  struct rlimit none {0, 0};
  setrlimit(RLIMIT_CORE, &none);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/// Applies migrations, waiting a bounded time for PostgreSQL to come up.
int migrate_with_retry(const config::service_config& cfg, std::chrono::seconds patience) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  storage::database db{cfg.database};
  while (true) {
    try {
      auto applied = storage::apply_migrations(db, cfg.cluster.shards);
      log::info("storage", "migrations are current", {{"applied_now", applied}});
      return 0;
    } catch (const storage::db_error& e) {
      if (e.code != ec::unavailable || std::chrono::steady_clock::now() > deadline) {
        if (e.code == ec::unavailable && !db.last_connect_error().empty()) {
          log::error("storage", "cannot connect to the database",
                     {{"reason", db.last_connect_error()}});
          std::cerr << "connector-manager: cannot connect to the database: "
                    << db.last_connect_error() << "\n"
                    << "Check database.url (or CM_DATABASE__URL) and that PostgreSQL runs.\n";
        } else {
          log::error("storage", "migration failed", {{"error", e.what()}});
        }
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
}

int cmd_serve(const config::service_config& cfg, char**) {
  harden_process();
  std::shared_ptr<const storage::keyring> keys;
  try {
    keys = storage::keyring::load(cfg.key_file);
  } catch (const storage::crypto_error& e) {
    log::error("main", "refusing to start without a usable key", {{"error", e.what()}});
    std::cerr << "connector-manager: " << e.what() << "\n"
              << "Create one with: connector-manager keygen --out " << cfg.key_file << "\n";
    return 2;
  }
  auto catalog = config::load_provider_catalog(cfg.providers_file);
  config::apply_provider_settings(catalog, cfg.providers);
  // Service tokens an operator stored (`service-tokens create`), read
  // after the migrations below and again every auth.service_token_poll_ms.
  auto stored_tokens = std::make_shared<http::stored_service_tokens>();
  auto auth = std::make_shared<const http::authenticator>(cfg.auth, stored_tokens);
  auto webhooks = load_webhook_settings(cfg.events);
  // Declared before the actor system: front actors hold a pointer to it.
  config_reloader reloader{cfg.source_file};

  // A port another process holds is said at once, in those words, before
  // anything is loaded (the listeners themselves report no reason).
  std::vector<std::pair<std::string, uint16_t>> ports = {{cfg.listen.address, cfg.listen.port}};
  if (cfg.token_service.enabled)
    ports.emplace_back(cfg.token_service.address, cfg.token_service.port);
  if (cfg.metrics.enabled && cfg.metrics.port != 0)
    ports.emplace_back(cfg.metrics.address, cfg.metrics.port);
  for (auto& [address, port] : ports)
    if (auto problem = bind_problem(address, port); !problem.empty()) {
      log::error("main", "cannot listen", {{"address", address}, {"port", port},
                                           {"reason", problem}});
      std::cerr << "connector-manager: cannot listen: " << problem << "\n"
                << "Stop the other process, or choose another port (listen.port / "
                   "CM_LISTEN__PORT, token_service.port / CM_TOKEN_SERVICE__PORT).\n";
      return 1;
    }

  if (migrate_with_retry(cfg, std::chrono::seconds(30)) != 0)
    return 1;

  // Block the signals we wait for before any thread of ours starts (the
  // token watcher's, CAF's), so only sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  storage::service_token_watcher token_watcher{
    cfg.database, std::chrono::milliseconds(cfg.auth.service_token_poll_ms),
    [stored_tokens](const std::vector<storage::stored_service_token>& tokens) {
      http::stored_service_tokens::by_digest by_digest;
      for (auto& t : tokens)
        by_digest[t.sha256_hex] = {t.name, t.scopes};
      stored_tokens->replace(std::move(by_digest));
    }};

  // events.kafka.brokers: the outbox relayed to the Kafka topics, by one
  // instance at a time (kafka/relay.hpp).
  std::unique_ptr<kafka::relay> kafka_relay;
  if (cfg.events.kafka.enabled()) {
    try {
      kafka_relay = std::make_unique<kafka::relay>(cfg.database, cfg.events.kafka,
                                                   kafka::settings_for(cfg.events.kafka),
                                                   std::chrono::milliseconds(cfg.events.poll_ms));
    } catch (const private_file_error& e) {
      log::error("main", "cannot start the Kafka relay", {{"reason", e.what()}});
      return 2;
    }
  }

  actor_config actor_cfg;
  actor_cfg.apply(cfg.scheduler);
  caf::actor_system sys{actor_cfg};

  // Storage is a pool of actors, each on a database connection of its own,
  // and each user holds the narrow role it needs (actors/storage_actor.hpp;
  // docs/DECISIONS.md, "Storage as a pool of roles").
  std::vector<storage_actor> pool;
  auto stop_pool = [&] {
    for (auto& a : pool)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  };
  // Audit rows of token reads wait here for the admin role to write them
  // (storage/audit_queue.hpp); a full queue refuses token reads with 503.
  auto audit = std::make_shared<storage::audit_queue>(static_cast<size_t>(cfg.audit_queue_rows));
  auto spawn_role = [&](storage::audit_queue_ptr rows = nullptr) -> std::optional<storage_actor> {
    auto spawned = spawn_storage(sys, cfg.database, keys, webhook_targets_of(*webhooks), rows);
    if (!spawned) {
      log::error("main", "cannot start storage", {{"error", message_of(spawned.error())}});
      stop_pool();
      return std::nullopt;
    }
    pool.push_back(*spawned);
    return *spawned;
  };
  // Connections and their refreshes: leases, completions, connects.
  auto storage = spawn_role();
  // Version checks of tokens served from memory, so they never wait behind
  // hydration or a refresh storm.
  auto freshness = storage ? spawn_role() : std::nullopt;
  // The outbox as the event hub and webhook dispatcher read it.
  auto events = freshness ? spawn_role() : std::nullopt;
  // OAuth states, connector configurations and the audit log.
  auto admin = events ? spawn_role(audit) : std::nullopt;
  if (!admin)
    return 1;
  // Owned shards load on connections of their own, in parallel, so a
  // refresh storm on `storage` never delays a takeover.
  std::vector<storage_actor> loaders;
  for (int32_t i = 0; i < cfg.cluster.loaders; ++i) {
    auto loader = spawn_role();
    if (!loader)
      return 1;
    loaders.push_back(*loader);
  }
  auto provider_client_handle = sys.spawn(provider_client);
  auto key_signer_handle = spawn_key_signer(sys, cfg.key_signing);
  auto deps = make_registry_deps(cfg, catalog);
  auto clients = deps.clients;
  deps.storage = *storage;
  deps.freshness = *freshness;
  deps.provider_client = provider_client_handle;
  // Announce this instance before loading anything: when others are
  // active it waits out the join grace first, so none of them can still
  // believe it is alone once this one refreshes (storage/cluster_view.hpp).
  storage::heartbeat_timing timing{std::chrono::milliseconds(cfg.cluster.heartbeat_ms)};
  auto cluster = std::make_shared<storage::cluster_view>(timing.trust());
  auto heartbeat =
    std::make_unique<storage::instance_heartbeat>(cfg.database, deps.instance_id, timing, cluster);
  if (!heartbeat->join(std::chrono::seconds(60))) {
    log::error("main", "cannot announce this instance in the database");
    stop_pool();
    caf::anon_send_exit(provider_client_handle, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(key_signer_handle, caf::exit_reason::user_shutdown);
    return 1;
  }
  deps.cluster = cluster;
  // Tokens served without a message to their actor (issue 18), only while
  // this instance is alone; and the teams of token reads without team_id.
  auto board = std::make_shared<token_board>(cluster);
  auto teams = std::make_shared<storage::team_lookup_cache>(team_lookup_ttl, team_lookup_capacity);
  deps.board = board;
  deps.teams = teams;
  deps.key_signer = key_signer_handle;
  deps.loaders = loaders;
  deps.guest_idle_ms = cfg.cluster.guest_idle_ms;
  // Shard ownership (storage/shard_ownership.hpp): the registry keeps owner
  // actors for the shards this instance holds and guests for the others.
  registry_actor registry_handle;
  storage::shard_ownership::handlers on_shards;
  std::atomic<int64_t> loaded_connections{0};
  on_shards.acquired = [&sys, &registry_handle,
                        &loaded_connections](const std::vector<int32_t>& shards) {
    caf::scoped_actor self{sys};
    self->request(registry_handle, std::chrono::minutes(10), own_atom_v, shards)
      .receive([&](int64_t n) {
                 loaded_connections += n;
                 log::info("main", "loaded owned shards",
                           {{"shards", shards.size()}, {"connections", n}});
               },
               [&](caf::error& err) {
                 log::warn("main", "could not load owned shards", {{"error", message_of(err)}});
               });
  };
  on_shards.releasing = [&sys, &registry_handle](const std::vector<int32_t>& shards) {
    caf::scoped_actor self{sys};
    self->request(registry_handle, std::chrono::minutes(3), handover_atom_v, shards)
      .receive([&](int64_t) {},
               [&](caf::error& err) {
                 log::warn("main", "handover did not finish", {{"error", message_of(err)}});
               });
  };
  on_shards.lost = [&registry_handle](const std::vector<int32_t>& shards) {
    // The new owner may be refreshing already: stop at once (after any
    // refresh in flight), without waiting here.
    caf::anon_send(registry_handle, handover_atom_v, shards);
  };
  auto shard_count = cfg.cluster.shards;
  try {
    storage::database db{cfg.database};
    shard_count = storage::stored_shard_count(db);
  } catch (const storage::db_error& e) {
    log::error("main", "cannot read the shard count", {{"error", e.what()}});
  }
  auto ownership = std::make_unique<storage::shard_ownership>(
    cfg.database, deps.instance_id, shard_count,
    std::chrono::milliseconds(cfg.cluster.heartbeat_ms), on_shards);
  deps.shards = ownership->owned();
  // Requests for other instances' shards go to their owner's token service
  // (actors/owner_forwarder.hpp); without one here, nobody could answer
  // back to this instance, so forwarding needs it too.
  std::shared_ptr<forwarding_stats> forwarding;
  owner_forwarder_actor forwarder;
  if (cfg.cluster.forward && cfg.token_service.enabled) {
    forwarding = std::make_shared<forwarding_stats>();
    owner_forwarder_deps fwd;
    fwd.directory = ownership->directory();
    fwd.instance_id = deps.instance_id;
    fwd.peer_token = storage::peer_token(*keys);
    fwd.timeout = std::chrono::milliseconds(cfg.cluster.forward_timeout_ms);
    fwd.stats = forwarding;
    forwarder = sys.spawn(owner_forwarder, std::move(fwd));
    deps.forwarder = forwarder;
    deps.forward_timeout_ms = cfg.cluster.forward_timeout_ms;
  }
  registry_handle = sys.spawn(registry, std::move(deps));
  token_service_actor service;
  auto service_auth = std::make_shared<shared_authenticator>(auth);
  event_hub_actor hub;
  webhook_dispatcher_actor dispatcher;
  std::unique_ptr<storage::notify_listener> listener;
  auto stop_actors = [&](const std::vector<front_actor>& fronts) {
    reloader.detach();
    if (listener)
      listener->stop();
    if (service)
      caf::anon_send_exit(service, caf::exit_reason::user_shutdown);
    if (forwarder)
      caf::anon_send_exit(forwarder, caf::exit_reason::user_shutdown);
    if (hub)
      caf::anon_send_exit(hub, caf::exit_reason::user_shutdown);
    if (dispatcher)
      caf::anon_send_exit(dispatcher, caf::exit_reason::user_shutdown);
    for (auto& f : fronts)
      caf::anon_send_exit(f, caf::exit_reason::user_shutdown);
    // The locks go first, without a handover: refreshes are drained and
    // every actor stops now, so the next owners may load at once.
    ownership->stop(false);
    caf::anon_send_exit(registry_handle, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(provider_client_handle, caf::exit_reason::user_shutdown);
    // After every refresh has been stored or abandoned: from here on this
    // instance takes no lease and stores nothing.
    heartbeat->leave();
    caf::anon_send_exit(key_signer_handle, caf::exit_reason::user_shutdown);
    // Whoever records token reads (the fronts, the token service) is gone
    // before the audit writer's last drain, so no row is queued after it.
    std::vector<caf::actor> recorders;
    for (auto& f : fronts)
      recorders.push_back(caf::actor_cast<caf::actor>(f));
    if (service)
      recorders.push_back(caf::actor_cast<caf::actor>(service));
    if (!wait_for_exit(sys, recorders, std::chrono::seconds(5)))
      log::warn("main", "request handlers still running at shutdown; audit rows they queue "
                        "from now on may not be written");
    stop_pool();
  };
  {
    // Every connection of the shards taken at start gets its actor and
    // refresh timer before the first request is served. The first round takes this instance's share of the free shards
    // (all of them when it is alone) and loads them; later rounds hand
    // shards over and take them over in the background.
    auto armed_before = hydrated_connections_armed();
    if (!ownership->start(std::chrono::seconds(60))) {
      log::error("main", "could not take a share of the shards");
      stop_actors({});
      return 1;
    }
    int64_t count = loaded_connections.load();
    // Spawned actors initialise (and arm their timer) on their first run:
    // wait for all of them, so "ready" means every refresh is planned.
    auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (hydrated_connections_armed() - armed_before < count &&
           std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    log::info("main", "refresh timers armed",
              {{"count", hydrated_connections_armed() - armed_before}});
  }
  uint16_t token_service_port = 0;
  // Declared after the actor system, so it stops (and closes its peers)
  // before the middleman does.
  std::unique_ptr<token_port_gate> gate;
  if (cfg.token_service.enabled) {
    service = sys.spawn(token_service, registry_handle, connector_config_store_actor{*admin},
                        service_auth, keys, audit);
    // Not middleman().publish(): the gate bounds what peers can make the
    // process allocate before their service token is checked.
    auto started = token_port_gate::start(sys, service, cfg.token_service);
    if (!started) {
      auto problem = bind_problem(cfg.token_service.address, cfg.token_service.port);
      log::error("main", "cannot publish the token service",
                 {{"address", cfg.token_service.address}, {"port", cfg.token_service.port},
                  {"error", to_string(started.error())}, {"reason", problem}});
      std::cerr << "connector-manager: cannot publish the token service"
                << (problem.empty() ? "" : ": " + problem) << "\n";
      stop_actors({});
      return 1;
    }
    gate = std::move(*started);
    token_service_port = gate->port();
    if (forwarder) {
      auto address = advertised_address(cfg, token_service_port);
      if (address.empty())
        log::warn("main", "the token service listens on a wildcard address and "
                          "cluster.advertise_address is not set: other instances serve this "
                          "one's shards from the database instead of asking it");
      ownership->advertise(address);
    }
  }

  // Lifecycle events: SSE subscribers, webhooks, and NOTIFY to wake both
  // when any instance commits an event.
  hub = sys.spawn(event_hub, event_store_actor{*events}, registry_handle, cfg.events, cluster);
  dispatcher =
    sys.spawn(webhook_dispatcher, event_store_actor{*events}, provider_client_handle, webhooks);
  listener = std::make_unique<storage::notify_listener>(cfg.database,
                                                        [hub, dispatcher, relay = kafka_relay.get()] {
    caf::anon_send(hub, tick_atom_v);
    caf::anon_send(dispatcher, tick_atom_v);
    if (relay)
      relay->wake();
  });
  if (!wait_for_event_hub(sys, hub, std::chrono::seconds(30)))
    log::warn("main", "event delivery has not started yet; GET /api/v1/events answers 503 "
                      "until it reads the outbox");

  // The proxy's own libcurl engine: destroyed below, once every actor is
  // done (a refresh after a 401 may still submit to it until then).
  auto proxy_engine = std::make_unique<curl_engine>("cm-curl-proxy");
  auto ctx = std::make_shared<front_context>();
  ctx->cfg = cfg;
  ctx->catalog = std::move(catalog);
  ctx->proxy_engine = proxy_engine.get();
  ctx->auth = auth;
  ctx->storage = *storage;
  ctx->states = *admin;
  ctx->configs = *admin;
  ctx->registry = registry_handle;
  ctx->provider_client = provider_client_handle;
  ctx->key_signer = key_signer_handle;
  ctx->keys = keys;
  ctx->clients = std::move(clients);
  ctx->events = hub;
  ctx->reloader = &reloader;
  ctx->shards = ownership->owned();
  ctx->forwarding = forwarding;
  if (kafka_relay)
    ctx->kafka = kafka_relay->status();
  ctx->board = board;
  ctx->audit = audit;
  ctx->teams = teams;
  std::vector<front_actor> fronts;
  for (int i = 0; i < cfg.listen.threads; ++i)
    fronts.push_back(sys.spawn(front, std::shared_ptr<const front_context>(ctx)));
  // Both write events (connects, toggles), so both enqueue webhooks.
  reloader.attach(ctx, fronts, registry_handle, {*storage, *admin}, dispatcher, service_auth);
  // The token route's fast lane runs on Pistache's threads (api/token_routes.hpp).
  auto lane = std::make_shared<token_fast_lane>(ctx);
  reloader.follow(lane);

  http::server server{cfg.listen, fronts, lane};
  try {
    server.start();
  } catch (const std::exception& e) {
    auto problem = bind_problem(cfg.listen.address, cfg.listen.port);
    log::error("main", "cannot listen", {{"address", cfg.listen.address},
                                         {"port", cfg.listen.port}, {"error", e.what()},
                                         {"reason", problem}});
    std::cerr << "connector-manager: cannot listen"
              << (problem.empty() ? std::string(": ") + e.what() : ": " + problem) << "\n";
    stop_actors(fronts);
    return 1;
  }
  // GET /metrics without a token, on a listener of its own (metrics.port).
  std::unique_ptr<http::server> metrics_server;
  if (cfg.metrics.enabled && cfg.metrics.port != 0) {
    auto listen = cfg.listen;
    listen.address = cfg.metrics.address;
    listen.port = cfg.metrics.port;
    listen.threads = 1;
    metrics_server = std::make_unique<http::server>(listen, std::vector<front_actor>{},
                                                    std::make_shared<metrics_lane>(ctx));
    try {
      metrics_server->start();
    } catch (const std::exception& e) {
      auto problem = bind_problem(listen.address, listen.port);
      log::error("main", "cannot listen for metrics",
                 {{"address", listen.address}, {"port", listen.port}, {"reason", problem}});
      std::cerr << "connector-manager: cannot listen for metrics: "
                << (problem.empty() ? e.what() : problem) << "\n";
      server.stop();
      stop_actors(fronts);
      return 1;
    }
  }
  // One machine-readable line that tests and scripts wait for.
  log::info("main", "ready", {{"port", server.port()},
                              {"token_service_port", token_service_port},
                              {"metrics_port", metrics_server ? metrics_server->port() : 0}});

  int sig = 0;
  sigwait(&signals, &sig);
  log::info("main", "shutting down", {{"signal", sig}});
  // No new requests, then no new refreshes; refreshes already at the
  // provider store what it answered before the actors stop
  // (actors/refresh_drain.hpp).
  if (metrics_server)
    metrics_server->stop();
  server.stop();
  gate.reset();
  if (service)
    caf::anon_send_exit(service, caf::exit_reason::user_shutdown);
  auto drained = drain_refreshes(std::chrono::milliseconds(cfg.refresh.shutdown_grace_ms));
  auto drain_fields = nlohmann::json{{"in_progress", drained.in_progress_at_start},
                                  {"waited_ms", drained.waited.count()}};
  if (drained.left == 0) {
    log::info("main", "refreshes drained", drain_fields);
  } else {
    // Their provider answers may be lost, as in a crash; a rotating
    // provider then needs a reconnect for those connections.
    drain_fields["left"] = drained.left;
    log::warn("main", "shutdown grace ran out with refreshes in progress", drain_fields);
  }
  stop_actors(fronts);
  if (hydrated_connections_armed() >= quick_exit_connections) {
    // Everything the next process depends on is done: refreshes stored or
    // abandoned, shard locks released, this instance out of the heartbeat
    // table. What is left is tearing down every connection actor one exit
    // message at a time (5 s at a million) to free memory the kernel frees
    // anyway. Once the storage actors have flushed and stopped, leave; if
    // they have not within 10 s, stop the slow way rather than lose a write.
    std::vector<caf::actor> storage_actors;
    for (auto& a : pool)
      storage_actors.push_back(caf::actor_cast<caf::actor>(a));
    if (wait_for_exit(sys, storage_actors, std::chrono::seconds(10))) {
      log::info("main", "stopped without tearing down the connection actors",
                {{"connections", hydrated_connections_armed()}});
      log::flush();
      std::fflush(nullptr);
      std::_Exit(0);
    }
    log::warn("main", "storage is still writing; stopping every actor in turn");
  }
  // Actors may still hold exchanges that write through the endpoint: let
  // them finish before `server` (and with it the endpoint) is destroyed.
  sys.await_all_actors_done();
  // Calls still at providers are answered 503 (cancelled) while the
  // endpoint still exists.
  proxy_engine.reset();
  log::flush();
  return 0;
}

/// A whole number option in [low, high]; throws config_error otherwise.
long number_option(const arguments& args, const std::string& name, long fallback, long low,
                   long high) {
  auto text = args.option(name);
  if (text.empty())
    return fallback;
  size_t used = 0;
  long value = 0;
  try {
    value = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < low || value > high)
    throw config::config_error(name + " must be a whole number from " + std::to_string(low) +
                               " to " + std::to_string(high));
  return value;
}

int cmd_keygen(const arguments& args, char** env) {
  auto out = args.option("--out");
  bool retire = !args.option("--retire").empty();
  std::optional<config::service_config> cfg;
  if (out.empty() || retire)
    cfg = config::load_service_config(config_path(args), env);
  if (out.empty())
    out = cfg->key_file;
  int modes = (args.has_flag("--add") ? 1 : 0) + (args.option("--activate").empty() ? 0 : 1) +
              (retire ? 1 : 0);
  if (modes > 1) {
    std::cerr << "keygen takes one of --add, --activate, --retire\n";
    return 2;
  }
  if (args.has_flag("--add")) {
    // Decrypt-only first: an instance that has not loaded the key yet must
    // never meet a ciphertext sealed with it.
    auto id = storage::keyring::add_key_to_file(out, false);
    std::cout << "added key " << id << " to " << out << " (decrypt-only)\n"
              << "next: restart every instance with this file, then run "
              << "'connector-manager keygen --activate " << id << "'\n";
  } else if (!args.option("--activate").empty()) {
    auto id = static_cast<uint32_t>(number_option(args, "--activate", 0, 1, UINT32_MAX));
    storage::keyring::activate_key_in_file(out, id);
    std::cout << "key " << id << " is active in " << out << "\n"
              << "next: restart every instance with this file, then run "
              << "'connector-manager rekey'\n";
  } else if (retire) {
    auto id = static_cast<uint32_t>(number_option(args, "--retire", 0, 1, UINT32_MAX));
    {
      auto ring = storage::keyring::load(out);
      if (!ring->has_key(id))
        throw storage::crypto_error("key " + std::to_string(id) + " is not in " + out);
      if (ring->active_id() == id)
        throw storage::crypto_error("key " + std::to_string(id) +
                                    " is the active key; activate another first");
    }
    storage::database db{cfg->database};
    auto uses = storage::ciphertexts_by_key(db);
    if (auto it = uses.find(id); it != uses.end() && it->second > 0) {
      std::cerr << "connector-manager: key " << id << " still protects " << it->second
                << " stored values; run 'connector-manager rekey' until it reports none\n";
      return 1;
    }
    storage::keyring::remove_key_from_file(out, id);
    std::cout << "removed key " << id << " from " << out << "\n"
              << "next: restart every instance with this file\n";
  } else {
    storage::keyring::generate_file(out);
    std::cout << "wrote " << out << " (mode 0600)\n";
  }
  return 0;
}

/// Re-encrypts every row under the active key (storage/rekey.hpp). Exit 0
/// when no row uses an old key; 1 when rows remain or some failed to
/// decrypt (alarmed): a rerun continues where this one stopped.
int cmd_rekey(const arguments& args, const config::service_config& cfg) {
  storage::rekey_options opts;
  opts.batch_size = static_cast<int>(number_option(args, "--batch-size", 500, 1, 100000));
  opts.pause = std::chrono::milliseconds(number_option(args, "--pause-ms", 0, 0, 600000));
  opts.max_passes = static_cast<int>(number_option(args, "--max-passes", 10, 1, 1000));
  // It holds every token in the clear for a moment, like the server.
  harden_process();
  auto keys = storage::keyring::load(cfg.key_file);
  storage::database db{cfg.database};
  storage::column_cipher cipher{keys};
  // Reads format-1 values only while the deployment still allows them:
  // once refused, one that shows up is a copy, alarmed and left alone.
  storage::unbound_format_policy unbound{db};
  cipher.set_unbound_policy([&unbound] { return unbound.allowed(); });
  // Like migrate: wait a bounded time for PostgreSQL to accept us.
  auto patience = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (true) {
    try {
      db.ensure_connected();
      break;
    } catch (const storage::db_error& e) {
      if (e.code != ec::unavailable || std::chrono::steady_clock::now() > patience)
        throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  log::info("rekey", "re-encrypting under the active key",
            {{"active_key", keys->active_id()}, {"batch_size", opts.batch_size},
             {"pause_ms", opts.pause.count()}});
  storage::rekeyer job{db, cipher, opts};
  auto last_report = std::chrono::steady_clock::now();
  auto summary = job.run([&](const std::string& table, const storage::rekey_table_counts& c) {
    // Counts only, never values; at most about once a second.
    auto now = std::chrono::steady_clock::now();
    if (now - last_report < std::chrono::seconds(1))
      return;
    last_report = now;
    log::info("rekey", "progress", {{"table", table}, {"rewritten", c.rewritten},
                                    {"tampered", c.tampered}, {"batches", c.batches}});
  });
  for (auto& [table, c] : summary.tables)
    log::info("rekey", "table done",
              {{"table", table}, {"rewritten", c.rewritten}, {"tampered", c.tampered},
               {"raced", c.raced}, {"batches", c.batches},
               {"left", summary.rows_remaining[table]}});

  std::cout << "rekey: active key " << summary.active_key << ", " << summary.passes
            << (summary.passes == 1 ? " pass" : " passes") << "\n";
  for (auto& [table, c] : summary.tables)
    std::cout << "  " << table << ": " << c.rewritten << " rows re-encrypted, " << c.tampered
              << " failed to decrypt (left alone, alarmed), " << summary.rows_remaining[table]
              << " left\n";
  std::cout << "  oauth_states: " << summary.expired_states_deleted
            << " expired under an old key deleted, " << summary.live_states_under_old_keys
            << " live under an old key (they expire; rerun then)\n";
  if (summary.unbound_refused)
    std::cout << "  every stored value is bound to its team; the team-unbound format 1 is "
                 "refused from now on\n";
  else
    std::cout << "  " << summary.unbound_remaining
              << " stored values of the team-unbound format 1 remain\n";
  if (summary.remaining.empty()) {
    std::cout << "  no stored value uses an old key\n";
  } else {
    for (auto& [key, count] : summary.remaining)
      std::cout << "  key " << key << (key == 0 ? " (malformed header)" : "") << ": " << count
                << " stored values remain\n";
  }
  std::vector<uint32_t> retirable;
  for (auto id : keys->key_ids())
    if (id != keys->active_id() && summary.remaining.count(id) == 0)
      retirable.push_back(id);
  for (auto id : retirable)
    std::cout << "  key " << id << " is unused: 'connector-manager keygen --retire " << id
              << "'\n";
  std::cout << (summary.complete() ? "complete\n" : "incomplete: rerun 'connector-manager rekey'"
                                                     " (rows failing to decrypt need a look)\n");
  return summary.complete() ? 0 : 1;
}

int cmd_mint(const arguments& args, const config::service_config& cfg) {
  auto user = args.option("--user");
  auto team = args.option("--team");
  if (user.empty() || team.empty()) {
    std::cerr << "mint-token needs --user and --team\n";
    return 2;
  }
  long ttl = std::stol(args.option("--ttl", "3600"));
  if (ttl <= 0 || ttl > 30L * 86400) {
    std::cerr << "--ttl must be between 1 and 2592000 seconds\n";
    return 2;
  }
  http::authenticator auth{cfg.auth};
  std::cout << auth.mint(user, team, args.option("--email"),
                         args.has_flag("--admin") ? "admin" : "member", ttl)
            << "\n";
  return 0;
}

int cmd_hash_token() {
  std::string token{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r'))
    token.pop_back();
  if (token.empty()) {
    std::cerr << "hash-token reads the token on standard input\n";
    return 2;
  }
  std::cout << http::sha256_hex(token) << "\n";
  return 0;
}

} // namespace

int run(int argc, char** argv, char** env) {
  arguments args;
  std::string problem;
  if (!parse_arguments(argc, argv, args, problem)) {
    std::cerr << "connector-manager: " << problem << "\n"
              << "'connector-manager " << (args.command == "serve" ? "" : args.command + " ")
              << "--help' says what it takes\n";
    return 2;
  }
  if (args.command == "help") {
    auto text = help_for(args.subcommand, args.help_topic);
    if (text.empty()) {
      std::cerr << "connector-manager: unknown command " << args.subcommand << "\n"
                << help_for("", "");
      return 2;
    }
    std::cout << text;
    return 0;
  }
  if (args.has_flag("--help")) {
    // "connector-manager --help" asks about the program, not about serve.
    bool implicit_command = argc < 2 || argv[1][0] == '-';
    auto text = implicit_command ? help_for("", "") : help_for(args.command, args.subcommand);
    if (text.empty()) {
      std::cerr << "connector-manager: unknown command " << args.command << "\n" << help_for("", "");
      return 2;
    }
    std::cout << text;
    return 0;
  }
  try {
    storage::ensure_sodium();
    if (args.command == "keygen")
      return cmd_keygen(args, env);
    if (args.command == "hash-token")
      return cmd_hash_token();
    auto cfg = config::load_service_config(config_path(args), env);
    log::set_level(cfg.log_level);
    if (args.command == "serve")
      return cmd_serve(cfg, env);
    if (args.command == "migrate")
      return migrate_with_retry(cfg, std::chrono::seconds(10));
    if (args.command == "mint-token")
      return cmd_mint(args, cfg);
    if (args.command == "rekey")
      return cmd_rekey(args, cfg);
    if (args.command == "openapi") {
      // The document GET /api/v1/openapi.json serves, for generating
      // clients without a running service.
      std::cout << api::openapi_document(cfg.oauth.public_base_url, cfg.auth.service_header)
                     .dump(2)
                << "\n";
      return 0;
    }
    if (args.command == "connections")
      return cmd_connections(args, cfg);
    if (args.command == "service-tokens")
      return cmd_service_tokens(args, cfg);
    if (args.command == "kafka")
      return cmd_kafka(args, cfg);
    if (args.command == "check-config") {
      auto catalog = config::load_provider_catalog(cfg.providers_file);
      config::apply_provider_settings(catalog, cfg.providers);
      http::authenticator auth{cfg.auth};
      std::cout << "configuration OK: " << catalog.providers.size() << " providers\n";
      return 0;
    }
    std::cerr << "connector-manager: unknown command " << args.command << "\n" << help_for("", "");
    return 2;
  } catch (const config::config_error& e) {
    std::cerr << "connector-manager: configuration error: " << e.what() << "\n";
    return 2;
  } catch (const storage::crypto_error& e) {
    std::cerr << "connector-manager: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "connector-manager: " << e.what() << "\n";
    return 1;
  }
}

} // namespace cm::app

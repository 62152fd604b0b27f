#include "actors/registry_actor.hpp"

#include "actors/fan_out.hpp"

#include <unistd.h>

#include <chrono>
#include <algorithm>
#include <fstream>
#include <iterator>

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <sodium.h>

#include "common/log.hpp"
#include "config/yaml_schema.hpp"
#include "http/exchange.hpp"
#include "storage/shards.hpp"

namespace cm {

namespace {

using self_ptr = registry_actor::stateful_pointer<registry_state>;

connection_deps_ptr build_connection_deps(self_ptr self, const std::string& provider,
                                          bool owner) {
  auto& s = self->state;
  auto deps = std::make_shared<connection_deps>();
  deps->repository = s.deps.storage;
  deps->provider_client = s.deps.provider_client;
  deps->key_signer = s.deps.key_signer;
  if (auto it = s.deps.providers.find(provider); it != s.deps.providers.end())
    deps->provider = it->second;
  if (auto it = s.deps.clients.find(provider); it != s.deps.clients.end())
    deps->client = it->second;
  deps->instance_id = s.deps.instance_id;
  deps->settings = s.deps.settings;
  deps->wall_offset_ms = s.deps.wall_offset_ms;
  deps->seed = s.deps.seed;
  deps->wheel = s.wheel;
  deps->cluster = s.deps.cluster;
  deps->freshness = s.deps.freshness;
  deps->owner = owner;
  deps->gate = s.gate;
  // Guests keep their snapshots to themselves: their idle sweep counts
  // the requests that reach them through here.
  if (owner)
    deps->board = s.deps.board;
  return deps;
}

connection_deps_ptr connection_deps_for(self_ptr self, const std::string& provider,
                                        bool owner = true) {
  auto& cache = owner ? self->state.connection_deps : self->state.guest_deps;
  auto it = cache.find(provider);
  if (it == cache.end())
    it = cache.emplace(provider, build_connection_deps(self, provider, owner)).first;
  return it->second;
}

int32_t shard_of_key(self_ptr self, const connection_key& key) {
  auto& shards = self->state.deps.shards;
  return shards ? storage::shard_of(key, shards->shard_count()) : 0;
}

/// Whether this instance owns the connection's shard.
bool owns(self_ptr self, const connection_key& key) {
  auto& shards = self->state.deps.shards;
  return !shards || shards->owns(shard_of_key(self, key));
}

/// The connection's row changed (here or on another instance): its
/// snapshot goes at once, before its actor hears of it, and the user's
/// teams are looked up afresh.
void fence_key(self_ptr self, const connection_key& key) {
  if (auto& board = self->state.deps.board)
    board->hold(key);
  if (auto& teams = self->state.deps.teams)
    teams->forget(key.user_id, key.provider);
}

int64_t clock_ms(self_ptr self) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           self->clock().now().time_since_epoch()).count();
}

connection_actor spawn_connection(self_ptr self, const connection_key& key,
                                  std::optional<token_record> initial) {
  auto& s = self->state;
  bool owner = owns(self, key);
  auto actor = self->spawn(connection, key, std::move(initial),
                           connection_deps_for(self, key.provider, owner));
  self->monitor(actor);
  if (!owner && s.deps.guest_idle_ms > 0)
    s.guest_used_ms[actor.address()] = clock_ms(self);
  auto entry = s.connections.insert_or_assign(key, actor).first;
  s.keys[actor.address()] = &entry->first;
  return actor;
}

/// Every live connection actor, for a fan-out.
std::vector<caf::actor> connection_handles(self_ptr self) {
  std::vector<caf::actor> handles;
  handles.reserve(self->state.connections.size());
  for (auto& [key, actor] : self->state.connections)
    handles.push_back(caf::actor_cast<caf::actor>(actor));
  return handles;
}

/// A guest served a request: it stays a while longer.
void note_use(self_ptr self, const connection_actor& actor) {
  auto& used = self->state.guest_used_ms;
  if (auto it = used.find(actor.address()); it != used.end())
    it->second = clock_ms(self);
}

/// Hands over guests idle for `guest_idle_ms`: they stop once nothing is
/// in flight, as at a shard handover, and requests meanwhile go through
/// the registry (`leaving`), which asks a fresh actor if needed.
void stop_idle_guests(self_ptr self) {
  auto& s = self->state;
  auto now = clock_ms(self);
  for (auto it = s.guest_used_ms.begin(); it != s.guest_used_ms.end();) {
    auto key = s.keys.find(it->first);
    if (key == s.keys.end() || owns(self, *key->second)) {
      // Gone, or promoted to an owner (its shard is owned here now).
      it = s.guest_used_ms.erase(it);
      continue;
    }
    if (now - it->second < s.deps.guest_idle_ms || s.leaving.count(it->first) > 0) {
      ++it;
      continue;
    }
    auto entry = s.connections.find(*key->second);
    if (entry != s.connections.end() && entry->second.address() == it->first) {
      s.leaving.insert(it->first);
      self->request(entry->second, std::chrono::minutes(2), handover_atom_v)
        .then([](bool) {}, [](caf::error&) {});
    }
    it = s.guest_used_ms.erase(it);
  }
}

std::chrono::milliseconds guest_sweep_every(self_ptr self) {
  return std::chrono::milliseconds(std::max<int64_t>(self->state.deps.guest_idle_ms / 2, 100));
}

/// Forgets `entry` and its reverse mapping.
void forget(self_ptr self, std::map<connection_key, connection_actor>::iterator entry) {
  auto& s = self->state;
  s.keys.erase(entry->second.address());
  s.connections.erase(entry);
}

connection_actor find_or_spawn(self_ptr self, const connection_key& key) {
  auto it = self->state.connections.find(key);
  if (it != self->state.connections.end())
    return it->second;
  return spawn_connection(self, key, std::nullopt);
}

/// Streams live connections page by page. The next page is asked for
/// before this one's actors are spawned, so storage reads and decrypts it
/// meanwhile (on another thread).
void hydrate_page(self_ptr self, std::string after_team, std::string after_id,
                  caf::typed_response_promise<int64_t> promise) {
  auto& s = self->state;
  self->request(s.deps.storage, std::chrono::seconds(60), hydrate_atom_v, after_team, after_id,
                s.deps.hydrate_page)
    .then(
      [=](hydrate_batch& batch) mutable {
        if (!batch.done)
          hydrate_page(self, batch.last_team, batch.last_id, promise);
        auto& st = self->state;
        for (auto& row : batch.rows) {
          auto key = row.key;
          if (st.connections.count(key) == 0) {
            spawn_connection(self, key, std::move(row));
            ++st.hydrated;
          }
        }
        if (batch.done) {
          log::info("registry", "hydrated connections", {{"count", st.hydrated}});
          promise.deliver(st.hydrated);
        }
      },
      [=](caf::error& err) mutable { promise.deliver(err); });
}

/// Asks a connection actor that is being handed over for a token; if it
/// stopped before the request reached it, a fresh actor is asked once.
void ask_leaving(self_ptr self, connection_actor actor, connection_key key, bool force,
                 caf::typed_response_promise<token_grant> promise) {
  self->request(actor, caf::infinite, get_token_atom_v, force)
    .then([=](token_grant& grant) mutable { promise.deliver(std::move(grant)); },
          [=](caf::error& err) mutable {
            if (err != caf::sec::request_receiver_down) {
              promise.deliver(err);
              return;
            }
            auto& st = self->state;
            auto it = st.connections.find(key);
            if (it != st.connections.end() && it->second.address() == actor.address())
              forget(self, it);
            st.leaving.erase(actor.address());
            promise.delegate(find_or_spawn(self, key), get_token_atom_v, force);
          });
}

/// Answers from this instance's connection actor (an owner, or a guest
/// under the lease), into `promise`.
void serve_here(self_ptr self, const connection_key& key, bool force,
                caf::typed_response_promise<token_grant> promise) {
  auto actor = find_or_spawn(self, key);
  note_use(self, actor);
  if (self->state.leaving.count(actor.address()) == 0) {
    promise.delegate(actor, get_token_atom_v, force);
    return;
  }
  ask_leaving(self, actor, key, force, promise);
}

caf::result<token_grant> serve_here(self_ptr self, const connection_key& key, bool force) {
  auto promise = self->make_response_promise<token_grant>();
  serve_here(self, key, force, promise);
  return promise;
}

/// Loading newly owned shards on the loaders, in parallel, each on its own
/// connection. A few shards (a takeover of some) are walked one at a time
/// in keyset pages on their index; a large share of them (every shard at a
/// start) is split among the loaders and each walks the primary key once,
/// keeping rows of its shards: per-shard walks would read every heap page
/// once per shard on it, about ten times the work on a million rows.
struct shard_load {
  /// Walks not started yet: one shard each, or one set per loader.
  std::vector<std::vector<int32_t>> pending;
  size_t running = 0;
  int64_t loaded = 0;
  caf::typed_response_promise<int64_t> promise;
};
using shard_load_ptr = std::shared_ptr<shard_load>;
using shard_walk = std::shared_ptr<const std::vector<int32_t>>;

/// From this share of the shards on, one walk of the key per loader.
constexpr size_t set_walk_divisor = 8;

void load_next_walk(self_ptr self, shard_load_ptr job, storage_actor loader);

void load_walk_page(self_ptr self, shard_load_ptr job, storage_actor loader, shard_walk walk,
                    std::string after_team, std::string after_id) {
  auto& s = self->state;
  auto on_page = [=](hydrate_batch& batch) {
    // The next page is read and decrypted while this one spawns.
    if (!batch.done)
      load_walk_page(self, job, loader, walk, batch.last_team, batch.last_id);
    auto& st = self->state;
    for (auto& row : batch.rows) {
      auto it = st.connections.find(row.key);
      if (it != st.connections.end()) {
        // A guest until now (no-op for an owner).
        self->send(it->second, own_atom_v);
        continue;
      }
      auto key = row.key;
      spawn_connection(self, key, std::move(row));
      ++job->loaded;
    }
    if (batch.done)
      load_next_walk(self, job, loader);
  };
  auto on_error = [=](caf::error& err) {
    // Their connections are spawned on demand instead (as owners).
    log::warn("registry", "could not load owned shards",
              {{"shards", walk->size()}, {"error", message_of(err)}});
    load_next_walk(self, job, loader);
  };
  if (walk->size() == 1)
    self->request(loader, std::chrono::seconds(60), hydrate_atom_v, walk->front(), after_team,
                  after_id, s.deps.hydrate_page)
      .then(on_page, on_error);
  else
    self->request(loader, std::chrono::seconds(60), hydrate_atom_v, *walk, after_team, after_id,
                  s.deps.hydrate_page)
      .then(on_page, on_error);
}

void load_next_walk(self_ptr self, shard_load_ptr job, storage_actor loader) {
  if (!job->pending.empty()) {
    auto walk = std::make_shared<const std::vector<int32_t>>(std::move(job->pending.back()));
    job->pending.pop_back();
    load_walk_page(self, job, loader, walk, std::string{}, std::string{});
    return;
  }
  if (--job->running == 0)
    job->promise.deliver(job->loaded);
}

} // namespace

int64_t steady_to_wall_offset_ms() {
  using namespace std::chrono;
  auto wall = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  auto steady = duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
  return wall - steady;
}

std::string new_instance_id() {
  char host[64] = {0};
  gethostname(host, sizeof host - 1);
  return std::string(host) + ":" + std::to_string(getpid()) + ":" + http::new_request_id();
}

registry_deps make_registry_deps(const config::service_config& cfg,
                                 const config::provider_catalog& catalog) {
  registry_deps deps;
  for (auto& [name, entry] : catalog.providers)
    deps.providers[name] = std::make_shared<const config::provider_entry>(entry);
  for (auto& [name, settings] : cfg.providers) {
    if (settings.client_id.empty())
      continue;
    auto client = std::make_shared<oauth::client_credentials>();
    client->client_id = settings.client_id;
    std::string secret_text = settings.client_secret;
    if (!settings.client_secret_file.empty()) {
      std::ifstream in(settings.client_secret_file, std::ios::binary);
      if (!in)
        throw config::config_error(settings.client_secret_file + ": cannot open client secret file");
      secret_text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      while (!secret_text.empty() && (secret_text.back() == '\n' || secret_text.back() == '\r'))
        secret_text.pop_back();
    }
    client->client_secret = secret{std::move(secret_text)};
    deps.clients[name] = client;
  }
  deps.instance_id = new_instance_id();
  deps.settings = cfg.refresh;
  deps.wall_offset_ms = steady_to_wall_offset_ms();
  deps.seed = randombytes_random();
  return deps;
}

registry_actor::behavior_type registry(registry_actor::stateful_pointer<registry_state> self,
                                       registry_deps deps) {
  self->state.deps = std::move(deps);
  self->state.wheel = std::make_shared<refresh_wheel>();
  self->state.wheel_driver = self->spawn<caf::linked>(refresh_wheel_drive, self->state.wheel,
                                                       self->state.deps.wall_offset_ms);
  self->state.gate =
    self->spawn<caf::linked>(refresh_gate, self->state.deps.settings.max_in_flight);
  // Connection actors are monitored, not linked (one that finds no row must
  // not take the registry down), so shutting down stops them explicitly.
  self->set_exit_handler([=](caf::exit_msg& msg) {
    auto reason = msg.reason;
    fan_out(self->home_system(), connection_handles(self),
            [reason](caf::event_based_actor* sender, const caf::actor& target) {
              sender->send_exit(target, reason);
            });
    self->quit(msg.reason);
  });
  if (self->state.deps.shards && self->state.deps.guest_idle_ms > 0)
    self->delayed_send(self, guest_sweep_every(self), handover_atom_v);
  self->set_down_handler([=](const caf::down_msg& msg) {
    auto& s = self->state;
    bool was_leaving = s.leaving.erase(msg.source) > 0;
    s.guest_used_ms.erase(msg.source);
    auto it = s.keys.find(msg.source);
    if (it == s.keys.end())
      return;
    auto entry = s.connections.find(*it->second);
    if (entry != s.connections.end() && entry->second.address() == msg.source) {
      auto key = entry->first;
      forget(self, entry);
      // Its shard came back (or was taken) while it was stopping: the
      // owner needs an actor with its refresh timer, loaded afresh.
      if (was_leaving && owns(self, key))
        spawn_connection(self, key, std::nullopt);
    } else {
      s.keys.erase(it);
    }
  });
  return {
    [=](get_token_atom, const connection_key& key, bool force) -> caf::result<token_grant> {
      // A snapshot its owner published here: no message to the actor.
      if (auto& board = self->state.deps.board; board && !force)
        if (auto snapshot = board->serve(key, clock_ms(self) + self->state.deps.wall_offset_ms))
          return snapshot->grant;
      auto& forwarder = self->state.deps.forwarder;
      if (!forwarder || owns(self, key))
        return serve_here(self, key, force);
      // Owned elsewhere: ask the owner; if it cannot answer, serve it here
      // from the database under the lease (a guest actor).
      auto promise = self->make_response_promise<token_grant>();
      // Bounded: a forwarder that stops (shutdown) answers nobody.
      auto patience = std::chrono::milliseconds(self->state.deps.forward_timeout_ms + 1000);
      self->request(forwarder, patience, get_token_atom_v, key, force)
        .then([=](token_grant& grant) mutable { promise.deliver(std::move(grant)); },
              [=](caf::error& err) mutable {
                if (owner_answered(err)) {
                  promise.deliver(std::move(err));
                  return;
                }
                serve_here(self, key, force, promise);
              });
      return promise;
    },
    [=](forward_atom, const connection_key& key, bool force) -> caf::result<token_grant> {
      // Another instance forwarded it here as to the owner; never passed on
      // again, so a stale directory cannot make requests circle.
      if (!owns(self, key))
        return make_error(ec::unavailable, "this instance does not own the connection's shard");
      return serve_here(self, key, force);
    },
    [=](status_atom, const connection_key& key) {
      auto actor = find_or_spawn(self, key);
      note_use(self, actor);
      return self->delegate(actor, status_atom_v);
    },
    [=](handover_atom) {
      stop_idle_guests(self);
      self->delayed_send(self, guest_sweep_every(self), handover_atom_v);
    },
    [=](reload_atom, const connection_key& key) {
      fence_key(self, key);
      auto it = self->state.connections.find(key);
      if (it == self->state.connections.end())
        spawn_connection(self, key, std::nullopt);
      else
        self->send(it->second, reload_atom_v);
    },
    [=](remove_atom, const connection_key& key) {
      fence_key(self, key);
      auto it = self->state.connections.find(key);
      if (it == self->state.connections.end())
        return;
      // Forgotten now, not when it is down: requests from here on spawn a
      // fresh actor (which finds no row: 404) instead of reaching one that
      // is stopping (503).
      self->send_exit(it->second, caf::exit_reason::user_shutdown);
      forget(self, it);
    },
    [=](configure_atom, const registry_deps_ptr& deps) {
      auto& s = self->state;
      s.deps.providers = deps->providers;
      s.deps.clients = deps->clients;
      s.deps.settings = deps->settings;
      self->send(s.gate, configure_atom_v, s.deps.settings.max_in_flight);
      // New shared dependencies per provider; running actors of a provider
      // the new catalog dropped keep its old entry.
      auto forwarded = std::make_shared<registry_deps>(*deps);
      auto previous = std::move(s.connection_deps);
      s.connection_deps.clear();
      // Running guests get the owners' set below (their `owned` flag is
      // their own); new guests get a fresh one.
      s.guest_deps.clear();
      for (auto& [provider, old_deps] : previous) {
        auto fresh = connection_deps_for(self, provider);
        if (!fresh->provider && old_deps->provider) {
          auto kept = std::make_shared<connection_deps>(*fresh);
          kept->provider = old_deps->provider;
          fresh = kept;
        }
        forwarded->running_connection_deps[provider] = fresh;
      }
      registry_deps_ptr message = forwarded;
      fan_out(self->home_system(), connection_handles(self),
              [message](caf::event_based_actor* sender, const caf::actor& target) {
                sender->send(caf::actor_cast<connection_actor>(target), configure_atom_v, message);
              });
    },
    [=](own_atom, std::vector<int32_t>& shards) -> caf::typed_response_promise<int64_t> {
      auto& s = self->state;
      auto job = std::make_shared<shard_load>();
      job->promise = self->make_response_promise<int64_t>();
      auto promise = job->promise;
      std::vector<storage_actor> loaders = s.deps.loaders;
      if (loaders.empty())
        loaders.push_back(s.deps.storage);
      auto shard_count = static_cast<size_t>(s.deps.shards ? s.deps.shards->shard_count() : 1);
      // Connections spawned on demand before the load (guests, or owners
      // of shards taken just now) are promoted as their rows arrive.
      if (shards.size() * set_walk_divisor >= shard_count && shards.size() > 1) {
        std::vector<std::vector<int32_t>> sets(std::min(loaders.size(), shards.size()));
        for (size_t i = 0; i < shards.size(); ++i)
          sets[i % sets.size()].push_back(shards[i]);
        job->pending = std::move(sets);
      } else {
        std::reverse(shards.begin(), shards.end());
        for (auto shard : shards)
          job->pending.push_back({shard});
      }
      job->running = std::min(loaders.size(), job->pending.size());
      if (job->running == 0) {
        promise.deliver(int64_t{0});
        return promise;
      }
      for (size_t i = 0; i < job->running; ++i)
        load_next_walk(self, job, loaders[i]);
      return promise;
    },
    [=](handover_atom, const std::vector<int32_t>& shards) -> caf::typed_response_promise<int64_t> {
      auto& s = self->state;
      auto promise = self->make_response_promise<int64_t>();
      std::vector<bool> leaving(static_cast<size_t>(s.deps.shards ? s.deps.shards->shard_count() : 1));
      for (auto shard : shards)
        if (shard >= 0 && static_cast<size_t>(shard) < leaving.size())
          leaving[static_cast<size_t>(shard)] = true;
      auto waiting = std::make_shared<int64_t>(0);
      auto stopped = std::make_shared<int64_t>(0);
      // Each stays registered (and keeps answering requests) until it is
      // down, so no second actor for its key can start a refresh meanwhile.
      for (auto& [key, actor] : s.connections) {
        if (!leaving[static_cast<size_t>(shard_of_key(self, key))])
          continue;
        ++*waiting;
        s.leaving.insert(actor.address());
        self->request(actor, std::chrono::minutes(2), handover_atom_v)
          .then(
            [=](bool) mutable {
              ++*stopped;
              if (--*waiting == 0)
                promise.deliver(*stopped);
            },
            [=](caf::error&) mutable {
              if (--*waiting == 0)
                promise.deliver(*stopped);
            });
      }
      if (*waiting == 0)
        promise.deliver(int64_t{0});
      return promise;
    },
    [=](hydrate_atom) -> caf::typed_response_promise<int64_t> {
      auto promise = self->make_response_promise<int64_t>();
      self->state.hydrated = 0;
      hydrate_page(self, std::string{}, std::string{}, promise);
      return promise;
    },
  };
}

} // namespace cm

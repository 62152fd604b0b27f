#include "actors/owner_forwarder.hpp"

#include <algorithm>

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/error.hpp"
#include "common/log.hpp"
#include "storage/shards.hpp"

namespace cm {

bool owner_answered(const caf::error& err) {
  if (err.category() != error_category())
    return false; // CAF's own: timeouts, a peer gone, a connection lost
  switch (code_of(err)) {
    case ec::bad_request:
    case ec::not_found:
    case ec::needs_reauth:
    case ec::provider_failed:
    case ec::integrity_failure:
      return true;
    default:
      // unavailable (not the owner, or its database is down), a refused
      // peer token, anything unexpected: serve it here.
      return false;
  }
}

namespace {

using self_ptr = owner_forwarder_actor::stateful_pointer<owner_forwarder_state>;

constexpr const char* component = "forwarder";

caf::error serve_it_here(const std::string& why) { return make_error(ec::unavailable, why); }

void fall_back(self_ptr self, caf::typed_response_promise<token_grant>& promise,
               const std::string& why) {
  self->state.deps.stats->fallbacks.fetch_add(1, std::memory_order_relaxed);
  promise.deliver(serve_it_here(why));
}

/// How long after a failed connect an owner is not tried again.
constexpr auto retry_connect_after = std::chrono::seconds(5);

void forward(self_ptr self, const token_service_actor& peer, const connection_key& key, bool force,
             caf::typed_response_promise<token_grant> promise,
             owner_forwarder_state::clock::time_point deadline) {
  auto& deps = self->state.deps;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    deadline - owner_forwarder_state::clock::now());
  self->request(peer, std::max(left, std::chrono::milliseconds{1}), forward_atom_v,
                deps.peer_token, key, force)
    .then(
      [=](token_grant& grant) mutable {
        self->state.deps.stats->forwarded.fetch_add(1, std::memory_order_relaxed);
        promise.deliver(std::move(grant));
      },
      [=](caf::error& err) mutable {
        if (owner_answered(err)) {
          self->state.deps.stats->forwarded.fetch_add(1, std::memory_order_relaxed);
          promise.deliver(std::move(err));
          return;
        }
        if (code_of(err) == ec::unauthenticated &&
            self->state.refused_by.insert(peer.address()).second)
          log::warn(component, "an owner refused this instance's peer token; requests for its "
                               "shards are served here (do the instances share one keyring?)");
        fall_back(self, promise, "the owner did not answer");
      });
}

/// Splits "host:port" (the host may be an IPv6 address in brackets).
bool split_address(const std::string& address, std::string& host, uint16_t& port) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 >= address.size())
    return false;
  host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  try {
    auto value = std::stoul(address.substr(colon + 1));
    if (value == 0 || value > 65535)
      return false;
    port = static_cast<uint16_t>(value);
  } catch (const std::exception&) {
    return false;
  }
  return !host.empty();
}

/// The requests waiting for a connection to `address`, taken out.
std::vector<owner_forwarder_state::waiting> take_waiting(self_ptr self,
                                                         const std::string& address) {
  auto& connecting = self->state.connecting;
  auto it = connecting.find(address);
  if (it == connecting.end())
    return {};
  auto waiting = std::move(it->second);
  connecting.erase(it);
  return waiting;
}

/// Opens a connection to the peer at `address`; the requests waiting for
/// it are forwarded once it is up, or served here if it cannot be had.
void connect_to(self_ptr self, const std::string& address) {
  std::string host;
  uint16_t port = 0;
  auto fail_all = [=](const std::string& why) {
    for (auto& w : take_waiting(self, address))
      fall_back(self, w.promise, why);
  };
  if (!split_address(address, host, port)) {
    fail_all("the owner's address is malformed");
    return;
  }
  // No timeout here: the requests waiting for it have theirs (tick_atom),
  // and the answer, however late, says when another connect may start.
  self->state.connect_in_flight.insert(address);
  auto mm = self->home_system().middleman().actor_handle();
  self->request(mm, caf::infinite, caf::connect_atom_v, host, port)
    .then(
      [=](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
        auto& st = self->state;
        st.connect_in_flight.erase(address);
        if (!ptr) {
          st.unreachable_until[address] = owner_forwarder_state::clock::now() + retry_connect_after;
          log::warn(component, "no token service at an owner's address", {{"address", address}});
          fail_all("no token service at the owner's address");
          return;
        }
        auto peer = caf::actor_cast<token_service_actor>(std::move(ptr));
        self->monitor(peer);
        st.peers[address] = peer;
        for (auto& w : take_waiting(self, address))
          forward(self, peer, w.key, w.force, std::move(w.promise), w.deadline);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        st.connect_in_flight.erase(address);
        st.unreachable_until[address] = owner_forwarder_state::clock::now() + retry_connect_after;
        log::warn(component, "cannot reach an owner; its shards are served here for a while",
                  {{"address", address}, {"error", to_string(err)}});
        fail_all("the owner cannot be reached");
      });
}

} // namespace

owner_forwarder_actor::behavior_type
owner_forwarder(owner_forwarder_actor::stateful_pointer<owner_forwarder_state> self,
                owner_forwarder_deps deps) {
  self->state.deps = std::move(deps);
  self->set_down_handler([=](caf::down_msg& msg) {
    // The peer went away (stopped, killed, its connection dropped): the
    // next request opens a new connection.
    auto& peers = self->state.peers;
    for (auto it = peers.begin(); it != peers.end();)
      it = it->second.address() == msg.source ? peers.erase(it) : std::next(it);
  });
  return {
    [=](get_token_atom, const connection_key& key, bool force) -> caf::result<token_grant> {
      auto& st = self->state;
      auto& directory = *st.deps.directory;
      auto owner = directory.owner_of(storage::shard_of(key, directory.shard_count()));
      // Not counted as fallbacks: nothing was asked of anyone.
      if (!owner)
        return serve_it_here("no owner is known for the connection's shard");
      if (owner->instance_id == st.deps.instance_id)
        return serve_it_here("owned here");
      if (owner->token_address.empty())
        return serve_it_here("the owner publishes no token service");
      auto& address = owner->token_address;
      auto now = owner_forwarder_state::clock::now();
      auto deadline = now + st.deps.timeout;
      auto promise = self->make_response_promise<token_grant>();
      if (auto it = st.peers.find(address); it != st.peers.end()) {
        forward(self, it->second, key, force, promise, deadline);
        return promise;
      }
      if (auto it = st.unreachable_until.find(address); it != st.unreachable_until.end()) {
        if (now < it->second) {
          fall_back(self, promise, "the owner could not be reached lately");
          return promise;
        }
        st.unreachable_until.erase(it);
      }
      st.connecting[address].push_back({key, force, promise, deadline});
      self->delayed_send(self, st.deps.timeout, tick_atom_v);
      if (st.connect_in_flight.count(address) == 0)
        connect_to(self, address);
      return promise;
    },
    [=](tick_atom) {
      // Requests whose budget ran out while their owner's connect is still
      // outstanding are served by the caller.
      auto now = owner_forwarder_state::clock::now();
      auto& connecting = self->state.connecting;
      for (auto it = connecting.begin(); it != connecting.end();) {
        auto& list = it->second;
        auto expired = std::stable_partition(list.begin(), list.end(),
                                             [&](const auto& w) { return w.deadline > now; });
        for (auto w = expired; w != list.end(); ++w)
          fall_back(self, w->promise, "the owner cannot be reached in time");
        list.erase(expired, list.end());
        it = list.empty() ? connecting.erase(it) : std::next(it);
      }
    },
  };
}

} // namespace cm

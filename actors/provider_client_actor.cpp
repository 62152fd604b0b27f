#include "actors/provider_client_actor.hpp"

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace cm {

provider_client_actor::behavior_type
provider_client(provider_client_actor::stateful_pointer<provider_client_state> self) {
  // The engine (and its thread) goes away with the state; pending callbacks
  // then complete with `cancelled` and find no actor to talk to.
  self->state.engine = std::make_unique<curl_engine>();
  return {
    [=](outbound_request& req) -> caf::typed_response_promise<outbound_response> {
      auto id = self->state.next_id++;
      auto promise = self->make_response_promise<outbound_response>();
      self->state.pending.emplace(id, promise);
      caf::actor_addr addr = self->address();
      self->state.engine->submit(std::move(req), [addr, id](outbound_response res) {
        if (auto me = caf::actor_cast<provider_client_actor>(addr))
          caf::anon_send(me, fetched_atom_v, id, std::move(res));
      });
      return promise;
    },
    [=](fetched_atom, uint64_t id, outbound_response& res) {
      auto it = self->state.pending.find(id);
      if (it == self->state.pending.end())
        return;
      it->second.deliver(std::move(res));
      self->state.pending.erase(it);
    },
  };
}

} // namespace cm

#include "actors/provider_client_actor.hpp"

#include <chrono>

#include "common/metrics.hpp"

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace cm {

namespace {

/// The latency label of an answer: its status class, or that none came.
const char* result_class(const outbound_response& res) {
  if (res.error != transport_error::none || res.status < 100)
    return "transport_error";
  if (res.status < 300)
    return "2xx";
  if (res.status < 400)
    return "3xx";
  return res.status < 500 ? "4xx" : "5xx";
}

} // namespace

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
      auto started = std::chrono::steady_clock::now();
      auto provider = req.provider;
      self->state.engine->submit(std::move(req), [addr, id, started, provider](outbound_response res) {
        std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
        metrics::provider_call(provider, result_class(res), took.count());
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

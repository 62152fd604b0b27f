#include "actors/key_signer_actor.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/error.hpp"
#include "provider/service_account.hpp"

namespace cm {

key_signer_actor::behavior_type
key_signer(key_signer_actor::stateful_pointer<key_signer_state> self,
           std::shared_ptr<bounded_work_pool> pool) {
  self->state.pool = std::move(pool);
  auto deliver = [self](uint64_t id, auto&& outcome) {
    auto it = self->state.pending.find(id);
    if (it == self->state.pending.end())
      return;
    it->second.deliver(std::forward<decltype(outcome)>(outcome));
    self->state.pending.erase(it);
  };
  return {
    [=](oauth::jwt_bearer_grant& grant) -> caf::typed_response_promise<outbound_request> {
      auto promise = self->make_response_promise<outbound_request>();
      auto id = self->state.next_id++;
      caf::actor_addr addr = self->address();
      // Runs on a pool thread; the answer comes back as a message, so the
      // promise is only ever touched by this actor.
      auto job = [addr, id, grant = std::move(grant)] {
        std::string problem;
        auto req = oauth::sign_grant(grant, problem);
        auto me = caf::actor_cast<key_signer_actor>(addr);
        if (!me)
          return;
        if (req)
          caf::anon_send(me, signed_atom_v, id, std::move(*req));
        else
          caf::anon_send(me, signed_atom_v, id, make_error(ec::bad_request, problem));
      };
      if (!self->state.pool->try_submit(std::move(job))) {
        promise.deliver(make_error(ec::unavailable, "too many service-account keys are being "
                                                    "checked; try again shortly"));
        return promise;
      }
      self->state.pending.emplace(id, promise);
      return promise;
    },
    [=](signed_atom, uint64_t id, outbound_request& req) { deliver(id, std::move(req)); },
    [=](signed_atom, uint64_t id, caf::error& err) { deliver(id, std::move(err)); },
  };
}

key_signer_actor spawn_key_signer(caf::actor_system& sys, const config::key_signing_config& cfg) {
  auto pool = std::make_shared<bounded_work_pool>(static_cast<size_t>(cfg.threads),
                                                  static_cast<size_t>(cfg.max_queued),
                                                  "cm-key-signer");
  return sys.spawn(key_signer, std::move(pool));
}

} // namespace cm

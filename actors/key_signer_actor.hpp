// The key signer: checks service-account keys and signs their JWT-bearer
// grants (provider/service_account.hpp) on a few threads of its own
// (common/bounded_work_pool.hpp). A key that is slow to check or sign holds
// one of those threads, never a CAF worker that serves everyone; the
// connect route and the connection actors wait for the answer as for any
// other actor.
//
// At most `key_signing.max_queued` signings wait for a thread. Past that a
// request is refused at once with `unavailable`: the connect route answers
// 503 with Retry-After, a refresh backs off and tries again.
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/fwd.hpp"
#include "common/bounded_work_pool.hpp"
#include "config/service_config.hpp"

namespace cm {

using key_signer_actor = caf::typed_actor<
  // The grant's token request, signed with a checked key. Errors:
  // bad_request (the key is refused; the message names api_key and says
  // why), unavailable (too many signings are waiting).
  caf::replies_to<oauth::jwt_bearer_grant>::with<outbound_request>,
  // Internal: a signing thread finished job `id`, with its request ...
  caf::reacts_to<signed_atom, uint64_t, outbound_request>,
  // ... or with the reason the key was refused.
  caf::reacts_to<signed_atom, uint64_t, caf::error>>;

struct key_signer_state {
  std::shared_ptr<bounded_work_pool> pool;
  std::map<uint64_t, caf::typed_response_promise<outbound_request>> pending;
  uint64_t next_id = 1;
  static inline const char* name = "key-signer";
};

/// Signs on `pool`'s threads (the pool goes away with the actor).
key_signer_actor::behavior_type
key_signer(key_signer_actor::stateful_pointer<key_signer_state> self,
           std::shared_ptr<bounded_work_pool> pool);

/// A key signer with a pool sized by the service file's `key_signing`.
key_signer_actor spawn_key_signer(caf::actor_system& sys, const config::key_signing_config& cfg);

} // namespace cm

// The provider client actor: turns an outbound_request into an
// outbound_response without ever blocking a scheduler thread. Transfers run
// on a libcurl multi thread (provider/curl_engine); results come back as
// messages and are delivered from inside the actor.
//
// One attempt per request: retry policy (backoff, Retry-After, the guarded
// retry of a possibly-consumed refresh) belongs to the caller, which knows
// what the request means.
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/fwd.hpp"
#include "provider/curl_engine.hpp"

namespace cm {

using provider_client_actor = caf::typed_actor<
  // Performs one HTTP exchange with a provider.
  caf::replies_to<outbound_request>::with<outbound_response>,
  // Internal: the engine thread reports a finished transfer.
  caf::reacts_to<fetched_atom, uint64_t, outbound_response>>;

struct provider_client_state {
  std::unique_ptr<curl_engine> engine;
  std::map<uint64_t, caf::typed_response_promise<outbound_response>> pending;
  uint64_t next_id = 1;
  static inline const char* name = "provider-client";
};

provider_client_actor::behavior_type
provider_client(provider_client_actor::stateful_pointer<provider_client_state> self);

} // namespace cm

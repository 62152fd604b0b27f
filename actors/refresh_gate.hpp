// Back-pressure for refresh storms. Every connection actor plans its own
// refresh; when a hundred thousand come due at once (a restart after an
// outage, a takeover, tokens issued in one batch), starting them all at
// once queues a hundred thousand leases in storage and calls at the
// provider, and the last ones time out and retry, which makes the storm
// longer. The gate bounds how many refreshes are in flight (from the lease
// to the stored outcome): a connection asks it for a slot first and waits,
// in order, until one is free, so an overloaded storm is late by queueing,
// never by timeouts and retries. A refresh a caller waits for (forced, or
// for a token that has expired) goes ahead of the planned ones; a request
// for a still-valid token does not wait in line (actors/connection_actor.cpp,
// slot_patience).
//
// The gate watches every holder: a connection actor that stops while it
// holds a slot (a handover, a deleted connection, a crash) gives it back
// through its down message, so no slot is ever lost.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>

#include <caf/actor_addr.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/fwd.hpp"

namespace cm {

using refresh_gate_actor = caf::typed_actor<
  // A slot for the sender (urgent: a caller waits): answered once one is
  // free. The sender gives it back with the message below.
  caf::replies_to<claim_atom, bool>::with<bool>,
  // The sender's refresh ended: its slot is free.
  caf::reacts_to<release_atom>,
  // A new limit (configuration reload).
  caf::reacts_to<configure_atom, int64_t>,
  // How many are in flight and how many wait (tests read it).
  caf::replies_to<status_atom>::with<int64_t, int64_t>>;

struct refresh_gate_state {
  int64_t limit = 1;
  int64_t in_flight = 0;
  struct waiting {
    caf::actor_addr holder;
    caf::typed_response_promise<bool> promise;
  };
  std::deque<waiting> queue;
  /// Slots held by each actor (an actor holds one at a time; counted
  /// anyway, so a confused caller cannot make the count drift).
  std::unordered_map<caf::actor_addr, int64_t> held;
  static inline const char* name = "refresh_gate";
};

/// `limit`: refreshes in flight at once, at least 1.
refresh_gate_actor::behavior_type
refresh_gate(refresh_gate_actor::stateful_pointer<refresh_gate_state> self, int64_t limit);

} // namespace cm

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
// slot_patience). The planned ones are admitted earliest expiry first, not
// in the order they came due: in a storm every connection is due at once
// (loaded in key order after an outage or a takeover), and a token that
// expires in a minute must not wait behind a hundred thousand that have two.
//
// The gate watches every holder: a connection actor that stops while it
// holds a slot (a handover, a deleted connection, a crash) gives it back
// through its down message, so no slot is ever lost.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>
#include <unordered_map>

#include <caf/actor_addr.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/fwd.hpp"

namespace cm {

using refresh_gate_actor = caf::typed_actor<
  // A slot for the sender (urgent: a caller waits; then the expiry of its
  // token in Unix ms, 0 when it has none): answered once one is free. The
  // sender gives it back with the message below.
  caf::replies_to<claim_atom, bool, int64_t>::with<bool>,
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
  /// Admission order: urgent claims first, then planned ones by their
  /// token's expiry (none: last); arrival order breaks ties.
  struct place {
    bool planned;
    int64_t expires_at_ms;
    uint64_t arrival;
    bool operator<(const place& o) const {
      return std::tie(planned, expires_at_ms, arrival) <
             std::tie(o.planned, o.expires_at_ms, o.arrival);
    }
  };
  std::map<place, waiting> queue;
  uint64_t arrivals = 0;
  /// Slots held by each actor (an actor holds one at a time; counted
  /// anyway, so a confused caller cannot make the count drift).
  std::unordered_map<caf::actor_addr, int64_t> held;
  static inline const char* name = "refresh_gate";
};

/// `limit`: refreshes in flight at once, at least 1.
refresh_gate_actor::behavior_type
refresh_gate(refresh_gate_actor::stateful_pointer<refresh_gate_state> self, int64_t limit);

} // namespace cm

#include "actors/refresh_gate.hpp"

#include <algorithm>
#include <limits>

#include <caf/actor_cast.hpp>
#include <caf/system_messages.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/error.hpp"

namespace cm {

namespace {

using gate_ptr = refresh_gate_actor::stateful_pointer<refresh_gate_state>;

/// Hands a slot to `holder`, unless it stopped while it waited (nobody to
/// give it to). Watched from now on, so its slot comes back if it stops.
bool grant(gate_ptr self, const caf::actor_addr& holder,
           caf::typed_response_promise<bool>& promise) {
  auto strong = caf::actor_cast<caf::strong_actor_ptr>(holder);
  if (!strong)
    return false;
  auto& st = self->state;
  ++st.in_flight;
  // Monitoring an actor that stops meanwhile still sends its down message.
  if (st.held[holder]++ == 0)
    self->monitor(strong);
  promise.deliver(true);
  return true;
}

void admit_waiting(gate_ptr self) {
  auto& st = self->state;
  while (st.in_flight < st.limit && !st.queue.empty()) {
    auto first = st.queue.begin();
    auto next = std::move(first->second);
    st.queue.erase(first);
    grant(self, next.holder, next.promise);
  }
}

void give_back(gate_ptr self, const caf::actor_addr& holder, int64_t slots) {
  auto& st = self->state;
  auto it = st.held.find(holder);
  if (it == st.held.end())
    return;
  slots = std::min(slots, it->second);
  it->second -= slots;
  st.in_flight -= slots;
  if (it->second == 0) {
    st.held.erase(it);
    self->demonitor(holder);
  }
  admit_waiting(self);
}

} // namespace

refresh_gate_actor::behavior_type
refresh_gate(refresh_gate_actor::stateful_pointer<refresh_gate_state> self, int64_t limit) {
  self->state.limit = std::max<int64_t>(limit, 1);
  self->set_down_handler([=](caf::down_msg& msg) {
    auto it = self->state.held.find(msg.source);
    if (it != self->state.held.end())
      give_back(self, msg.source, it->second);
  });
  return {
    [=](claim_atom, bool urgent, int64_t expires_at_ms) -> caf::result<bool> {
      auto holder = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto promise = self->make_response_promise<bool>();
      auto& st = self->state;
      if (st.in_flight < st.limit && st.queue.empty()) {
        if (!grant(self, holder, promise))
          promise.deliver(make_error(ec::unavailable, "anonymous senders get no refresh slot"));
      } else {
        refresh_gate_state::place at{
          !urgent,
          urgent || expires_at_ms <= 0 ? std::numeric_limits<int64_t>::max() : expires_at_ms,
          st.arrivals++};
        st.queue.emplace(at, refresh_gate_state::waiting{holder, promise});
      }
      return promise;
    },
    [=](release_atom) {
      give_back(self, caf::actor_cast<caf::actor_addr>(self->current_sender()), 1);
    },
    [=](configure_atom, int64_t limit) {
      // A configuration reload: more slots admit waiters at once; fewer
      // take effect as refreshes end.
      self->state.limit = std::max<int64_t>(limit, 1);
      admit_waiting(self);
    },
    [=](status_atom) -> caf::result<int64_t, int64_t> {
      return {self->state.in_flight, static_cast<int64_t>(self->state.queue.size())};
    },
  };
}

} // namespace cm

// Sending one message to very many actors (a reload's new settings, the
// exits at shutdown) from a thread of its own.
//
// Why: under CAF 0.17's work-stealing scheduler, a message sent from inside
// an actor schedules its receiver on the sender's own worker queue. A
// registry sending a million messages in one handler builds a million-long
// queue there, and the idle worker steals from its tail, which CAF's
// double-ended queue finds by walking from the head: quadratic time (100,000
// exits took 7 to 10 s; bench/bench_cold_start.cpp measures it). Sends from a
// detached actor go through the scheduler's central enqueue instead, spread
// round-robin over the workers, each draining its own queue from the head.
#pragma once

#include <functional>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

namespace cm {

/// Calls `send_one(sender, target)` for every target, on a detached actor
/// that stops when done.
inline void fan_out(caf::actor_system& sys, std::vector<caf::actor> targets,
                    std::function<void(caf::event_based_actor*, const caf::actor&)> send_one) {
  if (targets.empty())
    return;
  sys.spawn<caf::detached>(
    [targets = std::move(targets), send_one = std::move(send_one)](caf::event_based_actor* self) {
      for (auto& target : targets)
        send_one(self, target);
    });
}

} // namespace cm

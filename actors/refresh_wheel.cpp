#include "actors/refresh_wheel.hpp"

#include <chrono>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace cm {

void refresh_wheel::add(int64_t wake_at_ms, caf::actor_addr connection, uint64_t generation) {
  std::lock_guard<std::mutex> guard{mutex_};
  buckets_[wake_at_ms / resolution_ms_].push_back({std::move(connection), generation});
  ++size_;
}

std::vector<refresh_wheel::entry> refresh_wheel::take_due(int64_t now_ms) {
  std::vector<entry> due;
  std::lock_guard<std::mutex> guard{mutex_};
  auto last = now_ms / resolution_ms_;
  auto it = buckets_.begin();
  while (it != buckets_.end() && it->first <= last) {
    if (due.empty())
      due = std::move(it->second);
    else
      due.insert(due.end(), std::make_move_iterator(it->second.begin()),
                 std::make_move_iterator(it->second.end()));
    it = buckets_.erase(it);
  }
  size_ -= due.size();
  return due;
}

size_t refresh_wheel::size() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return size_;
}

refresh_wheel_driver::behavior_type
refresh_wheel_drive(refresh_wheel_driver::pointer self, refresh_wheel_ptr wheel,
                    int64_t wall_offset_ms) {
  auto period = std::chrono::milliseconds(wheel->resolution_ms());
  self->delayed_send(self, period, tick_atom_v);
  return {
    [=](tick_atom) {
      auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   self->clock().now().time_since_epoch()).count() + wall_offset_ms;
      for (auto& e : wheel->take_due(now))
        if (auto connection = caf::actor_cast<caf::actor>(e.connection))
          caf::anon_send(connection, tick_atom_v, e.generation);
      self->delayed_send(self, period, tick_atom_v);
    },
  };
}

} // namespace cm

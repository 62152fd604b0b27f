#include "proxy/team_in_flight.hpp"

namespace cm::proxy {

team_in_flight::slot team_in_flight::enter(const std::string& team, int64_t limit) {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    auto& n = open_[team];
    if (n >= limit)
      return nullptr;
    ++n;
  }
  auto self = shared_from_this();
  // The deleter gives the slot back; the pointer itself points at nothing.
  return slot(static_cast<void*>(this), [self, team](void*) { self->leave(team); });
}

int64_t team_in_flight::open(const std::string& team) const {
  std::lock_guard<std::mutex> guard{mutex_};
  auto it = open_.find(team);
  return it == open_.end() ? 0 : it->second;
}

void team_in_flight::leave(const std::string& team) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto it = open_.find(team);
  if (it != open_.end() && --it->second <= 0)
    open_.erase(it);
}

} // namespace cm::proxy

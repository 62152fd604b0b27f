#include "storage/team_lookup_cache.hpp"

namespace cm::storage {

std::string team_lookup_cache::key_text(std::string_view user, std::string_view provider) {
  std::string out = std::to_string(user.size());
  out.push_back(':');
  out.append(user);
  out.append(provider);
  return out;
}

std::optional<std::vector<std::string>>
team_lookup_cache::find(std::string_view user, std::string_view provider,
                        clock::time_point now) const {
  auto text = key_text(user, provider);
  std::lock_guard<std::mutex> guard{mutex_};
  auto it = entries_.find(text);
  if (it == entries_.end() || now - it->second.stored >= ttl_)
    return std::nullopt;
  return it->second.teams;
}

uint64_t team_lookup_cache::generation() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return generation_;
}

void team_lookup_cache::store(std::string_view user, std::string_view provider,
                              std::vector<std::string> teams, uint64_t seen_generation,
                              clock::time_point now) {
  auto text = key_text(user, provider);
  std::lock_guard<std::mutex> guard{mutex_};
  if (seen_generation != generation_)
    return;
  if (entries_.size() >= capacity_ && entries_.count(text) == 0)
    entries_.clear();
  entries_[std::move(text)] = entry{std::move(teams), now};
}

void team_lookup_cache::forget(std::string_view user, std::string_view provider) {
  auto text = key_text(user, provider);
  std::lock_guard<std::mutex> guard{mutex_};
  ++generation_;
  entries_.erase(text);
}

} // namespace cm::storage

#include "actors/token_board.hpp"

#include <functional>

namespace cm {

std::string token_board::key_text(std::string_view team, std::string_view user,
                                  std::string_view provider) {
  // Length-prefixed, so no two keys share a text.
  std::string out;
  out.reserve(team.size() + user.size() + provider.size() + 24);
  out.append(std::to_string(team.size())).push_back(':');
  out.append(team);
  out.append(std::to_string(user.size())).push_back(':');
  out.append(user);
  out.append(provider);
  return out;
}

size_t token_board::hash_of(const std::string& text) { return std::hash<std::string>{}(text); }

served_token_ptr token_board::serve(std::string_view team, std::string_view user,
                                    std::string_view provider, int64_t now_ms) const {
  if (!alone())
    return nullptr;
  auto text = key_text(team, user, provider);
  auto& s = stripe_of(hash_of(text));
  served_token_ptr found;
  {
    std::lock_guard<std::mutex> guard{s.mutex};
    auto it = s.entries.find(text);
    if (it == s.entries.end())
      return nullptr;
    found = it->second;
  }
  if (now_ms >= found->serve_until_ms || !current(*found))
    return nullptr;
  served_.fetch_add(1, std::memory_order_relaxed);
  return found;
}

uint32_t token_board::fence(const connection_key& key) const {
  auto h = hash_of(key_text(key.team_id, key.user_id, key.provider));
  return fences_[h % fence_slots].load(std::memory_order_acquire);
}

bool token_board::publish(const connection_key& key, served_token_ptr snapshot,
                          uint32_t seen_fence) {
  auto text = key_text(key.team_id, key.user_id, key.provider);
  auto h = hash_of(text);
  auto& s = stripe_of(h);
  std::lock_guard<std::mutex> guard{s.mutex};
  if (fences_[h % fence_slots].load(std::memory_order_relaxed) != seen_fence)
    return false;
  s.entries[std::move(text)] = std::move(snapshot);
  return true;
}

served_token_ptr token_board::take_locked(stripe& s, const std::string& text) {
  auto it = s.entries.find(text);
  if (it == s.entries.end())
    return nullptr;
  auto gone = std::move(it->second);
  // Whoever kept a copy (its actor) stops serving it too.
  gone->withdrawn.store(true, std::memory_order_release);
  s.entries.erase(it);
  return gone;
}

void token_board::withdraw(const connection_key& key) {
  auto text = key_text(key.team_id, key.user_id, key.provider);
  auto& s = stripe_of(hash_of(text));
  served_token_ptr gone; // released outside the lock
  std::lock_guard<std::mutex> guard{s.mutex};
  gone = take_locked(s, text);
}

void token_board::hold(const connection_key& key) {
  auto text = key_text(key.team_id, key.user_id, key.provider);
  auto h = hash_of(text);
  auto& s = stripe_of(h);
  served_token_ptr gone;
  std::lock_guard<std::mutex> guard{s.mutex};
  fences_[h % fence_slots].fetch_add(1, std::memory_order_acq_rel);
  gone = take_locked(s, text);
}

size_t token_board::size() const {
  size_t n = 0;
  for (auto& s : stripes_) {
    std::lock_guard<std::mutex> guard{s.mutex};
    n += s.entries.size();
  }
  return n;
}

} // namespace cm

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

token_board::stripe& token_board::stripe_of(const std::string& text) const {
  return stripes_[std::hash<std::string>{}(text) % stripe_count];
}

served_token_ptr token_board::serve(std::string_view team, std::string_view user,
                                    std::string_view provider, int64_t now_ms) const {
  if (!alone())
    return nullptr;
  auto text = key_text(team, user, provider);
  auto& s = stripe_of(text);
  served_token_ptr found;
  {
    std::lock_guard<std::mutex> guard{s.mutex};
    auto it = s.entries.find(text);
    if (it == s.entries.end())
      return nullptr;
    found = it->second.snapshot;
  }
  if (!found || now_ms >= found->serve_until_ms)
    return nullptr;
  served_.fetch_add(1, std::memory_order_relaxed);
  return found;
}

uint32_t token_board::fence(const connection_key& key) const {
  auto text = key_text(key.team_id, key.user_id, key.provider);
  auto& s = stripe_of(text);
  std::lock_guard<std::mutex> guard{s.mutex};
  auto it = s.entries.find(text);
  return it == s.entries.end() ? 0 : it->second.fence;
}

bool token_board::publish(const connection_key& key, served_token_ptr snapshot,
                          uint32_t seen_fence) {
  auto text = key_text(key.team_id, key.user_id, key.provider);
  auto& s = stripe_of(text);
  std::lock_guard<std::mutex> guard{s.mutex};
  auto& e = s.entries[text];
  if (e.fence != seen_fence)
    return false;
  e.snapshot = std::move(snapshot);
  return true;
}

void token_board::withdraw(const connection_key& key) {
  auto text = key_text(key.team_id, key.user_id, key.provider);
  auto& s = stripe_of(text);
  served_token_ptr gone; // released outside the lock
  std::lock_guard<std::mutex> guard{s.mutex};
  auto it = s.entries.find(text);
  if (it == s.entries.end())
    return;
  gone = std::move(it->second.snapshot);
  if (gone)
    gone->withdrawn.store(true, std::memory_order_release);
  // A key never held needs no entry to remember its fence by.
  if (it->second.fence == 0)
    s.entries.erase(it);
}

void token_board::hold(const connection_key& key) {
  auto text = key_text(key.team_id, key.user_id, key.provider);
  auto& s = stripe_of(text);
  served_token_ptr gone;
  std::lock_guard<std::mutex> guard{s.mutex};
  auto& e = s.entries[text];
  gone = std::move(e.snapshot);
  if (gone)
    gone->withdrawn.store(true, std::memory_order_release);
  ++e.fence;
}

size_t token_board::size() const {
  size_t n = 0;
  for (auto& s : stripes_) {
    std::lock_guard<std::mutex> guard{s.mutex};
    for (auto& [text, e] : s.entries)
      n += e.snapshot ? 1 : 0;
  }
  return n;
}

} // namespace cm

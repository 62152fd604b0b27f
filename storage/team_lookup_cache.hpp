// Which teams a user has a provider connected in: the answer to a token
// request without team_id, cached so that request does not ask the
// database each time (issue 18).
//
// Invalidated by connection events: a connect or disconnect made here
// forgets the pair before it answers, and the registry forgets it when
// any instance's TOKEN_CREATED, TOKEN_REVOKED or TOKEN_EXPIRED reaches it
// (actors/event_hub.hpp). Entries also age out after `ttl`, a bound for an
// event that never arrives. A lookup that began before a forget is not
// stored (the generation moved), so a read racing a connect cannot bring
// the old answer back. Bounded: when full, it starts over empty.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cm::storage {

class team_lookup_cache {
public:
  using clock = std::chrono::steady_clock;

  team_lookup_cache(std::chrono::milliseconds ttl, size_t capacity)
    : ttl_(ttl), capacity_(capacity) {}
  team_lookup_cache(const team_lookup_cache&) = delete;
  team_lookup_cache& operator=(const team_lookup_cache&) = delete;

  /// The teams, if known and fresh.
  std::optional<std::vector<std::string>> find(std::string_view user, std::string_view provider,
                                               clock::time_point now = clock::now()) const;

  /// Read before asking the database; pass it to `store`.
  uint64_t generation() const;

  /// Keeps an answer read after `seen_generation`; ignored when a forget
  /// happened since.
  void store(std::string_view user, std::string_view provider, std::vector<std::string> teams,
             uint64_t seen_generation, clock::time_point now = clock::now());

  /// A connection of the pair was created, replaced or removed.
  void forget(std::string_view user, std::string_view provider);

private:
  struct entry {
    std::vector<std::string> teams;
    clock::time_point stored;
  };
  static std::string key_text(std::string_view user, std::string_view provider);

  const std::chrono::milliseconds ttl_;
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, entry> entries_;
  uint64_t generation_ = 0;
};

} // namespace cm::storage

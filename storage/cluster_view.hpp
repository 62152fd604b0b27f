// What this instance knows about the others sharing its database: whether
// it is alone, as of its last heartbeat (storage/instance_heartbeat.hpp).
// Read on every token served from memory, so it is one atomic word.
//
// "Alone" is a lease: a heartbeat that saw no other live instance lets this
// instance serve from memory for `trust` after the heartbeat was sent. An
// instance that joins meanwhile takes no refresh lease before its grace has
// passed, and the grace is longer than `trust`, so no other instance can
// store a newer token while this one still believes it is alone.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

namespace cm::storage {

class cluster_view {
public:
  using clock = std::chrono::steady_clock;

  explicit cluster_view(std::chrono::milliseconds trust) : trust_(trust) {}

  /// A heartbeat sent at `sent` saw `others` live instances besides this one.
  void observed(clock::time_point sent, int64_t others) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(sent.time_since_epoch()).count();
    // Counted first: whoever sees the word say "others" sees the count move.
    if (others > 0)
      crowded_.fetch_add(1, std::memory_order_acq_rel);
    // Low bit: others present. The rest: when the heartbeat was sent.
    word_.store((ms << 1) | (others > 0 ? 1 : 0), std::memory_order_release);
  }

  /// Heartbeats that saw other instances, since start: a token held in
  /// memory from before the last of them may be older than the stored one
  /// even once this instance is alone again (actors/token_board.hpp).
  uint64_t crowded() const { return crowded_.load(std::memory_order_acquire); }

  /// Whether nobody else can have stored a newer token than the ones this
  /// instance holds in memory. False until the first heartbeat.
  bool alone(clock::time_point now = clock::now()) const {
    auto word = word_.load(std::memory_order_acquire);
    if (word < 0 || (word & 1) != 0)
      return false;
    auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    return now_ms - (word >> 1) < trust_.count();
  }

  /// Whether the last heartbeat saw other instances (regardless of age).
  bool others_seen() const { return (word_.load(std::memory_order_acquire) & 1) != 0; }

private:
  std::chrono::milliseconds trust_;
  std::atomic<int64_t> word_{-1};
  std::atomic<uint64_t> crowded_{0};
};

using cluster_view_ptr = std::shared_ptr<cluster_view>;

} // namespace cm::storage

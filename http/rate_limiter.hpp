// Per-caller token buckets for the routes that write or call providers
// (issue 16: one member must not be able to spend the deployment's provider
// quota, database writes or CPU on everyone else's behalf).
//
// A caller is an authenticated identity, never anything a peer can choose
// freely: a member is (team, user) from a verified session JWT, a service is
// its token's name or its JWT's subject. Each caller has one bucket holding
// up to `burst` requests, refilled at `per_minute`; a request takes one, and
// an empty bucket refuses it with the time until the next one is due.
//
// Memory stays bounded: a bucket that has refilled completely carries no
// information (a fresh bucket would be the same), so such idle buckets are
// swept away, and the number of buckets is capped (at the cap, the one
// closest to full is dropped first). Keys are stored as 64-bit keyed hashes,
// so a long JWT subject costs no more than a short one.
//
// The limiter is per instance, in memory: behind a load balancer a caller
// gets up to (instances x burst). Time is passed in, so tests drive it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <unordered_map>

namespace cm::http {

/// The shape of one caller's bucket.
struct bucket_limits {
  /// Requests that may come at once (the bucket's size).
  int64_t burst = 30;
  /// Requests added back per minute (continuously, not once a minute).
  int64_t per_minute = 300;
};

class rate_limiter {
public:
  using clock = std::chrono::steady_clock;

  struct decision {
    bool allowed = true;
    /// When refused: whole seconds until a request would be allowed
    /// (at least 1), for the Retry-After header.
    int64_t retry_after_s = 0;
  };

  /// `max_buckets` bounds memory whatever the number of callers.
  explicit rate_limiter(size_t max_buckets = default_max_buckets);

  /// Takes one request from `caller`'s bucket. Thread-safe.
  decision take(std::string_view caller, const bucket_limits& limits, clock::time_point now);

  /// Buckets held now (tests).
  size_t size() const;

  /// About 100 bytes each: 100,000 buckets stay near 10 MB.
  static constexpr size_t default_max_buckets = 100000;
  /// Idle buckets are looked for at most this often.
  static constexpr std::chrono::seconds sweep_interval{60};

private:
  struct bucket {
    double tokens = 0;
    clock::time_point updated;
    /// When the bucket will be full again if nobody takes from it: from
    /// then on it can be forgotten.
    clock::time_point full_at;
  };

  uint64_t key_of(std::string_view caller) const;
  void sweep(clock::time_point now);
  void drop_closest_to_full();

  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, bucket> buckets_;
  size_t max_buckets_;
  clock::time_point next_sweep_{};
  /// SipHash key, random per process: nobody can aim two callers at one
  /// bucket.
  unsigned char hash_key_[16];
};

} // namespace cm::http

#include "http/rate_limiter.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <sodium.h>

namespace cm::http {

namespace {

double seconds_between(rate_limiter::clock::time_point from, rate_limiter::clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

rate_limiter::clock::duration seconds(double s) {
  return std::chrono::duration_cast<rate_limiter::clock::duration>(std::chrono::duration<double>(s));
}

} // namespace

rate_limiter::rate_limiter(size_t max_buckets) : max_buckets_(std::max<size_t>(max_buckets, 1)) {
  if (sodium_init() < 0)
    throw std::runtime_error("libsodium failed to initialise");
  crypto_shorthash_keygen(hash_key_);
}

uint64_t rate_limiter::key_of(std::string_view caller) const {
  unsigned char out[crypto_shorthash_BYTES];
  crypto_shorthash(out, reinterpret_cast<const unsigned char*>(caller.data()), caller.size(),
                   hash_key_);
  uint64_t key = 0;
  for (auto byte : out)
    key = (key << 8) | byte;
  return key;
}

rate_limiter::decision rate_limiter::take(std::string_view caller, const bucket_limits& limits,
                                          clock::time_point now) {
  auto burst = static_cast<double>(std::max<int64_t>(limits.burst, 1));
  auto per_second = static_cast<double>(std::max<int64_t>(limits.per_minute, 1)) / 60.0;
  auto key = key_of(caller);

  std::lock_guard<std::mutex> guard{mutex_};
  if (now >= next_sweep_) {
    sweep(now);
    next_sweep_ = now + sweep_interval;
  }
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_buckets_) {
      sweep(now);
      if (buckets_.size() >= max_buckets_)
        drop_closest_to_full();
    }
    it = buckets_.emplace(key, bucket{burst, now, now}).first;
  }
  auto& b = it->second;
  // Refill for the time since the last request; a lowered burst (hot
  // reload) applies at once.
  if (now > b.updated)
    b.tokens += seconds_between(b.updated, now) * per_second;
  b.tokens = std::min(b.tokens, burst);
  b.updated = std::max(b.updated, now);

  decision out;
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
  } else {
    out.allowed = false;
    out.retry_after_s =
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil((1.0 - b.tokens) / per_second)));
  }
  b.full_at = b.updated + seconds((burst - b.tokens) / per_second);
  return out;
}

size_t rate_limiter::size() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return buckets_.size();
}

void rate_limiter::sweep(clock::time_point now) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    if (it->second.full_at <= now)
      it = buckets_.erase(it);
    else
      ++it;
  }
}

void rate_limiter::drop_closest_to_full() {
  // Only reached with max_buckets callers active at once; forgetting the
  // one nearest to full is the smallest leniency.
  auto victim = std::min_element(buckets_.begin(), buckets_.end(), [](auto& a, auto& b) {
    return a.second.full_at < b.second.full_at;
  });
  if (victim != buckets_.end())
    buckets_.erase(victim);
}

} // namespace cm::http

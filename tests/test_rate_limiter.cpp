// The per-caller token buckets (http/rate_limiter.hpp) with time passed in:
// no sleeps, every instant chosen by the test. And which routes draw from
// them (the route table's metering).
#include <gtest/gtest.h>

#include <set>

#include "actors/front_actor.hpp"
#include "http/rate_limiter.hpp"

using namespace cm;
using namespace cm::http;
using namespace std::chrono_literals;

namespace {

const rate_limiter::clock::time_point t0 = rate_limiter::clock::time_point{} + 1000h;

/// Takes `n` requests at `at`; how many were allowed.
int take_n(rate_limiter& limiter, const std::string& caller, const bucket_limits& limits,
           rate_limiter::clock::time_point at, int n) {
  int allowed = 0;
  for (int i = 0; i < n; ++i)
    allowed += limiter.take(caller, limits, at).allowed ? 1 : 0;
  return allowed;
}

} // namespace

TEST(RateLimiter, BurstIsAllowedThenRefusedWithTheWaitForTheNextRequest) {
  rate_limiter limiter;
  bucket_limits limits{30, 300}; // 5 per second
  EXPECT_EQ(take_n(limiter, "alice", limits, t0, 30), 30);
  auto refused = limiter.take("alice", limits, t0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after_s, 1) << "one request is due in 200 ms: rounded up to 1 s";

  bucket_limits slow{2, 1}; // one per minute
  EXPECT_EQ(take_n(limiter, "bob", slow, t0, 2), 2);
  auto wait = limiter.take("bob", slow, t0);
  EXPECT_FALSE(wait.allowed);
  EXPECT_EQ(wait.retry_after_s, 60);
  auto later = limiter.take("bob", slow, t0 + 45s);
  EXPECT_FALSE(later.allowed);
  EXPECT_EQ(later.retry_after_s, 15) << "refused requests do not push the wait back";
}

TEST(RateLimiter, BucketsRefillAtTheConfiguredRateUpToTheBurst) {
  rate_limiter limiter;
  bucket_limits limits{30, 300};
  EXPECT_EQ(take_n(limiter, "alice", limits, t0, 40), 30);
  // 5 per second: one second later five more, not six.
  EXPECT_EQ(take_n(limiter, "alice", limits, t0 + 1s, 10), 5);
  EXPECT_EQ(take_n(limiter, "alice", limits, t0 + 1s + 200ms, 10), 1);
  // An hour of silence refills to the burst, never beyond it.
  EXPECT_EQ(take_n(limiter, "alice", limits, t0 + 1h, 100), 30);
  // A steady 5 per second is never refused.
  auto at = t0 + 2h;
  for (int i = 0; i < 1000; ++i, at += 200ms)
    ASSERT_TRUE(limiter.take("steady", limits, at).allowed) << "request " << i;
}

TEST(RateLimiter, CallersDoNotShareBuckets) {
  rate_limiter limiter;
  bucket_limits limits{3, 60};
  EXPECT_EQ(take_n(limiter, "member:4:acmealice", limits, t0, 10), 3);
  EXPECT_EQ(take_n(limiter, "member:4:acmebob", limits, t0, 10), 3);
  EXPECT_EQ(take_n(limiter, "service:reporting", limits, t0, 10), 3);
  EXPECT_FALSE(limiter.take("member:4:acmealice", limits, t0).allowed);
}

TEST(RateLimiter, ChangedLimitsApplyToExistingBuckets) {
  rate_limiter limiter;
  EXPECT_EQ(take_n(limiter, "alice", {30, 300}, t0, 5), 5);
  // A reload lowers the burst: the bucket holds at most the new size.
  EXPECT_EQ(take_n(limiter, "alice", {3, 300}, t0, 10), 3);
}

TEST(RateLimiter, IdleBucketsAreForgotten) {
  rate_limiter limiter;
  bucket_limits limits{30, 300}; // one request is refilled in 200 ms
  for (int i = 0; i < 1000; ++i)
    limiter.take("caller-" + std::to_string(i), limits, t0);
  EXPECT_EQ(limiter.size(), 1000u);
  // Full again, but sweeps run once per interval: not yet.
  limiter.take("late", limits, t0 + 5s);
  EXPECT_EQ(limiter.size(), 1001u);
  // At the next sweep every full bucket goes; a forgotten caller comes back
  // with a full bucket, exactly what it had.
  limiter.take("late", limits, t0 + rate_limiter::sweep_interval);
  EXPECT_EQ(limiter.size(), 1u);
  EXPECT_EQ(take_n(limiter, "caller-7", limits, t0 + rate_limiter::sweep_interval, 40), 30);
}

TEST(RateLimiter, MemoryIsBoundedWhateverTheNumberOfCallers) {
  rate_limiter limiter{100};
  bucket_limits limits{2, 1};
  auto at = t0;
  // 10,000 callers, each emptying its bucket, within one sweep interval:
  // none of them is idle, yet the table never passes its cap.
  for (int i = 0; i < 10000; ++i, at += 1ms) {
    limiter.take("caller-" + std::to_string(i), limits, at);
    limiter.take("caller-" + std::to_string(i), limits, at);
    ASSERT_LE(limiter.size(), 100u);
  }
  // The callers kept are the most recent: the last one is still limited.
  EXPECT_FALSE(limiter.take("caller-9999", limits, at).allowed);
}

TEST(RateLimiter, LongCallerNamesCostNoMoreThanShortOnes) {
  // Keys are hashed: a caller's name is not kept.
  rate_limiter limiter;
  bucket_limits limits{1, 1};
  std::string long_name(16 * 1024, 'x');
  EXPECT_TRUE(limiter.take(long_name, limits, t0).allowed);
  EXPECT_FALSE(limiter.take(long_name, limits, t0).allowed);
  EXPECT_TRUE(limiter.take(long_name + "y", limits, t0).allowed);
}

TEST(RateLimiter, MeteredRoutesAreExactlyThoseThatWriteOrCallProviders) {
  std::set<std::string> metered;
  for (auto& r : route_table())
    if (r.cost == metering::metered)
      metered.insert(r.method + " " + r.pattern);
  std::set<std::string> expected = {
    "GET /api/oauth/{provider}/authorize",
    "GET /api/v1/connectors/{connectorName}/oauth/authorize",
    "POST /api/oauth/{provider}/start",
    "POST /api/v1/connectors/{connectorName}/oauth/start",
    "POST /api/connectors/connect",
    "DELETE /api/connectors/{provider}",
    "POST /api/connectors/{provider}/refresh",
    "POST /api/v1/connectors/internal/refreshIndividualConnectorToken",
    "PUT /api/v1/connectors/config/{connectorName}",
    "POST /api/v1/connectors/toggle/{connectorName}",
    "POST /api/v1/connectors/filters/{connectorName}",
    "POST /api/v1/connectors/getTokenFromCode",
    "POST /api/v1/connectors/updateAppConfig",
  };
  EXPECT_EQ(metered, expected);
  // Every other write is metered too: a new one cannot slip by unmetered.
  // The proxy's routes (any method) meter in their handler, by (service,
  // team), and are the only ones that do.
  for (auto& r : route_table()) {
    bool proxy = r.pattern.rfind("/api/proxy/", 0) == 0;
    EXPECT_EQ(r.cost == metering::by_handler, proxy) << r.method << " " << r.pattern;
    if (r.method != "GET" && r.cost == metering::unmetered)
      ADD_FAILURE() << r.method << " " << r.pattern << " writes but is not metered";
  }
}

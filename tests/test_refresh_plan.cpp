// The refresh plan and the shared vocabulary, without actors or clocks
// (actors/refresh_plan.hpp, model/).
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "actors/refresh_plan.hpp"
#include "model/connection_kind.hpp"
#include "model/connection_phase.hpp"
#include "model/grant_status.hpp"

using namespace cm;

namespace {

constexpr int64_t minute = 60'000;
constexpr int64_t hour = 60 * minute;
constexpr uint32_t max_draw = std::numeric_limits<uint32_t>::max();

/// A refreshable Google-style token: issued at t0, lives an hour, margin 5 min.
refresh_plan_input hour_token(uint32_t draw) {
  refresh_plan_input in;
  in.kind = connection_kind::oauth;
  in.issued_at_ms = 1'000 * hour;
  in.expires_at_ms = in.issued_at_ms + hour;
  in.now_ms = in.issued_at_ms;
  in.refreshable = true;
  in.margin_ms = 5 * minute;
  in.jitter_draw = draw;
  return in;
}

} // namespace

TEST(RefreshPlan, ARefreshableTokenIsRefreshedWithinOneMarginBeforeItsMargin) {
  auto in = hour_token(0);
  EXPECT_EQ(plan_refresh(in), (refresh_plan{timer_purpose::refresh, in.expires_at_ms - 5 * minute}))
    << "no jitter: exactly one margin before expiry";
  in.jitter_draw = max_draw;
  auto latest_jitter = plan_refresh(in);
  EXPECT_EQ(latest_jitter.purpose, timer_purpose::refresh);
  EXPECT_EQ(latest_jitter.at_ms, in.expires_at_ms - 10 * minute + 1)
    << "the largest draw stays inside [0, margin)";
}

TEST(RefreshPlan, DrawsSpreadEqualExpiriesOverTheWholeMargin) {
  std::mt19937 rng{7};
  int64_t earliest = std::numeric_limits<int64_t>::max(), latest = 0;
  auto base = hour_token(0);
  for (int i = 0; i < 2000; ++i) {
    auto plan = plan_refresh(hour_token(static_cast<uint32_t>(rng())));
    ASSERT_EQ(plan.purpose, timer_purpose::refresh);
    ASSERT_GT(plan.at_ms, base.expires_at_ms - 10 * minute);
    ASSERT_LE(plan.at_ms, base.expires_at_ms - 5 * minute);
    earliest = std::min(earliest, plan.at_ms);
    latest = std::max(latest, plan.at_ms);
  }
  EXPECT_GT(latest - earliest, 5 * minute * 9 / 10) << "the jitter spans the margin";
}

TEST(RefreshPlan, TheSameFactsGiveTheSamePlan) {
  auto in = hour_token(123456789);
  auto first = plan_refresh(in);
  in.now_ms += 20 * minute; // re-planned later, same token and draw
  EXPECT_EQ(plan_refresh(in), first);
}

TEST(RefreshPlan, AShortLivedTokenIsRefreshedBetweenHalfAndThreeQuartersOfItsLife) {
  // Lives one minute, far less than the five-minute margin.
  for (uint32_t draw : {0u, max_draw / 2, max_draw}) {
    auto in = hour_token(draw);
    in.expires_at_ms = in.issued_at_ms + minute;
    auto plan = plan_refresh(in);
    EXPECT_EQ(plan.purpose, timer_purpose::refresh);
    EXPECT_GT(plan.at_ms, in.issued_at_ms + minute / 2) << draw;
    EXPECT_LE(plan.at_ms, in.issued_at_ms + minute * 3 / 4) << draw;
  }
  // Unknown issue time: the full margin applies.
  auto in = hour_token(0);
  in.issued_at_ms = 0;
  EXPECT_EQ(plan_refresh(in).at_ms, in.expires_at_ms - 5 * minute);
}

TEST(RefreshPlan, ATokenThatCannotBeRefreshedIsMarkedExpiredAtItsExpiry) {
  auto in = hour_token(max_draw);
  in.refreshable = false;
  EXPECT_EQ(plan_refresh(in), (refresh_plan{timer_purpose::mark_expired, in.expires_at_ms}));
}

TEST(RefreshPlan, NothingIsPlannedForATokenThatNeverExpiresOrAGrantNotConnected) {
  auto never = hour_token(0);
  never.expires_at_ms = 0;
  EXPECT_EQ(plan_refresh(never), refresh_plan{});
  for (auto status : {grant_status::needs_reauth, grant_status::disconnected}) {
    auto oauth = hour_token(0);
    oauth.status = status;
    EXPECT_EQ(plan_refresh(oauth), refresh_plan{}) << name_of(status);
    refresh_plan_input key;
    key.kind = connection_kind::api_key;
    key.status = status;
    key.revalidation_ms = hour;
    EXPECT_EQ(plan_refresh(key), refresh_plan{}) << name_of(status);
  }
}

TEST(RefreshPlan, AnApiKeyIsRevalidatedEveryIntervalPlusUpToATenth) {
  refresh_plan_input key;
  key.kind = connection_kind::api_key;
  key.expires_at_ms = 0;
  key.now_ms = 5'000 * hour;
  EXPECT_EQ(plan_refresh(key), refresh_plan{}) << "re-validation off";
  key.revalidation_ms = hour;
  key.jitter_draw = 0;
  EXPECT_EQ(plan_refresh(key), (refresh_plan{timer_purpose::revalidate, key.now_ms + hour}));
  key.jitter_draw = max_draw;
  auto latest = plan_refresh(key);
  EXPECT_EQ(latest.purpose, timer_purpose::revalidate);
  EXPECT_EQ(latest.at_ms, key.now_ms + hour + hour / 10);
  // An API key's expiry and refresh facts do not matter.
  key.expires_at_ms = key.now_ms + minute;
  key.refreshable = true;
  EXPECT_EQ(plan_refresh(key), latest);
}

TEST(RefreshPlan, OnlyAnOAuthPlanThatHasComeDueOpensTheRefreshWindow) {
  auto plan = plan_refresh(hour_token(0));
  EXPECT_FALSE(in_refresh_window(plan, plan.at_ms - 1));
  EXPECT_TRUE(in_refresh_window(plan, plan.at_ms));
  EXPECT_TRUE(in_refresh_window({timer_purpose::mark_expired, 10}, 10));
  EXPECT_FALSE(in_refresh_window({timer_purpose::revalidate, 10}, 11))
    << "a re-validation is not a refresh anyone waits for";
  EXPECT_FALSE(in_refresh_window(refresh_plan{}, 1'000'000));
}

TEST(RefreshPlan, ScaledDrawsStayBelowTheirSpan) {
  EXPECT_EQ(scaled_draw(max_draw, 0), 0);
  EXPECT_EQ(scaled_draw(max_draw, -5), 0);
  EXPECT_EQ(scaled_draw(max_draw, 1), 0);
  EXPECT_EQ(scaled_draw(max_draw, 1000), 999);
  EXPECT_EQ(scaled_draw(max_draw / 2 + 1, 1000), 500);
  int64_t huge = std::numeric_limits<int64_t>::max();
  EXPECT_LT(scaled_draw(max_draw, huge), huge) << "no overflow";
}

TEST(RefreshPlan, BackoffDoublesUpToItsCap) {
  EXPECT_EQ(backoff_bound_ms(1, 1000, 60'000), 1000);
  EXPECT_EQ(backoff_bound_ms(2, 1000, 60'000), 2000);
  EXPECT_EQ(backoff_bound_ms(6, 1000, 60'000), 32'000);
  EXPECT_EQ(backoff_bound_ms(7, 1000, 60'000), 60'000);
  EXPECT_EQ(backoff_bound_ms(1000, 1000, 60'000), 60'000) << "no overflow";
}

TEST(Vocabulary, EveryKindAndStatusRoundTripsThroughItsStoredName) {
  for (auto kind : {connection_kind::oauth, connection_kind::api_key})
    EXPECT_EQ(parse_connection_kind(name_of(kind)), kind);
  for (auto status :
       {grant_status::connected, grant_status::needs_reauth, grant_status::disconnected})
    EXPECT_EQ(parse_grant_status(name_of(status)), status);
  EXPECT_EQ(name_of(connection_kind::api_key), "api_key");
  EXPECT_EQ(name_of(grant_status::needs_reauth), "needs_reauth");
  EXPECT_EQ(name_of(connection_phase::backing_off), "backing_off");
}

TEST(Vocabulary, OtherNamesAreRefused) {
  for (auto text : {"", "OAuth", "oauth ", "apikey", "api-key", "connected"})
    EXPECT_FALSE(parse_connection_kind(text)) << text;
  for (auto text : {"", "Connected", "needs-reauth", "revoked", "oauth", "loading"})
    EXPECT_FALSE(parse_grant_status(text)) << text;
}

TEST(RefreshPlan, MixedDrawsAreStableForTheSameInputsAndSpreadEvenly) {
  EXPECT_EQ(mixed_draw(1, 2, 3), mixed_draw(1, 2, 3));
  EXPECT_NE(mixed_draw(1, 2, 3), mixed_draw(1, 2, 4)) << "another expiry, another draw";
  EXPECT_NE(mixed_draw(1, 2, 3), mixed_draw(1, 5, 3)) << "another seed, another draw";
  // Consecutive key hashes and one expiry (a batch issued together): ten
  // buckets over the margin each get about a tenth.
  constexpr int n = 10'000;
  std::vector<int> buckets(10, 0);
  for (int i = 0; i < n; ++i)
    ++buckets[static_cast<size_t>(scaled_draw(mixed_draw(static_cast<uint64_t>(i), 42, 1'700'000'000'000), 10))];
  for (auto b : buckets) {
    EXPECT_GT(b, n / 10 * 8 / 10);
    EXPECT_LT(b, n / 10 * 12 / 10);
  }
}

#include "actors/refresh_plan.hpp"

#include <algorithm>

namespace cm {

int64_t planned_refresh_ms(int64_t expires_at_ms, int64_t margin_ms, int64_t jitter_ms) {
  if (expires_at_ms <= 0)
    return 0;
  return expires_at_ms - margin_ms - jitter_ms;
}

uint32_t mixed_draw(uint64_t key_hash, uint64_t seed, uint64_t salt) {
  uint64_t z = key_hash ^ (seed * 0x9e3779b97f4a7c15ULL) ^ (salt + 0x632be59bd9b4e019ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 32);
}

int64_t scaled_draw(uint32_t draw, int64_t span) {
  if (span <= 0)
    return 0;
  // (span * draw) / 2^32, in 128 bits: exact and below span for any draw.
  return static_cast<int64_t>((static_cast<unsigned __int128>(span) * draw) >> 32);
}

int64_t backoff_bound_ms(int32_t failures, int64_t base_ms, int64_t cap_ms) {
  int64_t bound = base_ms;
  for (int32_t i = 1; i < failures && bound < cap_ms; ++i)
    bound *= 2;
  return std::min(bound, cap_ms);
}

refresh_plan plan_refresh(const refresh_plan_input& in) {
  if (in.status != grant_status::connected)
    return {};
  if (in.kind == connection_kind::api_key) {
    if (in.revalidation_ms <= 0)
      return {};
    auto spread = std::max<int64_t>(in.revalidation_ms / 10, 1) + 1;
    return {timer_purpose::revalidate,
            in.now_ms + in.revalidation_ms + scaled_draw(in.jitter_draw, spread)};
  }
  if (in.expires_at_ms <= 0)
    return {};
  if (!in.refreshable)
    return {timer_purpose::mark_expired, in.expires_at_ms};
  auto margin = in.margin_ms;
  // A token that lives shorter than the margin plus jitter would be
  // refreshed again at once: cap the margin at a quarter of its lifetime.
  if (in.issued_at_ms > 0 && in.issued_at_ms < in.expires_at_ms)
    margin = std::min(margin, (in.expires_at_ms - in.issued_at_ms) / 4);
  // Spread equal expiries over the margin instead of one instant.
  auto jitter = scaled_draw(in.jitter_draw, margin);
  return {timer_purpose::refresh, planned_refresh_ms(in.expires_at_ms, margin, jitter)};
}

bool in_refresh_window(const refresh_plan& plan, int64_t now_ms) {
  bool oauth_plan =
    plan.purpose == timer_purpose::refresh || plan.purpose == timer_purpose::mark_expired;
  return oauth_plan && plan.at_ms > 0 && now_ms >= plan.at_ms;
}

} // namespace cm

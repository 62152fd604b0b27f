// When a connection's timer fires next, and what for: a pure function of
// the stored grant, the settings and a random draw, so the plan is tested
// without actors or clocks (tests/test_refresh_plan.cpp). The connection
// actor (actors/connection_actor.cpp) gathers the facts, asks, and arms.
//
//   OAuth, refreshable    refresh at expires_at - margin - jitter, with the
//                         margin capped at a quarter of the token's lifetime
//                         (a short-lived token is refreshed between half and
//                         three quarters of it) and jitter in [0, margin)
//   OAuth, not refreshable  mark expired at expires_at
//   API key               re-validate every `revalidation_ms`, plus up to a
//                         tenth of it
//   anything else         no timer (not connected, never expires)
#pragma once

#include <cstdint>

#include "model/connection_kind.hpp"
#include "model/grant_status.hpp"

namespace cm {

enum class timer_purpose : uint8_t { none, refresh, mark_expired, revalidate };

struct refresh_plan {
  timer_purpose purpose = timer_purpose::none;
  /// Unix ms; 0 with `none`.
  int64_t at_ms = 0;

  friend bool operator==(const refresh_plan& a, const refresh_plan& b) {
    return a.purpose == b.purpose && a.at_ms == b.at_ms;
  }
};

/// What the plan depends on.
struct refresh_plan_input {
  connection_kind kind = connection_kind::oauth;
  grant_status status = grant_status::connected;
  /// Unix ms; 0: the token does not expire.
  int64_t expires_at_ms = 0;
  /// When the current token was obtained (unix ms); 0 when unknown.
  int64_t issued_at_ms = 0;
  /// OAuth: a refresh token and a way to use it (the app, or a service
  /// account's key).
  bool refreshable = false;
  int64_t margin_ms = 0;
  /// API keys: how often to re-validate; 0: never (or no validator).
  int64_t revalidation_ms = 0;
  /// Unix ms; API keys plan from now.
  int64_t now_ms = 0;
  /// A uniform draw over all of uint32: where in the jitter span the plan
  /// falls. The actor draws it once per expiry, so re-planning for the
  /// same token does not move the plan.
  uint32_t jitter_draw = 0;
};

refresh_plan plan_refresh(const refresh_plan_input& in);

/// Whether a token whose plan is `plan` is due for its refresh at `now_ms`:
/// requests then wait for the new token instead of getting the old one.
bool in_refresh_window(const refresh_plan& plan, int64_t now_ms);

/// `expires_at - margin - jitter`; 0 when the token does not expire.
int64_t planned_refresh_ms(int64_t expires_at_ms, int64_t margin_ms, int64_t jitter_ms);

/// A uniform 32-bit draw that is a pure function of its inputs (a
/// splitmix64 finaliser): the same connection, seed and salt (an expiry, an
/// attempt) always draw the same, different ones spread evenly. So a plan
/// stays put when re-armed, and an actor keeps no generator state.
uint32_t mixed_draw(uint64_t key_hash, uint64_t seed, uint64_t salt);

/// The point `draw` picks in [0, span): 0 when the span is empty.
int64_t scaled_draw(uint32_t draw, int64_t span);

/// Full-jitter exponential backoff bound for the n-th consecutive failure
/// (n >= 1): min(cap, base * 2^(n-1)).
int64_t backoff_bound_ms(int32_t failures, int64_t base_ms, int64_t cap_ms);

} // namespace cm

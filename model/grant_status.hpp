// Whether a stored grant can be used: `connected`, `needs_reauth` (the
// provider refused the refresh token, or refreshing kept failing; the user
// must consent again, or a forced refresh may revive it) or `disconnected`
// (kept only until the row is purged). Stored as text in
// `connector_tokens.status`; the names are the API's `status` values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cm {

enum class grant_status : uint8_t { connected, needs_reauth, disconnected };

constexpr std::string_view name_of(grant_status status) {
  switch (status) {
    case grant_status::connected:
      return "connected";
    case grant_status::needs_reauth:
      return "needs_reauth";
    case grant_status::disconnected:
      return "disconnected";
  }
  return "connected";
}

/// nullopt for any other text (the column's CHECK allows only these three).
constexpr std::optional<grant_status> parse_grant_status(std::string_view text) {
  if (text == "connected")
    return grant_status::connected;
  if (text == "needs_reauth")
    return grant_status::needs_reauth;
  if (text == "disconnected")
    return grant_status::disconnected;
  return std::nullopt;
}

/// For CAF's message rendering (logs, test failures).
inline std::string to_string(grant_status status) { return std::string{name_of(status)}; }

} // namespace cm

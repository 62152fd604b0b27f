// How a connection authenticates: an OAuth grant (access token, usually a
// refresh token) or an API key (a static secret, or a service-account key
// that mints its own tokens). Stored as text in `connector_tokens.kind`;
// the names are the API's `type` values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cm {

enum class connection_kind : uint8_t { oauth, api_key };

constexpr std::string_view name_of(connection_kind kind) {
  return kind == connection_kind::api_key ? "api_key" : "oauth";
}

/// nullopt for any other text (the column's CHECK allows only these two).
constexpr std::optional<connection_kind> parse_connection_kind(std::string_view text) {
  if (text == "oauth")
    return connection_kind::oauth;
  if (text == "api_key")
    return connection_kind::api_key;
  return std::nullopt;
}

/// For CAF's message rendering (logs, test failures).
inline std::string to_string(connection_kind kind) { return std::string{name_of(kind)}; }

} // namespace cm

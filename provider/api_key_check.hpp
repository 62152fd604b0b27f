// Validating an API key with a real call, as pure functions: the request a
// catalog entry describes (scheme, headers, body, URL placeholders filled
// from the caller's fields), and what the provider's answer means.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "config/provider_catalog.hpp"
#include "provider/outbound.hpp"

namespace cm::api_key {

enum class verdict : uint8_t {
  /// The provider accepted the key.
  valid = 0,
  /// The provider refused it (401/403, Klaviyo's 400, GraphQL "not authorized").
  rejected,
  /// Down, slow, 5xx, 429, HTML, oversized: nothing can be concluded.
  unavailable,
};

struct outcome {
  verdict result = verdict::unavailable;
  std::string account_name;
  /// Safe to show: HTTP status or transport error, never the answer body.
  std::string reason;
};

/// The validation call; nullopt when a placeholder cannot be filled.
std::optional<outbound_request> validation_request(const config::provider_entry& entry,
                                                   const std::string& key,
                                                   const nlohmann::json& fields,
                                                   int64_t timeout_ms);

outcome read_validation(const config::provider_entry& entry, const outbound_response& res);

} // namespace cm::api_key

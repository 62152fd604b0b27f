// The OAuth 2.0 wire protocol as pure functions: building token requests
// (refresh now; code exchange with the OAuth flows) for a catalog entry, and
// reading a token endpoint's answer into an outcome the connection actor
// acts on. No I/O here.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/secret.hpp"
#include "config/provider_catalog.hpp"
#include "provider/outbound.hpp"

namespace cm::oauth {

/// This deployment's (or team's) OAuth app.
struct client_credentials {
  std::string client_id;
  secret client_secret;
};

/// What a token endpoint's answer means for the caller.
enum class outcome : uint8_t {
  /// New tokens.
  ok = 0,
  /// The grant is dead (revoked, expired, reused): needs re-authorization,
  /// unless another instance already rotated it.
  invalid_grant,
  /// The provider refused for another reason (bad client credentials ...).
  rejected,
  /// 429: try again after retry_after_s.
  rate_limited,
  /// 5xx, connection refused, timeout before sending: transient.
  unavailable,
  /// Timed out or broke after the request was sent: the provider may have
  /// consumed the refresh token.
  possibly_consumed,
  /// 2xx without a usable token, or an unparseable answer.
  malformed,
};

const char* to_string(outcome o);

struct token_answer {
  outcome result = outcome::malformed;
  secret access_token;
  /// Empty when the provider returned none (keep the old one).
  secret refresh_token;
  /// Seconds until expiry after clamping; 0 when the token does not expire.
  int64_t expires_in_s = 0;
  std::string token_type = "Bearer";
  /// Granted scopes when the answer lists them.
  std::vector<std::string> scopes;
  /// Whether the answer carried a usable expires_in (a code exchange
  /// without one and without a refresh token yields a non-expiring grant).
  bool expires_in_given = false;
  /// Values picked from the answer by the entry's token_metadata pointers.
  nlohmann::json metadata = nlohmann::json::object();
  /// Seconds the provider asked us to wait (429/503), capped at one hour.
  int64_t retry_after_s = 0;
  /// Safe to log and show: HTTP status and OAuth error code, never a token.
  std::string reason;
};

/// Longest lifetime we believe: anything above is clamped to this.
inline constexpr int64_t max_expires_in_s = 365LL * 24 * 3600;

/// `expires_in` as given (number or numeric string), in whole seconds;
/// missing, below one second, negative or non-numeric -> `fallback`; above
/// a year -> a year.
int64_t clamp_expires_in(const nlohmann::json& value, int64_t fallback);

/// Parses Retry-After (seconds or HTTP-date), capped at one hour; 0 if absent.
int64_t parse_retry_after(const std::string& value);

/// "Basic base64(user:password)".
std::string basic_auth(const std::string& user, const std::string& password);

/// "Basic base64(urlencode(id):urlencode(secret))" (RFC 6749 §2.3.1).
std::string basic_credentials(const client_credentials& client);

/// A request to `url_template` (placeholders filled from `values`) that
/// accepts JSON; nullopt when a placeholder cannot be filled.
std::optional<outbound_request> provider_request(const config::provider_entry& entry,
                                                 const std::string& url_template,
                                                 const nlohmann::json& values,
                                                 int64_t timeout_ms);

/// application/x-www-form-urlencoded.
std::string form_encode(const std::vector<std::pair<std::string, std::string>>& fields);

/// Fills {name} placeholders from `values`; each must be declared in the
/// entry's template_params, keep the URL's shape and match its pattern
/// (config/template_value.hpp). nullopt otherwise. Every provider URL with
/// placeholders is filled here, so no value escapes that rule.
std::optional<std::string> expand_url(const config::provider_entry& entry,
                                      const std::string& url,
                                      const nlohmann::json& values);

/// grant_type=refresh_token for the entry's client authentication style.
/// `url_values` fills URL placeholders (e.g. the Shopify shop).
std::optional<outbound_request> refresh_request(const config::provider_entry& entry,
                                                const client_credentials& client,
                                                const secret& refresh_token,
                                                const nlohmann::json& url_values,
                                                int64_t timeout_ms);

/// Reads a token endpoint's answer.
token_answer read_token_answer(const config::provider_entry& entry,
                               const outbound_response& res);

} // namespace cm::oauth

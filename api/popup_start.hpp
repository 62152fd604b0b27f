// What POST …/oauth/start reads from a page's form, and where its popup
// ends: the checks that make the start route safe to expose to browsers.
//
// The form carries a session JWT, so the route must also know which page
// made the browser submit it: a page anywhere could auto-submit its
// author's own session and bind a victim's browser to the author's flow
// (login CSRF). The request's own Origin header (or Sec-Fetch-Site:
// same-origin) must be the service's origin or one of cors.allowed_origins,
// and equal the form's `origin`, where the popup reports the outcome.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "config/service_config.hpp"
#include "http/exchange.hpp"

namespace cm::api {

/// "https://Cm.Example:443" -> "https://cm.example": scheme and host in
/// lower case, the scheme's default port dropped, as browsers serialize an
/// origin. Anything after the authority is dropped.
std::string normalized_origin(const std::string& url);

/// A start form that passed its checks.
struct popup_start {
  /// The opener's origin (normalized), or "" when the form named a
  /// redirect_uri instead.
  std::string origin;
  /// The SDK's nonce for this flow, echoed on /connect/done so the page
  /// accepts only its own flow's outcome; may be "".
  std::string flow;
  /// Where the browser lands afterwards: /connect/done?origin=…&flow=… or
  /// the allowlisted redirect_uri.
  std::string redirect_uri;
  /// The other fields: the provider's authorization parameters.
  std::map<std::string, std::string> params;
};

/// Reads and checks the form of `req`; nullopt with `problem` set when the
/// request may not start a flow (then nothing may be redirected to).
std::optional<popup_start> read_popup_start(const http::request& req,
                                            const config::service_config& cfg,
                                            std::string& problem);

/// How a start is refused: once the form proved its page, the popup goes
/// to where the flow would have ended, with connected=false, the provider
/// and the error (the page learns why, e.g. an expired session); otherwise
/// an HTML page in the popup.
http::response start_refusal(const http::request& req, const config::service_config& cfg,
                             const std::string& provider, ec code, const std::string& message);

} // namespace cm::api

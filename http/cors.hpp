// Cross-origin requests from browsers (CORS): pages on the configured
// origins (`cors.allowed_origins`) may call the API; every other origin
// gets no CORS header, so the browser keeps the answer from its page.
// Credentials travel in the Authorization header, never in cookies, so
// no answer allows credentials.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/service_config.hpp"
#include "http/exchange.hpp"

namespace cm::http {

/// Whether `origin` is on the allowlist (compared exactly).
bool origin_allowed(const config::cors_config& cfg, std::string_view origin);

/// The headers an answer to `req` carries for CORS: none unless the
/// request came from an allowed origin.
std::vector<std::pair<std::string, std::string>> cors_headers(const config::cors_config& cfg,
                                                              const request& req);

/// Whether `req` is a CORS preflight (OPTIONS with Origin and
/// Access-Control-Request-Method).
bool is_preflight(const request& req);

/// The answer to an OPTIONS request for a path that answers `methods`:
/// 204 with Allow, and for a preflight from an allowed origin the
/// Access-Control-Allow-* headers; a preflight from any other origin is
/// 403 forbidden.
response options_response(const config::cors_config& cfg, const request& req,
                          const std::vector<std::string>& methods);

/// "GET, POST" from {"GET", "POST"}.
std::string join_methods(const std::vector<std::string>& methods);

} // namespace cm::http

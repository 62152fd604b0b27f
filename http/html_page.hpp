// The few answers a browser reads directly: a failed OAuth callback or
// start that has nowhere to send the browser back to. A person sees a short
// page instead of a JSON body; no secret or input is ever echoed except
// through html_escape.
#pragma once

#include <string>
#include <string_view>

#include "http/exchange.hpp"

namespace cm::http {

/// &, <, >, " and ' as entities.
std::string html_escape(std::string_view text);

/// Security headers every page the service renders carries: nothing is
/// loaded but its own style sheet, it cannot be framed, it is not cached
/// and it sends no Referer (the callback's URL holds a code and a state).
void add_page_headers(response& res);

/// A small HTML page saying the connection failed: `message` for a person,
/// `code` the error code (as in JSON errors) for support and tests.
response html_error_page(ec code, const std::string& message);

} // namespace cm::http

#include "common/error.hpp"

#include <caf/atom.hpp>
#include <caf/sec.hpp>

namespace cm {

const char* to_string(ec code) {
  switch (code) {
    case ec::none: return "none";
    case ec::bad_request: return "bad_request";
    case ec::unauthenticated: return "unauthenticated";
    case ec::forbidden: return "forbidden";
    case ec::not_found: return "not_found";
    case ec::conflict: return "conflict";
    case ec::payload_too_large: return "payload_too_large";
    case ec::invalid_credentials: return "invalid_credentials";
    case ec::rate_limited: return "rate_limited";
    case ec::provider_failed: return "provider_failed";
    case ec::unavailable: return "unavailable";
    case ec::internal: return "internal";
    case ec::integrity_failure: return "internal";
    case ec::needs_reauth: return "needs_reauth";
    case ec::request_timeout: return "request_timeout";
    case ec::length_required: return "length_required";
    case ec::header_too_large: return "header_too_large";
    case ec::method_not_allowed: return "method_not_allowed";
  }
  return "internal";
}

int http_status(ec code) {
  switch (code) {
    case ec::none: return 200;
    case ec::bad_request: return 400;
    case ec::unauthenticated: return 401;
    case ec::forbidden: return 403;
    case ec::not_found: return 404;
    case ec::conflict: return 409;
    case ec::payload_too_large: return 413;
    case ec::invalid_credentials: return 422;
    case ec::rate_limited: return 429;
    case ec::provider_failed: return 502;
    case ec::unavailable: return 503;
    case ec::internal: return 500;
    case ec::integrity_failure: return 500;
    case ec::needs_reauth: return 409;
    case ec::request_timeout: return 408;
    case ec::length_required: return 411;
    case ec::header_too_large: return 431;
    case ec::method_not_allowed: return 405;
  }
  return 500;
}

caf::atom_value error_category() { return caf::atom("cm"); }

caf::error make_error(ec code, std::string message) {
  return caf::error{static_cast<uint8_t>(code), error_category(),
                    caf::make_message(std::move(message))};
}

caf::error make_error(ec code) {
  return caf::error{static_cast<uint8_t>(code), error_category()};
}

ec code_of(const caf::error& err) {
  if (!err)
    return ec::none;
  if (err.category() == error_category())
    return static_cast<ec>(err.code());
  if (err.category() == caf::atom("system")) {
    switch (static_cast<caf::sec>(err.code())) {
      case caf::sec::request_timeout:
      case caf::sec::request_receiver_down:
        return ec::unavailable;
      default:
        break;
    }
  }
  return ec::internal;
}

std::string message_of(const caf::error& err) {
  auto code = code_of(err);
  if (err.category() == error_category() && err.context().match_elements<std::string>())
    return err.context().get_as<std::string>(0);
  switch (code) {
    case ec::unavailable: return "a dependency is unavailable; retry later";
    case ec::internal: return "internal error";
    default: return to_string(code);
  }
}

std::string render_error(uint8_t code, caf::atom_value, const caf::message& context) {
  std::string result = "cm::";
  result += to_string(static_cast<ec>(code));
  if (context.match_elements<std::string>()) {
    result += ": ";
    result += context.get_as<std::string>(0);
  }
  return result;
}

} // namespace cm

// The project's error codes. Each code has one HTTP status and one
// snake_case name; both are derived here and nowhere else.
#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace cm {

/// Errors the service reports to its callers.
enum class ec : uint8_t {
  /// Not an error (CAF reserves 0).
  none = 0,
  /// Malformed input: bad JSON, missing or invalid field (400).
  bad_request,
  /// Missing, malformed, expired or wrongly signed credentials (401).
  unauthenticated,
  /// Authenticated but not allowed (403).
  forbidden,
  /// No such route, provider or connection (404).
  not_found,
  /// The request conflicts with current state, e.g. a stale version (409).
  conflict,
  /// The request body exceeds the configured limit (413).
  payload_too_large,
  /// A provider rejected the credentials (422).
  invalid_credentials,
  /// Too many requests (429).
  rate_limited,
  /// A provider failed or answered nonsense (502).
  provider_failed,
  /// A dependency (PostgreSQL, an actor) is unavailable or timed out (503).
  unavailable,
  /// Anything else; details go to the log, never to the caller (500).
  internal,
  /// The decrypted data does not authenticate: tampering or a wrong key.
  integrity_failure,
  /// The connection must be authorized again by its user (409).
  needs_reauth,
  /// The client did not send its request in time (408).
  request_timeout,
  /// A request body without Content-Length, e.g. chunked (411).
  length_required,
  /// The request line and headers exceed the configured limit (431).
  header_too_large,
  /// A known path asked with a method it does not answer (405, with Allow).
  method_not_allowed,
};

/// The snake_case name used in error bodies, e.g. "bad_request".
const char* to_string(ec code);

/// The HTTP status for a code.
int http_status(ec code);

/// CAF category atom for project errors.
caf::atom_value error_category();

/// Builds a CAF error carrying a code and a human-readable message. The
/// message reaches HTTP callers: it must never contain a secret.
caf::error make_error(ec code, std::string message);
caf::error make_error(ec code);

/// Extracts the project code of a CAF error; CAF's own errors (timeouts,
/// dead actors) map to `unavailable`, anything else to `internal`.
ec code_of(const caf::error& err);

/// The message stored in a project error, or a generic text for the code.
std::string message_of(const caf::error& err);

/// Renders a project error for CAF's `to_string(error)`.
std::string render_error(uint8_t code, caf::atom_value category,
                         const caf::message& context);

} // namespace cm

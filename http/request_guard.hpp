// The first reader of every byte a client sends, in front of Pistache's
// parser.
//
// Pistache 0.0.5 trusts request framing: it reserves memory for any
// declared Content-Length, answers malformed lengths and chunk sizes with
// C++ exception text, can spin forever on a chunked body split at a '\r',
// re-parses a head from its start on every read, and parses only the first
// of several requests that arrive in one read. The guard tracks request
// boundaries itself and lets through only what is safe: a validated head
// (request line and headers, buffered until complete), then exactly
// Content-Length body bytes, one request per call. Everything else ends the
// connection with a 4xx refusal:
//
// - Content-Length together with Transfer-Encoding (request smuggling): 400
// - a malformed, over-long or repeated-and-different Content-Length: 400
// - any Transfer-Encoding (chunked request bodies are not accepted): 411
// - Content-Length above the body limit: 413, before a body byte is read
// - a head larger than the head limit: 431
// - a head or body not complete within its time limit: 408 (checked when
//   bytes arrive; a client that goes silent is closed by Pistache's own
//   header and body timeouts)
// - a malformed request line or header line, bare LF or CR, obs-fold,
//   a control character, a request target outside printable ASCII: 400
//
// It is pure (no sockets, time passed in) so it can be tested byte by byte.
// One guard serves one connection, on one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace cm::http {

struct guard_limits {
  /// Request line plus headers plus the blank line.
  size_t max_head_bytes = 16 * 1024;
  size_t max_body_bytes = 1 << 20;
  /// From the first byte of a head to its blank line.
  std::chrono::milliseconds head_timeout{10000};
  /// From the end of the head to the last body byte.
  std::chrono::milliseconds body_timeout{30000};
};

/// Why a request is refused; the message is ours, never the client's bytes.
struct refusal {
  ec code;
  std::string message;
};

class request_guard {
public:
  using clock = std::chrono::steady_clock;
  /// Receives bytes for the HTTP parser: never parts of two requests in one
  /// call; `ends_request` is true on the call that completes a request.
  using forward_fn = std::function<void(std::string_view bytes, bool ends_request)>;

  explicit request_guard(guard_limits limits);

  /// Takes the bytes of one read. Forwards what is safe, in order; returns
  /// a refusal when the connection must be answered with an error and
  /// closed (requests completed before it stay valid and are answered
  /// first). After a refusal every later input is dropped.
  std::optional<refusal> feed(std::string_view input, clock::time_point now,
                              const forward_fn& forward);

  /// True after a refusal: nothing more is read from this connection.
  bool refused() const { return phase_ == phase::refused; }

private:
  enum class phase { head, body, refused };

  std::optional<refusal> feed_head(std::string_view& input, clock::time_point now,
                                   const forward_fn& forward);
  std::optional<refusal> feed_body(std::string_view& input, clock::time_point now,
                                   const forward_fn& forward);
  /// Validates a complete head and forwards it; then the body, if any.
  std::optional<refusal> pass_head(std::string_view head, clock::time_point now,
                                   const forward_fn& forward);
  /// Validates a complete head (ending with the blank line); sets body_left_.
  std::optional<refusal> accept_head(std::string_view head);
  std::optional<refusal> refuse(ec code, std::string message);

  guard_limits limits_;
  phase phase_ = phase::head;
  /// The head so far (only in phase::head).
  std::string head_;
  /// Where the search for the blank line resumes.
  size_t scanned_ = 0;
  /// Empty lines skipped before this head (tolerated, a few only).
  size_t blank_bytes_ = 0;
  clock::time_point head_started_;
  clock::time_point body_started_;
  uint64_t body_left_ = 0;
};

} // namespace cm::http

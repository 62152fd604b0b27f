// A response written over time: the Server-Sent Events stream of
// GET /api/v1/events.
//
// Pistache 0.0.5 cannot stream safely from another thread (its
// ResponseStream::flush drives the reactor's write queue from the caller's
// thread) and it closes a request that has not answered within its header
// timeout. So the HTTP handler duplicates the connection's socket for
// streaming routes, and an event stream writes to that duplicate directly,
// without chunked framing (the body ends when the connection closes, as
// HTTP/1.1 allows). Pistache is told the request is done; when it later
// drops its idle descriptor the duplicate keeps the connection open.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace cm::http {

class event_stream {
public:
  /// Takes ownership of `fd` (a non-blocking socket).
  explicit event_stream(int fd);
  ~event_stream();
  event_stream(const event_stream&) = delete;
  event_stream& operator=(const event_stream&) = delete;

  /// Writes all of `data`, waiting at most `patience` for a full socket
  /// buffer to drain. False when the client is gone or too slow; the stream
  /// is closed then and every later write fails. Thread-safe.
  bool write(std::string_view data,
             std::chrono::milliseconds patience = std::chrono::milliseconds(200));

  /// Closes the connection (the client reconnects with Last-Event-ID).
  void close();

  bool is_open() const;

  /// True when the client has hung up (or the stream was closed), found
  /// without writing: a stream nobody reads must not hold its quota until
  /// the next heartbeat. Thread-safe.
  bool peer_closed() const;

private:
  mutable std::mutex mutex_;
  int fd_;
};

using event_stream_ptr = std::shared_ptr<event_stream>;

/// One SSE message: `id`, `event` and one `data` line (the JSON has no
/// newlines), ended by a blank line.
std::string sse_message(std::string_view id, std::string_view event, std::string_view data);

} // namespace cm::http

// One HTTP request and the one-shot channel its response goes through.
//
// The Pistache handler copies what it needs out of the request into an
// `exchange`, hands it to a front actor and returns at once. Whoever
// finishes the work calls `reply` — from any thread. Exactly one response
// is written: later replies are ignored, and an exchange dropped without a
// reply answers 500 from its destructor, so no client is ever left waiting.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "http/body_stream.hpp"

namespace cm::http {

struct request {
  std::string method;
  /// Path without the query, percent-decoding not applied, normalized
  /// (http/router.hpp's normalize_path: no empty segments).
  std::string path;
  /// The request target as the client sent it (path and query, still
  /// percent-encoded, repeated keys and their order kept), for the proxy,
  /// which forwards exactly what it was given; set only for paths under
  /// /api/proxy/ ("" otherwise).
  std::string raw_target;
  /// Decoded query parameters (the last value wins for repeated keys).
  std::map<std::string, std::string> query;
  /// Headers as the client sent them; names are compared without case
  /// only when one is read (`header`), not lower-cased for every request.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string remote_address;
  /// The caller's X-Request-Id when it sent a valid one, else a random
  /// id; echoed as X-Request-Id and put on every log line.
  std::string request_id;
  /// The trace id of a valid W3C `traceparent` header, or "": logged with
  /// the request so the caller's trace can find it.
  std::string trace_id;
  /// When the request was complete, for the duration on its log line.
  std::chrono::steady_clock::time_point received = std::chrono::steady_clock::now();

  /// A header value by (case-insensitive) name, or "".
  std::string header(std::string_view name) const;
  std::optional<std::string> query_param(const std::string& name) const;
};

struct response {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  /// The error code of an error answer (its body's error.code), for the
  /// access line; null otherwise.
  const char* error_code = nullptr;
};

/// `{"error":{"code":…,"message":…}}` with the code's status. 503 and 429
/// add Retry-After (1 second unless the refusal knows better, below).
response error_response(ec code, const std::string& message);
/// The same with Retry-After set to `retry_after_s` seconds.
response error_response(ec code, const std::string& message, int64_t retry_after_s);
response error_response(const caf::error& err);
response json_response(int status, const nlohmann::json& body);

class event_stream;

class exchange {
public:
  using writer = std::function<void(response)>;
  /// Takes the connection over for a streamed response (see
  /// http/event_stream.hpp); null where the route cannot stream.
  using stream_opener = std::function<std::shared_ptr<event_stream>()>;

  /// Starts an answer whose body follows, chunked (http/body_stream.hpp),
  /// with `head`'s status and headers (its body is ignored); the client's
  /// request sets `opts.keep_alive`. Given to HTTP/1.1 requests only; null
  /// when the connection cannot take one.
  using body_starter =
    std::function<std::shared_ptr<body_stream>(const response& head, body_stream::options opts)>;

  exchange(request req, writer write, stream_opener open_stream = {},
           body_starter start_body = {});
  ~exchange();
  exchange(const exchange&) = delete;
  exchange& operator=(const exchange&) = delete;

  const request& req() const { return req_; }

  /// Writes the response unless one was written already; returns whether
  /// this call wrote it. Thread-safe.
  bool reply(response res);
  bool reply_error(ec code, const std::string& message) {
    return reply(error_response(code, message));
  }
  bool reply_error(const caf::error& err) { return reply(error_response(err)); }
  bool reply_json(int status, const nlohmann::json& body) {
    return reply(json_response(status, body));
  }

  bool replied() const { return replied_.load(); }

  /// Names the caller's kind on the access line ("service", "user");
  /// "anonymous" until the route authenticated it.
  void set_caller(const char* kind) { caller_ = kind; }

  /// Names the route pattern the request matched, for GET /metrics (a
  /// string of the route table, which outlives every request);
  /// "unmatched" until set.
  void set_route(const std::string& pattern) { route_ = pattern.c_str(); }

  /// A header every answer to this request carries (CORS), whoever
  /// writes it. Set before the request is handed on.
  void add_header(std::string name, std::string value) {
    extra_headers_.emplace_back(std::move(name), std::move(value));
  }

  /// Answers with a stream instead of a response: writes the status line
  /// and `headers` and returns the stream; nullptr when this request cannot
  /// stream or was answered already (nothing written), or when the client
  /// is gone.
  std::shared_ptr<event_stream>
  start_stream(const std::vector<std::pair<std::string, std::string>>& headers);

  /// Answers with `head` (status, content type, headers) and a body the
  /// caller writes into the returned stream as it comes. Null, with
  /// nothing written, when this request cannot be answered that way (or
  /// was answered already); null after a 500 when the connection could
  /// not be taken (the caller stops producing). Thread-safe.
  std::shared_ptr<body_stream> start_body(response head, body_stream::options opts);

  /// Whether start_body can be tried.
  bool can_stream_body() const { return static_cast<bool>(start_body_); }

private:
  request req_;
  writer write_;
  stream_opener open_stream_;
  body_starter start_body_;
  std::atomic<bool> replied_{false};
  const char* caller_ = "anonymous";
  const char* route_ = "unmatched";
  std::vector<std::pair<std::string, std::string>> extra_headers_;
};

/// Percent-decodes a query component ('+' means space); false on a bad escape.
bool percent_decode(std::string_view in, std::string& out);

/// Parses "a=1&b=2" into a map; false on a malformed escape.
bool parse_query(std::string_view raw, std::map<std::string, std::string>& out);

/// A random request id (16 hex digits).
std::string new_request_id();

/// `value` when it can serve as a request id (1 to 128 of A-Z a-z 0-9 and
/// "-_.:"; nothing a log or a header could be confused by), else "".
std::string accepted_request_id(std::string_view value);

/// The trace id (32 hex digits) of a W3C traceparent header
/// ("00-<trace id>-<parent id>-<flags>"), or "" when it is not one.
std::string trace_id_of(std::string_view traceparent);

/// An answered request: its latency by route and status for GET /metrics,
/// and its access line (method, path, status, error code, duration, the
/// caller's kind "service", "user" or "anonymous", and the trace id when
/// there is one).
void request_done(const request& req, const response& res, std::string_view caller,
                  std::string_view route);

} // namespace cm::http

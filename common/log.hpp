// Structured logging: one JSON object per line on stderr (or a chosen sink).
//
// Every line carries `time`, `level`, `component` and `msg`; callers add
// fields such as `request_id`. Secrets must never be passed in: as a second
// line of defence, fields whose names look like credentials are replaced by
// "[redacted]" before the line is written.
//
// Lines are written by spdlog's asynchronous logger (issue 18): the caller
// formats its line and queues it; one background thread writes. So no
// request waits for a slow terminal, pipe or disk. Lines are handed to the
// writer in chunks (common/log.cpp says why); its queue holds 1,024 of
// them (16 MiB at most), and beyond that the oldest waiting chunk is
// dropped rather than making a request wait (`dropped_lines` counts them,
// and a warning says so). `flush` waits until
// every line logged before it is written.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace cm::log {

enum class level { debug = 0, info = 1, warn = 2, error = 3 };

/// Parses "debug", "info", "warn" or "error"; returns false otherwise.
bool parse_level(std::string_view text, level& out);
const char* to_string(level lvl);

void set_level(level lvl);
level current_level();

/// Whether lines of `lvl` are written (callers skip building fields).
bool enabled(level lvl);

/// Redirects output (tests capture into a temporary file). Not owned.
/// Lines queued before it go to the previous sink.
void set_sink(std::FILE* sink);

/// Waits (at most 5 s) until every line queued so far is written.
void flush();

/// Lines dropped because the queue was full, since start.
size_t dropped_lines();

/// One HTTP request answered: the access line, formatted without building
/// a JSON document (it is written for every request).
struct access_line {
  std::string_view request_id;
  std::string_view method;
  std::string_view path;
  int status;
  double duration_ms;
  /// The caller's kind: "service", "user" or "anonymous".
  std::string_view caller;
  /// The answer's error code, "" for a success.
  std::string_view error;
  /// The W3C trace id the caller sent, or "".
  std::string_view trace_id;
};
void request_done(const access_line& done);

void write(level lvl, std::string_view component, std::string_view message,
           nlohmann::json fields = nlohmann::json::object());

inline void debug(std::string_view c, std::string_view m,
                  nlohmann::json f = nlohmann::json::object()) {
  write(level::debug, c, m, std::move(f));
}
inline void info(std::string_view c, std::string_view m,
                 nlohmann::json f = nlohmann::json::object()) {
  write(level::info, c, m, std::move(f));
}
inline void warn(std::string_view c, std::string_view m,
                 nlohmann::json f = nlohmann::json::object()) {
  write(level::warn, c, m, std::move(f));
}
inline void error(std::string_view c, std::string_view m,
                  nlohmann::json f = nlohmann::json::object()) {
  write(level::error, c, m, std::move(f));
}

/// True when a field name suggests a credential (token, secret, key, ...).
bool is_sensitive_field(std::string_view name);

} // namespace cm::log

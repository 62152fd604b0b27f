// Structured logging: one JSON object per line on stderr (or a chosen sink).
//
// Every line carries `time`, `level`, `component` and `msg`; callers add
// fields such as `request_id`. Secrets must never be passed in: as a second
// line of defence, fields whose names look like credentials are replaced by
// "[redacted]" before the line is written.
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

/// Redirects output (tests capture into a temporary file). Not owned.
void set_sink(std::FILE* sink);

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

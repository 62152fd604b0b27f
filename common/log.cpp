#include "common/log.hpp"

#include "common/time.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <mutex>

namespace cm::log {

namespace {

std::atomic<int> g_level{static_cast<int>(level::info)};
std::atomic<std::FILE*> g_sink{nullptr};
std::mutex g_write_mutex;

void redact(nlohmann::json& fields) {
  if (!fields.is_object())
    return;
  for (auto& [key, value] : fields.items()) {
    // Numbers and booleans (ports, counts) cannot carry a credential.
    if (is_sensitive_field(key) && !value.is_number() && !value.is_boolean())
      value = "[redacted]";
    else if (value.is_object())
      redact(value);
  }
}

} // namespace

bool parse_level(std::string_view text, level& out) {
  if (text == "debug") out = level::debug;
  else if (text == "info") out = level::info;
  else if (text == "warn") out = level::warn;
  else if (text == "error") out = level::error;
  else return false;
  return true;
}

const char* to_string(level lvl) {
  switch (lvl) {
    case level::debug: return "debug";
    case level::info: return "info";
    case level::warn: return "warn";
    case level::error: return "error";
  }
  return "info";
}

void set_level(level lvl) { g_level = static_cast<int>(lvl); }
level current_level() { return static_cast<level>(g_level.load()); }
void set_sink(std::FILE* sink) { g_sink = sink; }

bool is_sensitive_field(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  // Substrings that mark a credential wherever they appear in a name.
  static const char* needles[] = {"token", "secret", "password", "passwd",
                                  "authorization", "cookie", "verifier",
                                  "assertion", "hmac", "api_key", "apikey",
                                  "private_key"};
  for (auto n : needles)
    if (lower.find(n) != std::string::npos)
      return true;
  // Short names that are credentials only as a whole word.
  static const char* exact[] = {"code", "state", "key", "auth_code"};
  for (auto n : exact)
    if (lower == n)
      return true;
  return false;
}

void write(level lvl, std::string_view component, std::string_view message,
           nlohmann::json fields) {
  if (static_cast<int>(lvl) < g_level.load())
    return;
  nlohmann::json line = nlohmann::json::object();
  line["time"] = rfc3339(unix_now_ms());
  line["level"] = to_string(lvl);
  line["component"] = std::string(component);
  line["msg"] = std::string(message);
  if (fields.is_object()) {
    redact(fields);
    for (auto& [key, value] : fields.items())
      if (!line.contains(key))
        line[key] = std::move(value);
  }
  // Replace invalid UTF-8 instead of throwing: a log call must never fail.
  auto text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  std::lock_guard<std::mutex> guard{g_write_mutex};
  std::FILE* sink = g_sink.load();
  if (sink == nullptr)
    sink = stderr;
  std::fwrite(text.data(), 1, text.size(), sink);
  std::fflush(sink);
}

} // namespace cm::log

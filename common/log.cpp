#include "common/log.hpp"

#include "common/time.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <mutex>

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/details/thread_pool.h>
#include <spdlog/sinks/base_sink.h>

namespace cm::log {

namespace {

std::atomic<int> g_level{static_cast<int>(level::info)};
std::atomic<std::FILE*> g_sink{nullptr};

/// Writes finished lines (spdlog's payload is our whole JSON line) to the
/// current sink; counts flushes so `flush` knows when its turn came.
class line_sink : public spdlog::sinks::base_sink<std::mutex> {
public:
  uint64_t flushes() {
    std::lock_guard<std::mutex> guard{flushed_mutex_};
    return flushes_;
  }
  bool wait_flush_after(uint64_t seen, std::chrono::milliseconds patience) {
    std::unique_lock<std::mutex> lock{flushed_mutex_};
    return flushed_.wait_for(lock, patience, [&] { return flushes_ > seen; });
  }

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::FILE* out = g_sink.load();
    if (out == nullptr)
      out = stderr;
    std::fwrite(msg.payload.data(), 1, msg.payload.size(), out);
    std::fputc('\n', out);
    std::fflush(out);
  }
  void flush_() override {
    std::lock_guard<std::mutex> guard{flushed_mutex_};
    ++flushes_;
    flushed_.notify_all();
  }

private:
  std::mutex flushed_mutex_;
  std::condition_variable flushed_;
  uint64_t flushes_ = 0;
};

constexpr size_t queue_lines = 65536;

struct async_writer {
  std::shared_ptr<line_sink> sink = std::make_shared<line_sink>();
  std::shared_ptr<spdlog::details::thread_pool> pool =
    std::make_shared<spdlog::details::thread_pool>(queue_lines, 1);
  std::shared_ptr<spdlog::async_logger> logger = std::make_shared<spdlog::async_logger>(
    "cm", sink, pool, spdlog::async_overflow_policy::overrun_oldest);
  async_writer() { logger->set_level(spdlog::level::trace); }
  ~async_writer() { logger->flush(); }
};

/// Made on first use and kept to the end of the process (a line logged by
/// a static destructor still finds it).
async_writer& writer() {
  static auto* w = new async_writer();
  return *w;
}

void enqueue(std::string_view line) {
  writer().logger->log(spdlog::level::info, "{}", line);
}

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

/// Appends `text` as a JSON string.
void append_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          // Control characters, and anything not ASCII (paths are
          // percent-encoded; this only meets hostile bytes): escaped.
          static const char* hex = "0123456789abcdef";
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 0xf]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
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
bool enabled(level lvl) { return static_cast<int>(lvl) >= g_level.load(std::memory_order_relaxed); }

void set_sink(std::FILE* sink) {
  flush();
  g_sink = sink;
}

void flush() {
  auto& w = writer();
  auto seen = w.sink->flushes();
  w.logger->flush();
  w.sink->wait_flush_after(seen, std::chrono::seconds(5));
}

size_t dropped_lines() { return writer().pool->overrun_counter(); }

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
  if (!enabled(lvl))
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
  enqueue(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void request_done(std::string_view request_id, std::string_view method, std::string_view path,
                  int status, double duration_ms, std::string_view caller) {
  if (!enabled(level::info))
    return;
  // The same keys, in the same (sorted) order, as write() would produce.
  std::string line;
  line.reserve(256);
  line += "{\"caller\":";
  append_json_string(line, caller);
  line += ",\"component\":\"http\",\"duration_ms\":";
  char number[32];
  std::snprintf(number, sizeof number, "%.3f", duration_ms);
  line += number;
  line += ",\"level\":\"info\",\"method\":";
  append_json_string(line, method);
  line += ",\"msg\":\"request done\",\"path\":";
  append_json_string(line, path);
  line += ",\"request_id\":";
  append_json_string(line, request_id);
  line += ",\"status\":";
  line += std::to_string(status);
  line += ",\"time\":";
  append_json_string(line, rfc3339(unix_now_ms()));
  line += "}";
  enqueue(line);
}

} // namespace cm::log

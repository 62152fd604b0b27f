#include "common/log.hpp"

#include "common/time.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

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
/// Lines are flushed to the file when nothing else waits, every 256 lines
/// under load, and at once from `warn` up: a line per write(2) cost as
/// much as answering the request it describes.
class line_sink : public spdlog::sinks::base_sink<std::mutex> {
public:
  /// Lets the sink see whether more lines wait (set once, at start).
  void watch(std::shared_ptr<spdlog::details::thread_pool> pool) { pool_ = std::move(pool); }
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
    if (out != last_) {
      if (last_ != nullptr)
        std::fflush(last_);
      last_ = out;
      unflushed_ = 0;
    }
    // The payload is one or more complete lines (see line_batch).
    std::fwrite(msg.payload.data(), 1, msg.payload.size(), out);
    if (msg.level >= spdlog::level::warn || ++unflushed_ >= 256 || !pool_ ||
        pool_->queue_size() == 0) {
      std::fflush(out);
      unflushed_ = 0;
    }
  }
  void flush_() override {
    if (last_ != nullptr)
      std::fflush(last_);
    // Forgotten once flushed: set_sink's caller may close it next.
    last_ = nullptr;
    unflushed_ = 0;
    std::lock_guard<std::mutex> guard{flushed_mutex_};
    ++flushes_;
    flushed_.notify_all();
  }

private:
  std::shared_ptr<spdlog::details::thread_pool> pool_;
  std::FILE* last_ = nullptr;
  int unflushed_ = 0;
  std::mutex flushed_mutex_;
  std::condition_variable flushed_;
  uint64_t flushes_ = 0;
};

/// Chunks of up to 16 KiB (see line_batch): at most 16 MiB waiting.
constexpr size_t queue_chunks = 1024;

struct async_writer {
  std::shared_ptr<line_sink> sink = std::make_shared<line_sink>();
  std::shared_ptr<spdlog::details::thread_pool> pool =
    std::make_shared<spdlog::details::thread_pool>(queue_chunks, 1);
  std::shared_ptr<spdlog::async_logger> logger = std::make_shared<spdlog::async_logger>(
    "cm", sink, pool, spdlog::async_overflow_policy::overrun_oldest);
  async_writer() {
    logger->set_level(spdlog::level::trace);
    sink->watch(pool);
  }
  ~async_writer() { logger->flush(); }
};

/// Made on first use and kept to the end of the process (a line logged by
/// a static destructor still finds it).
async_writer& writer() {
  static auto* w = new async_writer();
  return *w;
}

spdlog::level::level_enum spdlog_level(level lvl) {
  return lvl == level::error  ? spdlog::level::err
         : lvl == level::warn ? spdlog::level::warn
         : lvl == level::info ? spdlog::level::info
                              : spdlog::level::debug;
}

/// Lines gathered before they go to spdlog's queue. Handing over every
/// line woke the writer thread once per request (a futex call and a
/// context switch each, a tenth of the token route's cost), so lines are
/// handed over in chunks: when 16 KiB are waiting, at once with a warning
/// or an error (which carries everything before it, in order), and by a
/// small timer thread every 50 ms otherwise.
class line_batch {
public:
  line_batch() {
    std::thread([this] { run(); }).detach();
  }

  void add(level lvl, std::string_view line) {
    // Handed over under the lock, so chunks reach the queue in the order
    // their lines were logged (with overrun_oldest, the queue never blocks).
    std::lock_guard<std::mutex> guard{mutex_};
    pending_.append(line).push_back('\n');
    if (lvl < level::warn && pending_.size() < chunk_bytes)
      return;
    writer().logger->log(spdlog_level(lvl), "{}", pending_);
    pending_.clear();
  }

  /// Hands over whatever waits.
  void hand_over() {
    std::lock_guard<std::mutex> guard{mutex_};
    if (pending_.empty())
      return;
    writer().logger->log(spdlog::level::info, "{}", pending_);
    pending_.clear();
  }

private:
  static constexpr size_t chunk_bytes = 16 * 1024;

  [[noreturn]] void run() {
    size_t dropped = 0;
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      // Chunks the queue dropped (it was full) are reported, not silent.
      auto now_dropped = writer().pool->overrun_counter();
      if (now_dropped != dropped) {
        auto line = nlohmann::json{{"time", rfc3339(unix_now_ms())},
                                   {"level", "warn"},
                                   {"component", "log"},
                                   {"msg", "log lines dropped: the writer fell behind"},
                                   {"chunks", now_dropped - dropped}}
                      .dump();
        dropped = now_dropped;
        add(level::warn, line);
      }
      hand_over();
    }
  }

  std::mutex mutex_;
  std::string pending_;
};

/// Made on first use and kept to the end of the process, like the writer.
line_batch& batch() {
  static auto* b = [] {
    auto* made = new line_batch();
    // Every command's last lines reach the file when it returns from main
    // (quick exits call flush themselves).
    std::atexit([] { flush(); });
    return made;
  }();
  return *b;
}

void enqueue(level lvl, std::string_view line) { batch().add(lvl, line); }

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
  // Lines logged meanwhile went to the old sink: flushed, and the writer
  // lets go of it, so the caller may close it when this returns.
  flush();
}

void flush() {
  batch().hand_over();
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
  enqueue(lvl, line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void request_done(const access_line& done) {
  if (!enabled(level::info))
    return;
  // The same keys, in the same (sorted) order, as write() would produce.
  std::string line;
  line.reserve(256);
  line += "{\"caller\":";
  append_json_string(line, done.caller);
  line += ",\"component\":\"http\",\"duration_ms\":";
  // Microseconds as "ms.uuu" without printf.
  auto us = static_cast<int64_t>(done.duration_ms * 1000.0 + 0.5);
  line += std::to_string(us / 1000);
  line.push_back('.');
  auto frac = std::to_string(1000 + us % 1000);
  line.append(frac, 1, 3);
  if (!done.error.empty()) {
    line += ",\"error\":";
    append_json_string(line, done.error);
  }
  line += ",\"level\":\"info\",\"method\":";
  append_json_string(line, done.method);
  line += ",\"msg\":\"request done\",\"path\":";
  append_json_string(line, done.path);
  line += ",\"request_id\":";
  append_json_string(line, done.request_id);
  line += ",\"status\":";
  line += std::to_string(done.status);
  line += ",\"time\":\"";
  // The date and time to the second change once a second: formatted then,
  // and the milliseconds appended to them.
  thread_local int64_t formatted_second = -1;
  thread_local std::string second_text;
  auto now = unix_now_ms();
  if (now / 1000 != formatted_second) {
    formatted_second = now / 1000;
    second_text = rfc3339(formatted_second * 1000);
    second_text.resize(second_text.size() - 4); // drop "000Z"
  }
  line += second_text;
  auto ms = std::to_string(1000 + now % 1000);
  line.append(ms, 1, 3);
  line += "Z\"";
  if (!done.trace_id.empty()) {
    line += ",\"trace_id\":";
    append_json_string(line, done.trace_id);
  }
  line += "}";
  enqueue(level::info, line);
}

} // namespace cm::log

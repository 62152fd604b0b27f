// Test-side ends of event delivery: a Server-Sent Events client for
// GET /api/v1/events, and a webhook receiver that records every delivery
// and answers with scripted statuses.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace cm::test {

struct sse_event {
  /// As sent: "<txid>.<seq>".
  std::string id;
  std::string event;
  std::string data;
  /// The id as an ordered pair, for comparisons in tests.
  std::pair<int64_t, int64_t> position() const;
};

class sse_client {
public:
  /// Connects and sends the request; `status()` tells how it was answered.
  sse_client(uint16_t port, const std::string& target,
             const std::map<std::string, std::string>& headers);
  ~sse_client();
  sse_client(const sse_client&) = delete;
  sse_client& operator=(const sse_client&) = delete;

  int status() const { return status_; }
  /// The body when the server answered with an error instead of a stream.
  const std::string& error_body() const { return error_body_; }
  /// A response header by lower-case name, or "".
  std::string header(const std::string& lower_name) const;
  /// The next event, or nullopt after `timeout` (comments are skipped).
  std::optional<sse_event> next(std::chrono::milliseconds timeout);
  /// Everything received so far (for leak checks).
  const std::string& raw() const { return raw_; }

private:
  bool fill(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  int status_ = 0;
  std::string buffer_;
  std::string raw_;
  std::string error_body_;
  std::map<std::string, std::string> headers_;
};

struct webhook_delivery {
  std::map<std::string, std::string> headers; // lower-case names
  std::string body;
  int answered = 0;
};

/// A loopback HTTP server that records POSTs and answers each with the next
/// scripted status (then 200).
class webhook_receiver {
public:
  explicit webhook_receiver(std::vector<int> statuses = {});
  ~webhook_receiver();
  uint16_t port() const { return port_; }
  /// Waits until at least `n` deliveries arrived.
  bool wait_for(size_t n, std::chrono::milliseconds timeout);
  std::vector<webhook_delivery> deliveries();

private:
  void serve();
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<int> statuses_;
  std::vector<webhook_delivery> got_;
  std::thread thread_;
};

/// Lower-case hex HMAC-SHA256 of `message` under `key`.
std::string hmac_sha256_hex(const std::string& key, const std::string& message);

} // namespace cm::test

// libcurl's multi interface on a thread of its own: any number of requests
// in flight, none ever blocks an actor. Completion callbacks run on the
// engine thread and must only hand results on (e.g. send a message).
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "provider/outbound.hpp"

namespace cm {

class curl_engine {
public:
  using callback = std::function<void(outbound_response)>;

  /// `thread_name` names the engine's thread (at most 15 characters).
  explicit curl_engine(const char* thread_name = "cm-curl");
  /// Stops the thread; pending requests complete with `cancelled`.
  ~curl_engine();
  curl_engine(const curl_engine&) = delete;
  curl_engine& operator=(const curl_engine&) = delete;

  void submit(outbound_request req, callback done);

private:
  void run();
  struct pending {
    outbound_request req;
    callback done;
  };
  void* multi_ = nullptr;
  std::mutex mutex_;
  std::deque<pending> queue_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

} // namespace cm

// libcurl's multi interface on a thread of its own: any number of requests
// in flight, none ever blocks an actor. Completion callbacks run on the
// engine thread and must only hand results on (e.g. send a message).
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "provider/outbound.hpp"

namespace cm {

/// Takes a provider's answer piece by piece (curl_engine::submit_streaming)
/// instead of whole. Called on the engine's thread only: hand on, never
/// block.
class stream_consumer {
public:
  virtual ~stream_consumer() = default;

  enum class verdict {
    /// All of `bytes` taken.
    taken,
    /// None taken: the transfer pauses, and the same bytes come again
    /// after curl_engine::resume.
    pause,
    /// Stop the transfer (on_done follows with `cancelled`).
    stop,
  };

  /// The next body bytes; `head` has the status and headers (complete by
  /// the first body byte), and no body.
  virtual verdict on_body(const outbound_response& head, std::string_view bytes) = 0;

  /// The end: status, headers and error as for `submit`, with no body
  /// (what on_body took is the consumer's).
  virtual void on_done(outbound_response res) = 0;

  /// The transfer's id for curl_engine::resume, set by submit_streaming
  /// before the engine calls anything.
  uint64_t transfer_id = 0;
};

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

  /// The same with the body handed to `consumer` as it comes (its
  /// max_response_bytes is the consumer's to enforce). Returns the
  /// transfer's id, for `resume`.
  uint64_t submit_streaming(outbound_request req, std::shared_ptr<stream_consumer> consumer);

  /// Continues a transfer its consumer paused; an id that is not paused
  /// (or over) is ignored. Thread-safe.
  void resume(uint64_t id);

  /// A callable that resumes transfer `id`, safe to call from any thread
  /// at any time, even after this engine is gone (it then does nothing):
  /// what a consumer hands to whoever wakes it later.
  std::function<void()> resumer(uint64_t id);

private:
  void run();
  struct pending {
    outbound_request req;
    callback done;
    std::shared_ptr<stream_consumer> consumer;
    uint64_t id = 0;
  };
  std::vector<uint64_t> resumed_;
  /// Outlives the engine in resumers; `engine` is null once it stops.
  struct resume_handle {
    std::mutex mutex;
    curl_engine* engine = nullptr;
  };
  std::shared_ptr<resume_handle> resume_handle_ = std::make_shared<resume_handle>();
  uint64_t next_id_ = 0;
  void* multi_ = nullptr;
  std::mutex mutex_;
  std::deque<pending> queue_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

} // namespace cm

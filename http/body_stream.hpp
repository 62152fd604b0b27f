// An answer whose body is written while it is still arriving: the proxy's
// large answers (api/proxy_routes.cpp), which would otherwise be held
// whole in memory until the provider's last byte.
//
// The head and then each piece go out through our own duplicate of the
// connection's socket (http/answer_writer.hpp says why not Pistache's
// queue), in the request's place in line (response_order::deliver_held):
// answers to later pipelined requests wait until the stream is over.
// The body is chunked (so HTTP/1.1 only), so a body cut short (the
// provider failed, the size cap) is visibly incomplete to the client and
// a complete one leaves the connection open for the next request.
//
// Nothing here blocks the producer. A piece the socket cannot take at once
// waits in the stream's buffer; past `room` buffered bytes the producer is
// asked to pause (the proxy pauses its libcurl transfer) and is woken once
// the client has read half of it, so a slow reader slows the provider down
// instead of filling our memory. One writer thread (body_stream_writer)
// waits for the sockets that are full, ends streams whose client is gone
// or whose deadline passed, and hands each finished stream's place in line
// on.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace cm::http {

class body_stream_writer;

class body_stream {
public:
  using clock = std::chrono::steady_clock;

  struct options {
    /// After a complete body the connection serves the next request (else
    /// it is ended there, as the head announced).
    bool keep_alive = true;
    /// The whole answer is out by then, or the connection is ended.
    clock::time_point deadline = clock::now() + std::chrono::seconds(30);
    /// Bytes buffered beyond which the producer should pause.
    size_t room = 256 * 1024;
  };

  /// Made by body_stream_writer::open.
  body_stream(body_stream_writer& writer, int fd, std::string head, options opts,
              std::function<void()> closed);
  ~body_stream();
  body_stream(const body_stream&) = delete;
  body_stream& operator=(const body_stream&) = delete;

  // The producer's side (one thread at a time).

  /// Queues body bytes (an empty piece is nothing). False when the stream
  /// has failed (the client is gone or too slow, the deadline passed) or
  /// ended: produce no more.
  bool push(std::string_view bytes);

  /// True when more than `room` bytes wait for the client.
  bool full() const;

  /// Arranges for `wake` to run once at most half of `room` waits, or the
  /// stream failed (on the writer's thread; it must only hand on). False,
  /// and `wake` is dropped, when that holds already.
  bool wait_for_room(std::function<void()> wake);

  /// No more body. Complete: what is queued goes out, then the chunked
  /// body's end. Not complete: the connection is ended at once, so the
  /// client sees a short body, never a whole-looking one.
  void end(bool complete);

  bool failed() const;

  // The response order's and the writer's side.

  /// The request's turn came (earlier answers are out): the head and
  /// what is queued may go. False when the stream is over already, so the
  /// caller releases the place in line itself.
  bool turn_came();

  /// Bytes sent to the client so far, head included.
  uint64_t sent() const { return sent_.load(); }

private:
  friend class body_stream_writer;

  /// Sends what is queued without blocking; the caller holds the mutex.
  void flush_locked();
  /// Ends the connection now; the caller holds the mutex.
  void fail_locked();
  size_t queued_locked() const { return buffer_.size() - offset_; }

  /// Writer thread: flushes, checks the deadline, and returns what to run
  /// unlocked (a waiting producer's wake, the `closed` of a stream over).
  struct step {
    std::function<void()> wake;
    std::function<void()> closed;
    bool over = false;
  };
  step advance(clock::time_point now, bool writable);
  /// The socket to wait for, or -1 when nothing waits on the socket.
  int blocked_fd() const;
  clock::time_point deadline() const { return options_.deadline; }

  body_stream_writer& writer_;
  mutable std::mutex mutex_;
  int fd_;
  options options_;
  std::function<void()> closed_;
  std::function<void()> wake_;
  std::string buffer_;
  size_t offset_ = 0;
  bool turn_ = false;
  bool ended_ = false;
  bool failed_ = false;
  bool over_ = false;
  /// Something changed (a piece, the turn, the end) since the writer
  /// last flushed.
  bool attention_ = false;
  std::atomic<uint64_t> sent_{0};
};

/// The thread behind every body_stream of one server.
class body_stream_writer {
public:
  body_stream_writer();
  /// Ends the streams still open and joins the thread.
  ~body_stream_writer();
  body_stream_writer(const body_stream_writer&) = delete;
  body_stream_writer& operator=(const body_stream_writer&) = delete;

  /// A stream over `fd` (taken: closed when the stream is over) that
  /// writes `head` first; `closed` runs once its last byte is out or it
  /// failed (the response order's release), on a thread of its own: it
  /// writes the answers to pipelined requests queued behind the stream,
  /// which may wait for their client, and the streams must not wait with
  /// them.
  std::shared_ptr<body_stream> open(int fd, std::string head, body_stream::options opts,
                                    std::function<void()> closed);

  /// Streams not over yet.
  size_t open_streams() const;

  /// Makes the thread look at its streams now.
  void wake();

private:
  void run();
  void release(std::function<void()> closed);
  void run_releases();
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<body_stream>> streams_;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::mutex release_mutex_;
  std::condition_variable release_wake_;
  std::deque<std::function<void()>> releases_;
  bool releases_stop_ = false;
  std::thread releaser_;
};

} // namespace cm::http

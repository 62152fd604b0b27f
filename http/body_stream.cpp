#include "http/body_stream.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.hpp"

namespace cm::http {

body_stream::body_stream(body_stream_writer& writer, int fd, std::string head, options opts,
                         std::function<void()> closed)
  : writer_(writer), fd_(fd), options_(opts), closed_(std::move(closed)),
    buffer_(std::move(head)) {}

body_stream::~body_stream() {
  if (fd_ >= 0)
    ::close(fd_);
}

bool body_stream::push(std::string_view bytes) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (failed_ || ended_)
    return false;
  if (bytes.empty())
    return true; // an empty chunk would end a chunked body
  attention_ = true;
  char size[24];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", bytes.size());
  buffer_.append(size, static_cast<size_t>(n));
  buffer_.append(bytes);
  buffer_.append("\r\n");
  flush_locked();
  if (queued_locked() > 0)
    writer_.wake(); // the socket is full (or it is not our turn): the writer waits for it
  return !failed_;
}

bool body_stream::full() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return queued_locked() > options_.room;
}

bool body_stream::wait_for_room(std::function<void()> wake) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (failed_ || over_ || queued_locked() <= options_.room / 2)
    return false;
  wake_ = std::move(wake);
  return true;
}

void body_stream::end(bool complete) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (ended_)
    return;
  ended_ = true;
  wake_ = nullptr; // the producer is done: nothing to wake
  attention_ = true;
  if (!complete) {
    fail_locked();
  } else if (!failed_) {
    buffer_.append("0\r\n\r\n");
    flush_locked();
  }
  writer_.wake(); // to hand the place in line on
}

bool body_stream::failed() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return failed_;
}

bool body_stream::turn_came() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (over_ || failed_)
      return false;
    turn_ = true;
    attention_ = true;
    flush_locked();
  }
  writer_.wake();
  return true;
}

void body_stream::flush_locked() {
  if (!turn_ || fd_ < 0 || failed_)
    return;
  while (offset_ < buffer_.size()) {
    // MSG_NOSIGNAL: a vanished client must not raise SIGPIPE.
    auto n = ::send(fd_, buffer_.data() + offset_, buffer_.size() - offset_, MSG_NOSIGNAL);
    if (n > 0) {
      offset_ += static_cast<size_t>(n);
      sent_ += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    fail_locked(); // gone
    return;
  }
  // Sent bytes are dropped once they are half the buffer, so a long stream
  // neither grows the buffer nor moves its tail at every piece.
  if (offset_ == buffer_.size()) {
    buffer_.clear();
    offset_ = 0;
    if (buffer_.capacity() > 4 * options_.room)
      std::string{}.swap(buffer_);
  } else if (offset_ > buffer_.size() / 2) {
    buffer_.erase(0, offset_);
    offset_ = 0;
  }
}

void body_stream::fail_locked() {
  if (failed_)
    return;
  failed_ = true;
  // Both ways: the client sees the end at once, and Pistache, reading the
  // end, drops the connection (later answers on it have nowhere to go).
  if (fd_ >= 0)
    ::shutdown(fd_, SHUT_RDWR);
  std::string{}.swap(buffer_);
  offset_ = 0;
}

int body_stream::blocked_fd() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return turn_ && !failed_ && !over_ && queued_locked() > 0 ? fd_ : -1;
}

body_stream::step body_stream::advance(clock::time_point now, bool writable) {
  step out;
  std::lock_guard<std::mutex> guard{mutex_};
  if (over_)
    return out;
  // Only a stream with news, or whose socket has room, is worth a send: a
  // wake-up for one stream costs the others nothing.
  if (attention_ || writable) {
    attention_ = false;
    flush_locked();
  }
  bool done = ended_ && turn_ && queued_locked() == 0;
  if (!failed_ && !done && now >= options_.deadline) {
    log::warn("http", "a streamed answer missed its deadline; the connection is ended");
    fail_locked();
  }
  if (wake_ && (failed_ || queued_locked() <= options_.room / 2))
    out.wake = std::move(wake_);
  // Over once complete and out, or failed (whether or not its turn came:
  // turn_came then says so, and the order's holder releases the line).
  if (done || failed_) {
    over_ = true;
    out.over = true;
    if (done && !failed_ && !options_.keep_alive)
      ::shutdown(fd_, SHUT_WR); // the connection ends here, as announced
    ::close(fd_);
    fd_ = -1;
    out.closed = std::move(closed_);
    if (wake_)
      out.wake = std::move(wake_);
  }
  return out;
}

body_stream_writer::body_stream_writer()
  : wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  releaser_ = std::thread([this] { run_releases(); });
  pthread_setname_np(releaser_.native_handle(), "cm-http-release");
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "cm-http-stream");
}

body_stream_writer::~body_stream_writer() {
  stopping_ = true;
  wake();
  thread_.join();
  {
    std::lock_guard<std::mutex> guard{release_mutex_};
    releases_stop_ = true;
  }
  release_wake_.notify_one();
  releaser_.join();
  if (wake_fd_ >= 0)
    ::close(wake_fd_);
}

void body_stream_writer::release(std::function<void()> closed) {
  {
    std::lock_guard<std::mutex> guard{release_mutex_};
    releases_.push_back(std::move(closed));
  }
  release_wake_.notify_one();
}

void body_stream_writer::run_releases() {
  std::unique_lock<std::mutex> lock{release_mutex_};
  for (;;) {
    release_wake_.wait(lock, [&] { return releases_stop_ || !releases_.empty(); });
    if (releases_.empty())
      return; // stopping, and every release ran
    auto next = std::move(releases_.front());
    releases_.pop_front();
    lock.unlock();
    try {
      next();
    } catch (const std::exception&) {
      log::warn("http", "a streamed answer's follow-up failed");
    }
    lock.lock();
  }
}

std::shared_ptr<body_stream> body_stream_writer::open(int fd, std::string head,
                                                      body_stream::options opts,
                                                      std::function<void()> closed) {
  auto stream = std::make_shared<body_stream>(*this, fd, std::move(head), opts, std::move(closed));
  {
    std::lock_guard<std::mutex> guard{mutex_};
    streams_.push_back(stream);
  }
  wake();
  return stream;
}

size_t body_stream_writer::open_streams() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return streams_.size();
}

void body_stream_writer::wake() {
  uint64_t one = 1;
  if (wake_fd_ >= 0)
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void body_stream_writer::run() {
  std::vector<pollfd> fds;
  std::vector<std::shared_ptr<body_stream>> streams;
  /// Streams whose socket the last poll found writable (or broken).
  std::vector<body_stream*> writable;
  while (true) {
    bool stopping = stopping_.load();
    {
      std::lock_guard<std::mutex> guard{mutex_};
      streams = streams_;
    }
    auto now = body_stream::clock::now();
    auto next_deadline = now + std::chrono::seconds(1);
    std::vector<std::function<void()>> to_run;
    std::vector<body_stream*> finished;
    for (auto& stream : streams) {
      if (stopping) {
        std::lock_guard<std::mutex> guard{stream->mutex_};
        stream->fail_locked();
      }
      bool ready = std::find(writable.begin(), writable.end(), stream.get()) != writable.end();
      auto step = stream->advance(now, ready || stopping);
      if (step.wake)
        to_run.push_back(std::move(step.wake));
      if (step.closed)
        release(std::move(step.closed));
      if (step.over)
        finished.push_back(stream.get());
      else
        next_deadline = std::min(next_deadline, stream->deadline());
    }
    if (!finished.empty()) {
      std::lock_guard<std::mutex> guard{mutex_};
      streams_.erase(std::remove_if(streams_.begin(), streams_.end(),
                                    [&](const std::shared_ptr<body_stream>& s) {
                                      return std::find(finished.begin(), finished.end(),
                                                       s.get()) != finished.end();
                                    }),
                     streams_.end());
    }
    // Outside every lock: the producers' wake-ups (a release goes to the
    // release thread, which may wait for a client).
    for (auto& fn : to_run) {
      try {
        fn();
      } catch (const std::exception&) {
        log::warn("http", "a streamed answer's follow-up failed");
      }
    }
    if (stopping)
      return;
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    std::vector<body_stream*> polled;
    for (auto& stream : streams)
      if (int fd = stream->blocked_fd(); fd >= 0) {
        fds.push_back({fd, POLLOUT, 0});
        polled.push_back(stream.get());
      }
    // With no stream open the thread sleeps until one is (no idle wake-ups).
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
                  next_deadline - body_stream::clock::now())
                  .count();
    int timeout = streams.size() == finished.size()
                    ? -1
                    : static_cast<int>(std::clamp<int64_t>(wait + 1, 0, 1000));
    streams.clear();
    ::poll(fds.data(), fds.size(), timeout);
    writable.clear();
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents != 0)
        writable.push_back(polled[i - 1]);
    if (fds[0].revents & POLLIN) {
      uint64_t count;
      [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
    }
  }
}

} // namespace cm::http

#include "http/event_stream.hpp"

#include <cerrno>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cm::http {

event_stream::event_stream(int fd) : fd_(fd) {}

event_stream::~event_stream() { close(); }

bool event_stream::is_open() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return fd_ >= 0;
}

void event_stream::close() {
  std::lock_guard<std::mutex> guard{mutex_};
  if (fd_ >= 0) {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    fd_ = -1;
  }
}

bool event_stream::write(std::string_view data, std::chrono::milliseconds patience) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (fd_ < 0)
    return false;
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (!data.empty()) {
    // MSG_NOSIGNAL: a vanished client must not raise SIGPIPE.
    auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && left.count() > 0) {
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
      continue;
    }
    // Gone, or too slow to keep up: drop it rather than buffer without
    // bound; the client resumes from its Last-Event-ID.
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    fd_ = -1;
    return false;
  }
  return true;
}

std::string sse_message(std::string_view id, std::string_view event, std::string_view data) {
  std::string out;
  out.reserve(data.size() + event.size() + id.size() + 24);
  out += "id: ";
  out += id;
  out += "\nevent: ";
  out += event;
  out += "\ndata: ";
  out += data;
  out += "\n\n";
  return out;
}

} // namespace cm::http

#include "http/event_stream.hpp"

#include "http/answer_writer.hpp"

#include <cerrno>

#include <sys/socket.h>
#include <unistd.h>

namespace cm::http {

event_stream::event_stream(int fd) : fd_(fd) {}

event_stream::~event_stream() { close(); }

bool event_stream::is_open() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return fd_ >= 0;
}

bool event_stream::peer_closed() const {
  std::lock_guard<std::mutex> guard{mutex_};
  if (fd_ < 0)
    return true;
  // A peek never consumes: 0 is the client's FIN, an error its reset.
  // Bytes a client sends on an event stream are never read, so any data
  // means it is still there.
  char byte;
  auto got = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (got == 0)
    return true;
  return got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
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
  return send_all_or_close(fd_, data, patience);
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

#include "http/event_stream.hpp"

#include "http/answer_writer.hpp"

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

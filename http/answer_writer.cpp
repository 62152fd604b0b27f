#include "http/answer_writer.hpp"

#include <charconv>

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cm::http {

answer_socket::answer_socket(int fd) : fd_(::fcntl(fd, F_DUPFD_CLOEXEC, 0)) {
  if (fd_ >= 0)
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

answer_socket::~answer_socket() {
  if (fd_ >= 0)
    ::close(fd_);
}

bool answer_socket::write(std::string_view bytes, std::chrono::milliseconds patience) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(waiting_budget - waited_);
  auto started = std::chrono::steady_clock::now();
  bool written = send_all_or_close(fd_, bytes, std::max(std::chrono::milliseconds(0),
                                                        std::min(patience, left)));
  waited_ += std::chrono::steady_clock::now() - started;
  return written;
}

bool send_all_or_close(int& fd, std::string_view bytes, std::chrono::milliseconds patience) {
  if (fd < 0)
    return false;
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (!bytes.empty()) {
    // MSG_NOSIGNAL: a vanished client must not raise SIGPIPE.
    auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && left.count() > 0) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
      continue;
    }
    // Gone, or not reading: end the connection rather than hold a thread
    // or buffer without bound (Pistache reads the end and drops the peer;
    // an event stream's client resumes from its Last-Event-ID).
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    fd = -1;
    return false;
  }
  return true;
}

void answer_socket::finish() {
  std::lock_guard<std::mutex> guard{mutex_};
  if (fd_ >= 0)
    ::shutdown(fd_, SHUT_WR);
}

void serialize_response_into(std::string& out, std::string_view version, int status,
                             std::string_view reason,
                             const std::vector<std::pair<std::string, std::string>>& headers,
                             std::string_view body) {
  out.clear();
  out.reserve(256 + body.size());
  char number[24];
  out.append(version).append(" ");
  out.append(number, std::to_chars(number, number + sizeof number, status).ptr);
  out.append(" ").append(reason).append("\r\n");
  for (auto& [name, value] : headers)
    out.append(name).append(": ").append(value).append("\r\n");
  // 204 and 304 carry no body and no length (RFC 9110 §8.6).
  if (status != 204 && status != 304) {
    out.append("Content-Length: ");
    out.append(number, std::to_chars(number, number + sizeof number, body.size()).ptr);
    out.append("\r\n");
  }
  out.append("\r\n");
  out.append(body);
}

std::string serialize_head(std::string_view version, int status, std::string_view reason,
                           const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string out;
  out.append(version).append(" ").append(std::to_string(status)).append(" ");
  out.append(reason).append("\r\n");
  for (auto& [name, value] : headers)
    out.append(name).append(": ").append(value).append("\r\n");
  out.append("\r\n");
  return out;
}

std::string serialize_response(std::string_view version, int status, std::string_view reason,
                               const std::vector<std::pair<std::string, std::string>>& headers,
                               std::string_view body) {
  std::string out;
  serialize_response_into(out, version, status, reason, headers, body);
  return out;
}

} // namespace cm::http

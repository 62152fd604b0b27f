#include "tests/support/http_client.hpp"

#include "http/exchange.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cerrno>
#include <stdexcept>

namespace cm::test {

http_connection::http_connection(uint16_t port, int receive_buffer) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0)
    throw std::runtime_error("socket failed");
  timeval tv{15, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  // Before connecting, so the window the server is offered is this small.
  if (receive_buffer > 0)
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("connect failed");
  }
}

http_connection::~http_connection() {
  if (fd_ >= 0)
    ::close(fd_);
}

bool http_connection::open() const {
  char c;
  auto n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0)
    return false;
  if (n < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK;
  return true;
}

http_reply http_connection::request(const std::string& method, const std::string& target,
                                    const header_map& headers, const std::string& body) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (auto& [k, v] : headers)
    req += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST" || method == "PUT")
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  return raw(req);
}

http_reply http_connection::raw(const std::string& bytes) {
  send_only(bytes);
  return read_reply();
}

void http_connection::send_only(const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; // the server may answer (413) before reading everything
    sent += static_cast<size_t>(n);
  }
}

http_reply http_connection::read_reply() {
  auto fill = [&] {
    char buf[65536];
    // A signal (SIGCHLD from a child the test started) interrupts recv
    // without anything being wrong: try again, within the same 15 s.
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    ssize_t n;
    while ((n = ::recv(fd_, buf, sizeof buf, 0)) < 0 && errno == EINTR &&
           std::chrono::steady_clock::now() < give_up) {
    }
    if (n <= 0)
      throw std::runtime_error(n == 0 ? "connection closed" : "receive timed out");
    buffer_.append(buf, static_cast<size_t>(n));
  };
  size_t end;
  while ((end = buffer_.find("\r\n\r\n")) == std::string::npos)
    fill();
  http_reply reply;
  std::string head = buffer_.substr(0, end);
  auto first_line_end = head.find("\r\n");
  auto status_line = head.substr(0, first_line_end);
  auto sp = status_line.find(' ');
  reply.status = std::stoi(status_line.substr(sp + 1, 3));
  size_t pos = first_line_end == std::string::npos ? head.size() : first_line_end + 2;
  while (pos < head.size()) {
    auto eol = head.find("\r\n", pos);
    auto line = head.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      auto name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      auto value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      reply.headers[name] = value;
    }
    if (eol == std::string::npos)
      break;
    pos = eol + 2;
  }
  // A streamed answer (the proxy's large ones): chunked, and cut short
  // when the connection ends before the last chunk.
  if (reply.header("transfer-encoding").find("chunked") != std::string::npos) {
    size_t at = end + 4;
    auto more = [&] {
      try {
        fill();
        return true;
      } catch (const std::runtime_error&) {
        return false;
      }
    };
    for (;;) {
      size_t eol;
      while ((eol = buffer_.find("\r\n", at)) == std::string::npos)
        if (!more()) {
          reply.truncated = true;
          break;
        }
      if (reply.truncated)
        break;
      auto size = std::stoul(buffer_.substr(at, eol - at), nullptr, 16);
      while (buffer_.size() < eol + 2 + size + 2)
        if (!more()) {
          reply.truncated = true;
          break;
        }
      if (reply.truncated) {
        reply.body.append(buffer_, eol + 2, std::string::npos);
        break;
      }
      reply.body.append(buffer_, eol + 2, size);
      at = eol + 2 + size + 2;
      if (size == 0)
        break;
    }
    auto used = reply.truncated ? buffer_.size() : at;
    reply.raw = buffer_.substr(0, used);
    buffer_.erase(0, used);
    return reply;
  }
  size_t length = 0;
  if (auto it = reply.headers.find("content-length"); it != reply.headers.end()) {
    length = std::stoul(it->second);
  } else {
    // A body ended by closing (an HTTP/1.0 answer streamed by the proxy).
    auto connection = reply.header("connection");
    std::transform(connection.begin(), connection.end(), connection.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (connection == "close" && reply.status != 204 && reply.status != 304) {
      for (;;) {
        try {
          fill();
        } catch (const std::runtime_error&) {
          break;
        }
      }
      length = buffer_.size() - end - 4;
    }
  }
  while (buffer_.size() < end + 4 + length)
    fill();
  reply.body = buffer_.substr(end + 4, length);
  reply.raw = buffer_.substr(0, end + 4 + length);
  buffer_.erase(0, end + 4 + length);
  return reply;
}

http_reply http_connection::read_head() {
  char buf[4096];
  while (buffer_.find("\r\n\r\n") == std::string::npos) {
    auto n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      throw std::runtime_error("connection closed");
    buffer_.append(buf, static_cast<size_t>(n));
  }
  auto end = buffer_.find("\r\n\r\n");
  http_reply reply;
  auto status_line = buffer_.substr(0, buffer_.find("\r\n"));
  reply.status = std::stoi(status_line.substr(status_line.find(' ') + 1, 3));
  reply.raw = buffer_.substr(0, end + 4);
  buffer_.erase(0, end + 4);
  return reply;
}

void http_connection::close() {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

http_reply http_call(uint16_t port, const std::string& method, const std::string& target,
                     const header_map& headers, const std::string& body) {
  http_connection c{port};
  return c.request(method, target, headers, body);
}

std::string path_and_query(const std::string& url) {
  auto scheme = url.find("://");
  return url.substr(url.find('/', scheme + 3));
}

std::map<std::string, std::string> query_of(const std::string& url) {
  std::map<std::string, std::string> q;
  auto pos = url.find('?');
  if (pos != std::string::npos)
    http::parse_query(url.substr(pos + 1), q);
  return q;
}

} // namespace cm::test

#include "tests/support/event_clients.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include <openssl/hmac.h>

namespace cm::test {

namespace {

int connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("connect failed");
  }
  return fd;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

} // namespace

std::pair<int64_t, int64_t> sse_event::position() const {
  auto dot = id.find('.');
  if (dot == std::string::npos)
    return {-1, -1};
  return {std::stoll(id.substr(0, dot)), std::stoll(id.substr(dot + 1))};
}

sse_client::sse_client(uint16_t port, const std::string& target,
                       const std::map<std::string, std::string>& headers) {
  fd_ = connect_loopback(port);
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n";
  for (auto& [k, v] : headers)
    req += k + ": " + v + "\r\n";
  req += "\r\n";
  ::send(fd_, req.data(), req.size(), MSG_NOSIGNAL);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (buffer_.find("\r\n\r\n") == std::string::npos)
    if (!fill(deadline))
      return;
  auto head_end = buffer_.find("\r\n\r\n");
  auto head = buffer_.substr(0, head_end);
  buffer_.erase(0, head_end + 4);
  status_ = std::stoi(head.substr(9, 3));
  for (size_t pos = head.find("\r\n"); pos != std::string::npos;) {
    auto next = head.find("\r\n", pos + 2);
    auto line =
      head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      auto value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      headers_[lower(line.substr(0, colon))] = value;
    }
    pos = next;
  }
  if (status_ != 200) {
    // An error answer is a normal response with Content-Length.
    auto cl = lower(head).find("content-length:");
    size_t length = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 15));
    while (buffer_.size() < length && fill(deadline)) {
    }
    error_body_ = buffer_.substr(0, length);
  }
}

std::string sse_client::header(const std::string& lower_name) const {
  auto it = headers_.find(lower_name);
  return it == headers_.end() ? std::string{} : it->second;
}

sse_client::~sse_client() {
  if (fd_ >= 0)
    ::close(fd_);
}

bool sse_client::fill(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0)
    return false;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
    return false;
  char chunk[4096];
  auto n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n <= 0)
    return false;
  buffer_.append(chunk, static_cast<size_t>(n));
  raw_.append(chunk, static_cast<size_t>(n));
  return true;
}

std::optional<sse_event> sse_client::next(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto end = buffer_.find("\n\n");
    while (end == std::string::npos) {
      if (!fill(deadline))
        return std::nullopt;
      end = buffer_.find("\n\n");
    }
    auto block = buffer_.substr(0, end);
    buffer_.erase(0, end + 2);
    sse_event e;
    bool any = false;
    size_t pos = 0;
    while (pos <= block.size()) {
      auto nl = block.find('\n', pos);
      auto line = block.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      if (line.rfind("id: ", 0) == 0) {
        e.id = line.substr(4);
        any = true;
      } else if (line.rfind("event: ", 0) == 0) {
        e.event = line.substr(7);
      } else if (line.rfind("data: ", 0) == 0) {
        e.data = line.substr(6);
        any = true;
      }
      if (nl == std::string::npos)
        break;
      pos = nl + 1;
    }
    if (any)
      return e;
  }
}

webhook_receiver::webhook_receiver(std::vector<int> statuses)
  : statuses_(statuses.begin(), statuses.end()) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 16) != 0)
    throw std::runtime_error("webhook receiver cannot listen");
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

webhook_receiver::~webhook_receiver() {
  stop_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  if (thread_.joinable())
    thread_.join();
}

void webhook_receiver::serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0)
      continue;
    // One request per connection, bounded in size and time.
    std::string in;
    char chunk[4096];
    size_t want = std::string::npos;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (in.size() < (1 << 20) && std::chrono::steady_clock::now() < deadline) {
      pollfd q{fd, POLLIN, 0};
      if (::poll(&q, 1, 100) <= 0)
        continue;
      auto n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0)
        break;
      in.append(chunk, static_cast<size_t>(n));
      auto head_end = in.find("\r\n\r\n");
      if (head_end != std::string::npos && want == std::string::npos) {
        auto head = lower(in.substr(0, head_end));
        auto cl = head.find("content-length:");
        want = head_end + 4 + (cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 15)));
      }
      if (want != std::string::npos && in.size() >= want)
        break;
    }
    webhook_delivery d;
    auto head_end = in.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      auto head = in.substr(0, head_end);
      size_t pos = head.find("\r\n");
      while (pos != std::string::npos) {
        auto next = head.find("\r\n", pos + 2);
        auto line = head.substr(pos + 2, next == std::string::npos ? std::string::npos
                                                                   : next - pos - 2);
        auto colon = line.find(':');
        if (colon != std::string::npos) {
          auto value = line.substr(colon + 1);
          while (!value.empty() && value.front() == ' ')
            value.erase(0, 1);
          d.headers[lower(line.substr(0, colon))] = value;
        }
        pos = next;
      }
      d.body = in.substr(head_end + 4);
    }
    {
      std::lock_guard<std::mutex> guard{mutex_};
      d.answered = statuses_.empty() ? 200 : statuses_.front();
      if (!statuses_.empty())
        statuses_.pop_front();
      got_.push_back(d);
    }
    cv_.notify_all();
    auto reply = "HTTP/1.1 " + std::to_string(d.answered) +
                 " X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
    ::close(fd);
  }
}

bool webhook_receiver::wait_for(size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock{mutex_};
  return cv_.wait_for(lock, timeout, [&] { return got_.size() >= n; });
}

std::vector<webhook_delivery> webhook_receiver::deliveries() {
  std::lock_guard<std::mutex> guard{mutex_};
  return got_;
}

std::string hmac_sha256_hex(const std::string& key, const std::string& message) {
  unsigned char mac[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += hex[mac[i] >> 4];
    out += hex[mac[i] & 15];
  }
  return out;
}

} // namespace cm::test

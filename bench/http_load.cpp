#include "bench/http_load.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cm::bench {

using clock_type = std::chrono::steady_clock;

void constant_handler::onRequest(const Pistache::Http::Request&,
                                 Pistache::Http::ResponseWriter w) {
  if (w.headers().has<Pistache::Http::Header::Connection>())
    w.headers().remove<Pistache::Http::Header::Connection>();
  w.send(Pistache::Http::Code::Ok, body_, MIME(Application, Json));
}

int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// Keeps `connections` keep-alive connections busy, one request in flight
/// on each, for `duration`; one thread, poll(2).
figures load(uint16_t port, const std::vector<std::string>& requests, int connections,
             std::chrono::milliseconds duration) {
  struct conn {
    int fd = -1;
    std::string in;
    clock_type::time_point sent;
    const std::string* request = nullptr;
  };
  std::vector<conn> conns(connections);
  for (int i = 0; i < connections; ++i) {
    conns[i].fd = connect_to(port);
    conns[i].request = &requests[static_cast<size_t>(i) % requests.size()];
  }
  std::vector<float> latencies;
  latencies.reserve(1 << 20);
  long done = 0;
  long errors = 0;
  auto send_one = [&](conn& c) {
    c.sent = clock_type::now();
    auto& request = *c.request;
    if (::send(c.fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size()))
      ++errors;
  };
  for (auto& c : conns)
    send_one(c);
  auto start = clock_type::now();
  auto deadline = start + duration;
  std::vector<pollfd> fds(connections);
  char buf[16384];
  while (clock_type::now() < deadline) {
    for (int i = 0; i < connections; ++i)
      fds[i] = {conns[i].fd, POLLIN, 0};
    if (::poll(fds.data(), fds.size(), 100) <= 0)
      continue;
    for (int i = 0; i < connections; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      auto& c = conns[i];
      auto n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n <= 0) {
        // The server closed it: count, reconnect, go on.
        ++errors;
        ::close(c.fd);
        c.fd = connect_to(port);
        c.in.clear();
        send_one(c);
        continue;
      }
      c.in.append(buf, static_cast<size_t>(n));
      auto head_end = c.in.find("\r\n\r\n");
      if (head_end == std::string::npos)
        continue;
      auto cl = c.in.find("Content-Length: ");
      if (cl == std::string::npos || cl > head_end)
        cl = c.in.find("content-length: ");
      size_t length = cl == std::string::npos ? 0 : std::strtoul(c.in.c_str() + cl + 16, nullptr, 10);
      if (c.in.size() < head_end + 4 + length)
        continue;
      if (c.in.compare(9, 3, "200") != 0)
        ++errors;
      c.in.erase(0, head_end + 4 + length);
      ++done;
      latencies.push_back(
        std::chrono::duration<float, std::micro>(clock_type::now() - c.sent).count());
      send_one(c);
    }
  }
  std::chrono::duration<double> secs = clock_type::now() - start;
  for (auto& c : conns)
    ::close(c.fd);
  figures f;
  f.per_second = done / secs.count();
  f.errors = errors;
  if (!latencies.empty()) {
    auto at = [&](double q) {
      auto k = static_cast<size_t>(q * (latencies.size() - 1));
      std::nth_element(latencies.begin(), latencies.begin() + k, latencies.end());
      return static_cast<double>(latencies[k]);
    };
    f.p50_us = at(0.5);
    f.p99_us = at(0.99);
  }
  return f;
}

pair_figures load_pair(uint16_t base_port, const std::vector<std::string>& base_requests,
                       uint16_t real_port, const std::vector<std::string>& real_requests,
                       int connections, std::chrono::milliseconds duration) {
  pair_figures total;
  auto add = [](figures& sum, const figures& round) {
    sum.per_second += round.per_second / 2;
    sum.p50_us = std::max(sum.p50_us, round.p50_us);
    sum.p99_us = std::max(sum.p99_us, round.p99_us);
    sum.errors += round.errors;
  };
  for (int round = 0; round < 2; ++round) {
    add(total.base, load(base_port, base_requests, connections, duration / 2));
    add(total.real, load(real_port, real_requests, connections, duration / 2));
  }
  return total;
}

} // namespace cm::bench

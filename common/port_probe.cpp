#include "common/port_probe.hpp"

#include <cerrno>
#include <cstring>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cm {

std::string bind_problem(const std::string& address, uint16_t port) {
  if (port == 0)
    return {};
  auto where = address + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  auto service = std::to_string(port);
  if (int rc = ::getaddrinfo(address.empty() ? nullptr : address.c_str(), service.c_str(), &hints,
                             &found);
      rc != 0)
    return "cannot resolve " + address + ": " + ::gai_strerror(rc);
  std::string problem;
  for (auto* ai = found; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      problem = where + ": " + std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = ::bind(fd, ai->ai_addr, ai->ai_addrlen);
    int err = errno;
    ::close(fd);
    if (rc == 0) {
      problem.clear();
      break;
    }
    if (err == EADDRINUSE)
      problem = where + " is already in use (is another connector-manager running?)";
    else if (err == EACCES)
      problem = where + ": permission denied (ports below 1024 need privileges)";
    else if (err == EADDRNOTAVAIL)
      problem = where + ": no such address on this machine";
    else
      problem = where + ": " + std::strerror(err);
  }
  ::freeaddrinfo(found);
  return problem;
}

} // namespace cm

// Says why a listening socket cannot be opened, in words an operator can
// act on ("127.0.0.1:8080 is already in use"), before the service loads
// anything: Pistache and CAF report a failed bind without its reason.
#pragma once

#include <cstdint>
#include <string>

namespace cm {

/// Why `address`:`port` cannot be bound for listening right now, or ""
/// when it can (port 0 always can). Binds a throwaway socket with
/// SO_REUSEADDR, as the real listeners do, and closes it at once.
std::string bind_problem(const std::string& address, uint16_t port);

} // namespace cm

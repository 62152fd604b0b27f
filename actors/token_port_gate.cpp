#include "actors/token_port_gate.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/io/basp/header.hpp>
#include <caf/io/basp/message_type.hpp>
#include <caf/io/basp_broker.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/network/multiplexer.hpp>
#include <caf/send.hpp>

#include "common/log.hpp"

namespace cm {

// -- basp_stream_check --------------------------------------------------------

static_assert(caf::io::basp::header_size == 32, "a BASP header is 32 bytes");

basp_stream_check::verdict basp_stream_check::feed(std::string_view bytes) {
  while (!bytes.empty()) {
    if (payload_left_ > 0) {
      auto n = std::min<uint64_t>(payload_left_, bytes.size());
      payload_left_ -= n;
      bytes.remove_prefix(n);
      if (payload_left_ == 0)
        ++messages_;
      continue;
    }
    auto n = std::min(header_size - header_bytes_, bytes.size());
    std::memcpy(header_ + header_bytes_, bytes.data(), n);
    header_bytes_ += n;
    bytes.remove_prefix(n);
    if (header_bytes_ < header_size)
      break;
    header_bytes_ = 0;
    // Layout (network byte order): operation, two padding bytes, flags,
    // payload length (4 bytes), operation data, source and destination
    // actor ids (8 bytes each).
    auto operation = header_[0];
    uint32_t payload = (uint32_t{header_[4]} << 24) | (uint32_t{header_[5]} << 16) |
                       (uint32_t{header_[6]} << 8) | uint32_t{header_[7]};
    if (operation > static_cast<uint8_t>(caf::io::basp::message_type::heartbeat))
      return verdict::malformed;
    if (payload > max_payload_)
      return verdict::oversized;
    payload_left_ = payload;
    if (payload == 0)
      ++messages_;
  }
  return verdict::ok;
}

// -- token_port_gate ----------------------------------------------------------

namespace {

using steady = std::chrono::steady_clock;

constexpr const char* component = "token-port";

/// Bytes read at once from one socket.
constexpr size_t chunk_bytes = 16 * 1024;

/// Bytes the gate holds per peer and direction; past this it stops reading
/// that side until the other side has taken them.
constexpr size_t max_pending_bytes = 64 * 1024;

/// How often the loop wakes to check deadlines when nothing happens.
constexpr int tick_ms = 100;

/// One connected peer and the CAF connection it is paired with.
struct peer {
  explicit peer(uint32_t max_payload) : check(max_payload) {}
  /// The peer's TCP connection.
  int outside = -1;
  /// The gate's end of the socket pair; CAF's BASP broker holds the other.
  int inside = -1;
  std::string address;
  basp_stream_check check;
  /// Checked bytes from the peer not yet written to CAF, and CAF's bytes
  /// not yet written to the peer.
  std::string to_inside;
  std::string to_outside;
  steady::time_point connected;
  steady::time_point last_message;
  steady::time_point message_started;
  /// Since when bytes for the peer have been waiting for it to read.
  steady::time_point waiting_since;
  bool waiting = false;
};

/// Why a peer is dropped; also the key of the log throttle.
enum class drop_reason { closed, oversized, malformed, handshake, stalled, unread, idle };

const char* describe(drop_reason r) {
  switch (r) {
    case drop_reason::closed: return "closed";
    case drop_reason::oversized: return "announced a message larger than max_message_bytes";
    case drop_reason::malformed: return "sent a header with an unknown operation";
    case drop_reason::handshake: return "did not send its handshake in time";
    case drop_reason::stalled: return "did not finish a message in time";
    case drop_reason::unread: return "did not read its answers in time";
    case drop_reason::idle: return "sent nothing for idle_timeout_ms";
  }
  return "closed";
}

bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

std::string address_of(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (addr.ss_family == AF_INET) {
    auto& in = reinterpret_cast<const sockaddr_in&>(addr);
    inet_ntop(AF_INET, &in.sin_addr, host, sizeof host);
    port = ntohs(in.sin_port);
  } else if (addr.ss_family == AF_INET6) {
    auto& in6 = reinterpret_cast<const sockaddr_in6&>(addr);
    inet_ntop(AF_INET6, &in6.sin6_addr, host, sizeof host);
    port = ntohs(in6.sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

/// A listening TCP socket on address:port, or -1 (errno set).
int listen_on(const std::string& address, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  auto service = std::to_string(port);
  if (getaddrinfo(address.c_str(), service.c_str(), &hints, &found) != 0 || found == nullptr)
    return -1;
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == 0 &&
            bind(fd, found->ai_addr, found->ai_addrlen) == 0 && listen(fd, 128) == 0;
  freeaddrinfo(found);
  if (!ok && fd >= 0) {
    auto err = errno;
    close(fd);
    errno = err;
    fd = -1;
  }
  return fd;
}

uint16_t bound_port(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return 0;
  if (addr.ss_family == AF_INET)
    return ntohs(reinterpret_cast<sockaddr_in&>(addr).sin_port);
  if (addr.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<sockaddr_in6&>(addr).sin6_port);
  return 0;
}

} // namespace

struct token_port_gate::state {
  state(caf::actor_system& s, const config::token_service_config& c) : sys(s), cfg(c) {}
  caf::actor_system& sys;
  config::token_service_config cfg;
  /// CAF's BASP broker, which takes each peer's socket-pair end.
  caf::actor basp;
  caf::strong_actor_ptr service;
  std::set<std::string> signatures;
  int listener = -1;
  /// Written to stop the loop.
  int wake = -1;
  std::list<peer> peers;
  /// Per drop reason: when it was last logged and how many since.
  std::map<drop_reason, std::pair<steady::time_point, int64_t>> logged;
  int64_t refused_since_logged = 0;
  steady::time_point refused_logged;
};

namespace {

using gate_state = token_port_gate::state;

/// One warning per reason per 10 s at most: a flood of bad peers must not
/// become a flood of log lines.
void note_drop(gate_state& s, drop_reason reason, const peer& p) {
  if (reason == drop_reason::closed)
    return;
  auto now = steady::now();
  auto& [last, suppressed] = s.logged[reason];
  if (last != steady::time_point{} && now - last < std::chrono::seconds(10)) {
    ++suppressed;
    return;
  }
  log::warn(component, "peer dropped",
            {{"peer", p.address},
             {"reason", describe(reason)},
             {"similar_since_last", suppressed}});
  last = now;
  suppressed = 0;
}

void note_refused(gate_state& s, const std::string& address) {
  auto now = steady::now();
  if (s.refused_logged != steady::time_point{} &&
      now - s.refused_logged < std::chrono::seconds(10)) {
    ++s.refused_since_logged;
    return;
  }
  log::warn(component, "peer refused: max_peers connected",
            {{"peer", address}, {"max_peers", s.cfg.max_peers},
             {"similar_since_last", s.refused_since_logged}});
  s.refused_logged = now;
  s.refused_since_logged = 0;
}

void close_peer(peer& p) {
  if (p.outside >= 0)
    close(p.outside);
  if (p.inside >= 0)
    close(p.inside); // CAF sees its end close and forgets the connection
  p.outside = p.inside = -1;
}

/// Accepts one peer: pairs it with a new CAF connection, or closes it at
/// once when max_peers are connected.
void accept_peer(gate_state& s) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  int fd = accept4(s.listener, reinterpret_cast<sockaddr*>(&addr), &len,
                   SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0)
    return;
  auto address = address_of(addr);
  if (s.peers.size() >= static_cast<size_t>(s.cfg.max_peers)) {
    close(fd);
    note_refused(s, address);
    return;
  }
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
    close(fd);
    log::error(component, "cannot create a socket pair", {{"errno", errno}});
    return;
  }
  // CAF's end: a connection of the BASP broker on which the token service
  // is published; the broker writes its handshake at once.
  auto scribe = s.sys.middleman().backend().new_scribe(pair[1]);
  caf::anon_send(s.basp, caf::publish_atom_v, std::move(scribe), s.cfg.port, s.service,
                 s.signatures);
  auto& p = s.peers.emplace_back(static_cast<uint32_t>(s.cfg.max_message_bytes));
  p.outside = fd;
  p.inside = pair[0];
  p.address = std::move(address);
  p.connected = p.last_message = steady::now();
}

/// Reads what the peer sent, checks it, keeps it for CAF. False: drop it.
bool read_outside(peer& p, drop_reason& why) {
  char buf[chunk_bytes];
  auto n = recv(p.outside, buf, sizeof buf, 0);
  if (n < 0 && would_block(errno))
    return true;
  if (n <= 0) {
    why = drop_reason::closed;
    return false;
  }
  auto was_mid = p.check.mid_message();
  auto before = p.check.messages();
  switch (p.check.feed({buf, static_cast<size_t>(n)})) {
    case basp_stream_check::verdict::ok: break;
    case basp_stream_check::verdict::oversized: why = drop_reason::oversized; return false;
    case basp_stream_check::verdict::malformed: why = drop_reason::malformed; return false;
  }
  auto now = steady::now();
  if (p.check.messages() > before)
    p.last_message = now;
  if (p.check.mid_message() && (!was_mid || p.check.messages() > before))
    p.message_started = now;
  p.to_inside.append(buf, static_cast<size_t>(n));
  return true;
}

/// Reads what CAF sent the peer. False: CAF closed the connection.
bool read_inside(peer& p) {
  char buf[chunk_bytes];
  auto n = recv(p.inside, buf, sizeof buf, 0);
  if (n < 0 && would_block(errno))
    return true;
  if (n <= 0)
    return false;
  p.to_outside.append(buf, static_cast<size_t>(n));
  return true;
}

/// Writes as much of `pending` as `fd` takes. False: the socket failed.
bool write_some(int fd, std::string& pending) {
  while (!pending.empty()) {
    auto n = send(fd, pending.data(), pending.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
      return would_block(errno);
    pending.erase(0, static_cast<size_t>(n));
  }
  return true;
}

/// The deadline rule the peer broke, if any.
bool overdue(const gate_state& s, const peer& p, steady::time_point now, drop_reason& why) {
  using ms = std::chrono::milliseconds;
  if (p.check.messages() == 0 && now - p.connected > ms{s.cfg.handshake_timeout_ms}) {
    why = drop_reason::handshake;
    return true;
  }
  if (p.check.mid_message() && now - p.message_started > ms{s.cfg.stall_timeout_ms}) {
    why = drop_reason::stalled;
    return true;
  }
  if (p.waiting && now - p.waiting_since > ms{s.cfg.stall_timeout_ms}) {
    why = drop_reason::unread;
    return true;
  }
  // Before its first message a peer is held to the handshake time instead.
  if (p.check.messages() > 0 && now - p.last_message > ms{s.cfg.idle_timeout_ms}) {
    why = drop_reason::idle;
    return true;
  }
  return false;
}

} // namespace

caf::expected<std::unique_ptr<token_port_gate>>
token_port_gate::start(caf::actor_system& sys, const token_service_actor& service,
                       const config::token_service_config& cfg) {
  auto s = std::make_unique<state>(sys, cfg);
  s->listener = listen_on(cfg.address, cfg.port);
  if (s->listener < 0)
    return caf::make_error(caf::sec::cannot_open_port, "token service port", cfg.address,
                           cfg.port, std::string(std::strerror(errno)));
  s->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  auto port = bound_port(s->listener);
  // Published actors are keyed by port: the real one, as publish() would.
  s->cfg.port = port;
  s->basp = sys.middleman().named_broker<caf::io::basp_broker>(caf::atom("BASP"));
  s->service = caf::actor_cast<caf::strong_actor_ptr>(service);
  s->signatures = sys.message_types(service);
  return std::unique_ptr<token_port_gate>(new token_port_gate(std::move(s), port));
}

token_port_gate::token_port_gate(std::unique_ptr<state> s, uint16_t port)
  : state_(std::move(s)), port_(port) {
  thread_ = std::thread([this] { run(); });
}

token_port_gate::~token_port_gate() {
  uint64_t one = 1;
  if (write(state_->wake, &one, sizeof one) < 0)
    log::error(component, "cannot wake the gate to stop it");
  thread_.join();
  for (auto& p : state_->peers)
    close_peer(p);
  close(state_->listener);
  close(state_->wake);
}

void token_port_gate::run() {
  auto& s = *state_;
  std::vector<pollfd> fds;
  for (;;) {
    // [0] wake-up, [1] listener, then each peer's outside and inside.
    fds.clear();
    fds.push_back({s.wake, POLLIN, 0});
    fds.push_back({s.listener, POLLIN, 0});
    for (auto& p : s.peers) {
      // A peer that is not reading its answers gets nothing more read:
      // what it asked for would only pile up in CAF's write buffers.
      bool take_from_peer = p.to_inside.size() < max_pending_bytes &&
                            p.to_outside.size() < max_pending_bytes;
      short out_events = (take_from_peer ? POLLIN : 0) | (p.to_outside.empty() ? 0 : POLLOUT);
      short in_events = (p.to_outside.size() < max_pending_bytes ? POLLIN : 0) |
                        (p.to_inside.empty() ? 0 : POLLOUT);
      fds.push_back({p.outside, out_events, 0});
      fds.push_back({p.inside, in_events, 0});
    }
    if (poll(fds.data(), fds.size(), tick_ms) < 0 && errno != EINTR) {
      log::error(component, "poll failed", {{"errno", errno}});
      return;
    }
    if (fds[0].revents != 0)
      return;
    auto now = steady::now();
    size_t i = 2;
    for (auto it = s.peers.begin(); it != s.peers.end(); i += 2) {
      auto& p = *it;
      auto out = fds[i].revents;
      auto in = fds[i + 1].revents;
      auto why = drop_reason::closed;
      bool keep = true;
      if (out & (POLLIN | POLLHUP | POLLERR))
        keep = read_outside(p, why);
      if (keep && (in & (POLLIN | POLLHUP | POLLERR)))
        keep = read_inside(p);
      if (keep && !p.to_inside.empty())
        keep = write_some(p.inside, p.to_inside);
      if (keep && !p.to_outside.empty()) {
        keep = write_some(p.outside, p.to_outside);
        if (!p.to_outside.empty() && !p.waiting) {
          p.waiting = true;
          p.waiting_since = now;
        }
      }
      if (p.to_outside.empty())
        p.waiting = false;
      if (keep && overdue(s, p, now, why))
        keep = false;
      if (keep) {
        ++it;
        continue;
      }
      note_drop(s, why, p);
      close_peer(p);
      it = s.peers.erase(it);
    }
    // Accepted last: the new peer has no poll entry in this round.
    if (fds[1].revents & POLLIN)
      accept_peer(s);
    peers_.store(s.peers.size());
  }
}

} // namespace cm

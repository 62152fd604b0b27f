// The token port gate: what listens on `token_service.port` in front of
// CAF's middleman.
//
// CAF's BASP broker trusts the length in each 32-byte message header: a
// header announcing a 1 GiB payload makes it allocate (and zero) 1 GiB
// before anything is checked, and the service token travels inside the
// messages, so any peer that can connect can do that. The gate accepts the
// TCP connections itself and reads each peer's stream header by header
// (basp_stream_check): a header announcing more than
// `token_service.max_message_bytes` closes the connection before CAF sees
// it. At most `token_service.max_peers` peers are connected at once (more
// are closed at accept); a peer that does not send its handshake within
// `handshake_timeout_ms`, takes longer than `stall_timeout_ms` to finish a
// message or to read what it is sent, or sends nothing for
// `idle_timeout_ms`, is dropped. A service's token is checked inside each
// message, so a connection cannot be told apart before then: the bounds
// apply to every peer.
//
// Validated bytes reach CAF through an anonymous socket pair per peer: the
// gate keeps one end, CAF's BASP broker gets the other as a connection on
// which the token service is published. No second listener exists that
// another process could reach to get around the gate.
//
// One thread runs the gate (poll over every socket). It never blocks on a
// socket and runs no actor code.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>
#include <thread>

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include "actors/token_service_actor.hpp"
#include "config/service_config.hpp"

namespace cm {

/// Follows the BASP byte stream one peer sends, header by header, and says
/// whether every header seen so far is acceptable: a known operation and a
/// payload of at most `max_payload` bytes. A header is judged as soon as
/// its 32 bytes are in, so a chunk can be checked before any of it is
/// passed on.
class basp_stream_check {
public:
  enum class verdict { ok, oversized, malformed };

  explicit basp_stream_check(uint32_t max_payload) : max_payload_(max_payload) {}

  /// Consumes the next bytes of the stream. After anything but `ok` the
  /// peer is to be dropped; later calls are meaningless.
  verdict feed(std::string_view bytes);

  /// Complete messages (header and payload) seen so far.
  uint64_t messages() const { return messages_; }

  /// Whether a message has begun but not ended.
  bool mid_message() const { return header_bytes_ > 0 || payload_left_ > 0; }

private:
  static constexpr size_t header_size = 32;
  uint32_t max_payload_;
  unsigned char header_[header_size] = {};
  size_t header_bytes_ = 0;
  uint64_t payload_left_ = 0;
  uint64_t messages_ = 0;
};

class token_port_gate {
public:
  /// Listens on `cfg.address`:`cfg.port` (0: a free port) and publishes
  /// `service` on every connection it lets through; an error when it cannot
  /// listen.
  static caf::expected<std::unique_ptr<token_port_gate>>
  start(caf::actor_system& sys, const token_service_actor& service,
        const config::token_service_config& cfg);

  /// Stops listening and closes every connection.
  ~token_port_gate();
  token_port_gate(const token_port_gate&) = delete;
  token_port_gate& operator=(const token_port_gate&) = delete;

  uint16_t port() const { return port_; }

  /// Peers connected now.
  size_t peers() const { return peers_.load(); }

  struct state;

private:
  token_port_gate(std::unique_ptr<state> s, uint16_t port);
  void run();

  std::unique_ptr<state> state_;
  uint16_t port_;
  std::atomic<size_t> peers_{0};
  std::thread thread_;
};

} // namespace cm

// Writes a response to one connection through our own duplicate of its
// socket, never through Pistache's write queue.
//
// Pistache 0.0.5 queues each answer under the connection's descriptor
// *number* and writes it later from the reactor, which only checks that
// some live connection has that number. An answer still queued when its
// client hangs up can be written to the next client that is given the same
// number: one caller's token in another caller's hands. A duplicate taken
// on the reactor thread when the connection's first bytes arrive names the
// socket itself, so whatever happens to the number, an answer written
// through it reaches its own client or nobody.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cm::http {

class answer_socket {
public:
  /// Duplicates `fd` (the caller guarantees it is the connection's now).
  /// An invalid socket (the duplicate failed) writes nothing.
  explicit answer_socket(int fd);
  ~answer_socket();
  answer_socket(const answer_socket&) = delete;
  answer_socket& operator=(const answer_socket&) = delete;

  bool valid() const { return fd_ >= 0; }

  /// Writes all of `bytes`, waiting for a full socket buffer to drain at
  /// most `patience`, and at most what is left of the connection's whole
  /// waiting budget (so a client that reads just enough, just in time,
  /// cannot hold writers for long). False when the client is gone or too
  /// slow: the connection is then shut down (Pistache sees its end and
  /// drops it). Thread-safe; writes never interleave.
  bool write(std::string_view bytes, std::chrono::milliseconds patience);

  /// Waiting a connection may cost its writers in all.
  static constexpr std::chrono::milliseconds waiting_budget{500};

  /// Ends our sending side once the last answer is out (a refused
  /// connection): the client reads the answer, then end of stream.
  void finish();

private:
  std::mutex mutex_;
  int fd_;
  std::chrono::steady_clock::duration waited_{};
};

/// Writes all of `bytes` to the non-blocking socket `fd`, waiting at most
/// `patience` for a full socket buffer to drain. On failure (the client is
/// gone, or not reading) the socket is shut down and closed and `fd` set
/// to -1. The caller serializes calls for one socket.
bool send_all_or_close(int& fd, std::string_view bytes, std::chrono::milliseconds patience);

/// The bytes of one HTTP/1.x response: status line, `headers`,
/// Content-Length, blank line, body.
std::string serialize_response(std::string_view version, int status, std::string_view reason,
                               const std::vector<std::pair<std::string, std::string>>& headers,
                               std::string_view body);

/// The head of a response whose body follows without a length (chunked,
/// or ended by closing): status line, `headers`, blank line.
std::string serialize_head(std::string_view version, int status, std::string_view reason,
                           const std::vector<std::pair<std::string, std::string>>& headers);

/// The same, written into `out` (cleared first): a thread reuses one
/// buffer for every answer instead of allocating one each time.
void serialize_response_into(std::string& out, std::string_view version, int status,
                             std::string_view reason,
                             const std::vector<std::pair<std::string, std::string>>& headers,
                             std::string_view body);

} // namespace cm::http

// A small blocking HTTP/1.1 client over loopback sockets, so tests control
// every byte: keep-alive, raw requests, oversized bodies.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace cm::test {

struct http_reply {
  int status = 0;
  /// Header names in lower case.
  std::map<std::string, std::string> headers;
  std::string body;
  /// The whole response as received (for leak checks).
  std::string raw;
  /// A chunked body whose connection ended before its last chunk.
  bool truncated = false;

  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string{} : it->second;
  }
};

using header_map = std::map<std::string, std::string>;

class http_connection {
public:
  /// `receive_buffer`: SO_RCVBUF in bytes (0: the system's), for a
  /// client that reads slowly.
  explicit http_connection(uint16_t port, int receive_buffer = 0);
  ~http_connection();
  http_connection(const http_connection&) = delete;
  http_connection& operator=(const http_connection&) = delete;

  /// Sends one request (HTTP/1.1, no Connection header unless given) and
  /// reads the response. Throws on a transport error or timeout.
  http_reply request(const std::string& method, const std::string& target,
                     const header_map& headers = {}, const std::string& body = "");

  /// Sends raw bytes and reads one response.
  http_reply raw(const std::string& bytes);

  /// True when the server has not closed the connection (probes with a
  /// non-blocking peek).
  bool open() const;

  /// Sends a request without reading its answer (see read_head).
  void send_only(const std::string& bytes);

  /// Reads an answer's head only (status and the raw head): a client that
  /// then stops reading, or hangs up.
  http_reply read_head();

  /// Hangs up.
  void close();

  /// The socket, e.g. to shrink its receive buffer.
  int fd() const { return fd_; }

  /// Reads the next whole answer.
  http_reply read_reply();

private:
  int fd_ = -1;
  std::string buffer_;
};

/// "/path?query" of an absolute URL (e.g. a Location header).
std::string path_and_query(const std::string& url);

/// The decoded query parameters of a URL.
std::map<std::string, std::string> query_of(const std::string& url);

/// One request on a fresh connection.
http_reply http_call(uint16_t port, const std::string& method, const std::string& target,
                     const header_map& headers = {}, const std::string& body = "");

} // namespace cm::test

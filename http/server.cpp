#include "http/server.hpp"

#include <algorithm>
#include <cctype>
#include <fcntl.h>
#include <unistd.h>

#include <caf/send.hpp>
#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/net.h>
#include <pistache/peer.h>

#include "common/log.hpp"
#include "http/event_stream.hpp"
#include "http/exchange.hpp"
#include "http/pistache_headers.hpp"

namespace cm::http {

namespace {

using namespace Pistache;

void write_response(Http::ResponseWriter& writer, response res, bool keep_alive) {
  // Pistache 0.0.5 answers "Connection: Close" to any request without a
  // Connection header, even HTTP/1.1, whose default is keep-alive; and its
  // typed add() cannot replace that value. Removing it restores the default.
  if (keep_alive && writer.headers().has<Http::Header::Connection>())
    writer.headers().remove<Http::Header::Connection>();
  for (auto& [name, value] : res.headers)
    writer.headers().add(std::make_shared<named_header>(name, value));
  writer.headers().add(std::make_shared<named_header>("Cache-Control", "no-store"));
  writer.send(static_cast<Http::Code>(res.status), res.body,
              Http::Mime::MediaType::fromString(res.content_type));
}

/// Routes that answer with a stream instead of a response.
bool streaming_route(const request& req) {
  return req.method == "GET" && req.path == "/api/v1/events";
}

/// A duplicate of the connection's socket, closed unless a stream takes it.
struct socket_copy {
  int fd = -1;
  ~socket_copy() {
    if (fd >= 0)
      ::close(fd);
  }
};

/// Lets a streaming route take the connection over (http/event_stream.hpp
/// explains why the socket is duplicated). Runs on the reactor thread, where
/// the peer's descriptor is certainly still this connection's, and where
/// the peer may be touched: marked idle, Pistache will not answer it with
/// 408 after its header timeout, and only closes its own descriptor after
/// the keep-alive timeout, which leaves our duplicate (and the stream)
/// open. Should the route answer normally instead, that answer marks the
/// peer idle all the same.
exchange::stream_opener stream_opener_for(Http::ResponseWriter& writer) {
  auto peer = writer.peer();
  auto copy = std::make_shared<socket_copy>();
  copy->fd = ::fcntl(peer->fd(), F_DUPFD_CLOEXEC, 0);
  if (copy->fd < 0)
    return {};
  ::fcntl(copy->fd, F_SETFL, ::fcntl(copy->fd, F_GETFL) | O_NONBLOCK);
  peer->setIdle(true);
  return [copy]() -> std::shared_ptr<event_stream> {
    if (copy->fd < 0)
      return nullptr;
    auto fd = copy->fd;
    copy->fd = -1;
    return std::make_shared<event_stream>(fd);
  };
}

class handler : public Http::Handler {
public:
  HTTP_PROTOTYPE(handler)

  handler(std::shared_ptr<const std::vector<front_actor>> fronts, size_t max_body)
    : fronts_(std::move(fronts)), max_body_(max_body) {}

  void onRequest(const Http::Request& pistache_req, Http::ResponseWriter pistache_writer) override {
    // Pistache would put e.what() into a 500 body; nothing may escape here.
    auto writer = std::make_shared<Http::ResponseWriter>(std::move(pistache_writer));
    try {
      request req;
      req.request_id = new_request_id();
      req.method = Http::methodString(pistache_req.method());
      req.path = pistache_req.resource();
      req.remote_address = pistache_req.address().host();
      for (auto& [name, raw] : pistache_req.headers().rawList()) {
        std::string lower = name;
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char c) { return std::tolower(c); });
        req.headers[lower] = raw.value();
      }
      // HTTP/1.1 keeps the connection unless the client asked to close it.
      auto connection = req.header("connection");
      std::transform(connection.begin(), connection.end(), connection.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      bool keep_alive = pistache_req.version() == Http::Version::Http11
                          ? connection.find("close") == std::string::npos
                          : connection.find("keep-alive") != std::string::npos;
      auto write = [writer, keep_alive](response res) {
        write_response(*writer, std::move(res), keep_alive);
      };
      if (pistache_req.body().size() > max_body_) {
        exchange ex{std::move(req), write};
        ex.reply_error(ec::payload_too_large, "request body exceeds the size limit");
        return;
      }
      std::map<std::string, std::string> query;
      bool query_ok = true;
      const auto& q = pistache_req.query();
      for (auto it = q.parameters_begin(); it != q.parameters_end(); ++it) {
        std::string key, value;
        if (!percent_decode(it->first, key) || !percent_decode(it->second, value)) {
          query_ok = false;
          break;
        }
        query[key] = value;
      }
      req.query = std::move(query);
      req.body = pistache_req.body();
      exchange::stream_opener opener;
      if (streaming_route(req))
        opener = stream_opener_for(*writer);
      auto ex = std::make_shared<exchange>(std::move(req), write, std::move(opener));
      if (!query_ok) {
        ex->reply_error(ec::bad_request, "malformed query string");
        return;
      }
      auto index = next_.fetch_add(1, std::memory_order_relaxed) % fronts_->size();
      caf::anon_send((*fronts_)[index], http_atom_v, std::move(ex));
    } catch (const std::exception&) {
      log::error("http", "failed to accept a request");
      write_response(*writer, error_response(ec::internal, "internal error"), false);
    }
  }

private:
  std::shared_ptr<const std::vector<front_actor>> fronts_;
  size_t max_body_;
  static inline std::atomic<size_t> next_{0};
};

} // namespace

server::server(const config::listen_config& cfg, std::vector<front_actor> fronts)
  : cfg_(cfg), fronts_(std::move(fronts)) {}

server::~server() { stop(); }

void server::start() {
  Address addr(cfg_.address, Port(cfg_.port));
  endpoint_ = std::make_shared<Http::Endpoint>(addr);
  // Pistache's own limit covers request line, headers and body; our JSON
  // 413 answers bodies over max_request_bytes below that.
  auto opts = Http::Endpoint::options()
                .threads(cfg_.threads)
                .flags(Tcp::Options::ReuseAddr)
                .maxRequestSize(cfg_.max_request_bytes + 64 * 1024)
                // Pistache counts these from the end of parsing until the
                // response, so they must outlast the slowest reply we send.
                .headerTimeout(cfg_.request_timeout + std::chrono::seconds(5))
                .bodyTimeout(cfg_.request_timeout + std::chrono::seconds(5));
  endpoint_->init(opts);
  endpoint_->setHandler(Http::make_handler<handler>(
    std::make_shared<const std::vector<front_actor>>(fronts_), cfg_.max_request_bytes));
  endpoint_->serveThreaded();
  running_ = true;
  log::info("http", "listening", {{"address", cfg_.address}, {"port", port()}});
}

void server::stop() {
  if (running_ && endpoint_) {
    endpoint_->shutdown();
    running_ = false;
  }
}

uint16_t server::port() const {
  return endpoint_ ? static_cast<uint16_t>(endpoint_->getPort()) : 0;
}

} // namespace cm::http

#include "http/server.hpp"

#include <algorithm>
#include <cctype>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/send.hpp>
#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/net.h>
#include <pistache/peer.h>

#include "common/log.hpp"
#include "http/answer_writer.hpp"
#include "http/body_stream.hpp"
#include "http/event_stream.hpp"
#include "http/exchange.hpp"
#include "http/request_guard.hpp"
#include "http/response_order.hpp"
#include "http/router.hpp"

namespace cm::http {

namespace {

using namespace Pistache;

/// True on a Pistache reactor thread while our handler runs: an answer
/// written there (a refusal, a malformed query, or answers queued behind
/// one) must never wait for a slow client, or every connection of that
/// reactor would wait with it.
thread_local bool on_reactor_thread = false;

/// How long a writer on another thread waits for a client that is not
/// reading its answers (only once its socket buffer is full; answers are
/// small), within the connection's budget (answer_writer.hpp): then the
/// connection is ended.
constexpr std::chrono::milliseconds answer_patience{500};

/// Writes `res` through the connection's own socket (answer_writer.hpp
/// says why not through Pistache). Marks the peer idle first, as
/// Pistache's own send does, so its timeouts treat the connection as
/// answered.
void write_response(answer_socket& socket, const std::weak_ptr<Tcp::Peer>& peer,
                    std::string_view version, response res, bool keep_alive) {
  if (auto p = peer.lock())
    p->setIdle(true);
  auto headers = std::move(res.headers);
  if (res.status != 204)
    headers.emplace_back("Content-Type", res.content_type);
  headers.emplace_back("Cache-Control", "no-store");
  // HTTP/1.1 keeps the connection by default; only a close is announced.
  if (!keep_alive)
    headers.emplace_back("Connection", "Close");
  auto code = static_cast<Http::Code>(res.status);
  auto patience = on_reactor_thread ? std::chrono::milliseconds(0) : answer_patience;
  // One buffer per thread, reused for every answer it writes.
  thread_local std::string wire;
  serialize_response_into(wire, version, res.status, Http::codeString(code), headers, res.body);
  socket.write(wire, patience);
  if (wire.capacity() > 64 * 1024)
    std::string{}.swap(wire); // a large answer does not pin its buffer
  // Announced, so done: the client reads the answer, then end of stream.
  if (!keep_alive)
    socket.finish();
}

/// A duplicate of the connection's socket, closed unless a stream takes it.
struct socket_copy {
  int fd = -1;
  ~socket_copy() {
    if (fd >= 0)
      ::close(fd);
  }
};

/// What we keep per connection: the guard in front of Pistache's parser and
/// the order of its answers. Stored in the peer's own data, so it lives
/// exactly as long as the connection, however Pistache drops it (its
/// timeouts remove peers without calling onDisconnection). Touched only on
/// the peer's reactor thread; `order` is shared with the writing threads.
struct connection_state {
  connection_state(const guard_limits& limits, int fd)
    : guard(limits), socket(std::make_shared<answer_socket>(fd)) {}
  request_guard guard;
  /// Our duplicate of the connection's socket, taken on the reactor thread
  /// when the first bytes arrived, so it is certainly this connection's.
  std::shared_ptr<answer_socket> socket;
  std::shared_ptr<response_order> order = std::make_shared<response_order>();
  /// Refused: the answer is on its way, later input is dropped.
  bool closed = false;
  /// The next bytes parsed start a request (its whole head: the guard
  /// forwards a head in one piece).
  bool at_head = true;
  /// The request target of the request being parsed, kept for the proxy
  /// (request::raw_target); Pistache keeps only a decoded, unordered query.
  std::string target;
  /// Another duplicate of the socket, taken on the reactor thread at the
  /// connection's first proxied request and never closed while a starter
  /// holds it: each streamed answer duplicates it again, on whatever thread
  /// starts the stream, without waiting for `socket`'s writers.
  std::shared_ptr<socket_copy> stream_source;
};

/// Requests whose raw target is kept (request::raw_target).
constexpr std::string_view raw_target_prefix = "/api/proxy/";

constexpr const char* connection_state_key = "cm.connection";

} // namespace

/// Defined in connection_state_block.cpp, which says why.
void free_connection_state_block(void* block);

namespace {

/// Allocates a connection state and its reference count in one block,
/// freed by free_connection_state_block.
template <class T>
struct connection_state_allocator {
  using value_type = T;
  connection_state_allocator() = default;
  template <class U>
  connection_state_allocator(const connection_state_allocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
  void deallocate(T* p, size_t) { free_connection_state_block(p); }
  template <class U>
  bool operator==(const connection_state_allocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const connection_state_allocator<U>&) const { return false; }
};

/// Requests one connection may have unanswered at once; their responses
/// are held in order until the earliest is written.
constexpr uint64_t max_pipelined_requests = 32;

/// Routes that answer with a stream instead of a response. `req.path` is
/// normalized (normalize_path), as the router matches it: compared raw,
/// "/api/v1/events/" reached the events route without a stream opener.
bool streaming_route(const request& req) {
  return req.method == "GET" && req.path == "/api/v1/events";
}

/// Lets a streaming route take the connection over (http/event_stream.hpp
/// explains why the socket is duplicated). Runs on the reactor thread, where
/// the peer's descriptor is certainly still this connection's, and where
/// the peer may be touched: marked idle, Pistache will not answer it with
/// 408 after its header timeout, and only closes its own descriptor after
/// the keep-alive timeout, which leaves our duplicate (and the stream)
/// open. Should the route answer normally instead, that answer marks the
/// peer idle all the same.
/// The stream answers outside the ordered writers, so taking the socket
/// gives up the request's place in line.
exchange::stream_opener stream_opener_for(Http::ResponseWriter& writer,
                                          std::shared_ptr<response_order> order,
                                          uint64_t ticket) {
  auto peer = writer.peer();
  auto copy = std::make_shared<socket_copy>();
  copy->fd = ::fcntl(peer->fd(), F_DUPFD_CLOEXEC, 0);
  if (copy->fd < 0)
    return {};
  ::fcntl(copy->fd, F_SETFL, ::fcntl(copy->fd, F_GETFL) | O_NONBLOCK);
  peer->setIdle(true);
  return [copy, order, ticket]() -> std::shared_ptr<event_stream> {
    if (copy->fd < 0)
      return nullptr;
    auto fd = copy->fd;
    copy->fd = -1;
    order->deliver(ticket, nullptr);
    return std::make_shared<event_stream>(fd);
  };
}

/// Lets a route answer with a body that follows its head (the proxy's
/// large answers, http/body_stream.hpp), in the request's place in line:
/// the stream holds the line until its last byte is out.
/// HTTP/1.1 only: an HTTP/1.0 body would end by the close, where a body
/// cut short (the size cap, a provider failing mid-way) looks complete, so
/// those callers get answers whole, within the proxy's cap.
exchange::body_starter body_starter_for(std::shared_ptr<socket_copy> source,
                                        std::weak_ptr<Tcp::Peer> peer, std::string version,
                                        bool keep_alive, std::shared_ptr<response_order> order,
                                        uint64_t ticket,
                                        std::shared_ptr<body_stream_writer> writer) {
  return [=](const response& head, body_stream::options opts) -> std::shared_ptr<body_stream> {
    int fd = ::fcntl(source->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
      return nullptr;
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    opts.keep_alive = keep_alive;
    auto headers = head.headers;
    headers.emplace_back("Content-Type", head.content_type);
    headers.emplace_back("Cache-Control", "no-store");
    headers.emplace_back("Transfer-Encoding", "chunked");
    if (!opts.keep_alive)
      headers.emplace_back("Connection", "close");
    auto bytes = serialize_head(version, head.status,
                                Http::codeString(static_cast<Http::Code>(head.status)), headers);
    auto stream = writer->open(fd, std::move(bytes), opts, [order, ticket] {
      order->release(ticket);
    });
    order->deliver_held(ticket, [stream, peer, order, ticket] {
      // Answered, as far as Pistache's timeouts go (as write_response).
      if (auto p = peer.lock())
        p->setIdle(true);
      if (!stream->turn_came())
        order->release(ticket);
    });
    return stream;
  };
}

class handler : public Http::Handler {
public:
  HTTP_PROTOTYPE(handler)

  handler(std::shared_ptr<const std::vector<front_actor>> fronts, guard_limits limits,
          std::shared_ptr<fast_lane> lane, std::shared_ptr<body_stream_writer> streams)
    : fronts_(std::move(fronts)), limits_(limits), lane_(std::move(lane)),
      streams_(std::move(streams)) {}

  /// Every byte from a client arrives here first (Pistache's own onInput is
  /// replaced, not called): the guard lets through validated requests one
  /// at a time, Pistache's parser parses them, and any refusal or parse
  /// failure is answered with our JSON error, after the answers to earlier
  /// requests, and closes the connection.
  void onInput(const char* buffer, size_t len, const std::shared_ptr<Tcp::Peer>& peer) override {
    std::shared_ptr<connection_state> state;
    // Named once, so operators (top -H) and profiles can tell the threads
    // that read requests from the actors' and the log writer's.
    thread_local bool named = (::prctl(PR_SET_NAME, "cm.http"), true);
    (void)named;
    on_reactor_thread = true;
    struct leave_reactor {
      ~leave_reactor() { on_reactor_thread = false; }
    } leave;
    // An exception here would end the reactor thread (Pistache's own
    // onInput caught everything); none may escape.
    try {
      state = state_of(peer);
      if (!state->socket->valid()) {
        // No duplicate (out of descriptors): no answer could be written,
        // so nothing is carried out; the client sees the end at once.
        state->closed = true;
        peer->setIdle(true);
        ::shutdown(peer->fd(), SHUT_RDWR);
        return;
      }
      if (state->closed)
        return;
      std::optional<refusal> failed;
      auto refused = state->guard.feed(
        std::string_view(buffer, len), std::chrono::steady_clock::now(),
        [&](std::string_view bytes, bool ends_request) {
          if (!failed)
            failed = parse(bytes, ends_request, peer, *state);
        });
      if (failed)
        refused = std::move(failed);
      if (refused)
        refuse(peer, *state, *refused);
    } catch (const std::exception&) {
      log::error("http", "failed to read a request");
      if (state)
        state->closed = true;
      // Idle: Pistache's timeout then drops the peer instead of trying a
      // 408 on a socket that no longer sends.
      peer->setIdle(true);
      ::shutdown(peer->fd(), SHUT_WR);
    }
  }

  void onRequest(const Http::Request& pistache_req, Http::ResponseWriter pistache_writer) override {
    auto peer = pistache_writer.peer();
    auto state = state_of(peer);
    auto order = state->order;
    auto socket = state->socket;
    std::weak_ptr<Tcp::Peer> weak = peer;
    auto ticket = order->take_ticket();
    std::string version =
      pistache_req.version() == Http::Version::Http11 ? "HTTP/1.1" : "HTTP/1.0";
    // Pistache would put e.what() into a 500 body; nothing may escape here.
    try {
      request req;
      req.method = Http::methodString(pistache_req.method());
      req.path = normalize_path(pistache_req.resource());
      req.raw_target = std::move(state->target);
      state->target.clear();
      req.remote_address = pistache_req.address().host();
      const auto& raw_headers = pistache_req.headers().rawList();
      req.headers.reserve(raw_headers.size());
      for (auto& [name, raw] : raw_headers)
        req.headers.emplace_back(name, raw.value());
      // A caller's own request id (or its trace) is kept, so its logs and
      // ours can be joined; anything malformed gets a fresh id instead.
      req.request_id = accepted_request_id(req.header("x-request-id"));
      if (req.request_id.empty())
        req.request_id = new_request_id();
      req.trace_id = trace_id_of(req.header("traceparent"));
      // HTTP/1.1 keeps the connection unless the client asked to close it.
      auto connection = req.header("connection");
      std::transform(connection.begin(), connection.end(), connection.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      bool keep_alive = pistache_req.version() == Http::Version::Http11
                          ? connection.find("close") == std::string::npos
                          : connection.find("keep-alive") != std::string::npos;
      auto write = [socket, weak, version, keep_alive, order, ticket](response res) {
        order->deliver(ticket, [=, res = std::move(res)]() mutable {
          write_response(*socket, weak, version, std::move(res), keep_alive);
        });
      };
      if (pistache_req.body().size() > limits_.max_body_bytes) {
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
      // Answers to browsers carry CORS headers, which only the front adds.
      if (lane_ && query_ok && req.header("origin").empty()) {
        response res;
        const char* caller = "anonymous";
        if (lane_->answer(req, res, caller)) {
          res.headers.emplace_back("X-Request-Id", req.request_id);
          request_done(req, res, caller, lane_->route());
          write(std::move(res));
          return;
        }
      }
      exchange::stream_opener opener;
      if (streaming_route(req))
        opener = stream_opener_for(pistache_writer, order, ticket);
      exchange::body_starter starter;
      if (!req.raw_target.empty() && version == "HTTP/1.1") {
        if (!state->stream_source) {
          auto copy = std::make_shared<socket_copy>();
          copy->fd = ::fcntl(peer->fd(), F_DUPFD_CLOEXEC, 0);
          if (copy->fd >= 0)
            state->stream_source = std::move(copy);
        }
        if (state->stream_source)
          starter = body_starter_for(state->stream_source, weak, version, keep_alive, order,
                                     ticket, streams_);
      }
      auto ex =
        std::make_shared<exchange>(std::move(req), write, std::move(opener), std::move(starter));
      if (!query_ok) {
        ex->reply_error(ec::bad_request, "malformed query string");
        return;
      }
      if (fronts_->empty()) { // a listener that serves its fast lane only
        ex->reply_error(ec::not_found, "no such route");
        return;
      }
      auto index = next_.fetch_add(1, std::memory_order_relaxed) % fronts_->size();
      caf::anon_send((*fronts_)[index], http_atom_v, std::move(ex));
    } catch (const std::exception&) {
      log::error("http", "failed to accept a request");
      order->deliver(ticket, [socket, weak, version] {
        write_response(*socket, weak, version, error_response(ec::internal, "internal error"),
                       false);
      });
    }
  }

private:
  std::shared_ptr<connection_state> state_of(const std::shared_ptr<Tcp::Peer>& peer) {
    auto state = std::static_pointer_cast<connection_state>(peer->tryGetData(connection_state_key));
    if (!state) {
      state = std::allocate_shared<connection_state>(connection_state_allocator<connection_state>{},
                                                     limits_, peer->fd());
      peer->putData(connection_state_key, state);
    }
    return state;
  }

  /// Feeds one request's bytes (all or part, as the guard forwards them) to
  /// Pistache's parser and hands a complete request to onRequest. The guard
  /// framed the request already, so the parser must finish exactly where
  /// the guard says it ends; anything else is refused, never guessed.
  std::optional<refusal> parse(std::string_view bytes, bool ends_request,
                               const std::shared_ptr<Tcp::Peer>& peer, connection_state& state) {
    if (state.at_head) {
      // "METHOD SP target SP version": the guard validated the line.
      state.target.clear();
      auto line = bytes.substr(0, bytes.find('\r'));
      auto sp1 = line.find(' ');
      auto sp2 = line.find(' ', sp1 == std::string_view::npos ? line.size() : sp1 + 1);
      if (sp1 != std::string_view::npos && sp2 != std::string_view::npos) {
        auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
        if (target.substr(0, raw_target_prefix.size()) == raw_target_prefix)
          state.target = std::string(target);
      }
      state.at_head = false;
    }
    if (ends_request)
      state.at_head = true;
    auto parser = Http::Handler::getParser(peer);
    auto parsed = Http::Private::State::Again;
    try {
      if (!parser->feed(bytes.data(), bytes.size())) {
        parser->reset();
        return refusal{ec::payload_too_large, "request exceeds the size limit"};
      }
      parsed = parser->parse();
    } catch (const std::exception&) {
      // Pistache's messages (and any exception text) stay out of answers.
      parser->reset();
      return refusal{ec::bad_request, "malformed request"};
    }
    bool done = parsed == Http::Private::State::Done;
    if (done != ends_request) {
      parser->reset();
      return refusal{ec::bad_request, "malformed request framing"};
    }
    if (!done)
      return std::nullopt;
    if (state.order->outstanding() >= max_pipelined_requests) {
      parser->reset();
      return refusal{ec::rate_limited, "too many requests in flight on one connection"};
    }
    // What Pistache's own onInput does with a complete request.
    auto& request = parser->request;
    Http::ResponseWriter response(request.version(), transport(), this, peer);
    request.copyAddress(peer->address());
    auto connection = request.headers().tryGet<Http::Header::Connection>();
    response.headers().add<Http::Header::Connection>(
      connection ? connection->control() : Http::ConnectionControl::Close);
    peer->setIdle(false);
    onRequest(request, std::move(response));
    parser->reset();
    return std::nullopt;
  }

  /// Answers a refused request in its place in line, with Connection:
  /// close, then ends the connection; later input from it is dropped.
  void refuse(const std::shared_ptr<Tcp::Peer>& peer, connection_state& state,
              const refusal& why) {
    state.closed = true;
    auto order = state.order;
    auto ticket = order->take_ticket();
    auto socket = state.socket;
    std::weak_ptr<Tcp::Peer> weak = peer;
    request req;
    req.request_id = new_request_id();
    req.remote_address = peer->address().host();
    log::warn("http", "request refused",
              {{"request_id", req.request_id}, {"status", http_status(why.code)},
               {"reason", why.message}});
    exchange ex{std::move(req), [order, ticket, socket, weak](response res) {
                  order->deliver(ticket, [socket, weak, res = std::move(res)]() mutable {
                    write_response(*socket, weak, "HTTP/1.1", std::move(res), false);
                  });
                }};
    ex.reply_error(why.code, why.message);
  }

  std::shared_ptr<const std::vector<front_actor>> fronts_;
  guard_limits limits_;
  std::shared_ptr<fast_lane> lane_;
  std::shared_ptr<body_stream_writer> streams_;
  static inline std::atomic<size_t> next_{0};
};

} // namespace

server::server(const config::listen_config& cfg, std::vector<front_actor> fronts,
               std::shared_ptr<fast_lane> lane)
  : cfg_(cfg), fronts_(std::move(fronts)), lane_(std::move(lane)) {}

server::~server() { stop(); }

void server::start() {
  Address addr(cfg_.address, Port(cfg_.port));
  endpoint_ = std::make_shared<Http::Endpoint>(addr);
  // Pistache's own limit covers request line, headers and body of one
  // request; the guard refuses anything larger before Pistache sees it.
  auto opts = Http::Endpoint::options()
                .threads(cfg_.threads)
                .flags(Tcp::Options::ReuseAddr)
                .maxRequestSize(cfg_.max_request_bytes + cfg_.max_header_bytes)
                // Pistache counts these from the end of parsing until the
                // response, so they must outlast the slowest reply we send.
                .headerTimeout(cfg_.request_timeout + std::chrono::seconds(5))
                .bodyTimeout(cfg_.request_timeout + std::chrono::seconds(5))
                // Pistache drops an idle peer after this; a peer answered
                // once is idle while a pipelined request still waits, whose
                // answer must come first.
                .keepaliveTimeout(std::max<std::chrono::milliseconds>(
                  std::chrono::seconds(300), cfg_.request_timeout + std::chrono::seconds(5)));
  endpoint_->init(opts);
  guard_limits limits;
  limits.max_head_bytes = cfg_.max_header_bytes;
  limits.max_body_bytes = cfg_.max_request_bytes;
  limits.head_timeout = cfg_.header_timeout;
  limits.body_timeout = cfg_.body_timeout;
  endpoint_->setHandler(
    Http::make_handler<handler>(std::make_shared<const std::vector<front_actor>>(fronts_), limits,
                                lane_, std::make_shared<body_stream_writer>()));
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

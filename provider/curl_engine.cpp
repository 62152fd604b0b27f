#include "provider/curl_engine.hpp"

#include <pthread.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <set>

#include <curl/curl.h>

#include "common/log.hpp"

namespace cm {

const char* to_string(transport_error e) {
  switch (e) {
    case transport_error::none: return "none";
    case transport_error::connect_failed: return "connect_failed";
    case transport_error::timeout_before_send: return "timeout_before_send";
    case transport_error::timeout_after_send: return "timeout_after_send";
    case transport_error::network: return "network";
    case transport_error::too_large: return "too_large";
    case transport_error::cancelled: return "cancelled";
  }
  return "network";
}

namespace {

/// Everything one transfer owns; freed when it completes.
struct transfer {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  outbound_request req;
  outbound_response res;
  curl_engine::callback done;
  /// Set for submit_streaming: takes the body instead of `res.body`.
  std::shared_ptr<stream_consumer> consumer;
  uint64_t id = 0;
  bool overflow = false;
  /// The consumer stopped the transfer.
  bool stopped = false;
  ~transfer() {
    if (headers)
      curl_slist_free_all(headers);
    if (easy)
      curl_easy_cleanup(easy);
  }
};

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<transfer*>(user);
  auto bytes = size * n;
  if (t->consumer) {
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    t->res.status = status;
    switch (t->consumer->on_body(t->res, std::string_view(data, bytes))) {
      case stream_consumer::verdict::taken: return bytes;
      case stream_consumer::verdict::pause: return CURL_WRITEFUNC_PAUSE;
      case stream_consumer::verdict::stop: break;
    }
    t->stopped = true;
    return 0; // aborts the transfer
  }
  if (static_cast<int64_t>(t->res.body.size() + bytes) > t->req.max_response_bytes) {
    t->overflow = true;
    return 0; // aborts the transfer
  }
  t->res.body.append(data, bytes);
  return bytes;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<transfer*>(user);
  std::string line(data, size * n);
  auto colon = line.find(':');
  if (colon != std::string::npos && t->res.headers.size() < 100) {
    auto name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    auto value = line.substr(colon + 1);
    auto first = value.find_first_not_of(" \t");
    auto last = value.find_last_not_of(" \t\r\n");
    t->res.headers[name] = first == std::string::npos ? "" : value.substr(first, last - first + 1);
  }
  return size * n;
}

void finish(transfer* t, CURLcode code) {
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  t->res.status = status;
  long sent = 0;
  curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &sent);
  switch (code) {
    case CURLE_OK: t->res.error = transport_error::none; break;
    case CURLE_WRITE_ERROR:
      t->res.error = t->overflow  ? transport_error::too_large
                     : t->stopped ? transport_error::cancelled
                                  : transport_error::network;
      break;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      t->res.error = transport_error::connect_failed;
      break;
    case CURLE_OPERATION_TIMEDOUT:
      t->res.error = sent > 0 ? transport_error::timeout_after_send
                              : transport_error::timeout_before_send;
      break;
    default:
      t->res.error = sent > 0 ? transport_error::network : transport_error::connect_failed;
      break;
  }
  if (t->res.error != transport_error::none)
    t->res.body.clear();
}

transfer* make_transfer(outbound_request req, curl_engine::callback done,
                        std::shared_ptr<stream_consumer> consumer, uint64_t id) {
  auto t = std::make_unique<transfer>();
  t->req = std::move(req);
  t->done = std::move(done);
  t->consumer = std::move(consumer);
  t->id = id;
  t->easy = curl_easy_init();
  if (t->easy == nullptr)
    return nullptr;
  auto* e = t->easy;
  curl_easy_setopt(e, CURLOPT_URL, t->req.url.c_str());
  curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  // Only plain web protocols, no redirects: a provider URL never bounces
  // our credentials elsewhere.
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  // The path goes out as built: libcurl would otherwise resolve "." and
  // ".." segments itself and send the request (with its code, verifier or
  // client secret) to another path than the URL names. Template values
  // cannot hold such segments (config/template_value.hpp); this is the
  // second line, should a URL ever carry one.
  curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(t->req.timeout_ms));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::min<int64_t>(t->req.timeout_ms, 5000)));
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
  curl_easy_setopt(e, CURLOPT_USERAGENT, "connector-manager");
  // A streamed answer's back-pressure is TCP's: a paused HTTP/1.1 transfer
  // stops reading its socket and the provider's window closes. Over
  // HTTP/2, libcurl would keep taking what the provider's (large) stream
  // window allows into memory while paused, on a connection other calls
  // share.
  if (t->consumer)
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  for (auto& [name, value] : t->req.headers)
    t->headers = curl_slist_append(t->headers, (name + ": " + value).c_str());
  // No "Expect: 100-continue" round trip.
  t->headers = curl_slist_append(t->headers, "Expect:");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
  if (t->req.method == "GET") {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (t->req.method == "HEAD") {
    // No body comes: without this libcurl waits for the one the
    // Content-Length announces.
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    if (t->req.method != "POST")
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->req.method.c_str());
    if (!t->req.body.empty() || t->req.method == "POST") {
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, static_cast<long>(t->req.body.size()));
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->req.body.c_str());
    }
  }
  return t.release();
}

} // namespace

namespace {

/// Idle connections to providers kept open (see the constructor).
constexpr long max_idle_connections = 256;

} // namespace

curl_engine::curl_engine(const char* thread_name) {
  resume_handle_->engine = this;
  static std::once_flag global_init;
  std::call_once(global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  multi_ = curl_multi_init();
  // Idle connections kept for reuse. libcurl's default is four per easy
  // handle in the multi handle at the time, and each request here is an
  // easy handle of its own, removed when done: between bursts the cache
  // shrank to nothing and every proxied call (and every refresh of a
  // storm) paid a new TCP (and TLS) handshake.
  curl_multi_setopt(static_cast<CURLM*>(multi_), CURLMOPT_MAXCONNECTS, max_idle_connections);
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), thread_name);
}

curl_engine::~curl_engine() {
  {
    // A resumer called from now on does nothing; one running now ends first.
    std::lock_guard<std::mutex> guard{resume_handle_->mutex};
    resume_handle_->engine = nullptr;
  }
  stopping_ = true;
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
  thread_.join();
  curl_multi_cleanup(static_cast<CURLM*>(multi_));
}

void curl_engine::submit(outbound_request req, callback done) {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    queue_.push_back({std::move(req), std::move(done), nullptr, 0});
  }
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
}

uint64_t curl_engine::submit_streaming(outbound_request req,
                                       std::shared_ptr<stream_consumer> consumer) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    id = ++next_id_;
    consumer->transfer_id = id;
    queue_.push_back({std::move(req), {}, std::move(consumer), id});
  }
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
  return id;
}

std::function<void()> curl_engine::resumer(uint64_t id) {
  return [handle = resume_handle_, id] {
    std::lock_guard<std::mutex> guard{handle->mutex};
    if (handle->engine)
      handle->engine->resume(id);
  };
}

void curl_engine::resume(uint64_t id) {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    resumed_.push_back(id);
  }
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
}

namespace {

/// Hands a finished transfer's answer to whoever waits for it.
void complete(std::unique_ptr<transfer> owned) {
  try {
    if (owned->consumer)
      owned->consumer->on_done(std::move(owned->res));
    else
      owned->done(std::move(owned->res));
  } catch (const std::exception&) {
    log::error("provider", "completion callback failed");
  }
}

} // namespace

void curl_engine::run() {
  auto* multi = static_cast<CURLM*>(multi_);
  int running = 0;
  std::set<transfer*> in_flight;
  /// The streaming transfers, by id, for `resume`.
  std::map<uint64_t, transfer*> streaming;
  while (!stopping_) {
    std::deque<pending> fresh;
    std::vector<uint64_t> resumed;
    {
      std::lock_guard<std::mutex> guard{mutex_};
      fresh.swap(queue_);
      resumed.swap(resumed_);
    }
    for (auto& p : fresh) {
      auto* t = make_transfer(std::move(p.req), p.done, p.consumer, p.id);
      if (t == nullptr) {
        outbound_response failed;
        failed.error = transport_error::connect_failed;
        if (p.consumer)
          p.consumer->on_done(std::move(failed));
        else
          p.done(std::move(failed));
        continue;
      }
      curl_multi_add_handle(multi, t->easy);
      in_flight.insert(t);
      if (t->consumer)
        streaming[t->id] = t;
    }
    // Unpausing may hand the consumer its held bytes at once, here.
    for (auto id : resumed)
      if (auto it = streaming.find(id); it != streaming.end())
        curl_easy_pause(it->second->easy, CURLPAUSE_CONT);
    curl_multi_perform(multi, &running);
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg != CURLMSG_DONE)
        continue;
      transfer* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
      curl_multi_remove_handle(multi, msg->easy_handle);
      in_flight.erase(t);
      streaming.erase(t->id);
      finish(t, msg->data.result);
      complete(std::unique_ptr<transfer>{t});
    }
    curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
  // Shut down: fail whatever is queued or in flight.
  std::deque<pending> left;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    left.swap(queue_);
  }
  for (auto& p : left) {
    outbound_response r;
    r.error = transport_error::cancelled;
    if (p.consumer)
      p.consumer->on_done(std::move(r));
    else
      p.done(std::move(r));
  }
  for (auto* t : in_flight) {
    curl_multi_remove_handle(multi, t->easy);
    std::unique_ptr<transfer> owned{t};
    owned->res.error = transport_error::cancelled;
    owned->res.body.clear();
    complete(std::move(owned));
  }
}

} // namespace cm

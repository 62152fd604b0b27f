#include "http/exchange.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <random>
#include <strings.h>

#include <sodium.h>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "http/event_stream.hpp"

namespace cm::http {

std::string request::header(std::string_view name) const {
  for (auto& [have, value] : headers)
    if (have.size() == name.size() && ::strncasecmp(have.data(), name.data(), name.size()) == 0)
      return value;
  return {};
}

std::optional<std::string> request::query_param(const std::string& name) const {
  auto it = query.find(name);
  if (it == query.end())
    return std::nullopt;
  return it->second;
}

response json_response(int status, const nlohmann::json& body) {
  response res;
  res.status = status;
  // Invalid UTF-8 from a provider must not turn into an exception here.
  res.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return res;
}

response error_response(ec code, const std::string& message) {
  return error_response(code, message, 1);
}

response error_response(ec code, const std::string& message, int64_t retry_after_s) {
  auto res = json_response(http_status(code),
                           {{"error", {{"code", to_string(code)}, {"message", message}}}});
  res.error_code = to_string(code);
  // RFC 9110 §11.6.1: a 401 names the scheme that would be accepted.
  if (code == ec::unauthenticated)
    res.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"connector-manager\"");
  if (code == ec::unavailable || code == ec::rate_limited)
    res.headers.emplace_back("Retry-After", std::to_string(std::max<int64_t>(retry_after_s, 1)));
  return res;
}

response error_response(const caf::error& err) {
  return error_response(code_of(err), message_of(err));
}

exchange::exchange(request req, writer write, stream_opener open_stream, body_starter start_body)
  : req_(std::move(req)), write_(std::move(write)), open_stream_(std::move(open_stream)),
    start_body_(std::move(start_body)) {}

std::shared_ptr<body_stream> exchange::start_body(response head, body_stream::options opts) {
  if (!start_body_)
    return nullptr;
  bool expected = false;
  if (!replied_.compare_exchange_strong(expected, true))
    return nullptr;
  head.body.clear();
  head.headers.emplace_back("X-Request-Id", req_.request_id);
  for (auto& header : extra_headers_)
    head.headers.push_back(header);
  // Logged and counted when the head goes: its status is the answer's.
  request_done(req_, head, caller_, route_);
  auto stream = start_body_(head, opts);
  if (!stream) {
    try {
      write_(error_response(ec::internal, "cannot stream the answer"));
    } catch (const std::exception&) {
    }
  }
  return stream;
}

std::shared_ptr<event_stream>
exchange::start_stream(const std::vector<std::pair<std::string, std::string>>& headers) {
  if (!open_stream_)
    return nullptr;
  // Claim the one answer first: the socket is taken only by its owner.
  bool expected = false;
  if (!replied_.compare_exchange_strong(expected, true))
    return nullptr;
  auto stream = open_stream_();
  if (!stream) {
    write_(error_response(ec::internal, "cannot stream"));
    return nullptr;
  }
  std::string head = "HTTP/1.1 200 OK\r\nConnection: close\r\nCache-Control: no-store\r\n"
                     "X-Request-Id: " + req_.request_id + "\r\n";
  for (auto& [name, value] : extra_headers_)
    head += name + ": " + value + "\r\n";
  for (auto& [name, value] : headers)
    head += name + ": " + value + "\r\n";
  head += "\r\n";
  log::info("http", "stream started",
            {{"request_id", req_.request_id}, {"method", req_.method}, {"path", req_.path}});
  if (!stream->write(head))
    return nullptr;
  return stream;
}

exchange::~exchange() {
  if (!replied_.load()) {
    log::error("http", "request finished without a response",
               {{"request_id", req_.request_id}, {"path", req_.path}});
    reply(error_response(ec::internal, "internal error"));
  }
}

bool exchange::reply(response res) {
  bool expected = false;
  if (!replied_.compare_exchange_strong(expected, true))
    return false;
  res.headers.emplace_back("X-Request-Id", req_.request_id);
  for (auto& header : extra_headers_)
    res.headers.push_back(header);
  request_done(req_, res, caller_, route_);
  try {
    write_(std::move(res));
  } catch (const std::exception&) {
    log::warn("http", "could not write response", {{"request_id", req_.request_id}});
  }
  return true;
}

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%') {
      if (i + 2 >= in.size() || !std::isxdigit(static_cast<unsigned char>(in[i + 1])) ||
          !std::isxdigit(static_cast<unsigned char>(in[i + 2])))
        return false;
      out.push_back(static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return true;
}

bool parse_query(std::string_view raw, std::map<std::string, std::string>& out) {
  if (!raw.empty() && raw.front() == '?')
    raw.remove_prefix(1);
  while (!raw.empty()) {
    auto amp = raw.find('&');
    auto pair = raw.substr(0, amp);
    if (!pair.empty()) {
      auto eq = pair.find('=');
      std::string key, value;
      if (!percent_decode(pair.substr(0, eq), key))
        return false;
      if (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), value))
        return false;
      out[key] = value;
    }
    if (amp == std::string_view::npos)
      break;
    raw.remove_prefix(amp + 1);
  }
  return true;
}

std::string new_request_id() {
  // An id, not a secret: a generator per thread, seeded from libsodium
  // once, instead of a getrandom(2) call per request.
  thread_local std::mt19937_64 draw{[] {
    uint64_t seed;
    randombytes_buf(&seed, sizeof seed);
    return seed;
  }()};
  static const char* hex = "0123456789abcdef";
  auto bits = draw();
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, bits >>= 4)
    out[static_cast<size_t>(i)] = hex[bits & 0xf];
  return out;
}

std::string accepted_request_id(std::string_view value) {
  if (value.empty() || value.size() > 128)
    return {};
  for (unsigned char c : value)
    if (!std::isalnum(c) && c != '-' && c != '_' && c != '.' && c != ':')
      return {};
  return std::string(value);
}

std::string trace_id_of(std::string_view traceparent) {
  // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2 = 55
  // characters for version 00; later versions may append fields after a "-".
  auto lower_hex = [](std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    });
  };
  if (traceparent.size() < 55 || traceparent[2] != '-' || traceparent[35] != '-' ||
      traceparent[52] != '-')
    return {};
  auto version = traceparent.substr(0, 2);
  auto trace = traceparent.substr(3, 32);
  auto parent = traceparent.substr(36, 16);
  auto flags = traceparent.substr(53, 2);
  if (!lower_hex(version) || version == "ff" || !lower_hex(trace) || !lower_hex(parent) ||
      !lower_hex(flags))
    return {};
  if (version == "00" && traceparent.size() != 55)
    return {};
  if (version != "00" && traceparent.size() > 55 && traceparent[55] != '-')
    return {};
  // All zeros is the W3C's "invalid".
  if (trace.find_first_not_of('0') == std::string_view::npos ||
      parent.find_first_not_of('0') == std::string_view::npos)
    return {};
  return std::string(trace);
}

} // namespace cm::http

namespace cm::http {

void request_done(const request& req, const response& res, std::string_view caller,
                  std::string_view route) {
  std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - req.received;
  metrics::http_request(route, req.method, res.status, took.count() / 1000.0);
  if (!log::enabled(log::level::info))
    return;
  log::request_done({req.request_id, req.method, req.path, res.status, took.count(), caller,
                     res.error_code ? res.error_code : "", req.trace_id});
}

} // namespace cm::http

#include "http/request_guard.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace cm::http {

namespace {

constexpr std::string_view crlf = "\r\n";
constexpr std::string_view blank_line = "\r\n\r\n";
/// RFC 9112 2.2: a server should ignore at least one empty line before a
/// request line; two are tolerated, more are not a client but a trickle.
constexpr size_t max_blank_bytes = 4;
/// 2^64 has 20 digits; 19 always fit.
constexpr size_t max_length_digits = 19;

bool is_tchar(unsigned char c) {
  return std::isalnum(c) != 0 || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool is_token(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return c != 0 && is_tchar(c); });
}

/// Header value bytes: visible ASCII, space, tab and obs-text (>= 0x80).
bool is_field_value(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return c == '\t' || (c >= 0x20 && c != 0x7f);
  });
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

/// 1*DIGIT of at most 19 digits; nullopt for anything else (sign, space
/// inside, list form "5, 5", hex, empty).
std::optional<uint64_t> parse_length(std::string_view s) {
  if (s.empty() || s.size() > max_length_digits)
    return std::nullopt;
  uint64_t value = 0;
  for (unsigned char c : s) {
    if (!std::isdigit(c))
      return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

bool valid_request_line(std::string_view line) {
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || !is_token(line.substr(0, sp1)))
    return false;
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos)
    return false;
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  // Printable ASCII only: Pistache stops the target at a space, and raw
  // bytes >= 0x80 belong percent-encoded.
  if (target.empty() || !std::all_of(target.begin(), target.end(), [](unsigned char c) {
        return c > 0x20 && c < 0x7f;
      }))
    return false;
  auto version = line.substr(sp2 + 1);
  return version == "HTTP/1.1" || version == "HTTP/1.0";
}

} // namespace

request_guard::request_guard(guard_limits limits) : limits_(limits) {}

std::optional<refusal> request_guard::refuse(ec code, std::string message) {
  phase_ = phase::refused;
  std::string{}.swap(head_);
  return refusal{code, std::move(message)};
}

std::optional<refusal> request_guard::feed(std::string_view input, clock::time_point now,
                                           const forward_fn& forward) {
  while (!input.empty()) {
    std::optional<refusal> refused;
    switch (phase_) {
      case phase::refused:
        return std::nullopt;
      case phase::head:
        refused = feed_head(input, now, forward);
        break;
      case phase::body:
        refused = feed_body(input, now, forward);
        break;
    }
    if (refused)
      return refused;
  }
  return std::nullopt;
}

std::optional<refusal> request_guard::feed_head(std::string_view& input, clock::time_point now,
                                                const forward_fn& forward) {
  if (head_.empty() && blank_bytes_ == 0) {
    head_started_ = now;
    // The usual case: a whole head in one read, checked and forwarded in
    // place, without a copy.
    auto end = input.substr(0, limits_.max_head_bytes).find(blank_line);
    if (end != std::string_view::npos && input.substr(0, 2) != crlf) {
      auto head = input.substr(0, end + blank_line.size());
      input.remove_prefix(head.size());
      return pass_head(head, now, forward);
    }
  } else if (now - head_started_ > limits_.head_timeout) {
    return refuse(ec::request_timeout, "request head not received in time");
  }

  // Copy no more than one byte past the limit: enough to know it is passed.
  auto take = std::min(input.size(), limits_.max_head_bytes + 1 - head_.size());
  head_.append(input.data(), take);
  while (head_.size() >= 2 && std::string_view(head_).substr(0, 2) == crlf) {
    head_.erase(0, 2);
    blank_bytes_ += 2;
    scanned_ = 0;
    if (blank_bytes_ > max_blank_bytes)
      return refuse(ec::bad_request, "empty lines instead of a request");
  }
  auto end = head_.find(blank_line, scanned_);
  if (end == std::string::npos) {
    if (head_.size() + blank_bytes_ > limits_.max_head_bytes)
      return refuse(ec::header_too_large, "request head exceeds the size limit");
    scanned_ = head_.size() < 3 ? 0 : head_.size() - 3;
    input.remove_prefix(take);
    return std::nullopt;
  }
  auto head_size = end + blank_line.size();
  // Bytes copied past the head go back to the input: body or next request.
  auto excess = head_.size() - head_size;
  input.remove_prefix(take - excess);
  head_.resize(head_size);
  if (head_.size() + blank_bytes_ > limits_.max_head_bytes)
    return refuse(ec::header_too_large, "request head exceeds the size limit");
  auto refused = pass_head(head_, now, forward);
  head_.clear();
  scanned_ = 0;
  blank_bytes_ = 0;
  return refused;
}

std::optional<refusal> request_guard::pass_head(std::string_view head, clock::time_point now,
                                                const forward_fn& forward) {
  if (auto refused = accept_head(head))
    return refused;
  forward(head, body_left_ == 0);
  if (body_left_ > 0) {
    phase_ = phase::body;
    body_started_ = now;
  }
  return std::nullopt;
}

std::optional<refusal> request_guard::feed_body(std::string_view& input, clock::time_point now,
                                                const forward_fn& forward) {
  if (now - body_started_ > limits_.body_timeout)
    return refuse(ec::request_timeout, "request body not received in time");
  auto take = static_cast<size_t>(std::min<uint64_t>(body_left_, input.size()));
  body_left_ -= take;
  forward(input.substr(0, take), body_left_ == 0);
  input.remove_prefix(take);
  if (body_left_ == 0)
    phase_ = phase::head;
  return std::nullopt;
}

std::optional<refusal> request_guard::accept_head(std::string_view head) {
  // Every line, the request line included, ends with CRLF; the last CRLF
  // is the blank line.
  auto lines = head.substr(0, head.size() - crlf.size());
  auto next_line = [&lines](std::string_view& line) {
    auto eol = lines.find(crlf);
    if (eol == std::string_view::npos)
      return false;
    line = lines.substr(0, eol);
    lines.remove_prefix(eol + crlf.size());
    return true;
  };
  // A lone CR or LF is where parsers disagree about line ends (smuggling).
  auto bare_line_end = [](std::string_view line) {
    return line.find_first_of("\r\n") != std::string_view::npos;
  };

  std::string_view line;
  if (!next_line(line) || bare_line_end(line) || !valid_request_line(line))
    return refuse(ec::bad_request, "malformed request line");

  std::optional<uint64_t> content_length;
  bool transfer_encoding = false;
  while (next_line(line)) {
    if (bare_line_end(line))
      return refuse(ec::bad_request, "malformed line ending in the request head");
    if (line.front() == ' ' || line.front() == '\t')
      return refuse(ec::bad_request, "folded header lines are not accepted");
    auto colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
      return refuse(ec::bad_request, "malformed header line");
    auto name = line.substr(0, colon);
    auto value = line.substr(colon + 1);
    if (!is_field_value(value))
      return refuse(ec::bad_request, "control character in a header value");
    if (iequals(name, "content-length")) {
      auto length = parse_length(trim_ows(value));
      if (!length)
        return refuse(ec::bad_request, "malformed Content-Length");
      if (content_length && *content_length != *length)
        return refuse(ec::bad_request, "conflicting Content-Length headers");
      content_length = length;
    } else if (iequals(name, "transfer-encoding")) {
      transfer_encoding = true;
    }
  }
  if (transfer_encoding && content_length)
    return refuse(ec::bad_request, "Content-Length together with Transfer-Encoding");
  if (transfer_encoding)
    return refuse(ec::length_required,
                  "request bodies must be sent with Content-Length, not Transfer-Encoding");
  if (content_length && *content_length > limits_.max_body_bytes)
    return refuse(ec::payload_too_large, "request body exceeds the size limit");
  body_left_ = content_length.value_or(0);
  return std::nullopt;
}

} // namespace cm::http

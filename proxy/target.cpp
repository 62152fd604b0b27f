#include "proxy/target.hpp"

#include <curl/curl.h>

#include <memory>

namespace cm::proxy {

namespace {

struct url_deleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using url_handle = std::unique_ptr<CURLU, url_deleter>;

struct url_parts {
  std::string scheme, host, port, path, query, fragment, user;
};

/// libcurl's parse of `url`, without normalising the path; false when it
/// is not a URL.
bool parse(const std::string& url, url_parts& out) {
  url_handle u{curl_url()};
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), CURLU_PATH_AS_IS) != CURLUE_OK)
    return false;
  auto get = [&](CURLUPart part, std::string& into) {
    char* value = nullptr;
    if (curl_url_get(u.get(), part, &value, 0) == CURLUE_OK && value != nullptr) {
      into = value;
      curl_free(value);
    }
  };
  get(CURLUPART_SCHEME, out.scheme);
  get(CURLUPART_HOST, out.host);
  get(CURLUPART_PORT, out.port);
  get(CURLUPART_PATH, out.path);
  get(CURLUPART_QUERY, out.query);
  get(CURLUPART_FRAGMENT, out.fragment);
  get(CURLUPART_USER, out.user);
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/// `text` percent-decoded into `out`; false on a malformed escape.
bool decode(std::string_view text, std::string& out) {
  out.clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (text.size() - i < 3)
      return false;
    int hi = hex_value(text[i + 1]);
    int lo = hex_value(text[i + 2]);
    if (hi < 0 || lo < 0)
      return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

/// Characters no path or query may carry, raw: controls, space, and what
/// would end or reshape the URL ("#", "\").
bool forbidden(char c) {
  auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f || c == ' ' || c == '#' || c == '\\';
}

/// Why `path` cannot go under a base ("" when it can).
std::string path_problem(std::string_view path) {
  for (char c : path)
    if (forbidden(c))
      return "the path carries a character a URL path may not (control, space, '#' or '\\')";
  if (!path.empty() && path.front() == '/')
    return "the path may not start with '/' (it is relative to the provider's API)";
  std::string decoded;
  size_t start = 0;
  while (start <= path.size()) {
    auto end = path.find('/', start);
    if (end == std::string_view::npos)
      end = path.size();
    auto segment = path.substr(start, end - start);
    bool last = end == path.size();
    if (segment.empty() && !last)
      return "the path may not have empty segments ('//')";
    if (!decode(segment, decoded))
      return "the path has a malformed percent-escape";
    // "..;" is ".." to some servers (path parameters), and a double
    // encoding ("%252e") is one decode away from what is refused here.
    if (decoded == "." || decoded.rfind("..", 0) == 0 || decoded.rfind(".;", 0) == 0)
      return "the path may not have '.' or '..' segments, raw or encoded";
    for (size_t i = 0; i < decoded.size(); ++i) {
      auto u = static_cast<unsigned char>(decoded[i]);
      if (decoded[i] == '/' || decoded[i] == '\\' || u < 0x20 || u == 0x7f)
        return "the path may not encode '/', '\\', NUL or control characters";
      // Overlong UTF-8 ("%c0%ae" for '.'): never valid, decoded by some.
      if (u == 0xc0 || u == 0xc1)
        return "the path may not carry overlong UTF-8";
      if (decoded[i] == '%' && i + 2 < decoded.size()) {
        std::string twice;
        if (decode(std::string_view(decoded).substr(i, 3), twice) &&
            (twice == "." || twice == "/" || twice == "\\" || twice == "%"))
          return "the path may not double-encode '.', '/', '\\' or '%'";
      }
    }
    start = end + 1;
  }
  return {};
}

std::string query_problem(std::string_view query) {
  for (char c : query)
    if (forbidden(c))
      return "the query carries a character a URL may not (control, space, '#' or '\\')";
  std::string decoded;
  if (!decode(query, decoded))
    return "the query has a malformed percent-escape";
  return {};
}

} // namespace

std::string request_problem(std::string_view path, std::string_view query) {
  if (auto problem = path_problem(path); !problem.empty())
    return problem;
  return query_problem(query);
}

target target_under(std::string_view base, std::string_view path, std::string_view query) {
  target out;
  url_parts b;
  std::string base_text(base);
  if (!parse(base_text, b) || b.host.empty() || !b.query.empty() || !b.fragment.empty() ||
      !b.user.empty() || (b.scheme != "https" && b.scheme != "http")) {
    out.problem = "the provider's API base URL is not usable";
    return out;
  }
  if (auto problem = request_problem(path, query); !problem.empty()) {
    out.problem = problem;
    return out;
  }
  // The base's path without its trailing slash, then "/" and the path.
  std::string base_path = b.path;
  while (!base_path.empty() && base_path.back() == '/')
    base_path.pop_back();
  // Rebuilt from the parsed parts: exactly scheme://host[:port] (libcurl
  // keeps an IPv6 host in brackets).
  std::string prefix = b.scheme + "://" + b.host + (b.port.empty() ? "" : ":" + b.port);
  // No path is the base itself (Railway's GraphQL endpoint is its base).
  out.url = prefix + (path.empty() ? (base_path.empty() ? "/" : base_path)
                                   : base_path + "/" + std::string(path));
  if (!query.empty())
    out.url += "?" + std::string(query);
  // Parsed again: the same scheme, host and port, and the base's path or
  // a path under it.
  url_parts t;
  bool at_base = path.empty();
  if (!parse(out.url, t) || t.scheme != b.scheme || t.host != b.host || t.port != b.port ||
      !t.user.empty() || !t.fragment.empty() ||
      (at_base ? t.path != (base_path.empty() ? "/" : base_path)
               : t.path.compare(0, base_path.size() + 1, base_path + "/") != 0)) {
    out.url.clear();
    out.problem = "the path would leave the provider's API";
  }
  return out;
}

} // namespace cm::proxy

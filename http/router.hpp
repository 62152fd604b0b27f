// Matches a method and path against route patterns such as
// "/api/connectors/{provider}" and extracts the named segments.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cm::http {

using route_params = std::map<std::string, std::string>;

/// Who may call a route.
enum class access {
  /// Anyone (health).
  open,
  /// A user with a session JWT.
  user,
  /// A team admin.
  admin,
  /// A service holding the route's scope.
  service,
  /// A team admin or a service holding the route's scope.
  admin_or_service,
};

/// Whether a route draws from its caller's token bucket
/// (http/rate_limiter.hpp): routes that write or call providers do.
enum class metering {
  unmetered,
  metered,
  /// The handler meters with buckets of its own (the proxy: one per
  /// service and team, so one team cannot empty a shared service's).
  by_handler,
};

/// Splits "/a/b/" into {"a", "b"}.
inline std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (pos < path.size()) {
    if (path[pos] == '/') {
      ++pos;
      continue;
    }
    auto end = path.find('/', pos);
    parts.push_back(path.substr(pos, end - pos));
    if (end == std::string_view::npos)
      break;
    pos = end;
  }
  return parts;
}

/// The one form of a request path that everything deciding by path sees:
/// "/" and the non-empty segments joined by "/" ("//a//b/" -> "/a/b", ""
/// -> "/"). The server stores it in request::path, so a check on the path
/// (the event stream's, http/server.cpp) and the route it lands on
/// (match_path) always agree on what was asked for. Dot segments and
/// percent-escapes are left alone: "." and ".." match no route (404).
inline std::string normalize_path(std::string_view path) {
  std::string out;
  for (auto part : split_path(path)) {
    out.push_back('/');
    out.append(part);
  }
  return out.empty() ? "/" : out;
}

/// Matches `path` against `pattern`; fills `params` for {name} segments.
/// A last segment {name*} takes the rest of the path, zero or more
/// segments joined by "/" (the proxy's /api/proxy/{provider}/{path*}).
inline bool match_path(std::string_view pattern, std::string_view path, route_params& params) {
  auto want = split_path(pattern);
  auto have = split_path(path);
  bool rest = !want.empty() && want.back().size() > 3 && want.back().front() == '{' &&
              want.back().substr(want.back().size() - 2) == "*}";
  if (rest ? have.size() + 1 < want.size() : want.size() != have.size())
    return false;
  route_params found;
  for (size_t i = 0; i < want.size(); ++i) {
    auto w = want[i];
    if (rest && i + 1 == want.size()) {
      std::string tail;
      for (size_t j = i; j < have.size(); ++j)
        tail.append(j == i ? "" : "/").append(have[j]);
      found[std::string(w.substr(1, w.size() - 3))] = std::move(tail);
      break;
    }
    if (w.size() > 2 && w.front() == '{' && w.back() == '}')
      found[std::string(w.substr(1, w.size() - 2))] = std::string(have[i]);
    else if (w != have[i])
      return false;
  }
  params = std::move(found);
  return true;
}

} // namespace cm::http

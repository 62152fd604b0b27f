// Where a proxied call may go: the caller's path and query joined under a
// provider's API base URL, or a refusal that says why. The caller's path
// is taken as it arrived (still percent-encoded) and must stay under the
// base: nothing in it may climb out of the base path (dot segments, raw or
// encoded), smuggle a separator the provider would decode (encoded "/" or
// "\"), or change the host (the result is parsed again and compared).
#pragma once

#include <string>
#include <string_view>

namespace cm::proxy {

struct target {
  /// The URL to call ("" when refused).
  std::string url;
  /// Why it was refused, for the caller's 400 ("" when allowed). Never
  /// echoes the path itself.
  std::string problem;
  bool allowed() const { return problem.empty(); }
};

/// `base`: the provider's API base ("https://api.github.com",
/// "https://x.zendesk.com/api/v2"), without a query or fragment.
/// `path`: what followed /api/proxy/{provider}/ in the request target,
/// still encoded; empty: the base URL itself. `query`: the request's
/// query without the proxy's own parameters and without "?" (may be
/// empty).
target target_under(std::string_view base, std::string_view path, std::string_view query);

/// Why `path` and `query` could go under no base at all ("" when they
/// may): checked before anything else happens, so a refused path never
/// costs a token read, let alone a refresh.
std::string request_problem(std::string_view path, std::string_view query);

} // namespace cm::proxy

#include "http/cors.hpp"

#include <algorithm>

namespace cm::http {

namespace {

/// What a page may send besides the CORS-safelisted headers: the session
/// JWT, a JSON body's type, and the ids that correlate its requests.
constexpr const char* allowed_request_headers = "Authorization, Content-Type, X-Request-Id, traceparent";

/// What a page may read besides the safelisted response headers.
constexpr const char* exposed_headers = "X-Request-Id, Retry-After, WWW-Authenticate, Allow";

} // namespace

bool origin_allowed(const config::cors_config& cfg, std::string_view origin) {
  return !origin.empty() &&
         std::find(cfg.allowed_origins.begin(), cfg.allowed_origins.end(), origin) !=
           cfg.allowed_origins.end();
}

std::vector<std::pair<std::string, std::string>> cors_headers(const config::cors_config& cfg,
                                                              const request& req) {
  std::vector<std::pair<std::string, std::string>> out;
  auto origin = req.header("origin");
  if (!origin_allowed(cfg, origin))
    return out;
  out.emplace_back("Access-Control-Allow-Origin", origin);
  out.emplace_back("Access-Control-Expose-Headers", exposed_headers);
  // The answer differs by Origin; caches must key on it.
  out.emplace_back("Vary", "Origin");
  return out;
}

bool is_preflight(const request& req) {
  return req.method == "OPTIONS" && !req.header("origin").empty() &&
         !req.header("access-control-request-method").empty();
}

std::string join_methods(const std::vector<std::string>& methods) {
  std::string out;
  for (auto& m : methods) {
    if (!out.empty())
      out += ", ";
    out += m;
  }
  return out;
}

response options_response(const config::cors_config& cfg, const request& req,
                          const std::vector<std::string>& methods) {
  auto with_options = methods;
  with_options.push_back("OPTIONS");
  auto allow = join_methods(with_options);
  if (is_preflight(req) && !origin_allowed(cfg, req.header("origin"))) {
    auto res = error_response(ec::forbidden, "this origin may not call the API from a browser");
    res.headers.emplace_back("Allow", allow);
    return res;
  }
  response res;
  res.status = 204;
  res.headers.emplace_back("Allow", allow);
  if (is_preflight(req)) {
    res.headers.emplace_back("Access-Control-Allow-Methods", allow);
    res.headers.emplace_back("Access-Control-Allow-Headers", allowed_request_headers);
    res.headers.emplace_back("Access-Control-Max-Age", std::to_string(cfg.max_age_s));
  }
  return res;
}

} // namespace cm::http

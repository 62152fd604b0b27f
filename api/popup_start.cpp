#include "api/popup_start.hpp"

#include <algorithm>
#include <regex>

#include "http/html_page.hpp"
#include "provider/oauth_protocol.hpp"

namespace cm::api {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return s;
}

bool allowed_origin(const config::service_config& cfg, const std::string& origin) {
  if (origin.empty())
    return false;
  if (origin == normalized_origin(cfg.oauth.public_base_url))
    return true;
  for (auto& allowed : cfg.cors.allowed_origins)
    if (origin == normalized_origin(allowed))
      return true;
  return false;
}

std::string with_outcome(const std::string& url,
                         const std::vector<std::pair<std::string, std::string>>& outcome) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + oauth::form_encode(outcome);
}

} // namespace

std::string normalized_origin(const std::string& url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos)
    return {};
  auto scheme = lower(url.substr(0, scheme_end));
  auto authority_end = url.find_first_of("/?#", scheme_end + 3);
  auto authority = lower(url.substr(scheme_end + 3, authority_end == std::string::npos
                                                       ? std::string::npos
                                                       : authority_end - scheme_end - 3));
  std::string default_port = scheme == "https" ? ":443" : ":80";
  if (authority.size() > default_port.size() &&
      authority.compare(authority.size() - default_port.size(), default_port.size(),
                        default_port) == 0)
    authority.resize(authority.size() - default_port.size());
  return scheme + "://" + authority;
}

std::optional<popup_start> read_popup_start(const http::request& req,
                                            const config::service_config& cfg,
                                            std::string& problem) {
  std::map<std::string, std::string> form;
  if (req.header("content-type").rfind("application/x-www-form-urlencoded", 0) != 0 ||
      !http::parse_query(req.body, form)) {
    problem = "expected a form (application/x-www-form-urlencoded)";
    return std::nullopt;
  }
  form.erase("session");
  auto take = [&](const char* name) {
    auto it = form.find(name);
    if (it == form.end())
      return std::string{};
    auto value = it->second;
    form.erase(it);
    return value;
  };
  popup_start out;
  auto origin_field = take("origin");
  auto redirect = take("redirect_uri");
  out.flow = take("flow");
  out.params = std::move(form);
  // Which page made the browser post: its Origin header (browsers send it
  // on every POST; a page with Referrer-Policy no-referrer sends "null"),
  // or, from the service's own pages, Sec-Fetch-Site.
  auto sender = req.header("origin");
  bool same_origin = req.header("sec-fetch-site") == "same-origin";
  std::string page;
  if (!sender.empty() && sender != "null")
    page = normalized_origin(sender);
  else if (same_origin)
    page = normalized_origin(cfg.oauth.public_base_url);
  if (!allowed_origin(cfg, page)) {
    problem = "the connection must be started from the application's own page (the request's "
              "Origin is not the service's or one of cors.allowed_origins)";
    return std::nullopt;
  }
  static const std::regex nonce{"^[A-Za-z0-9_-]{16,64}$"};
  if (!out.flow.empty() && !std::regex_match(out.flow, nonce)) {
    problem = "flow must be 16 to 64 of A-Z a-z 0-9 - _";
    return std::nullopt;
  }
  if (!redirect.empty()) {
    auto& allowed = cfg.oauth.allowed_redirect_uris;
    if (std::find(allowed.begin(), allowed.end(), redirect) == allowed.end()) {
      problem = "redirect_uri is not on the allowlist";
      return std::nullopt;
    }
    out.redirect_uri = redirect;
    return out;
  }
  // A popup reports to the page that opened it, and that page is the one
  // that posted the form.
  out.origin = normalized_origin(origin_field);
  if (origin_field.empty() || out.origin != page) {
    problem = "origin must be the origin of the page that opened the popup";
    return std::nullopt;
  }
  std::vector<std::pair<std::string, std::string>> query = {{"origin", out.origin}};
  if (!out.flow.empty())
    query.emplace_back("flow", out.flow);
  out.redirect_uri = cfg.oauth.public_base_url + "/connect/done?" + oauth::form_encode(query);
  return out;
}

http::response start_refusal(const http::request& req, const config::service_config& cfg,
                             const std::string& provider, ec code, const std::string& message) {
  std::string problem;
  auto start = read_popup_start(req, cfg, problem);
  if (!start)
    return http::html_error_page(code, message);
  http::response res;
  res.status = 303;
  res.content_type = "text/plain; charset=utf-8";
  res.error_code = to_string(code);
  res.headers.emplace_back("Location", with_outcome(start->redirect_uri,
                                                    {{"connected", "false"},
                                                     {"provider", provider},
                                                     {"error", to_string(code)}}));
  res.headers.emplace_back("Cache-Control", "no-store");
  res.headers.emplace_back("Referrer-Policy", "no-referrer");
  return res;
}

} // namespace cm::api

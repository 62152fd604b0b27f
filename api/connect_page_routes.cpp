#include "api/connect_page_routes.hpp"

#include <algorithm>

#include "api/connect_assets.hpp"
#include "http/html_page.hpp"

namespace cm {

namespace {

const api::embedded_file* asset_named(std::string_view name) {
  for (auto& file : api::connect_assets())
    if (file.name == name)
      return &file;
  return nullptr;
}

std::string content_type_of(std::string_view name) {
  auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  if (ends_with(".html"))
    return "text/html; charset=utf-8";
  if (ends_with(".js"))
    return "text/javascript; charset=utf-8";
  if (ends_with(".css"))
    return "text/css; charset=utf-8";
  return "application/octet-stream";
}

/// The policy of the page and of /connect/done: scripts and styles of this
/// origin only, no inline code, API calls to this origin only; framed only
/// by the service itself and the origins trusted with CORS.
std::string page_policy(const config::service_config& cfg) {
  std::string ancestors = "'self'";
  for (auto& origin : cfg.cors.allowed_origins)
    ancestors += " " + origin;
  return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
         "connect-src 'self'; base-uri 'none'; frame-ancestors " + ancestors;
}

void serve(const call& c, std::string_view name) {
  auto file = asset_named(name);
  if (file == nullptr) {
    c.ex->reply_error(ec::not_found, "no such file");
    return;
  }
  http::response res;
  res.status = 200;
  res.content_type = content_type_of(file->name);
  res.body.assign(file->content);
  res.headers.emplace_back("X-Content-Type-Options", "nosniff");
  // Not no-referrer: that would make the page's start form send
  // "Origin: null", and the start route requires the page's origin
  // (api/popup_start.hpp). Other sites still see the origin at most.
  res.headers.emplace_back("Referrer-Policy", "strict-origin-when-cross-origin");
  // Revalidated on every load: a new release's page never runs an old
  // script.
  res.headers.emplace_back("Cache-Control", "no-cache");
  if (res.content_type.rfind("text/html", 0) == 0)
    res.headers.emplace_back("Content-Security-Policy", page_policy(c.ctx().cfg));
  if (name == "sdk.js") {
    // A host application on any origin may import the module (a module
    // script is fetched with CORS); it holds nothing secret, and the API
    // it calls keeps its own CORS rules.
    auto& allowed = c.ctx().cfg.cors.allowed_origins;
    auto origin = c.ex->req().header("origin");
    if (std::find(allowed.begin(), allowed.end(), origin) == allowed.end())
      res.headers.emplace_back("Access-Control-Allow-Origin", "*");
  }
  c.ex->reply(std::move(res));
}

void connect_page(const call& c) { serve(c, "index.html"); }

void connect_file(const call& c) {
  auto& name = c.params.at("file");
  // Pages are named without .html; a name with a path or an unknown one is
  // a 404 (only the embedded files exist).
  serve(c, name == "done" ? std::string_view("done.html") : std::string_view(name));
}

} // namespace

std::vector<api::route> connect_page_routes() {
  using http::access;
  constexpr auto unmetered = http::metering::unmetered;
  auto page = nlohmann::json{{"type", "string"}};
  return {
    {"GET", "/connect", access::open, "", connect_page, unmetered,
     {"connectPage", "connect page", "The Connect page",
      "Lists what the member can connect (the catalog), connects API keys with a form and "
      "OAuth providers in a popup, disconnects. Open it with #session=<the member's session "
      "JWT>; the fragment never reaches a server and the page removes it from the address bar.",
      {}, nullptr, {{200, "the page", page, "text/html"}}}},
    {"GET", "/connect/{file}", access::open, "", connect_file, unmetered,
     {"connectPageFile", "connect page", "The Connect page's files and the SDK",
      "sdk.js (an ES module: connect(provider, options) returns a promise of the outcome), "
      "page.js, connect.css, done (where the OAuth popup ends: it posts the outcome to its "
      "opener's origin) and done.js.",
      {}, nullptr,
      {{200, "the SDK and the page's script", page, "text/javascript"},
       {200, "the style sheet", page, "text/css"},
       {200, "done", page, "text/html"}},
      {404}}},
  };
}

} // namespace cm

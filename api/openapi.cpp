#include "api/openapi.hpp"

#include <map>
#include <mutex>
#include <stdexcept>

#include "api/route_table.hpp"
#include "api/schemas.hpp"

namespace cm::api {

namespace {

/// The error answers, each a reusable response of the document.
struct error_answer {
  int status;
  const char* name;
  const char* description;
  const char* header = nullptr;
  const char* header_description = nullptr;
};

const std::vector<error_answer>& error_answers() {
  static const std::vector<error_answer> all = {
    {400, "BadRequest", "malformed input: bad JSON, a missing or invalid field or parameter"},
    {401, "Unauthenticated", "missing, malformed, expired or wrongly signed credentials",
     "WWW-Authenticate", "the scheme that would be accepted"},
    {403, "Forbidden", "authenticated, but this caller may not do this"},
    {404, "NotFound", "no such provider, connector or connection"},
    {409, "Conflict", "the state does not allow it (e.g. the connection needs_reauth)"},
    {413, "PayloadTooLarge", "the body exceeds listen.max_request_bytes"},
    {422, "InvalidCredentials", "the provider rejected the credentials; nothing was stored"},
    {429, "RateLimited", "the caller's bucket is empty", "Retry-After", "seconds to wait"},
    {500, "Internal", "anything else; the details are in the log, never here"},
    {502, "ProviderFailed", "the provider failed or answered nonsense"},
    {503, "Unavailable", "a dependency (PostgreSQL, an actor) is unavailable or timed out",
     "Retry-After", "seconds to wait"},
    {504, "ProviderTimeout", "the provider did not answer in time (proxy.timeout_ms)"},
  };
  return all;
}

const error_answer& error_named(int status) {
  for (auto& e : error_answers())
    if (e.status == status)
      return e;
  throw std::logic_error("no error answer documented for status " + std::to_string(status));
}

nlohmann::json components(const std::string& service_header) {
  nlohmann::json responses = nlohmann::json::object();
  for (auto& e : error_answers()) {
    nlohmann::json answer = {
      {"description", e.description},
      {"content", {{"application/json", {{"schema", ref("Error")}}}}}};
    if (e.header)
      answer["headers"][e.header] = {{"description", e.header_description},
                                     {"schema", {{"type", "string"}}}};
    responses[e.name] = std::move(answer);
  }
  nlohmann::json schemes = nlohmann::json::object();
  schemes["bearerJwt"] = {
    {"type", "http"},
    {"scheme", "bearer"},
    {"bearerFormat", "JWT"},
    {"description", "A session JWT (claims sub, team, role, exp) for users; for services, a JWT "
                    "whose scopes claim holds the route's scope"}};
  schemes["serviceToken"] = {
    {"type", "apiKey"},
    {"in", "header"},
    {"name", service_header},
    {"description", "A service token (auth.service_tokens, or connector-manager service-tokens "
                    "create); X-Services-Token and X-Reeve-Services-Token are accepted too"}};
  nlohmann::json out = nlohmann::json::object();
  out["schemas"] = shared_schemas();
  out["responses"] = std::move(responses);
  out["securitySchemes"] = std::move(schemes);
  return out;
}

std::string who_may_call(const route& r) {
  switch (r.who) {
    case http::access::open: return "Anyone (no authentication).";
    case http::access::user: return "A member of a team (session JWT).";
    case http::access::admin: return "A team admin (session JWT with role admin).";
    case http::access::service: return "A service holding the scope " + r.scope + ".";
    case http::access::admin_or_service:
      return "A team admin, or a service holding the scope " + r.scope + ".";
  }
  return "";
}

nlohmann::json security_of(const route& r) {
  // A form's session is a body field, which OpenAPI security cannot name.
  if (r.read_by == reader::browser_form)
    return nlohmann::json::array();
  switch (r.who) {
    case http::access::open: return nlohmann::json::array();
    case http::access::user:
    case http::access::admin: return {{{"bearerJwt", nlohmann::json::array()}}};
    case http::access::service:
    case http::access::admin_or_service:
      return {{{"serviceToken", nlohmann::json::array()}}, {{"bearerJwt", nlohmann::json::array()}}};
  }
  return nlohmann::json::array();
}

std::string path_param_description(const std::string& name) {
  if (name == "provider")
    return "a provider of the catalog (config/providers.yaml), e.g. github or stripe";
  if (name == "connectorName")
    return "a connector of the catalog (the provider's name), e.g. google-workspace";
  if (name == "path")
    return "the rest of the path, slashes included, relative to the provider's API base URL "
           "(e.g. v1/customers/cus_123); it may be empty";
  return name;
}

nlohmann::json operation(const route& r) {
  const auto& d = r.doc;
  if (d.operation_id.empty() || d.summary.empty() || d.responses.empty())
    throw std::logic_error("route " + r.method + " " + r.pattern + " has no documentation");
  nlohmann::json op = {{"operationId", d.operation_id},
                       {"tags", {d.tag}},
                       {"summary", d.summary},
                       {"description", (d.description.empty() ? "" : d.description + "\n\n") +
                                         who_may_call(r) +
                                         (r.read_by == reader::browser_form
                                            ? " The session JWT comes in the form field session."
                                            : "") +
                                         (r.cost == http::metering::metered
                                            ? " Draws from the caller's rate limit."
                                            : "")},
                       {"security", security_of(r)}};
  auto params = nlohmann::json::array();
  for (auto part : http::split_path(r.pattern))
    if (part.size() > 2 && part.front() == '{') {
      std::string name(part.substr(1, part.size() - 2));
      if (!name.empty() && name.back() == '*') // the rest of the path (http/router.hpp)
        name.pop_back();
      params.push_back({{"name", name},
                        {"in", "path"},
                        {"required", true},
                        {"description", path_param_description(name)},
                        {"schema", {{"type", "string"}}}});
    }
  for (auto& q : d.query) {
    nlohmann::json p = {{"name", q.name}, {"in", "query"}, {"required", q.required},
                        {"schema", q.schema}};
    if (!q.description.empty())
      p["description"] = q.description;
    params.push_back(std::move(p));
  }
  if (!params.empty())
    op["parameters"] = std::move(params);
  if (!d.body.is_null())
    op["requestBody"] = {{"required", d.body_required},
                         {"content", {{d.body_content_type, {{"schema", d.body}}}}}};
  nlohmann::json responses = nlohmann::json::object();
  for (auto& answer : d.responses) {
    // One status may answer several media types (the Connect page's files).
    auto& out = responses[std::to_string(answer.status)];
    out["description"] = out.contains("description")
                           ? out["description"].get<std::string>() + "; " + answer.description
                           : answer.description;
    if (!answer.schema.is_null())
      out["content"][answer.content_type] = {{"schema", answer.schema}};
    for (auto& [name, description] : answer.headers)
      out["headers"][name] = {{"description", description}, {"schema", {{"type", "string"}}}};
  }
  // The errors every route of its kind can answer, then its own.
  std::vector<int> errors = {400};
  if (r.who != http::access::open) {
    errors.push_back(401);
    errors.push_back(403);
  }
  if (!d.body.is_null())
    errors.push_back(413);
  if (r.cost == http::metering::metered)
    errors.push_back(429);
  errors.push_back(500);
  errors.push_back(503);
  errors.insert(errors.end(), d.errors.begin(), d.errors.end());
  for (auto status : errors) {
    auto key = std::to_string(status);
    if (responses.contains(key))
      continue;
    auto& error = error_named(status);
    if (r.read_by == reader::program) {
      responses[key] = {{"$ref", std::string("#/components/responses/") + error.name}};
      continue;
    }
    // What a browser reads instead of JSON (http/html_page.hpp).
    nlohmann::json page = {{"schema", {{"type", "string"}}}};
    nlohmann::json answer = {{"description", std::string(error.description) +
                                               (r.read_by == reader::browser_form
                                                  ? " (an HTML page)"
                                                  : " (an HTML page for a browser)")}};
    if (r.read_by == reader::program_or_browser)
      answer["content"]["application/json"] = {{"schema", ref("Error")}};
    answer["content"]["text/html"] = std::move(page);
    if (error.header)
      answer["headers"][error.header] = {{"description", error.header_description},
                                         {"schema", {{"type", "string"}}}};
    responses[key] = std::move(answer);
  }
  op["responses"] = std::move(responses);
  return op;
}

} // namespace

std::string openapi_path(const std::string& pattern) {
  auto path = pattern;
  if (auto star = path.find("*}"); star != std::string::npos)
    path.erase(star, 1);
  return path;
}

namespace {

nlohmann::json build(const std::string& server_url, const std::string& service_header) {
  nlohmann::json paths = nlohmann::json::object();
  std::map<std::string, int> operation_ids;
  for (auto& r : route_table()) {
    if (++operation_ids[r.doc.operation_id] > 1)
      throw std::logic_error("operationId " + r.doc.operation_id + " is used twice");
    std::string method = r.method;
    std::transform(method.begin(), method.end(), method.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    paths[openapi_path(r.pattern)][method] = operation(r);
  }
  return {
    {"openapi", "3.1.0"},
    {"info",
     {{"title", "connector-manager"},
      {"version", "1.0.0"},
      {"summary", "Credentials an application holds for third-party platforms"},
      {"description",
       "Runs OAuth 2.0 flows, validates and stores API keys encrypted, refreshes tokens before "
       "they expire, revokes them on disconnect, and hands valid tokens to internal services. "
       "Every error is {\"error\":{\"code\",\"message\"}}; every answer carries X-Request-Id "
       "(a valid one the caller sent is kept). Names are snake_case except under "
       "/api/v1/connectors, which keeps the seed's camelCase; times are RFC 3339."}}},
    {"servers", {{{"url", server_url}, {"description", "oauth.public_base_url"}}}},
    {"tags",
     {{{"name", "system"}, {"description", "health and this document"}},
      {{"name", "connections"}, {"description", "a member's own connections"}},
      {{"name", "tokens"}, {"description", "valid tokens for internal services"}},
      {{"name", "oauth"}, {"description", "connecting a provider through OAuth 2.0"}},
      {{"name", "team connectors"},
       {"description", "a team's connector configuration (/api/v1/connectors, camelCase)"}},
      {{"name", "audit"}, {"description", "who did what"}},
      {{"name", "events"}, {"description", "lifecycle events"}},
      {{"name", "proxy"},
       {"description", "calls to a provider's API made with a stored credential the caller "
                       "never holds"}}}},
    {"paths", paths},
    {"components", components(service_header)},
  };
}

} // namespace

const nlohmann::json& openapi_document(const std::string& server_url,
                                       const std::string& service_header) {
  // Built once per server URL and header (a reload may change them); a
  // handful at most.
  static std::mutex mutex;
  static std::map<std::pair<std::string, std::string>, nlohmann::json> built;
  std::lock_guard<std::mutex> guard{mutex};
  auto key = std::make_pair(server_url, service_header);
  auto it = built.find(key);
  if (it == built.end())
    it = built.emplace(key, build(server_url, service_header)).first;
  return it->second;
}

} // namespace cm::api

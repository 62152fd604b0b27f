// One HTTP route as the front actor dispatches it and as the OpenAPI
// document (api/openapi.hpp) describes it: method, pattern, who may call
// it, its handler, and its documentation, written beside the handler in
// the route family's file, so the description cannot drift from a second
// list somewhere else.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/route_call.hpp"
#include "http/router.hpp"

namespace cm::api {

/// A query parameter.
struct param_doc {
  std::string name;
  std::string description;
  bool required = false;
  nlohmann::json schema = {{"type", "string"}};
};

/// A successful answer (errors are added from the route's shape and
/// `route_doc::errors`).
struct response_doc {
  int status = 200;
  std::string description;
  /// JSON Schema of the body; null: no body (204, 302).
  nlohmann::json schema;
  std::string content_type = "application/json";
  /// Headers the answer carries, by name: a description each.
  std::vector<std::pair<std::string, std::string>> headers = {};
};

struct route_doc {
  /// Unique, camelCase: what generated clients name the call.
  std::string operation_id;
  /// The group it is listed under (api/openapi.cpp describes each).
  std::string tag;
  std::string summary;
  std::string description;
  std::vector<param_doc> query = {};
  /// JSON Schema of the request body; null: no body.
  nlohmann::json body = nullptr;
  std::vector<response_doc> responses = {};
  /// Error statuses besides those every route of its kind can answer
  /// (400 for input, 401/403 with a guard, 429 when metered, 500, 503).
  std::vector<int> errors = {};
  /// Whether a request without a body is refused (false: the body is
  /// optional, e.g. a toggle that flips without one).
  bool body_required = true;
  /// The request body's media type.
  std::string body_content_type = "application/json";
};

/// Who reads a route's answers.
enum class reader {
  /// Programs: JSON answers; the session in Authorization.
  program,
  /// Programs and browsers (the OAuth callbacks): a browser's failure is a
  /// redirect to where it came from, or an HTML page.
  program_or_browser,
  /// A page's form, in a browser (the OAuth start): the member's session
  /// comes in the form field `session`, since a navigation cannot send
  /// Authorization, and every refusal is an HTML page.
  browser_form,
};

struct route {
  std::string method;
  std::string pattern;
  http::access who;
  /// Scope a service needs (access::service, access::admin_or_service).
  std::string scope;
  handler_fn handler;
  http::metering cost;
  route_doc doc;
  reader read_by = reader::program;
  /// For reader::browser_form: how a refusal before the handler runs (no
  /// session, wrong role, rate limit) is answered; null: an HTML page.
  http::response (*refusal)(const call&, ec, const std::string&) = nullptr;
};

/// {"$ref": "#/components/schemas/<name>"}.
nlohmann::json ref(const std::string& name);

/// A JSON object schema with these properties, all of them required.
nlohmann::json object_of(nlohmann::json properties);

/// The same, where only `required` are required.
nlohmann::json object_of(nlohmann::json properties, std::vector<std::string> required);

/// "string" with a format (date-time for RFC 3339 times).
nlohmann::json string_of(const std::string& format = "");

/// `schema` or null.
nlohmann::json nullable(nlohmann::json schema);

} // namespace cm::api

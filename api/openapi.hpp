// The OpenAPI 3.1 document of the HTTP API, generated from the route table
// (api/route_table.hpp) and the documentation each route family keeps
// beside its handlers: a route cannot be served without being described.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace cm::api {

/// The document, with `server_url` (oauth.public_base_url) as its server
/// and `service_header` (auth.service_header) as the service tokens'
/// header. Throws std::logic_error naming a route without documentation.
const nlohmann::json& openapi_document(const std::string& server_url,
                                       const std::string& service_header);

/// A route pattern as the document's path: "{path*}" (the rest of the
/// path, http/router.hpp) is "{path}" in OpenAPI.
std::string openapi_path(const std::string& pattern);

} // namespace cm::api

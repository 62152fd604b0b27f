// The JSON Schemas several routes share (components of the OpenAPI
// document): the error body, a connection, a token answer, a team
// connector. A schema only one route answers with is written beside that
// route instead.
#pragma once

#include <nlohmann/json.hpp>

namespace cm::api {

/// {"Error": …, "Connection": …, …}: every shared schema by name.
const nlohmann::json& shared_schemas();

} // namespace cm::api

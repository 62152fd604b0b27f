// Parsing of JSON request bodies with limits: a body must be one JSON
// object, valid UTF-8, nested at most `max_depth` levels.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace cm::http {

constexpr int max_json_depth = 32;

/// Parses `body` into `out`. On failure returns false and sets `problem` to a
/// message fit for the caller (it never quotes the body).
bool parse_json_object(std::string_view body, nlohmann::json& out, std::string& problem);

} // namespace cm::http

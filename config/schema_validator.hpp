// A validator for the subset of JSON Schema (draft 2020-12) that
// config/connector_schema.hpp generates. Not a general implementation: a
// keyword it does not know makes validation fail rather than be skipped, so
// a schema can never promise a check that silently does not happen.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace cm::config {

/// Checks `value` against `schema`. On failure returns false and sets `error`
/// to the first problem, naming the field by its path (`sync.interval must be
/// at least 300`, `filters.repositories[2] must be a string`, `unknown field
/// filters.foo`, `baseUrl is required`). Messages quote the schema's limits
/// and the names of fields, never a value: a value may be a secret.
///
/// Supported: type (object, array, string, integer, number, boolean, null, or
/// a list of them), properties, required, additionalProperties (true or
/// false), enum, minLength, maxLength, pattern (ECMAScript, searched, so
/// patterns carry their own anchors), minimum, maximum, items, maxItems,
/// uniqueItems. $schema, $id, title, description, format and writeOnly are
/// annotations. "integer" means a JSON number written without fraction or
/// exponent: 5.0 is not an integer, nor is true.
///
/// Never throws; a schema it cannot apply is reported as an error.
bool validate_against_schema(const nlohmann::json& schema, const nlohmann::json& value,
                             std::string& error) noexcept;

} // namespace cm::config

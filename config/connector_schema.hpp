// The JSON Schema of a team's configuration of one catalog connector, derived
// from its provider entry. GET /api/v1/connectors/schema/:connectorName
// serves connector_config_schema(); PUT /config and POST /filters check their
// bodies with validate_against_schema() (config/schema_validator.hpp) against
// the same documents, so what the form shows and what the server accepts
// cannot drift apart.
#pragma once

#include <nlohmann/json.hpp>

#include "config/provider_catalog.hpp"
#include "config/schema_validator.hpp"

namespace cm::config {

/// The body of PUT /api/v1/connectors/config/:connectorName as a draft
/// 2020-12 schema: `baseUrl` (required), `auth` (OAuth app credentials for
/// oauth2 connectors, nothing for per-user keys), `sync` and `filters`.
nlohmann::json connector_config_schema(const provider_entry& entry);

/// The `filters` object: one property per catalog filter, nothing else.
/// Also the body schema of POST /api/v1/connectors/filters/:connectorName.
nlohmann::json connector_filters_schema(const provider_entry& entry);

/// The `filterOptions` array of GET /filters: one
/// {"name","type","description"[,"enum"][,"minimum"][,"maximum"]} per filter,
/// in catalog order.
nlohmann::json filter_options_json(const provider_entry& entry);

} // namespace cm::config

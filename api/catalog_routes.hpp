// GET /api/connectors/catalog: what a member can connect, and what each
// connect asks for, so a host application (or the Connect page) can build
// its UI from data instead of hard-coding providers.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "api/route.hpp"
#include "config/provider_catalog.hpp"

namespace cm {

std::vector<api::route> catalog_routes();

namespace api {

/// The fields a connect of `entry` takes: for an API-key or service-account
/// provider what POST /api/connectors/connect reads (the key first), for an
/// OAuth provider its authorization parameters (Shopify's shop). Each is
/// {name, label, pattern (an ECMAScript regex or null), secret, required,
/// multiline}.
nlohmann::json connect_fields(const config::provider_entry& entry);

} // namespace api

} // namespace cm

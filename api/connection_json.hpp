// The one JSON shape of a stored connection, shared by GET
// /api/connectors/list and `connector-manager connections list|show
// --json`: snake_case names, RFC 3339 times, the id events carry as
// connectionId, and never a secret.
#pragma once

#include <nlohmann/json.hpp>

#include "config/provider_catalog.hpp"
#include "storage/records.hpp"

namespace cm::api {

/// `with_user`: add user_id (team listings); `with_team`: add team_id
/// (the operator's listings across teams).
nlohmann::json connection_json(const token_summary& s, const config::provider_catalog& catalog,
                               bool with_user, bool with_team = false);

} // namespace cm::api

// API-key connections: POST /api/connectors/connect validates the key with
// a real call to the provider, then stores it.
#pragma once

#include <vector>

#include "api/route.hpp"

namespace cm {

/// POST /api/connectors/connect {"provider","api_key",…fields} (user).
void connect_api_key(const call& c);

/// The route above with its documentation.
std::vector<api::route> api_key_routes();

} // namespace cm

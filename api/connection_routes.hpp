// A member's own connections (list, refresh now) and the services' refresh
// of any member's connection.
#pragma once

#include <vector>

#include "api/route.hpp"

namespace cm {

std::vector<api::route> connection_routes();

/// One attempt of POST /api/v1/connectors/internal/refreshIndividualConnectorToken;
/// a transient failure sends `retry_atom` to the front actor for the next.
void service_refresh_attempt(front_self self, const exchange_ptr& ex, const connection_key& key,
                             int32_t attempt);

} // namespace cm

// API-key connections: POST /api/connectors/connect validates the key with
// a real call to the provider, then stores it.
#pragma once

#include "actors/front_call.hpp"

namespace cm {

/// POST /api/connectors/connect {"provider","api_key",…fields} (user).
void connect_api_key(const call& c);

} // namespace cm

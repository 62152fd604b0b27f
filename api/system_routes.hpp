// Routes about the service itself: health and the OpenAPI document.
#pragma once

#include <vector>

#include "api/route.hpp"

namespace cm {

std::vector<api::route> system_routes();

} // namespace cm

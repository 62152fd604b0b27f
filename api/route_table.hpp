// Every route the front serves, in matching order: each family's routes,
// defined beside their handlers.
#pragma once

#include <vector>

#include "api/route.hpp"

namespace cm::api {

const std::vector<route>& route_table();

} // namespace cm::api

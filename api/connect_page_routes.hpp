// The Connect page (/connect) and its JavaScript client (/connect/sdk.js):
// static files from web/connect, served with a strict Content-Security-
// Policy. The page lists the catalog, connects API keys with a form and
// OAuth providers in a popup; /connect/done is where that popup ends.
#pragma once

#include <vector>

#include "api/route.hpp"

namespace cm {

std::vector<api::route> connect_page_routes();

} // namespace cm

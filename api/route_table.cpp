#include "api/route_table.hpp"

#include "api/api_key_routes.hpp"
#include "api/catalog_routes.hpp"
#include "api/connect_page_routes.hpp"
#include "api/connection_routes.hpp"
#include "api/connector_routes.hpp"
#include "api/oauth_routes.hpp"
#include "api/proxy_routes.hpp"
#include "api/system_routes.hpp"
#include "api/token_routes.hpp"

namespace cm::api {

// Metered routes write or call providers and draw from the caller's token
// bucket. Reads are not metered: each is one indexed query scoped to the
// caller, and services fetch tokens (served from memory) on their hot path.
// Callbacks carry no session to meter by; each one that reaches a provider
// needs a fresh single-use state, which only a metered authorize creates.
const std::vector<route>& route_table() {
  static const std::vector<route> table = [] {
    std::vector<route> all;
    for (auto family : {system_routes, connection_routes, token_routes, oauth_routes,
                        api_key_routes, connector_routes, catalog_routes, connect_page_routes,
                        proxy_routes})
      for (auto& r : family())
        all.push_back(std::move(r));
    return all;
  }();
  return table;
}

} // namespace cm::api

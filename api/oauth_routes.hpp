// OAuth 2.0 authorization-code routes of the front actor: authorize,
// callback and disconnect (both route families of DESIGN.md).
#pragma once

#include <vector>

#include "api/route.hpp"

namespace cm {

/// GET /api/oauth/{provider}/authorize?redirect_uri=… (user) and
/// GET /api/v1/connectors/{connectorName}/oauth/authorize (admin).
void oauth_authorize(const call& c);

/// GET /api/oauth/{provider}/callback and
/// GET /api/v1/connectors/{connectorName}/oauth/callback (no session: the
/// state proves who started the flow).
void oauth_callback(const call& c);

/// POST …/oauth/start: a page's form, posted into a popup (the Connect
/// page, /connect/sdk.js). Starts the flow like authorize, sets the cookie
/// that binds it to this browser and sends the browser on to the provider
/// (303); the popup ends on /connect/done, which tells the opener.
void oauth_start(const call& c);

/// DELETE /api/connectors/{provider} (user): revoke at the provider, delete.
void disconnect(const call& c);

/// The routes above with their documentation.
std::vector<api::route> oauth_routes();

} // namespace cm

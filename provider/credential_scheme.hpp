// How a stored credential is presented to a provider: the one place that
// turns a token or an API key into the header (or query parameter) the
// provider's API expects. The account lookup after a connect, the API-key
// validation and the proxy (api/proxy_routes.hpp) all present credentials
// here, so a provider's scheme is written once, in the catalog.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "config/provider_catalog.hpp"
#include "provider/outbound.hpp"

namespace cm::credential {

/// A token as `auth` says: "bearer" (Authorization: Bearer), "header:<Name>"
/// or "query:<param>" (appended to the request's URL).
void present_token(const std::string& auth, const std::string& token, outbound_request& req);

/// An API key as `check.scheme` says (Bearer, Basic in its three shapes,
/// Klaviyo-API-Key, a named header), with `fields` giving the email of the
/// Basic schemes. The check's constant headers (Klaviyo's revision) are
/// not added here: the caller decides whether its own values win.
void present_api_key(const config::api_key_check& check, const std::string& key,
                     const nlohmann::json& fields, outbound_request& req);

} // namespace cm::credential

// Binding an OAuth flow to the browser that started it (RFC 6749 §10.12,
// RFC 9700 §4.7): without it, whoever completes the provider's consent for
// an auth_url attaches their provider account to the member who asked for
// the URL, so a member could send their auth_url to a colleague and receive
// the colleague's account.
//
// The route that starts a flow answers a cookie whose value is a keyed hash
// of the flow's state; the callback recomputes it from the state it
// receives and attaches the grant only when the cookie came back with it.
// Nothing new is stored: the value cannot be forged without the service's
// key, and only the starting browser was ever given it. Pure functions; no
// I/O.
#pragma once

#include <string>

#include "storage/keyring.hpp"

namespace cm::http {
struct request;
}

namespace cm::oauth {

/// The cookie's name for one flow: "cm_flow_" and 16 hex digits of an
/// unkeyed hash of the state, so concurrent flows in one browser keep
/// their own cookies and the callback finds its own.
std::string binding_cookie_name(const std::string& state);

/// The cookie's value: a keyed BLAKE2b of the state under the active key,
/// domain-separated from the state hash the database stores.
std::string binding_cookie_value(const storage::keyring& keys, const std::string& state);

/// Whether `value` is the flow's cookie value under any key of the ring (a
/// rotation during the flow keeps it valid). Constant-time per key.
bool binding_cookie_matches(const storage::keyring& keys, const std::string& state,
                            const std::string& value);

/// `Set-Cookie` for the flow: HttpOnly, SameSite=Lax (the provider's
/// redirect back is a cross-site top-level navigation, which Strict would
/// strip), scoped to the callback's path, expiring with the state, and
/// Secure when the service is reached over https.
std::string binding_set_cookie(const std::string& name, const std::string& value,
                               const std::string& callback_path, int max_age_s, bool secure);

/// The `Set-Cookie` that deletes it once the callback used it.
std::string binding_clear_cookie(const std::string& name, const std::string& callback_path,
                                 bool secure);

/// The value of cookie `name` in the request's Cookie headers, or "".
std::string request_cookie(const http::request& req, const std::string& name);

/// Whether the request comes from a browser: every current engine sends
/// the Fetch Metadata headers (Sec-Fetch-Mode, -Site, -Dest) on every
/// request, navigations included (Chrome 76, Firefox 90, Safari 16.4). A
/// program that completes its own flow sends none, even when it asks for
/// text/html as the seed's clients do.
bool from_browser(const http::request& req);

} // namespace cm::oauth

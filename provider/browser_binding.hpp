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

/// Where one flow's cookie lives. Its name carries 16 hex digits of an
/// unkeyed hash of the state, so concurrent flows in one browser keep their
/// own cookies and the callback finds its own. Over https it is
/// `__Host-cm_flow_…` on Path=/ (a sibling subdomain or a plain-http answer
/// cannot set a __Host- cookie, so nobody can plant a value they know);
/// otherwise `cm_flow_…` on the callback's path.
struct binding_cookie {
  std::string name;
  std::string path;
  bool secure = false;
};

binding_cookie binding_cookie_for(const std::string& state, const std::string& callback_path,
                                  bool secure);

/// The cookie's value: a keyed BLAKE2b of the state under the active key,
/// domain-separated from the state hash the database stores.
std::string binding_cookie_value(const storage::keyring& keys, const std::string& state);

/// Whether `value` is the flow's cookie value under any key of the ring (a
/// rotation during the flow keeps it valid). Constant-time per key.
bool binding_cookie_matches(const storage::keyring& keys, const std::string& state,
                            const std::string& value);

/// `Set-Cookie` for the flow: HttpOnly, SameSite=Lax (the provider's
/// redirect back is a cross-site top-level navigation, which Strict would
/// strip), expiring with the state, Secure over https.
std::string binding_set_cookie(const binding_cookie& cookie, const std::string& value,
                               int max_age_s);

/// The `Set-Cookie` that deletes it once the callback used it.
std::string binding_clear_cookie(const binding_cookie& cookie);

/// The value of cookie `name` in the request's Cookie headers, or "".
std::string request_cookie(const http::request& req, const std::string& name);

/// Whether the request comes from a browser: every current engine sends
/// the Fetch Metadata headers (Sec-Fetch-Mode, -Site, -Dest) to https and
/// loopback origins (Chrome 76, Firefox 90, Safari 16.4), and every
/// navigation carries Upgrade-Insecure-Requests, plain http included. A
/// program that completes its own flow sends none of them, even when it
/// asks for text/html as the seed's clients do.
bool from_browser(const http::request& req);

} // namespace cm::oauth

// What crosses the proxy besides the body, in each direction, by allow-list:
// an unknown header is dropped, not passed on, so a caller can never send a
// provider its own Authorization, cookies or hop-by-hop headers, and a
// provider can never set a cookie on our origin.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cm::proxy {

using header_list = std::vector<std::pair<std::string, std::string>>;

/// The caller's headers a provider gets: the content and conditional
/// headers every API reads (Content-Type, Accept, Accept-Language,
/// Content-Language, If-Match, If-None-Match, If-Modified-Since,
/// If-Unmodified-Since, Idempotency-Key), and `also` (the catalog's
/// forward_headers for this provider). Names compared without case.
header_list forwarded_request_headers(const header_list& caller, const std::vector<std::string>& also);

/// Every form in which the credential could come back from a provider:
/// each of `presented` (the credential itself and the header or query
/// values it was sent in, e.g. "Basic <base64>") as is, percent-encoded
/// with upper- and lower-case hex, and JSON-escaped ("\/"); for a Basic
/// value also its base64 part. Empty values are left out.
std::vector<std::string> credential_forms(const std::vector<std::string>& presented);

/// The provider's answer headers the caller gets (`lower`: names in lower
/// case): what describes the content (but not its length, encoding or
/// caching, which our own writer sets), validators, Location, Link,
/// Retry-After and the providers' rate-limit headers. Content-Type is
/// returned on its own (`content_type`, "" when absent). A header whose
/// value contains any of `forms`, a CR, LF or NUL is dropped whatever its
/// name.
header_list returned_headers(const std::map<std::string, std::string>& lower,
                             const std::vector<std::string>& forms, std::string& content_type);

/// Replaces every occurrence of each of `forms` in `text` by
/// "[redacted]"; returns how many. Providers echo a token given in the
/// query (Graph API's paging links), and the proxy's promise is that the
/// credential never reaches the caller.
size_t redact(std::string& text, const std::vector<std::string>& forms);

/// Header names no caller value may ever be forwarded under, whatever a
/// catalog's forward_headers says: credentials, cookies, framing and
/// hop-by-hop headers, the proxy's own (lower case).
bool never_forwarded(const std::string& lower_name);

} // namespace cm::proxy

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

/// The provider's answer headers the caller gets (`lower`: names in lower
/// case): what describes the content (but not its length or encoding,
/// which our own writer sets), caching validators, Location, Link,
/// Retry-After and the providers' rate-limit headers. Content-Type is
/// returned on its own (`content_type`, "" when absent). A header whose
/// value contains `credential` is dropped whatever its name.
header_list returned_headers(const std::map<std::string, std::string>& lower,
                             const std::string& credential, std::string& content_type);

/// Replaces every occurrence of `credential` in `text`, as is and
/// percent-encoded, by "[redacted]"; returns how many. Providers echo a
/// token given in the query (Graph API's paging links), and the proxy's
/// promise is that the credential never reaches the caller.
size_t redact(std::string& text, const std::string& credential);

} // namespace cm::proxy

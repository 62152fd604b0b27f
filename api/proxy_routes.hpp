// The proxy: /api/proxy/{provider}/{path…} for any of GET, HEAD, POST, PUT,
// PATCH and DELETE (a HEAD's answer has the provider's status and headers
// and no body), for services holding the scope PROXY. The service names a
// connection (X-Connection-User-Id / X-Connection-Team-Id, or the query
// parameters cm_user_id / cm_team_id, both stripped), and this service makes
// the call under the provider's API base URL (the catalog's `api.base_url`)
// with the connection's credential presented in the provider's own scheme.
// The service never holds the credential: it is absent from the answer, the
// log, the audit row, the events and the metrics.
//
// In order, each step refusing before the next costs anything:
//   1. the path and query must stay under the base (proxy/target.hpp): 400;
//   2. the connection is found (404) and its team's bucket and in-flight
//      slots are taken (429);
//   3. the token comes from its snapshot or its connection actor (a token
//      in its refresh window is refreshed first, as for a token read);
//   4. one call; a 401 from the provider forces one refresh (shared with any
//      other forced refresh of the connection) and one retry with the new
//      token; 429 and 503 pass through with Retry-After, never retried;
//   5. the answer (status, safe headers, the body redacted) goes back: whole
//      while it is up to proxy.stream_after_bytes, streamed (chunked, with
//      back-pressure) beyond, never more than proxy.max_response_bytes; an
//      audit row records the call.
#pragma once

#include <vector>

#include "api/route.hpp"

namespace cm {

/// The proxy's routes, one per method, with their documentation.
std::vector<api::route> proxy_routes();

/// A provider's answer, in the front actor that made the call (it came
/// on the proxy engine's thread, which only hands it on).
void take_proxy_answer(const proxy_answer_ptr& answer);

} // namespace cm

// What the token service answers, apart from its implementation
// (actors/token_service_actor.hpp): other CAF programs (client/) and the
// other instances of the deployment (actors/owner_forwarder.hpp) talk to it
// through CAF's middleman.
#pragma once

#include <string>

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/fwd.hpp"

namespace cm {

using token_service_actor = caf::typed_actor<
  // (service token, connection) -> a valid access token or API key.
  caf::replies_to<get_token_atom, std::string, connection_key>::with<token_grant>,
  // From another instance of the deployment: (peer token, connection,
  // force) -> the token, served only when this instance owns the
  // connection's shard (`unavailable` otherwise, and the asker serves it
  // itself). Audited by the instance the request came to, not here.
  caf::replies_to<forward_atom, std::string, connection_key, bool>::with<token_grant>>;

} // namespace cm

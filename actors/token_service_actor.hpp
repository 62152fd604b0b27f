// The token service other CAF programs talk to, published through CAF's
// middleman (loopback by default). Each request carries a service token,
// checked exactly as over HTTP: constant-time against the configured hashes,
// scope FETCH_CONFIG required, and every token handed out is audited.
#pragma once

#include <memory>
#include <string>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/fwd.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "http/auth.hpp"

namespace cm {

using token_service_actor = caf::typed_actor<
  // (service token, connection) -> a valid access token or API key.
  caf::replies_to<get_token_atom, std::string, connection_key>::with<token_grant>>;

struct token_service_state {
  static inline const char* name = "token-service";
};

token_service_actor::behavior_type
token_service(token_service_actor::stateful_pointer<token_service_state> self,
              registry_actor registry, storage_actor storage,
              std::shared_ptr<const http::authenticator> auth);

} // namespace cm

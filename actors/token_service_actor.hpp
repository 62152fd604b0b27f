// The token service other CAF programs talk to, published through CAF's
// middleman (loopback by default). Each request carries a service token,
// checked exactly as over HTTP: constant-time against the configured hashes,
// scope FETCH_CONFIG required, and every token handed out is audited.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/fwd.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "actors/token_service_interface.hpp"
#include "http/auth.hpp"
#include "storage/keyring.hpp"

namespace cm {

/// The authenticator the token service checks with, replaced by a hot
/// reload. Not a message: the service is reachable by remote actors, and
/// no remote message may change what it trusts.
class shared_authenticator {
public:
  explicit shared_authenticator(std::shared_ptr<const http::authenticator> auth)
    : auth_(std::move(auth)) {}
  std::shared_ptr<const http::authenticator> get() const {
    std::lock_guard<std::mutex> guard{mutex_};
    return auth_;
  }
  void set(std::shared_ptr<const http::authenticator> auth) {
    std::lock_guard<std::mutex> guard{mutex_};
    auth_ = std::move(auth);
  }

private:
  mutable std::mutex mutex_;
  std::shared_ptr<const http::authenticator> auth_;
};


struct token_service_state {
  static inline const char* name = "token-service";
};

/// `peers` checks the token other instances forward with
/// (storage/peer_token.hpp); null: forwarded requests are refused.
/// `audit_rows`: where token reads are recorded before they are answered
/// (storage/audit_queue.hpp; full: the read is refused as unavailable);
/// null: each row is sent to `audit` as a message.
token_service_actor::behavior_type
token_service(token_service_actor::stateful_pointer<token_service_state> self,
              registry_actor registry, connector_config_store_actor audit,
              std::shared_ptr<shared_authenticator> auth,
              std::shared_ptr<const storage::keyring> peers,
              storage::audit_queue_ptr audit_rows = nullptr);

} // namespace cm

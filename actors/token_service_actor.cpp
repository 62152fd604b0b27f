#include "actors/token_service_actor.hpp"

#include "common/metrics.hpp"
#include "storage/audit_rows.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/log.hpp"
#include "storage/peer_token.hpp"

namespace cm {

token_service_actor::behavior_type
token_service(token_service_actor::stateful_pointer<token_service_state> self,
              registry_actor registry, connector_config_store_actor audit,
              std::shared_ptr<shared_authenticator> auth,
              std::shared_ptr<const storage::keyring> peers, storage::audit_queue_ptr audit_rows) {
  auto accepted = peers ? storage::accepted_peer_tokens(*peers) : std::vector<std::string>{};
  return {
    [=](get_token_atom, const std::string& service_token,
        const connection_key& key) -> caf::result<token_grant> {
      auto who = auth->get()->verify_service_token(service_token);
      if (!who)
        return who.error();
      if (auto denied = http::require_service(*who, http::scope_fetch_config))
        return denied;
      if (key.team_id.empty() || key.user_id.empty() || key.provider.empty())
        return make_error(ec::bad_request, "team_id, user_id and provider are required");
      auto entry = storage::token_read_row(who->subject, key, "caf-middleman", "", "actor");
      // Not delegate(): the answer would then come from the connection
      // actor itself and hand the remote caller its address, bypassing the
      // service-token check for every later message.
      auto promise = self->make_response_promise<token_grant>();
      self->request(registry, std::chrono::seconds(30), get_token_atom_v, key, false)
        .then(
          [=](token_grant& grant) mutable {
            // Recorded before it is handed out, never served unaudited
            // (as over HTTP, api/token_routes.hpp).
            if (!audit_rows) {
              self->send(audit, audit_atom_v, std::move(entry));
            } else {
              auto queued = audit_rows->try_push(std::move(entry));
              if (queued == storage::audit_queue::pushed::full) {
                promise.deliver(make_error(
                  ec::unavailable, "the audit log is behind; the token was not handed out"));
                return;
              }
              if (queued == storage::audit_queue::pushed::queued_wake)
                self->send(audit, audit_atom_v);
            }
            metrics::token_read(metrics::token_read_via::message);
            promise.deliver(std::move(grant));
          },
          [promise](caf::error& err) mutable { promise.deliver(std::move(err)); });
      return promise;
    },
    [=](forward_atom, const std::string& peer_token, const connection_key& key,
        bool force) -> caf::result<token_grant> {
      // Not logged: any peer of the port could fill the log with these.
      // An instance of the deployment that is refused says so on its side.
      if (!storage::is_peer_token(accepted, peer_token))
        return make_error(ec::unauthenticated, "not an instance of this deployment");
      if (key.team_id.empty() || key.user_id.empty() || key.provider.empty())
        return make_error(ec::bad_request, "team_id, user_id and provider are required");
      // Served only by the owner: the registry answers `unavailable` when
      // the shard is not (or no longer) owned here.
      auto promise = self->make_response_promise<token_grant>();
      self->request(registry, std::chrono::seconds(30), forward_atom_v, key, force)
        .then([promise](token_grant& grant) mutable { promise.deliver(std::move(grant)); },
              [promise](caf::error& err) mutable { promise.deliver(std::move(err)); });
      return promise;
    },
  };
}

} // namespace cm

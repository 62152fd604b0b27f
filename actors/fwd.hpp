// Message types and atoms of connector-manager, registered with CAF in one
// type-ID block (see actors/actor_config.hpp).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/type_id.hpp>

#include "provider/outbound.hpp"
#include "storage/records.hpp"

namespace cm::http {
class exchange;
}

namespace cm {
/// An HTTP request and the one-shot channel its response goes through.
/// Only ever sent inside this process.
using exchange_ptr = std::shared_ptr<http::exchange>;
} // namespace cm

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cm::exchange_ptr)

CAF_BEGIN_TYPE_ID_BLOCK(connector_manager, caf::first_custom_type_id)

  CAF_ADD_TYPE_ID(connector_manager, (cm::connection_key))
  CAF_ADD_TYPE_ID(connector_manager, (cm::token_record))
  CAF_ADD_TYPE_ID(connector_manager, (cm::token_summary))
  CAF_ADD_TYPE_ID(connector_manager, (cm::token_summaries))
  CAF_ADD_TYPE_ID(connector_manager, (cm::exchange_ptr))
  CAF_ADD_TYPE_ID(connector_manager, (cm::token_records))
  CAF_ADD_TYPE_ID(connector_manager, (cm::hydrate_batch))
  CAF_ADD_TYPE_ID(connector_manager, (cm::refreshed_tokens))
  CAF_ADD_TYPE_ID(connector_manager, (cm::audit_entry))
  CAF_ADD_TYPE_ID(connector_manager, (cm::token_grant))
  CAF_ADD_TYPE_ID(connector_manager, (cm::connection_status))
  CAF_ADD_TYPE_ID(connector_manager, (cm::outbound_request))
  CAF_ADD_TYPE_ID(connector_manager, (cm::outbound_response))
  CAF_ADD_TYPE_ID(connector_manager, (std::vector<std::string>))
  CAF_ADD_TYPE_ID(connector_manager, (cm::oauth_state_record))
  CAF_ADD_TYPE_ID(connector_manager, (cm::connect_result))

  // Atom texts are at most 10 characters (CAF 0.17).
  CAF_ADD_ATOM(connector_manager, cm, ping_atom, "ping")
  CAF_ADD_ATOM(connector_manager, cm, save_atom, "save")
  CAF_ADD_ATOM(connector_manager, cm, find_atom, "find")
  CAF_ADD_ATOM(connector_manager, cm, list_atom, "list")
  CAF_ADD_ATOM(connector_manager, cm, remove_atom, "remove")
  CAF_ADD_ATOM(connector_manager, cm, http_atom, "http")
  CAF_ADD_ATOM(connector_manager, cm, lease_atom, "lease")
  CAF_ADD_ATOM(connector_manager, cm, complete_atom, "complete")
  CAF_ADD_ATOM(connector_manager, cm, release_atom, "release")
  CAF_ADD_ATOM(connector_manager, cm, reauth_atom, "reauth")
  CAF_ADD_ATOM(connector_manager, cm, hydrate_atom, "hydrate")
  CAF_ADD_ATOM(connector_manager, cm, audit_atom, "audit")
  CAF_ADD_ATOM(connector_manager, cm, teams_atom, "teams")
  CAF_ADD_ATOM(connector_manager, cm, get_token_atom, "get_token")
  CAF_ADD_ATOM(connector_manager, cm, status_atom, "status")
  CAF_ADD_ATOM(connector_manager, cm, reload_atom, "reload")
  CAF_ADD_ATOM(connector_manager, cm, tick_atom, "tick")
  CAF_ADD_ATOM(connector_manager, cm, fetched_atom, "fetched")
  CAF_ADD_ATOM(connector_manager, cm, retry_atom, "retry")
  CAF_ADD_ATOM(connector_manager, cm, state_put_atom, "state_put")
  CAF_ADD_ATOM(connector_manager, cm, state_take_atom, "state_take")
  CAF_ADD_ATOM(connector_manager, cm, connect_atom, "connect")
  CAF_ADD_ATOM(connector_manager, cm, disconnect_atom, "disconnect")

CAF_END_TYPE_ID_BLOCK(connector_manager)

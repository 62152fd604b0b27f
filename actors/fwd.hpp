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
#include "provider/service_account.hpp"
#include "storage/records.hpp"

namespace cm::http {
class exchange;
class event_stream;
}

namespace cm {
/// An HTTP request and the one-shot channel its response goes through.
/// Only ever sent inside this process.
using exchange_ptr = std::shared_ptr<http::exchange>;

// Immutable configuration snapshots handed to running actors by a hot
// reload (POST /api/v1/connectors/updateAppConfig). In-process only.
struct front_context;
struct registry_deps;
struct webhook_settings;
using front_context_ptr = std::shared_ptr<const front_context>;
using registry_deps_ptr = std::shared_ptr<const registry_deps>;
using webhook_settings_ptr = std::shared_ptr<const webhook_settings>;

/// A provider's answer to a proxied call, handed from the proxy's libcurl
/// thread back to the front actor that made the call (api/proxy_routes).
/// In-process only.
struct proxy_answer;
using proxy_answer_ptr = std::shared_ptr<proxy_answer>;
} // namespace cm

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cm::exchange_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cm::front_context_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cm::registry_deps_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cm::webhook_settings_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cm::proxy_answer_ptr)

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
  CAF_ADD_TYPE_ID(connector_manager, (cm::front_context_ptr))
  CAF_ADD_TYPE_ID(connector_manager, (cm::registry_deps_ptr))
  CAF_ADD_TYPE_ID(connector_manager, (cm::webhook_settings_ptr))
  CAF_ADD_TYPE_ID(connector_manager, (cm::audit_row))
  CAF_ADD_TYPE_ID(connector_manager, (cm::audit_rows))
  CAF_ADD_TYPE_ID(connector_manager, (cm::outbox_position))
  CAF_ADD_TYPE_ID(connector_manager, (cm::outbox_event))
  CAF_ADD_TYPE_ID(connector_manager, (cm::outbox_events))
  CAF_ADD_TYPE_ID(connector_manager, (cm::outbox_page))
  CAF_ADD_TYPE_ID(connector_manager, (cm::webhook_target))
  CAF_ADD_TYPE_ID(connector_manager, (cm::webhook_targets))
  CAF_ADD_TYPE_ID(connector_manager, (cm::webhook_job))
  CAF_ADD_TYPE_ID(connector_manager, (cm::webhook_jobs))
  CAF_ADD_TYPE_ID(connector_manager, (cm::connector_config_record))
  CAF_ADD_TYPE_ID(connector_manager, (cm::connector_config_records))
  CAF_ADD_TYPE_ID(connector_manager, (cm::connector_change))
  CAF_ADD_TYPE_ID(connector_manager, (cm::oauth::jwt_bearer_grant))
  CAF_ADD_TYPE_ID(connector_manager, (std::vector<int32_t>))

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
  CAF_ADD_ATOM(connector_manager, cm, outbox_atom, "outbox")
  CAF_ADD_ATOM(connector_manager, cm, head_atom, "head")
  CAF_ADD_ATOM(connector_manager, cm, claim_atom, "claim")
  CAF_ADD_ATOM(connector_manager, cm, delivered_atom, "delivered")
  CAF_ADD_ATOM(connector_manager, cm, webhooks_atom, "webhooks")
  CAF_ADD_ATOM(connector_manager, cm, config_get_atom, "cfg_get")
  CAF_ADD_ATOM(connector_manager, cm, config_list_atom, "cfg_list")
  CAF_ADD_ATOM(connector_manager, cm, config_change_atom, "cfg_change")
  CAF_ADD_ATOM(connector_manager, cm, code_connect_atom, "code_conn")
  CAF_ADD_ATOM(connector_manager, cm, audit_page_atom, "audit_page")
  CAF_ADD_ATOM(connector_manager, cm, subscribe_atom, "subscribe")
  CAF_ADD_ATOM(connector_manager, cm, configure_atom, "configure")
  CAF_ADD_ATOM(connector_manager, cm, version_atom, "version")
  CAF_ADD_ATOM(connector_manager, cm, signed_atom, "signed")
  CAF_ADD_ATOM(connector_manager, cm, own_atom, "own")
  CAF_ADD_ATOM(connector_manager, cm, handover_atom, "handover")
  CAF_ADD_ATOM(connector_manager, cm, flush_atom, "flush")
  CAF_ADD_ATOM(connector_manager, cm, forward_atom, "forward")
  CAF_ADD_ATOM(connector_manager, cm, backlog_atom, "backlog")
  CAF_ADD_ATOM(connector_manager, cm, proxied_atom, "proxied")

CAF_END_TYPE_ID_BLOCK(connector_manager)

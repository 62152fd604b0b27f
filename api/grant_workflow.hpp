// Storing a grant a provider issued, written once for every flow that
// obtains one (the OAuth callback of both route families and Google's code
// exchange): the record built from the provider's answer; the connection
// fenced before and after the write so no snapshot of the old row is
// served; the grant it replaced revoked at the provider; the connection's
// actor told to load the new row.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include "api/route_call.hpp"
#include "provider/oauth_protocol.hpp"

namespace cm::api {

/// The record of a grant `answer` carries for `key`: the provider's
/// default scopes when it names none; no expiry for a grant that neither
/// states one nor can be refreshed (Shopify offline, TikTok, GitHub apps).
/// `metadata` is stored as given, plus the apps its scopes grant.
token_record grant_record(const connection_key& key, const config::provider_entry& entry,
                          const oauth::token_answer& answer, nlohmann::json metadata);

/// Stores `record`, with `change` in the same transaction when given (a
/// team connector a code exchange enables), then revokes what it replaced
/// with `client` (best effort, logged) and reloads the connection's actor.
/// `done` gets what was stored; `failed` the error, once the fence is
/// lifted.
void store_grant(const call& c, const config::provider_entry& entry,
                 std::shared_ptr<const oauth::client_credentials> client, token_record record,
                 std::optional<connector_change> change,
                 std::function<void(const connect_result&)> done,
                 std::function<void(const caf::error&)> failed);

} // namespace cm::api

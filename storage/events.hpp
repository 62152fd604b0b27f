// Lifecycle event payloads. Built in one place so no caller can put a
// secret into one: they carry references and names only.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "storage/records.hpp"

namespace cm::storage {

inline constexpr const char* topic_token_events = "token-events";
inline constexpr const char* topic_entity_events = "entity-events";

/// TOKEN_CREATED | TOKEN_REFRESHED | TOKEN_REVOKED | TOKEN_EXPIRED.
nlohmann::json token_event(const std::string& event_id, const std::string& type,
                           const std::string& connection_id, const connection_key& key,
                           const std::string& reason = "");

/// appEnabled | appDisabled for a team's connector, with the apps it
/// covers and what the consumer should do about syncing
/// (none | immediate | scheduled). `user_id` is the admin who acted.
nlohmann::json entity_event(const std::string& event_id, const std::string& type,
                            const std::string& team_id, const std::string& connector_name,
                            const std::string& user_id, const nlohmann::json& apps,
                            const std::string& sync_action);

} // namespace cm::storage

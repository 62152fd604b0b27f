#include "storage/events.hpp"

#include "common/time.hpp"

namespace cm::storage {

nlohmann::json token_event(const std::string& event_id, const std::string& type,
                           const std::string& connection_id, const connection_key& key,
                           const std::string& reason) {
  nlohmann::json event = {{"eventId", event_id},
                          {"eventType", type},
                          {"topic", topic_token_events},
                          {"connectionId", connection_id},
                          {"provider", key.provider},
                          {"userId", key.user_id},
                          {"orgId", key.team_id},
                          {"timestamp", rfc3339(unix_now_ms())}};
  if (!reason.empty())
    event["reason"] = reason;
  return event;
}

nlohmann::json entity_event(const std::string& event_id, const std::string& type,
                            const std::string& team_id, const std::string& connector_name,
                            const std::string& user_id, const nlohmann::json& apps,
                            const std::string& sync_action) {
  return {{"eventId", event_id},
          {"eventType", type},
          {"topic", topic_entity_events},
          {"connectorName", connector_name},
          {"provider", connector_name},
          {"userId", user_id},
          {"orgId", team_id},
          {"apps", apps.is_array() ? apps : nlohmann::json::array()},
          {"syncAction", sync_action},
          {"timestamp", rfc3339(unix_now_ms())}};
}

} // namespace cm::storage

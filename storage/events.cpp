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

} // namespace cm::storage

// The one way an audit row is built: who (a user, a service, the system)
// did what to what, from where, on which request. The admin routes, the
// team OAuth flow and both token paths (HTTP and by message) all build
// their rows here.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "storage/records.hpp"

namespace cm::storage {

struct audit_actor {
  /// "user", "service" or "system".
  std::string type;
  std::string id;
};

/// A row in `team_id`'s audit log; `details` is a JSON object (never a
/// secret).
audit_entry audit_row(std::string team_id, audit_actor actor, std::string action,
                      std::string target, std::string remote_addr, std::string request_id,
                      const nlohmann::json& details = nlohmann::json::object());

/// A service's read of a connection's token, over HTTP or by message
/// (`via`: "http" or "actor").
audit_entry token_read_row(const std::string& service, const connection_key& key,
                           std::string remote_addr, std::string request_id, std::string_view via);

/// A call a service made through the proxy: the connection, the method,
/// the path without its query (queries carry search terms and ids nobody
/// asked to keep), the provider's status (or ours when none came) and how
/// long it took; for a streamed answer whose body was cut short, why
/// (`cut`: "too_large", "client_gone", "timeout", "unreachable").
audit_entry proxy_call_row(const std::string& service, const connection_key& key,
                           std::string remote_addr, std::string request_id,
                           const std::string& method, const std::string& path, int status,
                           int64_t duration_ms, const std::string& cut = "");

} // namespace cm::storage

// A team's own OAuth app for a connector: `auth.clientId` in its connector
// configuration plus the encrypted client secret (PUT
// /api/v1/connectors/config/:connectorName). When set, the team's flows,
// refreshes and revocations use it instead of the deployment's app; a grant
// records which app issued it in its metadata (`oauth_app`), because a
// refresh token only works with the client it was issued to.
#pragma once

#include <memory>

#include <nlohmann/json.hpp>

#include "provider/oauth_protocol.hpp"
#include "storage/records.hpp"

namespace cm {

inline constexpr const char* oauth_app_key = "oauth_app";
inline constexpr const char* oauth_app_team = "team";

/// The team's app, or null when it configured none (or only half of one).
inline std::shared_ptr<const oauth::client_credentials>
team_client(const connector_config_record& cfg) {
  if (cfg.client_secret.empty())
    return nullptr;
  auto config = nlohmann::json::parse(cfg.config, nullptr, false);
  if (!config.is_object() || !config.contains("auth") || !config["auth"].is_object())
    return nullptr;
  auto& auth = config["auth"];
  if (!auth.contains("clientId") || !auth["clientId"].is_string() ||
      auth["clientId"].get<std::string>().empty())
    return nullptr;
  auto client = std::make_shared<oauth::client_credentials>();
  client->client_id = auth["clientId"].get<std::string>();
  client->client_secret = cfg.client_secret;
  return client;
}

/// Whether a grant's metadata says the team's app issued it.
inline bool issued_by_team_app(const std::string& metadata_json) {
  auto metadata = nlohmann::json::parse(metadata_json, nullptr, false);
  return metadata.is_object() && metadata.value(oauth_app_key, "") == oauth_app_team;
}

} // namespace cm

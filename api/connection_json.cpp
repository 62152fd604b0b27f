#include "api/connection_json.hpp"

#include "common/time.hpp"

namespace cm::api {

nlohmann::json connection_json(const token_summary& s, const config::provider_catalog& catalog,
                               bool with_user, bool with_team) {
  auto metadata = nlohmann::json::parse(s.metadata, nullptr, false);
  if (!metadata.is_object())
    metadata = nlohmann::json::object();
  auto* entry = catalog.find(s.key.provider);
  // Service-account keys are stored as refreshable grants but are keys.
  bool api_key = s.kind == connection_kind::api_key ||
                 (entry != nullptr && entry->mode != config::auth_mode::oauth2);
  nlohmann::json out = {
    {"id", s.id},
    {"provider", s.key.provider},
    {"type", api_key ? "api_key" : "oauth"},
    {"status", name_of(s.status)},
    {"account", metadata.value("account_name", "")},
    {"scopes", s.scopes},
    {"metadata", metadata},
    {"updated_at", rfc3339(s.updated_at_ms)},
    {"expires_at", s.expires_at_ms == 0 ? nlohmann::json(nullptr)
                                        : nlohmann::json(rfc3339(s.expires_at_ms))},
  };
  if (!s.reason.empty())
    out["reason"] = s.reason;
  if (with_user)
    out["user_id"] = s.key.user_id;
  if (with_team)
    out["team_id"] = s.key.team_id;
  return out;
}

} // namespace cm::api

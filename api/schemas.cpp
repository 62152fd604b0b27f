#include "api/schemas.hpp"

#include "api/route.hpp"
#include "common/error.hpp"

namespace cm::api {

nlohmann::json ref(const std::string& name) {
  return {{"$ref", "#/components/schemas/" + name}};
}

nlohmann::json object_of(nlohmann::json properties) {
  std::vector<std::string> required;
  for (auto& [name, schema] : properties.items())
    required.push_back(name);
  return object_of(std::move(properties), std::move(required));
}

nlohmann::json object_of(nlohmann::json properties, std::vector<std::string> required) {
  nlohmann::json out = {{"type", "object"}, {"properties", std::move(properties)}};
  if (!required.empty())
    out["required"] = std::move(required);
  return out;
}

nlohmann::json string_of(const std::string& format) {
  nlohmann::json out = {{"type", "string"}};
  if (!format.empty())
    out["format"] = format;
  return out;
}

nlohmann::json nullable(nlohmann::json schema) {
  return {{"oneOf", {std::move(schema), {{"type", "null"}}}}};
}

namespace {

nlohmann::json error_schema() {
  auto codes = nlohmann::json::array();
  for (auto code = static_cast<int>(ec::bad_request); code <= static_cast<int>(ec::method_not_allowed);
       ++code) {
    std::string name = to_string(static_cast<ec>(code));
    if (std::find(codes.begin(), codes.end(), name) == codes.end())
      codes.push_back(name);
  }
  auto out = object_of(
    {{"error", object_of({{"code", {{"type", "string"}, {"enum", codes}}},
                          {"message", {{"type", "string"},
                                       {"description", "for people; never a secret"}}}})}});
  out["additionalProperties"] = false;
  out["description"] = "Every error answer: a snake_case code (one HTTP status each) and a message.";
  return out;
}

nlohmann::json string_array() { return {{"type", "array"}, {"items", {{"type", "string"}}}}; }

nlohmann::json connection_schema() {
  auto out = object_of(
    {{"id", {{"type", "string"}, {"format", "uuid"},
             {"description", "the connectionId this connection's events carry"}}},
     {"provider", {{"type", "string"}}},
     {"type", {{"type", "string"}, {"enum", {"oauth", "api_key"}}}},
     {"status", {{"type", "string"}, {"enum", {"connected", "needs_reauth", "disconnected"}}}},
     {"account", {{"type", "string"}, {"description", "the account name at the provider"}}},
     {"scopes", string_array()},
     {"metadata", {{"type", "object"}}},
     {"updated_at", string_of("date-time")},
     {"expires_at", nullable(string_of("date-time"))},
     {"reason", {{"type", "string"}, {"description", "why the status is not connected"}}},
     {"user_id", {{"type", "string"}, {"description", "team listings only"}}},
     {"team_id", {{"type", "string"}, {"description", "the operator's listings only"}}}},
    {"id", "provider", "type", "status", "account", "scopes", "metadata", "updated_at",
     "expires_at"});
  out["description"] = "A stored connection. Never a secret.";
  return out;
}

nlohmann::json token_schema() {
  auto out = object_of({{"provider", {{"type", "string"}}},
                        {"user_id", {{"type", "string"}}},
                        {"team_id", {{"type", "string"}}},
                        {"type", {{"type", "string"}, {"enum", {"oauth", "api_key"}}}},
                        {"access_token", {{"type", "string"},
                                          {"description", "the access token or API key"}}},
                        {"token_type", {{"type", "string"}}},
                        {"expires_at", nullable(string_of("date-time"))},
                        {"scopes", string_array()},
                        {"metadata", {{"type", "object"}}}});
  out["description"] = "A valid credential of one connection; never its refresh token.";
  return out;
}

nlohmann::json connector_schema() {
  auto out = object_of(
    {{"connectorName", {{"type", "string"}}},
     {"displayName", {{"type", "string"}}},
     {"authMode", {{"type", "string"}, {"enum", {"oauth2", "api_key", "service_account"}}}},
     {"enabled", {{"type", "boolean"}}},
     {"configured", {{"type", "boolean"}}},
     {"version", {{"type", "integer"}}},
     {"updatedBy", {{"type", "string"}}},
     {"updatedAt", string_of("date-time")}},
    {"connectorName", "displayName", "authMode", "enabled", "configured", "version"});
  out["description"] = "A connector of the catalog as the caller's team configured it.";
  return out;
}

nlohmann::json connector_config_schema() {
  auto out = connector_schema();
  out["properties"]["config"] = {
    {"type", "object"},
    {"description", "auth, sync, filters and baseUrl; secrets are write-only "
                    "(auth.clientSecretSet says whether one is stored)"}};
  out["required"].push_back("config");
  out["description"] = "A connector's configuration for the caller's team.";
  return out;
}

nlohmann::json catalog_entry_schema() {
  auto text = nlohmann::json{{"type", "string"}};
  auto field = object_of(
    {{"name", text},
     {"label", text},
     {"pattern", {{"type", {"string", "null"}},
                  {"description", "an ECMAScript regular expression the value must match"}}},
     {"secret", {{"type", "boolean"}}},
     {"required", {{"type", "boolean"}}},
     {"multiline", {{"type", "boolean"},
                    {"description", "a document rather than a line (a service-account key)"}}}});
  auto out = object_of(
    {{"name", text},
     {"display_name", text},
     {"auth_mode", {{"type", "string"}, {"enum", {"oauth2", "api_key", "service_account"}}}},
     {"docs", text},
     {"fields", {{"type", "array"},
                 {"items", field},
                 {"description", "what POST /api/connectors/connect takes (api_key first), or "
                                 "an OAuth provider's authorization parameters"}}},
     {"connectable", {{"type", "boolean"},
                      {"description", "false: listed only because the caller has a connection "
                                      "to it (the admin switched it off, or its app is gone)"}}},
     {"connected", {{"type", "boolean"}}},
     {"updated_at", nullable(string_of("date-time"))},
     {"connection_id", {{"type", {"string", "null"}},
                        {"description", "the caller's connection (the connectionId its events "
                                        "carry); a reconnect makes a new one, a refresh does "
                                        "not"}}},
     {"status", {{"type", {"string", "null"}},
                 {"enum", {"connected", "needs_reauth", "disconnected", nullptr}}}},
     {"account_name", {{"type", {"string", "null"}}}}});
  out["description"] = "A provider the caller can connect, and the caller's connection to it.";
  return out;
}

} // namespace

const nlohmann::json& shared_schemas() {
  static const nlohmann::json all = {
    {"Error", error_schema()},
    {"Connection", connection_schema()},
    {"Token", token_schema()},
    {"Connector", connector_schema()},
    {"ConnectorConfig", connector_config_schema()},
    {"CatalogEntry", catalog_entry_schema()},
  };
  return all;
}

} // namespace cm::api

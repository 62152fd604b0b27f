#include "config/connector_schema.hpp"

namespace cm::config {

using nlohmann::json;

namespace {

// Bounds on everything a team admin types: the values end up stored and
// sent to providers, and an unbounded string is an unbounded row.
constexpr int max_url_length = 2048;
constexpr int max_filter_string_length = 1024;
constexpr int max_filter_items = 256;
constexpr int max_client_id_length = 512;
constexpr int max_client_secret_length = 4096;
constexpr int max_scopes = 64;
// Scheduled syncs no more often than every 5 minutes (provider rate limits)
// and at least daily.
constexpr int min_sync_interval_s = 300;
constexpr int max_sync_interval_s = 86400;

json closed_object(json properties) {
  return {{"type", "object"}, {"additionalProperties", false}, {"properties", std::move(properties)}};
}

json filter_schema(const filter_option& filter) {
  json schema;
  switch (filter.type) {
    case filter_type::string:
      schema = {{"type", "string"}, {"maxLength", max_filter_string_length}};
      if (!filter.enum_values.empty())
        schema["enum"] = filter.enum_values;
      break;
    case filter_type::string_array: {
      json items = {{"type", "string"}, {"maxLength", max_filter_string_length}};
      if (!filter.enum_values.empty())
        items["enum"] = filter.enum_values;
      schema = {{"type", "array"},
                {"items", std::move(items)},
                {"maxItems", max_filter_items},
                {"uniqueItems", true}};
      break;
    }
    case filter_type::integer:
      schema = {{"type", "integer"}};
      if (filter.minimum)
        schema["minimum"] = *filter.minimum;
      if (filter.maximum)
        schema["maximum"] = *filter.maximum;
      break;
    case filter_type::boolean:
      schema = {{"type", "boolean"}};
      break;
  }
  schema["description"] = filter.description;
  return schema;
}

json auth_schema(const provider_entry& entry) {
  // API keys and service-account keys belong to the user who connects them;
  // a team configures no credentials for those connectors.
  if (entry.mode != auth_mode::oauth2) {
    auto schema = closed_object(json::object());
    schema["description"] = "No team-level credentials: keys are connected per user";
    return schema;
  }
  auto schema = closed_object({
    {"clientId",
     {{"type", "string"},
      {"minLength", 1},
      {"maxLength", max_client_id_length},
      {"description", "OAuth client ID of the team's app"}}},
    {"clientSecret",
     {{"type", "string"},
      {"minLength", 1},
      {"maxLength", max_client_secret_length},
      // Accepted on PUT, never returned by GET.
      {"writeOnly", true},
      {"description", "OAuth client secret of the team's app"}}},
    {"scopes",
     {{"type", "array"},
      {"items", {{"type", "string"}, {"minLength", 1}}},
      {"maxItems", max_scopes},
      {"uniqueItems", true},
      {"description", "Scopes to request instead of the catalog's"}}},
  });
  schema["description"] = "OAuth app credentials for this team";
  return schema;
}

json sync_schema() {
  auto schema = closed_object({
    {"mode", {{"type", "string"}, {"enum", {"manual", "scheduled", "realtime"}}}},
    {"interval",
     {{"type", "integer"},
      {"minimum", min_sync_interval_s},
      {"maximum", max_sync_interval_s},
      {"description", "Seconds between scheduled syncs (mode scheduled)"}}},
  });
  return schema;
}

} // namespace

json connector_filters_schema(const provider_entry& entry) {
  json properties = json::object();
  for (auto& filter : entry.filters)
    properties[filter.name] = filter_schema(filter);
  return closed_object(std::move(properties));
}

json connector_config_schema(const provider_entry& entry) {
  json schema = {
    {"$schema", "https://json-schema.org/draft/2020-12/schema"},
    {"$id", "urn:connector-manager:connector-config:" + entry.name},
    {"title", entry.display_name},
    {"type", "object"},
    {"additionalProperties", false},
    {"required", {"baseUrl"}},
  };
  schema["properties"] = {
    {"baseUrl",
     {{"type", "string"},
      {"format", "uri"},
      // format is only an annotation; the pattern is what enforces http(s).
      {"pattern", "^https?://"},
      {"maxLength", max_url_length},
      {"description", "Base URL the connector calls for this team (http or https)"}}},
    {"auth", auth_schema(entry)},
    {"sync", sync_schema()},
    {"filters", connector_filters_schema(entry)},
  };
  return schema;
}

json filter_options_json(const provider_entry& entry) {
  json options = json::array();
  for (auto& filter : entry.filters) {
    json option = {
      {"name", filter.name},
      {"type", to_string(filter.type)},
      {"description", filter.description},
    };
    if (!filter.enum_values.empty())
      option["enum"] = filter.enum_values;
    if (filter.minimum)
      option["minimum"] = *filter.minimum;
    if (filter.maximum)
      option["maximum"] = *filter.maximum;
    options.push_back(std::move(option));
  }
  return options;
}

} // namespace cm::config

#include "api/catalog_routes.hpp"

#include <map>

#include "actors/team_app.hpp"
#include "api/schemas.hpp"
#include "common/time.hpp"

namespace cm {

namespace api {

namespace {

std::string label_of(const std::string& field) {
  static const std::map<std::string, std::string> known = {
    {"email", "Email"},       {"subdomain", "Subdomain"}, {"domain", "Domain"},
    {"property_id", "Property ID"}, {"host", "Host"},     {"shop", "Shop"},
    {"tenant", "Tenant"}};
  if (auto it = known.find(field); it != known.end())
    return it->second;
  auto out = field;
  for (auto& ch : out)
    if (ch == '_')
      ch = ' ';
  if (!out.empty())
    out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

/// `^(?:a|b)` for the accepted key prefixes, regex metacharacters escaped.
std::string prefix_pattern(const std::vector<std::string>& prefixes) {
  std::string out = "^(?:";
  for (size_t i = 0; i < prefixes.size(); ++i) {
    if (i)
      out += '|';
    for (char ch : prefixes[i]) {
      if (std::string_view("\\^$.|?*+()[]{}/").find(ch) != std::string_view::npos)
        out += '\\';
      out += ch;
    }
  }
  return out + ")";
}

nlohmann::json field(const config::provider_entry& entry, const std::string& name, bool required) {
  nlohmann::json pattern = nullptr;
  if (auto it = entry.template_params.find(name); it != entry.template_params.end())
    pattern = it->second;
  else if (name == "email")
    // The same rule POST /api/connectors/connect applies.
    pattern = R"(^[^@\s]+@[^@\s]+\.[^@\s]+$)";
  return {{"name", name}, {"label", label_of(name)}, {"pattern", pattern},
          {"secret", false}, {"required", required}, {"multiline", false}};
}

} // namespace

nlohmann::json connect_fields(const config::provider_entry& entry) {
  auto fields = nlohmann::json::array();
  if (entry.mode == config::auth_mode::oauth2) {
    // What the member names to start: the placeholders of the authorization
    // URL (Shopify's shop, Microsoft's tenant). Others, such as GitHub's
    // {client_id} in its revocation URL, the deployment fills. A parameter
    // with a default (Microsoft's tenant) may be left out.
    for (auto& [name, pattern] : entry.template_params) {
      if (entry.authorization_url.find("{" + name + "}") == std::string::npos)
        continue;
      auto f = field(entry, name, entry.template_defaults.count(name) == 0);
      if (name == "shop")
        // The shop as Shopify shows it is accepted too (oauth::normalize_shop).
        f["pattern"] = R"(^(?:https?://)?[a-zA-Z0-9][a-zA-Z0-9-_]*(?:\.myshopify\.com)?/?$)";
      fields.push_back(std::move(f));
    }
    return fields;
  }
  if (!entry.api_key)
    return fields;
  auto& check = *entry.api_key;
  bool key_file = entry.mode == config::auth_mode::service_account;
  fields.push_back({{"name", "api_key"},
                    {"label", check.label},
                    {"pattern", check.key_prefixes.empty()
                                  ? nlohmann::json(nullptr)
                                  : nlohmann::json(prefix_pattern(check.key_prefixes))},
                    {"secret", true},
                    {"required", true},
                    {"multiline", key_file}});
  for (auto& name : check.required_fields)
    fields.push_back(field(entry, name, true));
  for (auto& name : check.optional_fields)
    fields.push_back(field(entry, name, false));
  return fields;
}

} // namespace api

namespace {

/// Whether a member of the team can start connecting `entry` now.
bool connectable(const front_context& ctx, const config::provider_entry& entry,
                 const connector_config_record* team) {
  // A provider the team's admin switched off is hidden; one the team
  // never configured is offered (docs/DECISIONS.md).
  if (team != nullptr && team->exists && !team->enabled)
    return false;
  if (entry.mode != config::auth_mode::oauth2)
    return entry.api_key.has_value();
  // An OAuth provider needs an app: the deployment's or the team's own.
  return ctx.clients.count(entry.name) != 0 || (team != nullptr && team_client(*team));
}

/// GET /api/connectors/catalog (user).
void catalog(const call& c) {
  auto ex = c.ex;
  auto ctx = c.snapshot;
  auto self = c.self;
  auto who = c.who;
  auto timeout = budget(c);
  c.self->request(c.ctx().configs, timeout, config_list_atom_v, who.team)
    .then(
      [ex, ctx, self, who, timeout](const connector_config_records& configs) {
        self->request(ctx->storage, timeout, list_atom_v, who.team, who.subject)
          .then(
            [ex, ctx, configs](const token_summaries& mine) {
              std::map<std::string, const connector_config_record*> by_name;
              for (auto& r : configs)
                by_name[r.connector_name] = &r;
              std::map<std::string, const token_summary*> connections;
              for (auto& row : mine)
                connections[row.key.provider] = &row;
              auto list = nlohmann::json::array();
              for (auto& [name, entry] : ctx->catalog.providers) {
                auto team = by_name.count(name) ? by_name.at(name) : nullptr;
                auto mine = connections.find(name);
                bool can_connect = connectable(*ctx, entry, team);
                // A connection the member can no longer start (switched off,
                // app removed) is still listed, so it can be disconnected.
                if (!can_connect && mine == connections.end())
                  continue;
                nlohmann::json item = {{"name", name},
                                       {"display_name", entry.display_name.empty()
                                                          ? name
                                                          : entry.display_name},
                                       {"auth_mode", config::to_string(entry.mode)},
                                       {"docs", entry.docs},
                                       {"fields", api::connect_fields(entry)},
                                       {"connectable", can_connect},
                                       {"connected", false},
                                       {"status", nullptr},
                                       {"account_name", nullptr},
                                       {"updated_at", nullptr},
                                       {"connection_id", nullptr}};
                if (mine != connections.end()) {
                  auto& row = *mine->second;
                  item["connected"] = row.status == grant_status::connected;
                  item["status"] = to_string(row.status);
                  item["updated_at"] = rfc3339(row.updated_at_ms);
                  // A new grant is a new row (storage/token_store.cpp): how a
                  // page tells a reconnect from a refresh.
                  item["connection_id"] = row.id;
                  auto metadata = nlohmann::json::parse(row.metadata, nullptr, false);
                  if (metadata.is_object() && metadata.contains("account_name") &&
                      metadata["account_name"].is_string())
                    item["account_name"] = metadata["account_name"];
                }
                list.push_back(std::move(item));
              }
              ex->reply_json(200, {{"providers", std::move(list)}});
            },
            [ex](const caf::error& err) { ex->reply_error(err); });
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

} // namespace

std::vector<api::route> catalog_routes() {
  using http::access;
  return {
    {"GET", "/api/connectors/catalog", access::user, "", catalog, http::metering::unmetered,
     {"listConnectableProviders", "connections", "What the caller can connect",
      "Every provider the caller's team offers: an API-key provider unless the team's admin "
      "disabled it, an OAuth provider when an app is configured for it (the deployment's or "
      "the team's own); and any other provider the caller has a connection to, with "
      "connectable false, so it can be disconnected. Each with the fields a connect takes and "
      "the caller's connection, if any. Never a secret.",
      {}, nullptr,
      {{200, "the providers", api::object_of({{"providers", {{"type", "array"},
                                                             {"items", api::ref("CatalogEntry")}}}})}}}},
  };
}

} // namespace cm

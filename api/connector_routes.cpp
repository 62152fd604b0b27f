#include "api/connector_routes.hpp"

#include "api/audit_trail.hpp"
#include "api/grant_workflow.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include <caf/event_based_actor.hpp>

#include "actors/config_reload.hpp"
#include "actors/event_hub.hpp"
#include "actors/team_app.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "config/connector_schema.hpp"
#include "config/template_value.hpp"
#include "http/json_body.hpp"
#include "provider/id_token.hpp"
#include "provider/oauth_flow.hpp"

namespace cm {

namespace {

constexpr const char* component = "connectors";

/// The catalog connector named by the route, or a 404 and nullptr.
const config::provider_entry* route_connector(const call& c) {
  return known_provider(c, c.params.at("connectorName"));
}

nlohmann::json parse_object(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  return j.is_object() ? j : nlohmann::json::object();
}

/// A configuration as routes show it: never the secret, only whether one
/// is stored.
nlohmann::json config_json(const config::provider_entry& entry,
                           const connector_config_record& r) {
  auto config = parse_object(r.config);
  if (entry.mode == config::auth_mode::oauth2) {
    if (!config.contains("auth") || !config["auth"].is_object())
      config["auth"] = nlohmann::json::object();
    config["auth"]["clientSecretSet"] = !r.client_secret.empty();
  }
  config["filters"] = parse_object(r.filters);
  nlohmann::json out = {{"connectorName", entry.name},
                        {"displayName", entry.display_name},
                        {"authMode", config::to_string(entry.mode)},
                        {"enabled", r.enabled},
                        {"configured", r.exists && config.contains("baseUrl")},
                        {"config", config},
                        {"version", r.version}};
  if (r.exists) {
    out["updatedBy"] = r.updated_by;
    out["updatedAt"] = rfc3339(r.updated_at_ms);
  }
  return out;
}

enum class which { all, active, inactive };

void list_connectors(const call& c, which filter) {
  auto ex = c.ex;
  auto ctx = c.snapshot;
  c.self->request(c.ctx().configs, budget(c), config_list_atom_v, c.who.team)
    .then(
      [ex, ctx, filter](const connector_config_records& rows) {
        std::map<std::string, const connector_config_record*> by_name;
        for (auto& r : rows)
          by_name[r.connector_name] = &r;
        auto list = nlohmann::json::array();
        for (auto& [name, entry] : ctx->catalog.providers) {
          connector_config_record none;
          auto it = by_name.find(name);
          auto& r = it == by_name.end() ? none : *it->second;
          if ((filter == which::active && !r.enabled) || (filter == which::inactive && r.enabled))
            continue;
          auto item = config_json(entry, r);
          item.erase("config");
          list.push_back(std::move(item));
        }
        ex->reply_json(200, {{"connectors", std::move(list)}});
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

bool parse_body(const call& c, nlohmann::json& body) {
  std::string problem;
  if (!http::parse_json_object(c.ex->req().body, body, problem)) {
    c.ex->reply_error(ec::bad_request, problem);
    return false;
  }
  return true;
}

/// Applies an admin's change and answers with the connector as stored.
void apply_change(const call& c, const config::provider_entry& entry, connector_change change,
                  int status = 200) {
  auto ex = c.ex;
  auto ctx = c.snapshot;
  auto name = entry.name;
  c.self->request(c.ctx().configs, budget(c), config_change_atom_v, std::move(change))
    .then(
      [ex, ctx, name, status](const connector_config_record& stored) {
        auto entry = ctx->catalog.find(name);
        ex->reply_json(status, config_json(*entry, stored));
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

} // namespace

void connectors_all(const call& c) { list_connectors(c, which::all); }
void connectors_active(const call& c) { list_connectors(c, which::active); }
void connectors_inactive(const call& c) { list_connectors(c, which::inactive); }

void connector_config_get(const call& c) {
  auto entry = route_connector(c);
  if (!entry)
    return;
  auto ex = c.ex;
  auto ctx = c.snapshot;
  auto name = entry->name;
  c.self->request(c.ctx().configs, budget(c), config_get_atom_v, c.who.team, name)
    .then(
      [ex, ctx, name](const connector_config_record& r) {
        ex->reply_json(200, config_json(*ctx->catalog.find(name), r));
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

void connector_config_put(const call& c) {
  auto entry = route_connector(c);
  if (!entry)
    return;
  nlohmann::json body;
  if (!parse_body(c, body))
    return;
  std::string problem;
  if (!config::validate_against_schema(config::connector_config_schema(*entry), body, problem)) {
    c.ex->reply_error(ec::bad_request, problem);
    return;
  }
  // The team's client id fills {client_id} in provider URLs (GitHub's
  // revocation path), so it obeys the rule for every template value.
  if (body.contains("auth") && body["auth"].contains("clientId")) {
    auto pattern = entry->template_params.find("client_id");
    if (auto why = config::template_value_problem(
          body["auth"]["clientId"].get<std::string>(),
          pattern == entry->template_params.end() ? "" : pattern->second);
        !why.empty()) {
      c.ex->reply_error(ec::bad_request, "auth.clientId " + why);
      return;
    }
  }
  connector_change change;
  change.team_id = c.who.team;
  change.connector_name = entry->name;
  change.what = "config";
  // The secret is split off: it is stored encrypted and never shown again.
  if (body.contains("auth") && body["auth"].contains("clientSecret")) {
    change.client_secret = secret(body["auth"]["clientSecret"].get<std::string>());
    body["auth"].erase("clientSecret");
  }
  nlohmann::json details = {{"fields", nlohmann::json::array()}};
  for (auto& [key, value] : body.items())
    details["fields"].push_back(key);
  details["clientSecretChanged"] = !change.client_secret.empty();
  change.body = body.dump();
  change.audit = api::audit_row(c, "connector.config.update", entry->name, details);
  apply_change(c, *entry, std::move(change));
}

void connector_schema_get(const call& c) {
  auto entry = route_connector(c);
  if (!entry)
    return;
  c.ex->reply_json(200, config::connector_config_schema(*entry));
}

void connector_toggle(const call& c) {
  auto entry = route_connector(c);
  if (!entry)
    return;
  nlohmann::json body = nlohmann::json::object();
  if (!c.ex->req().body.empty() && !parse_body(c, body))
    return;
  if (body.contains("enabled") && !body["enabled"].is_boolean()) {
    c.ex->reply_error(ec::bad_request, "enabled must be a boolean");
    return;
  }
  std::string sync_action = "none";
  if (body.contains("syncAction")) {
    if (!body["syncAction"].is_string() ||
        (body["syncAction"] != "none" && body["syncAction"] != "immediate" &&
         body["syncAction"] != "scheduled")) {
      c.ex->reply_error(ec::bad_request, "syncAction must be one of: none, immediate, scheduled");
      return;
    }
    sync_action = body["syncAction"].get<std::string>();
  }
  auto ex = c.ex;
  auto copy = c;
  auto name = entry->name;
  // The current state decides the default (a flip) and the apps to name.
  c.self->request(c.ctx().configs, budget(c), config_get_atom_v, c.who.team, name)
    .then(
      [copy, body, sync_action, name](const connector_config_record& current) {
        auto entry = copy.ctx().catalog.find(name);
        bool enabled = body.contains("enabled") ? body["enabled"].get<bool>() : !current.enabled;
        auto config = parse_object(current.config);
        std::vector<std::string> scopes = entry->scopes;
        if (config.contains("auth") && config["auth"].contains("scopes") &&
            config["auth"]["scopes"].is_array())
          scopes = config["auth"]["scopes"].get<std::vector<std::string>>();
        connector_change change;
        change.team_id = copy.who.team;
        change.connector_name = name;
        change.what = "toggle";
        change.enabled = enabled;
        change.sync_action = enabled ? sync_action : "none";
        change.apps = nlohmann::json(oauth::granted_apps(*entry, scopes)).dump();
        change.audit = api::audit_row(copy, enabled ? "connector.enable" : "connector.disable", name,
                                {{"syncAction", change.sync_action}});
        apply_change(copy, *entry, std::move(change));
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

void connector_filters_get(const call& c) {
  auto entry = route_connector(c);
  if (!entry)
    return;
  auto ex = c.ex;
  auto options = config::filter_options_json(*entry);
  auto name = entry->name;
  c.self->request(c.ctx().configs, budget(c), config_get_atom_v, c.who.team, name)
    .then(
      [ex, options, name](const connector_config_record& r) {
        ex->reply_json(200, {{"connectorName", name},
                             {"filterOptions", options},
                             {"filters", parse_object(r.filters)}});
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

void connector_filters_post(const call& c) {
  auto entry = route_connector(c);
  if (!entry)
    return;
  nlohmann::json body;
  if (!parse_body(c, body))
    return;
  // Either {"filters": {...}} or the filters object itself.
  auto filters = body.contains("filters") && body.size() == 1 ? body["filters"] : body;
  std::string problem;
  if (!config::validate_against_schema(config::connector_filters_schema(*entry), filters,
                                       problem)) {
    c.ex->reply_error(ec::bad_request, problem.rfind("filters", 0) == 0 ? problem
                                                                        : "filters: " + problem);
    return;
  }
  connector_change change;
  change.team_id = c.who.team;
  change.connector_name = entry->name;
  change.what = "filters";
  change.body = filters.dump();
  nlohmann::json names = nlohmann::json::array();
  for (auto& [key, value] : filters.items())
    names.push_back(key);
  change.audit = api::audit_row(c, "connector.filters.update", entry->name, {{"filters", names}});
  apply_change(c, *entry, std::move(change));
}

// -- getTokenFromCode ----------------------------------------------------------

namespace {

/// What getTokenFromCode carries from step to step.
struct code_flow {
  call c;
  const config::provider_entry* entry = nullptr;
  std::shared_ptr<const oauth::client_credentials> client;
  bool team_app = false;
  std::string code;
  std::string redirect_uri;
  oauth::token_answer answer;
  std::string id_token;
};
using code_flow_ptr = std::shared_ptr<code_flow>;

/// Best effort: tokens we will not keep are revoked, so a refused exchange
/// leaves no live grant behind.
void discard_tokens(const code_flow_ptr& f) {
  token_record unused;
  unused.key = {f->c.who.team, f->c.who.subject, f->entry->name};
  unused.access_token = f->answer.access_token;
  unused.refresh_token = f->answer.refresh_token;
  auto req = oauth::revoke_request(*f->entry, *f->client, unused,
                                   f->c.ctx().cfg.refresh.provider_timeout_ms);
  if (req)
    f->c.self->request(f->c.ctx().provider_client, budget(f->c), std::move(*req))
      .then([](const outbound_response&) {}, [](const caf::error&) {});
}

void store_code_grant(const code_flow_ptr& f, const oauth::id_token_claims& claims) {
  auto& c = f->c;
  auto& entry = *f->entry;
  nlohmann::json metadata = {{"account_name", claims.email}, {"connector", entry.name}};
  if (!claims.hosted_domain.empty())
    metadata["hosted_domain"] = claims.hosted_domain;
  if (f->team_app)
    metadata[oauth_app_key] = oauth_app_team;
  auto record =
    api::grant_record({c.who.team, c.who.subject, entry.name}, entry, f->answer, metadata);
  auto apps = oauth::granted_apps(entry, record.scopes);
  if (apps.empty()) { // the connector's metadata always names its apps
    auto stored_metadata = parse_object(record.metadata);
    stored_metadata["apps"] = apps;
    record.metadata = stored_metadata.dump();
  }
  connector_change enable;
  enable.team_id = c.who.team;
  enable.connector_name = entry.name;
  enable.what = "toggle";
  enable.enabled = true;
  enable.sync_action = "immediate";
  enable.apps = nlohmann::json(apps).dump();
  enable.audit = api::audit_row(c, "connector.connect_code", entry.name, {{"apps", apps}});
  api::store_grant(
    c, entry, f->client, std::move(record), std::move(enable),
    [f, apps](const connect_result& result) {
      auto& stored = result.stored;
      f->c.ex->reply_json(200, {{"connected", true},
                                {"provider", stored.key.provider},
                                {"account_name",
                                 parse_object(stored.metadata).value("account_name", "")},
                                {"apps", apps},
                                {"enabled", true}});
    },
    [f](const caf::error& err) {
      discard_tokens(f);
      f->c.ex->reply_error(err);
    });
}

void check_id_token(const code_flow_ptr& f) {
  auto& c = f->c;
  outbound_request req;
  req.method = "GET";
  req.url = f->entry->jwks_url;
  req.timeout_ms = c.ctx().cfg.refresh.provider_timeout_ms;
  req.max_response_bytes = 256 * 1024;
  c.self->request(c.ctx().provider_client, budget(c), std::move(req))
    .then(
      [f](const outbound_response& res) {
        auto& c = f->c;
        if (!res.ok()) {
          discard_tokens(f);
          c.ex->reply_error(ec::provider_failed, "the provider's key set could not be fetched");
          return;
        }
        oauth::id_token_expectations want;
        want.issuers = {f->entry->issuer};
        // Google documents both forms of its issuer.
        auto origin = oauth::origin_of(f->entry->issuer);
        if (origin.rfind("https://", 0) == 0)
          want.issuers.push_back(origin.substr(8));
        want.audience = f->client->client_id;
        want.now_s = unix_now_ms() / 1000;
        oauth::id_token_claims claims;
        std::string problem;
        if (!oauth::verify_id_token(f->id_token, res.body, want, claims, problem)) {
          discard_tokens(f);
          log::warn(component, "ID token refused", {{"provider", f->entry->name}, {"reason", problem}});
          c.ex->reply_error(ec::unauthenticated, problem);
          return;
        }
        auto lower = [](std::string s) {
          std::transform(s.begin(), s.end(), s.begin(),
                         [](unsigned char ch) { return std::tolower(ch); });
          return s;
        };
        if (!claims.email_verified || c.who.email.empty() ||
            lower(claims.email) != lower(c.who.email)) {
          discard_tokens(f);
          c.ex->reply_error(ec::forbidden, "the ID token's email is not the caller's");
          return;
        }
        store_code_grant(f, claims);
      },
      [f](const caf::error&) {
        discard_tokens(f);
        f->c.ex->reply_error(ec::provider_failed, "the provider's key set could not be fetched");
      });
}

void exchange_temp_code(const code_flow_ptr& f) {
  auto& c = f->c;
  auto req = oauth::code_request(*f->entry, *f->client, f->code, f->redirect_uri, "",
                                 nlohmann::json::object(), c.ctx().cfg.refresh.provider_timeout_ms);
  if (!req) {
    c.ex->reply_error(ec::bad_request, "the code cannot be exchanged for this connector");
    return;
  }
  c.self->request(c.ctx().provider_client, budget(c), std::move(*req))
    .then(
      [f](const outbound_response& res) {
        auto& c = f->c;
        f->answer = oauth::read_token_answer(*f->entry, res);
        if (f->answer.result == oauth::outcome::invalid_grant) {
          c.ex->reply_error(ec::bad_request, "the code was rejected (" + f->answer.reason + ")");
          return;
        }
        if (f->answer.result != oauth::outcome::ok) {
          c.ex->reply_error(ec::provider_failed, "the token endpoint failed: " + f->answer.reason);
          return;
        }
        auto body = nlohmann::json::parse(res.body, nullptr, false);
        if (!body.is_object() || !body.contains("id_token") || !body["id_token"].is_string()) {
          discard_tokens(f);
          c.ex->reply_error(ec::provider_failed, "the token answer carries no ID token");
          return;
        }
        f->id_token = body["id_token"].get<std::string>();
        check_id_token(f);
      },
      [f](const caf::error&) {
        f->c.ex->reply_error(ec::provider_failed, "the token endpoint did not answer");
      });
}

} // namespace

void get_token_from_code(const call& c) {
  nlohmann::json body;
  if (!parse_body(c, body))
    return;
  auto text = [&](const char* name) {
    return body.contains(name) && body[name].is_string() ? body[name].get<std::string>()
                                                         : std::string{};
  };
  auto code = text("tempCode");
  if (code.empty()) {
    c.ex->reply_error(ec::bad_request, "tempCode is required");
    return;
  }
  auto name = text("connectorName");
  if (name.empty())
    name = "google-workspace";
  auto entry = known_provider(c, name);
  if (!entry)
    return;
  if (entry->mode != config::auth_mode::oauth2 || entry->jwks_url.empty()) {
    c.ex->reply_error(ec::bad_request, "this connector does not support code exchange");
    return;
  }
  // Google's JavaScript code client exchanges with "postmessage"; other
  // redirect URIs must be ours or on the allowlist, as in the usual flow.
  auto redirect = text("redirectUri");
  if (redirect.empty())
    redirect = "postmessage";
  auto& allowed = c.ctx().cfg.oauth.allowed_redirect_uris;
  auto own = c.ctx().cfg.oauth.public_base_url + "/api/v1/connectors/" + name + "/oauth/callback";
  if (redirect != "postmessage" && redirect != own &&
      std::find(allowed.begin(), allowed.end(), redirect) == allowed.end()) {
    c.ex->reply_error(ec::bad_request, "redirectUri is not on the allowlist");
    return;
  }
  auto f = std::make_shared<code_flow>();
  f->c = c;
  f->entry = entry;
  f->code = code;
  f->redirect_uri = redirect;
  c.self->request(c.ctx().configs, budget(c), config_get_atom_v, c.who.team, name)
    .then(
      [f, name](const connector_config_record& cfg) {
        auto& c = f->c;
        f->client = team_client(cfg);
        f->team_app = f->client != nullptr;
        if (!f->client) {
          auto it = c.ctx().clients.find(name);
          if (it != c.ctx().clients.end())
            f->client = it->second;
        }
        if (!f->client) {
          c.ex->reply_error(ec::bad_request, "no OAuth app is configured for this connector");
          return;
        }
        exchange_temp_code(f);
      },
      [f](const caf::error& err) { f->c.ex->reply_error(err); });
}

// -- configuration reload, audit, events -----------------------------------------

void update_app_config(const call& c) {
  if (!c.ctx().reloader) {
    c.ex->reply_error(ec::unavailable, "configuration reload is not available");
    return;
  }
  auto outcome = c.ctx().reloader->reload();
  auto entry = api::audit_row(c, outcome.ok ? "config.reload" : "config.reload_rejected", "service",
                        {{"restartRequired", outcome.restart_required}});
  c.self->send(c.ctx().configs, audit_atom_v, std::move(entry));
  if (!outcome.ok) {
    c.ex->reply_error(ec::bad_request, "configuration rejected, the running one stays: " +
                                         outcome.error);
    return;
  }
  c.ex->reply_json(200, {{"reloaded", true},
                         {"providers", outcome.providers},
                         {"webhooks", outcome.webhooks},
                         {"restartRequired", outcome.restart_required}});
}

void audit_list(const call& c) {
  auto& q = c.ex->req().query;
  int64_t limit = 50;
  int64_t before = 0;
  auto number = [&](const char* name, int64_t& out, int64_t lo, int64_t hi) {
    auto it = q.find(name);
    if (it == q.end())
      return true;
    char* end = nullptr;
    errno = 0;
    auto v = std::strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) {
      c.ex->reply_error(ec::bad_request, std::string(name) + " must be an integer between " +
                                           std::to_string(lo) + " and " + std::to_string(hi));
      return false;
    }
    out = v;
    return true;
  };
  if (!number("limit", limit, 1, 500) || !number("before", before, 1, INT64_MAX))
    return;
  auto ex = c.ex;
  c.self->request(c.ctx().configs, budget(c), audit_page_atom_v, c.who.team, before,
                  static_cast<int32_t>(limit))
    .then(
      [ex, limit](const audit_rows& rows) {
        auto entries = nlohmann::json::array();
        for (auto& r : rows)
          entries.push_back({{"id", r.seq},
                             {"at", rfc3339(r.at_ms)},
                             {"actor_type", r.entry.actor_type},
                             {"actor_id", r.entry.actor_id},
                             {"action", r.entry.action},
                             {"target", r.entry.target},
                             {"remote_addr", r.entry.remote_addr},
                             {"request_id", r.entry.request_id},
                             {"details", parse_object(r.entry.details)}});
        nlohmann::json out = {{"entries", entries}};
        // Keyset pagination: pass nextBefore as ?before= for the next page.
        out["next_before"] = rows.size() == static_cast<size_t>(limit) ? nlohmann::json(rows.back().seq)
                                                                       : nlohmann::json();
        ex->reply_json(200, out);
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

void events_stream(const call& c) {
  auto& req = c.ex->req();
  std::vector<std::string> topics;
  auto wanted = req.query_param("topics").value_or("token-events,entity-events");
  size_t pos = 0;
  while (pos <= wanted.size()) {
    auto comma = wanted.find(',', pos);
    auto topic = wanted.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (topic != "token-events" && topic != "entity-events") {
      c.ex->reply_error(ec::bad_request, "topics must be token-events and/or entity-events");
      return;
    }
    topics.push_back(topic);
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  // Admins see their team; services every team unless they name one.
  auto team = c.who.is_service() ? req.query_param("orgId").value_or("") : c.who.team;
  outbox_position last_seen{-1, -1};
  auto header = req.header("last-event-id");
  if (header.empty())
    header = req.query_param("lastEventId").value_or("");
  if (!header.empty() && !parse_sse_id(header, last_seen)) {
    c.ex->reply_error(ec::bad_request, "Last-Event-ID must be an id this stream sent");
    return;
  }
  if (!c.ctx().events) {
    c.ex->reply_error(ec::unavailable, "event delivery is not running");
    return;
  }
  // Admins' streams count against their team's quota, services' against
  // their own (actors/event_hub.hpp).
  auto service = c.who.is_service() ? c.who.subject : std::string{};
  c.self->send(c.ctx().events, subscribe_atom_v, c.ex, team, topics, last_seen, service);
}


std::vector<api::route> connector_routes() {
  using http::access;
  constexpr auto metered = http::metering::metered;
  constexpr auto unmetered = http::metering::unmetered;
  const std::string tag = "team connectors";
  auto connectors = api::object_of(
    {{"connectors", {{"type", "array"}, {"items", api::ref("Connector")}}}});
  auto filters_answer =
    api::object_of({{"connectorName", {{"type", "string"}}},
                    {"filterOptions", {{"type", "object"}}},
                    {"filters", {{"type", "object"}}}});
  auto config_body = api::object_of(
    {{"baseUrl", api::string_of("uri")},
     {"auth", {{"type", "object"},
               {"description", "clientId, clientSecret (write-only), scopes"}}},
     {"sync", {{"type", "object"}}},
     {"filters", {{"type", "object"}}}},
    {"baseUrl"});
  auto audit_entry_schema = api::object_of(
    {{"id", {{"type", "integer"}}},
     {"at", api::string_of("date-time")},
     {"actor_type", {{"type", "string"}, {"enum", {"user", "service", "system"}}}},
     {"actor_id", {{"type", "string"}}},
     {"action", {{"type", "string"}}},
     {"target", {{"type", "string"}}},
     {"remote_addr", {{"type", "string"}}},
     {"request_id", {{"type", "string"}}},
     {"details", {{"type", "object"}}}});
  return {
    {"GET", "/api/v1/connectors", access::admin, "", connectors_all, unmetered,
     {"listTeamConnectors", tag, "Every connector of the catalog for the team",
      "Each with whether the team enabled and configured it.", {}, nullptr,
      {{200, "the connectors", connectors}}}},
    {"GET", "/api/v1/connectors/active", access::admin, "", connectors_active, unmetered,
     {"listActiveTeamConnectors", tag, "The team's enabled connectors", "", {}, nullptr,
      {{200, "the enabled connectors", connectors}}}},
    {"GET", "/api/v1/connectors/inactive", access::admin, "", connectors_inactive, unmetered,
     {"listInactiveTeamConnectors", tag, "The team's disabled connectors", "", {}, nullptr,
      {{200, "the disabled connectors", connectors}}}},
    {"GET", "/api/v1/connectors/config/{connectorName}", access::admin, "",
     connector_config_get, unmetered,
     {"getTeamConnectorConfig", tag, "A connector's configuration",
      "Secrets are never answered; auth.clientSecretSet says whether one is stored.", {},
      nullptr, {{200, "the configuration", api::ref("ConnectorConfig")}}, {404}}},
    {"PUT", "/api/v1/connectors/config/{connectorName}", access::admin, "",
     connector_config_put, metered,
     {"putTeamConnectorConfig", tag, "Set a connector's configuration",
      "Validated against GET /api/v1/connectors/schema/{connectorName}; the client secret "
      "is encrypted and write-only; audited.",
      {}, config_body,
      {{200, "the stored configuration", api::ref("ConnectorConfig")}},
      {404, 409, 413}}},
    {"GET", "/api/v1/connectors/schema/{connectorName}", access::admin, "",
     connector_schema_get, unmetered,
     {"getTeamConnectorSchema", tag, "The JSON Schema of a connector's configuration", "", {},
      nullptr, {{200, "a JSON Schema (draft 2020-12)", {{"type", "object"}}}}, {404}}},
    {"POST", "/api/v1/connectors/toggle/{connectorName}", access::admin, "", connector_toggle,
     metered,
     {"toggleTeamConnector", tag, "Enable or disable a connector",
      "Without enabled, flips it. Emits appEnabled / appDisabled with syncAction.", {},
      api::object_of({{"enabled", {{"type", "boolean"}}},
                      {"syncAction", {{"type", "string"},
                                      {"enum", {"none", "immediate", "scheduled"}}}}},
                     {}),
      {{200, "the connector as it is now", api::ref("ConnectorConfig")}}, {404, 409},
      /*body_required=*/false}},
    {"GET", "/api/v1/connectors/filters/{connectorName}", access::admin, "",
     connector_filters_get, unmetered,
     {"getTeamConnectorFilters", tag, "A connector's filters and the options they take", "",
      {}, nullptr, {{200, "the filters", filters_answer}}, {404}}},
    {"POST", "/api/v1/connectors/filters/{connectorName}", access::admin, "",
     connector_filters_post, metered,
     {"setTeamConnectorFilters", tag, "Set a connector's filters",
      "Either {\"filters\": {...}} or the filters object itself, validated against the "
      "connector's filter schema.",
      {}, {{"type", "object"}},
      {{200, "the connector as it is now", api::ref("ConnectorConfig")}}, {404, 409}}},
    {"POST", "/api/v1/connectors/getTokenFromCode", access::admin, "", get_token_from_code,
     metered,
     {"getTokenFromCode", tag, "Exchange a code from Google's code client",
      "Verifies the ID token's email is the caller's, stores the grant, maps the granted "
      "scopes to apps (Drive, Gmail, Calendar) and enables the connector.",
      {},
      api::object_of({{"tempCode", {{"type", "string"}, {"writeOnly", true}}},
                      {"connectorName", {{"type", "string"}}},
                      {"redirectUri", {{"type", "string"}}}},
                     {"tempCode"}),
      {{200, "connected",
        api::object_of({{"connected", {{"type", "boolean"}, {"const", true}}},
                        {"provider", {{"type", "string"}}},
                        {"account_name", {{"type", "string"}}},
                        {"apps", {{"type", "array"}, {"items", {{"type", "string"}}}}},
                        {"enabled", {{"type", "boolean"}}}})}},
      {404, 409, 422, 502}}},
    {"POST", "/api/v1/connectors/updateAppConfig", access::service, http::scope_fetch_config,
     update_app_config, metered,
     {"updateAppConfig", tag, "Reload the configuration (services)",
      "Reads the service file and the providers catalog again; a configuration that does not "
      "load is refused and the running one stays.",
      {}, nullptr,
      {{200, "reloaded",
        api::object_of({{"reloaded", {{"type", "boolean"}, {"const", true}}},
                        {"providers", {{"type", "integer"}}},
                        {"webhooks", {{"type", "integer"}}},
                        {"restartRequired", {{"type", "array"},
                                             {"items", {{"type", "string"}}}}}})}}}},
    {"GET", "/api/v1/audit", access::admin, "", audit_list, unmetered,
     {"listAudit", "audit", "The team's audit log, newest first", "", 
      {{"limit", "entries per page (1 to 500, default 50)", false,
        {{"type", "integer"}, {"minimum", 1}, {"maximum", 500}}},
       {"before", "next_before of the previous page", false,
        {{"type", "integer"}, {"minimum", 1}}}},
      nullptr,
      {{200, "a page",
        api::object_of({{"entries", {{"type", "array"}, {"items", audit_entry_schema}}},
                        {"next_before", api::nullable({{"type", "integer"}})}})}}}},
    {"GET", "/api/v1/events", access::admin_or_service, http::scope_fetch_config, events_stream,
     unmetered,
     {"streamEvents", "events", "Lifecycle events as Server-Sent Events",
      "token-events (TOKEN_CREATED, TOKEN_REFRESHED, TOKEN_REVOKED, TOKEN_EXPIRED) and "
      "entity-events (appEnabled, appDisabled); admins see their team's, services every "
      "team's or orgId's. Resumable with Last-Event-ID. Each event's data is a JSON object "
      "in the seed's event schema (camelCase).",
      {{"topics", "token-events and/or entity-events, comma-separated (default both)"},
       {"orgId", "services: one team's events only"},
       {"lastEventId", "the same as the Last-Event-ID header"}},
      nullptr,
      {{200, "the stream", {{"type", "string"}}, "text/event-stream"}},
      {429}}},
  };
}

} // namespace cm

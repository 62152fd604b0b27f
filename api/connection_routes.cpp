#include "api/connection_routes.hpp"

#include "api/connection_json.hpp"
#include "common/time.hpp"
#include "http/json_body.hpp"

namespace cm {

namespace {

/// GET /api/connectors/list[?scope=team]: the caller's connections, or every
/// member's for aggregation. Never a secret.
void list_connections(const call& c) {
  auto ex = c.ex;
  auto scope = ex->req().query_param("scope").value_or("user");
  if (scope != "user" && scope != "team") {
    ex->reply_error(ec::bad_request, "scope must be 'user' or 'team'");
    return;
  }
  bool team = scope == "team";
  auto user = team ? std::string{} : c.who.subject;
  c.self->request(c.ctx().storage, budget(c), list_atom_v, c.who.team, user)
    .then(
      [ex, team, ctx = c.self->state.ctx](const token_summaries& rows) {
        auto list = nlohmann::json::array();
        for (auto& row : rows)
          list.push_back(api::connection_json(row, ctx->catalog, team));
        ex->reply_json(200, {{"connections", std::move(list)}});
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

/// POST /api/connectors/{provider}/refresh (user): refreshes now.
void refresh_own(const call& c) {
  auto entry = known_provider(c, c.params.at("provider"));
  if (!entry)
    return;
  auto ex = c.ex;
  c.self->request(c.ctx().registry, budget(c), get_token_atom_v,
                  connection_key{c.who.team, c.who.subject, entry->name}, true)
    .then(
      [ex](const token_grant& g) {
        ex->reply_json(200, {{"refreshed", true},
                             {"provider", g.key.provider},
                             {"expires_at", g.expires_at_ms ? nlohmann::json(rfc3339(g.expires_at_ms))
                                                            : nlohmann::json()}});
      },
      [ex](const caf::error& err) { ex->reply_error(err); });
}

constexpr int32_t service_refresh_attempts = 3;

} // namespace

void service_refresh_attempt(front_self self, const exchange_ptr& ex, const connection_key& key,
                             int32_t attempt) {
  // Three attempts and their pauses must fit in one request's budget.
  auto per_attempt = (self->state.ctx->cfg.listen.request_timeout - std::chrono::milliseconds(750)) /
                     service_refresh_attempts;
  self->request(self->state.ctx->registry, per_attempt, get_token_atom_v, key, true)
    .then(
      [ex, attempt](const token_grant& g) {
        ex->reply_json(200, {{"success", true},
                             {"provider", g.key.provider},
                             {"userId", g.key.user_id},
                             {"orgId", g.key.team_id},
                             {"attempts", attempt},
                             {"expiresAt", g.expires_at_ms ? nlohmann::json(rfc3339(g.expires_at_ms))
                                                            : nlohmann::json()}});
      },
      [self, ex, key, attempt](const caf::error& err) {
        auto code = code_of(err);
        bool transient = code == ec::unavailable || code == ec::provider_failed;
        if (transient && attempt < service_refresh_attempts) {
          // 250 ms, then 500 ms: exponential, short enough for one request.
          auto delay = std::chrono::milliseconds(250 << (attempt - 1));
          self->delayed_send(self, delay, retry_atom_v, ex, key, attempt + 1);
          return;
        }
        ex->reply_error(err);
      });
}

namespace {

/// POST /api/v1/connectors/internal/refreshIndividualConnectorToken
/// (service, FETCH_CONFIG): {"userId","connectorName","orgId"} (snake_case
/// and "provider"/"teamId" accepted too); up to 3 attempts.
void service_refresh(const call& c) {
  nlohmann::json body;
  std::string problem;
  if (!http::parse_json_object(c.ex->req().body, body, problem)) {
    c.ex->reply_error(ec::bad_request, problem);
    return;
  }
  auto field = [&](std::initializer_list<const char*> names) -> std::string {
    for (auto n : names)
      if (body.contains(n) && body[n].is_string())
        return body[n].get<std::string>();
    return {};
  };
  auto user = field({"userId", "user_id"});
  auto provider = field({"connectorName", "provider"});
  auto team = field({"orgId", "teamId", "team_id"});
  for (auto& [name, value] : {std::pair<const char*, std::string&>{"userId", user},
                              {"connectorName", provider},
                              {"orgId", team}})
    if (value.empty()) {
      c.ex->reply_error(ec::bad_request, std::string(name) + " is required");
      return;
    }
  if (known_provider(c, provider) == nullptr)
    return;
  service_refresh_attempt(c.self, c.ex, {team, user, provider}, 1);
}

/// userId, connectorName and orgId, each also under its other accepted
/// names: one of each is required.
nlohmann::json refresh_body() {
  auto body = api::object_of({{"userId", {{"type", "string"}}},
                              {"user_id", {{"type", "string"}}},
                              {"connectorName", {{"type", "string"}}},
                              {"provider", {{"type", "string"}}},
                              {"orgId", {{"type", "string"}}},
                              {"teamId", {{"type", "string"}}},
                              {"team_id", {{"type", "string"}}}},
                             {});
  auto one_of_names = [](std::initializer_list<const char*> names) {
    auto any = nlohmann::json::array();
    for (auto n : names)
      any.push_back({{"required", {n}}});
    return nlohmann::json{{"anyOf", any}};
  };
  body["allOf"] = {one_of_names({"userId", "user_id"}), one_of_names({"connectorName", "provider"}),
                   one_of_names({"orgId", "teamId", "team_id"})};
  return body;
}

} // namespace

std::vector<api::route> connection_routes() {
  using http::access;
  constexpr auto metered = http::metering::metered;
  constexpr auto unmetered = http::metering::unmetered;
  auto expires = api::nullable(api::string_of("date-time"));
  return {
    {"GET", "/api/connectors/list", access::user, "", list_connections, unmetered,
     {"listConnections", "connections", "The caller's connections",
      "The caller's own connections, or with scope=team every member's of the caller's team "
      "(each with user_id). Never a secret.",
      {{"scope", "user (the default) or team", false,
        {{"type", "string"}, {"enum", {"user", "team"}}}}},
      nullptr,
      {{200, "the connections",
        api::object_of({{"connections", {{"type", "array"}, {"items", api::ref("Connection")}}}})}}}},
    {"POST", "/api/connectors/{provider}/refresh", access::user, "", refresh_own, metered,
     {"refreshConnection", "connections", "Refresh the caller's connection now",
      "Calls the provider's token endpoint now (concurrent and very recent forced refreshes "
      "share one call) and answers the new expiry; never the token.",
      {}, nullptr,
      {{200, "refreshed",
        api::object_of({{"refreshed", {{"type", "boolean"}, {"const", true}}},
                        {"provider", {{"type", "string"}}},
                        {"expires_at", expires}})}},
      {404, 409, 502}}},
    {"POST", "/api/v1/connectors/internal/refreshIndividualConnectorToken", access::service,
     http::scope_fetch_config, service_refresh, metered,
     {"refreshIndividualConnectorToken", "team connectors",
      "Refresh one member's connection (services)",
      "Up to 3 attempts with exponential backoff on transient failures. Body names the "
      "connection: userId, connectorName and orgId (user_id, provider and teamId/team_id "
      "accepted too).",
      {},
      refresh_body(),
      {{200, "refreshed",
        api::object_of({{"success", {{"type", "boolean"}, {"const", true}}},
                        {"provider", {{"type", "string"}}},
                        {"userId", {{"type", "string"}}},
                        {"orgId", {{"type", "string"}}},
                        {"attempts", {{"type", "integer"}, {"minimum", 1}, {"maximum", 3}}},
                        {"expiresAt", expires}})}},
      {404, 409, 502}}},
  };
}

} // namespace cm

#include "tests/support/actor_doubles.hpp"

#include <caf/stateful_actor.hpp>

#include "common/error.hpp"

namespace cm::test {

token_repository_actor::behavior_type
memory_repository(token_repository_actor::stateful_pointer<repo_state> self,
                  std::shared_ptr<repo_data> data) {
  self->state.data = data;
  auto now = [self] { return self->clock().now(); };
  auto fenced = [data](const connection_key& key, int64_t fence,
                       const std::string& owner) -> repo_data::row* {
    auto it = data->rows.find(key);
    if (it == data->rows.end() || it->second.record.version != fence ||
        it->second.lease_owner != owner)
      return nullptr;
    return &it->second;
  };
  return {
    [=](find_atom, const connection_key& key) -> caf::result<token_record> {
      ++data->finds;
      if (data->fail_finds != ec::none)
        return make_error(data->fail_finds, "find failed");
      auto it = data->rows.find(key);
      if (it == data->rows.end())
        return make_error(ec::not_found, "no such connection");
      return it->second.record;
    },
    [=](version_atom, const connection_key& key) -> caf::result<int64_t> {
      ++data->version_checks;
      if (data->fail_finds != ec::none)
        return make_error(data->fail_finds, "version check failed");
      auto it = data->rows.find(key);
      if (it == data->rows.end())
        return make_error(ec::not_found, "no such connection");
      return it->second.record.version;
    },
    [=](lease_atom, const connection_key& key, const std::string& owner,
        int64_t lease_ms) -> caf::result<token_record> {
      auto it = data->rows.find(key);
      if (it == data->rows.end())
        return make_error(ec::not_found, "no such connection");
      auto& row = it->second;
      if (!row.lease_owner.empty() && row.lease_owner != owner && row.lease_until > now())
        return make_error(ec::conflict, "refresh lease held by another instance");
      row.lease_owner = owner;
      row.lease_until = now() + std::chrono::milliseconds(lease_ms);
      ++row.record.version;
      ++data->leases_granted;
      return row.record;
    },
    [=](complete_atom, const connection_key& key, int64_t fence, const std::string& owner,
        const refreshed_tokens& tokens) -> caf::result<token_record> {
      if (data->fail_completes > 0) {
        --data->fail_completes;
        return make_error(ec::unavailable, "database unavailable");
      }
      auto* row = fenced(key, fence, owner);
      if (row == nullptr)
        return make_error(ec::conflict, "stale fencing token");
      auto& r = row->record;
      r.access_token = tokens.access_token;
      if (!tokens.refresh_token.empty())
        r.refresh_token = tokens.refresh_token;
      r.expires_at_ms = tokens.expires_at_ms;
      if (!tokens.scopes.empty())
        r.scopes = tokens.scopes;
      r.status = grant_status::connected;
      r.reason.clear();
      ++r.version;
      r.updated_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          now().time_since_epoch()).count() + data->wall_offset_ms;
      r.refreshed_at_ms = r.updated_at_ms;
      row->lease_owner.clear();
      row->failures = 0;
      data->events.emplace_back("TOKEN_REFRESHED", "");
      return r;
    },
    [=](release_atom, const connection_key& key, int64_t fence, const std::string& owner,
        const std::string& reason) -> caf::result<bool> {
      auto* row = fenced(key, fence, owner);
      if (row == nullptr)
        return false;
      row->lease_owner.clear();
      if (!reason.empty())
        ++row->failures;
      return true;
    },
    [=](reauth_atom, const connection_key& key, int64_t fence, const std::string& owner,
        const std::string& reason) -> caf::result<token_record> {
      auto* row = fenced(key, fence, owner);
      if (row == nullptr)
        return make_error(ec::conflict, "stale fencing token");
      row->record.status = grant_status::needs_reauth;
      row->record.reason = reason;
      ++row->record.version;
      row->lease_owner.clear();
      data->events.emplace_back("TOKEN_EXPIRED", reason);
      return row->record;
    },
    [=](config_get_atom, const std::string& team, const std::string& connector)
      -> connector_config_record {
      auto it = data->configs.find({team, connector});
      if (it != data->configs.end())
        return it->second;
      connector_config_record none;
      none.team_id = team;
      none.connector_name = connector;
      return none;
    },
  };
}

provider_client_actor::behavior_type
scripted_provider(provider_client_actor::stateful_pointer<provider_state> self,
                  std::shared_ptr<provider_script> script) {
  self->state.script = script;
  return {
    [=](outbound_request& req) -> outbound_response {
      script->requests.push_back(req);
      if (script->on_request)
        script->on_request();
      if (script->answers.empty())
        return script->fallback;
      auto answer = script->answers.front();
      script->answers.pop_front();
      return answer;
    },
    [=](fetched_atom, uint64_t, outbound_response&) {},
  };
}

outbound_response token_ok(const std::string& access, const std::string& refresh,
                           int64_t expires_in) {
  outbound_response r;
  r.status = 200;
  nlohmann::json body = {{"access_token", access}, {"token_type", "bearer"},
                         {"expires_in", expires_in}};
  if (!refresh.empty())
    body["refresh_token"] = refresh;
  r.body = body.dump();
  return r;
}

outbound_response token_error(int status, const std::string& code, const std::string& retry_after) {
  outbound_response r;
  r.status = status;
  r.body = nlohmann::json{{"error", code}}.dump();
  if (!retry_after.empty())
    r.headers["retry-after"] = retry_after;
  return r;
}

outbound_response transport_failure(transport_error e) {
  outbound_response r;
  r.error = e;
  return r;
}

} // namespace cm::test

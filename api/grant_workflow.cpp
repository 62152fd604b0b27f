#include "api/grant_workflow.hpp"

#include "common/log.hpp"
#include "common/time.hpp"
#include "provider/oauth_flow.hpp"

namespace cm::api {

namespace {

/// Revokes a grant that was just replaced; the outcome is only logged.
void revoke_replaced(const call& c, const config::provider_entry& entry,
                     const oauth::client_credentials& client, const token_record& old) {
  auto req = oauth::revoke_request(entry, client, old, c.ctx().cfg.refresh.provider_timeout_ms);
  if (!req)
    return;
  nlohmann::json fields = {{"provider", entry.name}, {"team_id", old.key.team_id},
                           {"user_id", old.key.user_id}};
  c.self->request(c.ctx().provider_client, budget(c), std::move(*req))
    .then(
      [fields](const outbound_response& res) mutable {
        fields["status"] = res.status;
        log::info("oauth", res.ok() ? "replaced grant revoked" : "replaced grant not revoked",
                  fields);
      },
      [fields](const caf::error&) { log::warn("oauth", "replaced grant not revoked", fields); });
}

} // namespace

token_record grant_record(const connection_key& key, const config::provider_entry& entry,
                          const oauth::token_answer& answer, nlohmann::json metadata) {
  token_record record;
  record.key = key;
  record.kind = connection_kind::oauth;
  record.access_token = answer.access_token;
  record.refresh_token = answer.refresh_token;
  bool expires = answer.expires_in_given || !answer.refresh_token.empty();
  record.expires_at_ms = expires ? unix_now_ms() + answer.expires_in_s * 1000 : 0;
  record.scopes = answer.scopes.empty() ? entry.scopes : answer.scopes;
  auto apps = oauth::granted_apps(entry, record.scopes);
  if (!apps.empty())
    metadata["apps"] = apps;
  record.metadata = metadata.dump();
  return record;
}

void store_grant(const call& c, const config::provider_entry& entry,
                 std::shared_ptr<const oauth::client_credentials> client, token_record record,
                 std::optional<connector_change> change,
                 std::function<void(const connect_result&)> done,
                 std::function<void(const caf::error&)> failed) {
  auto key = record.key;
  fence_connection(c.ctx(), key);
  auto stored = [c, &entry, client, done](const connect_result& result) {
    fence_connection(c.ctx(), result.stored.key);
    if (result.replaced_existing && result.replaced.access_token != result.stored.access_token &&
        client)
      revoke_replaced(c, entry, *client, result.replaced);
    c.self->send(c.ctx().registry, reload_atom_v, result.stored.key);
    done(result);
  };
  auto refused = [c, key, failed](const caf::error& err) {
    fence_connection(c.ctx(), key);
    failed(err);
  };
  if (change)
    c.self->request(c.ctx().configs, budget(c), code_connect_atom_v, std::move(record), *change)
      .then(stored, refused);
  else
    c.self->request(c.ctx().storage, budget(c), connect_atom_v, std::move(record))
      .then(stored, refused);
}

} // namespace cm::api

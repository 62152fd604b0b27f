#include "storage/connector_config_store.hpp"

#include <nlohmann/json.hpp>
#include <sodium.h>

#include "common/log.hpp"
#include "storage/events.hpp"

namespace cm::storage {

namespace {

constexpr const char* table = "connector_configs";

#define CM_CONFIG_COLUMNS                                                                   \
  "connector_name, enabled, config::text, filters::text, secrets, version, "                \
  "coalesce(updated_by, ''), (extract(epoch from updated_at) * 1000)::bigint"

const statement select_config{"configs_select",
  "SELECT " CM_CONFIG_COLUMNS " FROM connector_configs "
  "WHERE team_id = $1 AND connector_name = $2"};

const statement list_configs{"configs_list",
  "SELECT " CM_CONFIG_COLUMNS " FROM connector_configs WHERE team_id = $1 "
  "ORDER BY connector_name"};

// A NULL secret keeps the stored one: the secret is write-only, so a PUT
// that leaves it out must not erase it. NULL filters keep the stored ones.
const statement upsert_config{"configs_upsert_config",
  "INSERT INTO connector_configs (team_id, connector_name, config, secrets, key_id, updated_by, "
  "filters) VALUES ($1, $2, $3::jsonb, $4, $5::integer, $6, coalesce($7::jsonb, '{}'::jsonb)) "
  "ON CONFLICT (team_id, connector_name) DO UPDATE SET config = EXCLUDED.config, "
  "secrets = coalesce(EXCLUDED.secrets, connector_configs.secrets), "
  "key_id = coalesce(EXCLUDED.key_id, connector_configs.key_id), "
  "filters = coalesce($7::jsonb, connector_configs.filters), "
  "version = connector_configs.version + 1, updated_by = EXCLUDED.updated_by, "
  "updated_at = now() RETURNING " CM_CONFIG_COLUMNS};

const statement upsert_filters{"configs_upsert_filters",
  "INSERT INTO connector_configs (team_id, connector_name, filters, updated_by) "
  "VALUES ($1, $2, $3::jsonb, $4) "
  "ON CONFLICT (team_id, connector_name) DO UPDATE SET filters = EXCLUDED.filters, "
  "version = connector_configs.version + 1, updated_by = EXCLUDED.updated_by, "
  "updated_at = now() RETURNING " CM_CONFIG_COLUMNS};

const statement upsert_enabled{"configs_upsert_enabled",
  "INSERT INTO connector_configs (team_id, connector_name, enabled, updated_by) "
  "VALUES ($1, $2, $3::boolean, $4) "
  "ON CONFLICT (team_id, connector_name) DO UPDATE SET enabled = EXCLUDED.enabled, "
  "version = connector_configs.version + 1, updated_by = EXCLUDED.updated_by, "
  "updated_at = now() RETURNING " CM_CONFIG_COLUMNS};

const statement audit_page_stmt{"audit_page",
  "SELECT seq, (extract(epoch from at) * 1000)::bigint, actor_type, actor_id, action, "
  "coalesce(target, ''), coalesce(remote_addr, ''), coalesce(request_id, ''), details::text "
  "FROM audit_log WHERE team_id = $1 AND ($2::bigint = 0 OR seq < $2::bigint) "
  "ORDER BY seq DESC LIMIT $3::integer"};

cipher_binding secrets_binding(const std::string& team_id, const std::string& connector_name) {
  return {table, team_id, team_id, "", connector_name, "secrets"};
}

} // namespace

connector_config_record connector_config_store::read_row(const result& res, int row,
                                                         const std::string& team_id,
                                                         const std::string& connector_name) {
  connector_config_record r;
  r.team_id = team_id;
  r.connector_name = connector_name;
  r.exists = true;
  r.enabled = res.text(row, 1) == "t";
  r.config = std::string(res.text(row, 2));
  r.filters = std::string(res.text(row, 3));
  if (!res.is_null(row, 4)) {
    try {
      auto plain = cipher_.decrypt(res.bytes(row, 4), secrets_binding(team_id, connector_name));
      auto secrets = nlohmann::json::parse(plain.view(), nullptr, false);
      if (secrets.is_object() && secrets.contains("clientSecret") &&
          secrets["clientSecret"].is_string())
        r.client_secret = secret(secrets["clientSecret"].get<std::string>());
    } catch (const crypto_error& e) {
      log::error("storage", "ALARM: stored connector secret failed to decrypt",
                 {{"team_id", team_id}, {"connector", connector_name}, {"error", e.what()}});
      throw db_error(ec::integrity_failure, "", "stored credentials failed integrity check");
    }
  }
  r.version = res.integer(row, 5);
  r.updated_by = std::string(res.text(row, 6));
  r.updated_at_ms = res.integer(row, 7);
  return r;
}

connector_config_record connector_config_store::get(const std::string& team_id,
                                                    const std::string& connector_name) {
  auto res = db_.exec(select_config, {param::text(team_id), param::text(connector_name)});
  if (res.rows() == 0) {
    connector_config_record r;
    r.team_id = team_id;
    r.connector_name = connector_name;
    return r;
  }
  return read_row(res, 0, team_id, connector_name);
}

connector_config_records connector_config_store::list(const std::string& team_id) {
  auto res = db_.exec(list_configs, {param::text(team_id)});
  connector_config_records out;
  for (int i = 0; i < res.rows(); ++i) {
    auto name = std::string(res.text(i, 0));
    try {
      out.push_back(read_row(res, i, team_id, name));
    } catch (const db_error& e) {
      // One tampered secret must not hide the team's other connectors; the
      // alarm is logged and the row listed without its secret.
      if (e.code != ec::integrity_failure)
        throw;
      connector_config_record r;
      r.team_id = team_id;
      r.connector_name = name;
      r.exists = true;
      r.enabled = res.text(i, 1) == "t";
      out.push_back(std::move(r));
    }
  }
  return out;
}

connector_config_record connector_config_store::apply(const connector_change& change) {
  database::transaction tx{db_};
  auto team = param::text(change.team_id);
  auto name = param::text(change.connector_name);
  auto who = param::text(change.audit.actor_id);
  result res;
  if (change.what == "config") {
    auto config = nlohmann::json::parse(change.body, nullptr, false);
    if (!config.is_object())
      throw db_error(ec::bad_request, "", "config must be a JSON object");
    // Filters given with the configuration go to their own column.
    param filters = param::null();
    if (config.contains("filters")) {
      filters = param::text(config["filters"].dump());
      config.erase("filters");
    }
    param secrets = param::null();
    param key_id = param::null();
    if (!change.client_secret.empty()) {
      nlohmann::json plain = {{"clientSecret", change.client_secret.reveal()}};
      auto text = plain.dump();
      secrets = param::bytes(
        cipher_.encrypt(text, secrets_binding(change.team_id, change.connector_name)));
      sodium_memzero(text.data(), text.size());
      key_id = param::text(std::to_string(cipher_.keys().active_id()));
    }
    res = db_.exec(upsert_config,
                   {team, name, param::text(config.dump()), secrets, key_id, who, filters});
  } else if (change.what == "filters") {
    auto filters = nlohmann::json::parse(change.body, nullptr, false);
    if (!filters.is_object())
      throw db_error(ec::bad_request, "", "filters must be a JSON object");
    res = db_.exec(upsert_filters, {team, name, param::text(filters.dump()), who});
  } else if (change.what == "toggle") {
    res = db_.exec(upsert_enabled, {team, name, param::text(change.enabled ? "true" : "false"), who});
    auto apps = nlohmann::json::parse(change.apps, nullptr, false);
    events_.append(change.team_id,
                   entity_event(random_uuid(), change.enabled ? "appEnabled" : "appDisabled",
                                change.team_id, change.connector_name, change.audit.actor_id,
                                apps, change.sync_action));
  } else {
    throw db_error(ec::bad_request, "", "unknown kind of connector change");
  }
  tokens_.audit(change.audit);
  auto stored = read_row(res, 0, change.team_id, change.connector_name);
  tx.commit();
  return stored;
}

connect_result connector_config_store::connect_and_enable(token_record grant,
                                                          const connector_change& enable) {
  database::transaction tx{db_};
  auto out = tokens_.connect(std::move(grant));
  apply(enable);
  tx.commit();
  return out;
}

audit_rows connector_config_store::audit_page(const std::string& team_id, int64_t before_seq,
                                              int limit) {
  auto res = db_.exec(audit_page_stmt, {param::text(team_id), param::text(std::to_string(before_seq)),
                                        param::text(std::to_string(limit))});
  audit_rows out;
  for (int i = 0; i < res.rows(); ++i) {
    audit_row row;
    row.seq = res.integer(i, 0);
    row.at_ms = res.integer(i, 1);
    row.entry.team_id = team_id;
    row.entry.actor_type = res.text(i, 2);
    row.entry.actor_id = res.text(i, 3);
    row.entry.action = res.text(i, 4);
    row.entry.target = res.text(i, 5);
    row.entry.remote_addr = res.text(i, 6);
    row.entry.request_id = res.text(i, 7);
    row.entry.details = res.text(i, 8);
    out.push_back(std::move(row));
  }
  return out;
}

} // namespace cm::storage

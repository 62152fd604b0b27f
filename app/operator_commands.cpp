#include "app/operator_commands.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "api/connection_json.hpp"
#include "app/help.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "config/provider_catalog.hpp"
#include "http/auth.hpp"
#include "storage/database.hpp"
#include "storage/kafka_relay_store.hpp"
#include "storage/service_token_store.hpp"
#include "storage/token_store.hpp"

namespace cm::app {

namespace {

/// Operator output goes to stdout; the service's info lines ("connected
/// to the database") would only clutter stderr.
void quiet_logs() {
  if (log::current_level() < log::level::warn)
    log::set_level(log::level::warn);
}

int usage_error(const std::string& problem, const arguments& args) {
  std::cerr << "connector-manager: " << problem << "\n\n" << help_for(args.command, args.subcommand);
  return 2;
}

/// Runs `work` against the database; says why when it cannot.
int with_database(const config::service_config& cfg,
                  const std::function<int(storage::database&)>& work) {
  storage::database db{cfg.database};
  try {
    db.ensure_connected();
    return work(db);
  } catch (const storage::db_error& e) {
    if (e.code == ec::unavailable && !db.last_connect_error().empty()) {
      std::cerr << "connector-manager: cannot connect to the database: "
                << db.last_connect_error() << "\n";
    } else if (e.sqlstate == "42P01") {
      std::cerr << "connector-manager: the database is not migrated yet: run "
                   "'connector-manager migrate'\n";
    } else {
      std::cerr << "connector-manager: database error: " << e.what() << "\n";
    }
    return 1;
  }
}

/// Prints rows as columns separated by two spaces (the last one unpadded).
void print_table(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty())
    return;
  std::vector<size_t> width(rows.front().size(), 0);
  for (auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i)
      width[i] = std::max(width[i], row[i].size());
  for (auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

std::string join(const std::vector<std::string>& parts, const char* separator) {
  std::string out;
  for (auto& p : parts)
    out += (out.empty() ? "" : separator) + p;
  return out;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty())
      out.push_back(item);
  return out;
}

// -- service-tokens ------------------------------------------------------------

const config::service_token_config* configured_token(const config::service_config& cfg,
                                                     const std::string& name) {
  for (auto& t : cfg.auth.service_tokens)
    if (t.name == name)
      return &t;
  return nullptr;
}

int service_tokens_create(const arguments& args, const config::service_config& cfg) {
  auto name = args.option("--name");
  if (!storage::valid_service_token_name(name))
    return usage_error("--name must be 1 to 64 of A-Z a-z 0-9 . _ -", args);
  if (configured_token(cfg, name))
    return usage_error("a token named " + name + " is in the service file (auth.service_tokens)",
                       args);
  auto scopes = split_list(args.option("--scopes", http::scope_fetch_config));
  if (scopes.empty())
    return usage_error("--scopes needs at least one scope", args);
  for (auto& s : scopes)
    if (!storage::valid_scope(s))
      return usage_error("scope " + s + " is not 1 to 64 of A-Z 0-9 _", args);
  return with_database(cfg, [&](storage::database& db) {
    auto token = storage::new_service_token();
    storage::stored_service_token stored;
    try {
      stored = storage::service_token_store{db}.create(name, http::sha256_hex(token), scopes);
    } catch (const storage::db_error& e) {
      if (e.code != ec::conflict)
        throw;
      std::cerr << "connector-manager: a live service token named " << name
                << " exists; revoke it first ('connector-manager service-tokens revoke --name "
                << name << "')\n";
      return 1;
    }
    if (args.has_flag("--json")) {
      std::cout << nlohmann::json{{"id", stored.id},
                                  {"name", stored.name},
                                  {"scopes", stored.scopes},
                                  {"created_at", rfc3339(stored.created_at_ms)},
                                  {"token", token}}
                     .dump()
                << "\n";
    } else {
      std::cout << token << "\n";
      std::cerr << "Created service token " << name << " (scopes " << join(scopes, ",")
                << "). It is shown this once; only its hash is kept. Running instances accept it "
                   "within "
                << cfg.auth.service_token_poll_ms << " ms. Send it as X-Services-Token.\n";
    }
    return 0;
  });
}

int service_tokens_list(const arguments& args, const config::service_config& cfg) {
  return with_database(cfg, [&](storage::database& db) {
    auto stored = storage::service_token_store{db}.list(args.has_flag("--all"));
    if (args.has_flag("--json")) {
      auto list = nlohmann::json::array();
      for (auto& t : cfg.auth.service_tokens)
        list.push_back({{"name", t.name}, {"scopes", t.scopes}, {"source", "config"},
                        {"id", nullptr}, {"created_at", nullptr}, {"revoked_at", nullptr}});
      for (auto& t : stored)
        list.push_back(
          {{"name", t.name}, {"scopes", t.scopes}, {"source", "database"}, {"id", t.id},
           {"created_at", rfc3339(t.created_at_ms)},
           {"revoked_at", t.revoked_at_ms ? nlohmann::json(rfc3339(t.revoked_at_ms))
                                          : nlohmann::json(nullptr)}});
      std::cout << nlohmann::json{{"service_tokens", list}}.dump() << "\n";
      return 0;
    }
    std::vector<std::vector<std::string>> rows = {
      {"NAME", "SCOPES", "SOURCE", "CREATED", "REVOKED"}};
    for (auto& t : cfg.auth.service_tokens)
      rows.push_back({t.name, join(t.scopes, ","), "config", "-", "-"});
    for (auto& t : stored)
      rows.push_back({t.name, join(t.scopes, ","), "database", rfc3339(t.created_at_ms),
                      t.revoked_at_ms ? rfc3339(t.revoked_at_ms) : "-"});
    if (rows.size() == 1) {
      std::cout << "no service tokens; create one with 'connector-manager service-tokens create "
                   "--name NAME'\n";
      return 0;
    }
    print_table(rows);
    return 0;
  });
}

int service_tokens_revoke(const arguments& args, const config::service_config& cfg) {
  auto name = args.option("--name");
  if (name.empty())
    return usage_error("revoke needs --name", args);
  return with_database(cfg, [&](storage::database& db) {
    if (storage::service_token_store{db}.revoke(name)) {
      std::cout << "revoked " << name << "; running instances refuse it within "
                << cfg.auth.service_token_poll_ms << " ms\n";
      return 0;
    }
    if (configured_token(cfg, name))
      std::cerr << "connector-manager: " << name
                << " is configured in the service file (auth.service_tokens): remove it there, "
                   "then reload or restart\n";
    else
      std::cerr << "connector-manager: no live stored service token is named " << name << "\n";
    return 1;
  });
}

// -- connections ---------------------------------------------------------------

config::provider_catalog load_catalog(const config::service_config& cfg) {
  auto catalog = config::load_provider_catalog(cfg.providers_file);
  config::apply_provider_settings(catalog, cfg.providers);
  return catalog;
}

int connections_list(const arguments& args, const config::service_config& cfg) {
  storage::connection_filter filter{args.option("--team"), args.option("--user"),
                                    args.option("--provider"), 100};
  if (auto limit = args.option("--limit"); !limit.empty()) {
    char* end = nullptr;
    long n = std::strtol(limit.c_str(), &end, 10);
    if (*end != '\0' || n < 1 || n > 10000)
      return usage_error("--limit must be a number from 1 to 10000", args);
    filter.limit = static_cast<int32_t>(n);
  }
  auto catalog = load_catalog(cfg);
  return with_database(cfg, [&](storage::database& db) {
    auto rows = storage::search_connections(db, filter);
    if (args.has_flag("--json")) {
      auto list = nlohmann::json::array();
      for (auto& row : rows)
        list.push_back(api::connection_json(row, catalog, true, true));
      std::cout << nlohmann::json{{"connections", list}}.dump() << "\n";
      return 0;
    }
    if (rows.empty()) {
      std::cout << "no connections match\n";
      return 0;
    }
    std::vector<std::vector<std::string>> table = {
      {"TEAM", "USER", "PROVIDER", "TYPE", "STATUS", "ACCOUNT", "EXPIRES", "ID"}};
    for (auto& row : rows) {
      auto j = api::connection_json(row, catalog, true, true);
      table.push_back({row.key.team_id, row.key.user_id, row.key.provider,
                       j["type"].get<std::string>(), j["status"].get<std::string>(),
                       j["account"].get<std::string>(),
                       j["expires_at"].is_null() ? "-" : j["expires_at"].get<std::string>(),
                       row.id});
    }
    print_table(table);
    return 0;
  });
}

/// --team, --user and --provider, all three required.
bool one_connection(const arguments& args, connection_key& key, std::string& problem) {
  key = {args.option("--team"), args.option("--user"), args.option("--provider")};
  if (key.team_id.empty() || key.user_id.empty() || key.provider.empty()) {
    problem = args.subcommand + " needs --team, --user and --provider";
    return false;
  }
  return true;
}

int connections_show(const arguments& args, const config::service_config& cfg) {
  connection_key key;
  std::string problem;
  if (!one_connection(args, key, problem))
    return usage_error(problem, args);
  auto catalog = load_catalog(cfg);
  return with_database(cfg, [&](storage::database& db) {
    auto rows =
      storage::search_connections(db, {key.team_id, key.user_id, key.provider, 1});
    if (rows.empty()) {
      std::cerr << "connector-manager: no connection for team " << key.team_id << ", user "
                << key.user_id << ", provider " << key.provider << "\n";
      return 1;
    }
    auto j = api::connection_json(rows.front(), catalog, true, true);
    if (args.has_flag("--json")) {
      std::cout << j.dump() << "\n";
      return 0;
    }
    std::vector<std::vector<std::string>> table;
    for (auto name : {"id", "team_id", "user_id", "provider", "type", "status", "reason",
                      "account", "scopes", "expires_at", "updated_at", "metadata"}) {
      if (!j.contains(name))
        continue;
      auto& v = j[name];
      table.push_back({std::string(name) + ":", v.is_string() ? v.get<std::string>()
                                                : v.is_null()  ? "-"
                                                               : v.dump()});
    }
    print_table(table);
    return 0;
  });
}

/// The running service's base URL: --url, else the listen address (a
/// wildcard address is reached on loopback).
std::string service_url(const arguments& args, const config::service_config& cfg) {
  auto url = args.option("--url");
  if (!url.empty()) {
    while (!url.empty() && url.back() == '/')
      url.pop_back();
    return url;
  }
  auto host = cfg.listen.address;
  if (host.empty() || host == "0.0.0.0")
    host = "127.0.0.1";
  else if (host == "::")
    host = "[::1]";
  else if (host.find(':') != std::string::npos)
    host = "[" + host + "]";
  return "http://" + host + ":" + std::to_string(cfg.listen.port);
}

/// Whether a session JWT may be sent to `url`: over https anywhere, over
/// plain http only to this machine.
bool safe_to_send_session(const std::string& url) {
  if (url.rfind("https://", 0) == 0)
    return true;
  if (url.rfind("http://", 0) != 0)
    return false;
  auto host = url.substr(7, url.find_first_of("/?#", 7) - 7);
  if (!host.empty() && host.front() == '[')
    return host.rfind("[::1]", 0) == 0;
  host = host.substr(0, host.find(':'));
  return host == "localhost" || host.rfind("127.", 0) == 0;
}

struct service_answer {
  long status = 0;
  std::string body;
  std::string transport_error;
};

service_answer call_service(const std::string& method, const std::string& url,
                            const std::string& bearer) {
  service_answer out;
  std::unique_ptr<CURL, void (*)(CURL*)> curl{curl_easy_init(), curl_easy_cleanup};
  if (!curl) {
    out.transport_error = "cannot start libcurl";
    return out;
  }
  auto auth = "Authorization: Bearer " + bearer;
  curl_slist* headers = curl_slist_append(nullptr, auth.c_str());
  headers = curl_slist_append(headers, "Accept: application/json");
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT, 60L);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION,
                   +[](char* data, size_t size, size_t count, void* sink) {
                     auto& body = *static_cast<std::string*>(sink);
                     if (body.size() < (1 << 20))
                       body.append(data, size * count);
                     return size * count;
                   });
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &out.body);
  auto rc = curl_easy_perform(curl.get());
  curl_slist_free_all(headers);
  if (rc != CURLE_OK) {
    out.transport_error = curl_easy_strerror(rc);
    return out;
  }
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &out.status);
  return out;
}

/// refresh and disconnect: the user's own route on the running service,
/// with a short-lived session JWT minted for that user.
int connections_act(const arguments& args, const config::service_config& cfg) {
  connection_key key;
  std::string problem;
  if (!one_connection(args, key, problem))
    return usage_error(problem, args);
  if (cfg.auth.hs256_secret_file.empty()) {
    std::cerr << "connector-manager: " << args.subcommand
              << " acts as the connection's user and needs auth.jwt.hs256_secret_file to mint "
                 "its session; with RS256 only, call the route with a token from your identity "
                 "provider\n";
    return 2;
  }
  if (args.option("--url").empty() && cfg.listen.port == 0) {
    std::cerr << "connector-manager: listen.port is 0 (the service picks a port and logs it in "
                 "its ready line): name the service with --url http://HOST:PORT\n";
    return 2;
  }
  if (!safe_to_send_session(service_url(args, cfg))) {
    std::cerr << "connector-manager: " << service_url(args, cfg)
              << ": the call carries a session JWT; name a remote service with https://\n";
    return 2;
  }
  bool refresh = args.subcommand == "refresh";
  std::unique_ptr<char, void (*)(void*)> escaped{
    curl_easy_escape(nullptr, key.provider.c_str(), static_cast<int>(key.provider.size())),
    curl_free};
  auto url = service_url(args, cfg) + "/api/connectors/" + escaped.get() +
             (refresh ? "/refresh" : "");
  http::authenticator auth{cfg.auth};
  auto bearer = auth.mint(key.user_id, key.team_id, "", "member", 120);
  auto answer = call_service(refresh ? "POST" : "DELETE", url, bearer);
  if (!answer.transport_error.empty()) {
    std::cerr << "connector-manager: cannot reach the service at " << service_url(args, cfg)
              << ": " << answer.transport_error << " (is it running? --url names another)\n";
    return 1;
  }
  auto body = nlohmann::json::parse(answer.body, nullptr, false);
  if (answer.status != 200) {
    std::string code = "error", message = answer.body;
    if (body.is_object() && body.contains("error") && body["error"].is_object()) {
      code = body["error"].value("code", code);
      message = body["error"].value("message", message);
    }
    if (args.has_flag("--json"))
      std::cout << answer.body << "\n";
    std::cerr << "connector-manager: " << args.subcommand << " failed: " << answer.status << " "
              << code << ": " << message << "\n";
    return 1;
  }
  if (args.has_flag("--json")) {
    std::cout << answer.body << "\n";
  } else if (refresh) {
    auto expires = body.is_object() && body["expires_at"].is_string()
                     ? body["expires_at"].get<std::string>()
                     : std::string("never");
    std::cout << "refreshed " << key.team_id << "/" << key.user_id << "/" << key.provider
              << "; the token expires " << expires << "\n";
  } else {
    bool revoked = body.is_object() && body.value("revoked", false);
    std::cout << "disconnected " << key.team_id << "/" << key.user_id << "/" << key.provider
              << (revoked ? "; its tokens were revoked at the provider\n"
                          : "; the provider was not asked to revoke (it has no revocation "
                            "endpoint, or it failed: see the service's log)\n");
  }
  return 0;
}

// -- kafka ---------------------------------------------------------------------

int kafka_parked(const arguments& args, const config::service_config& cfg) {
  int limit = 100;
  if (auto text = args.option("--limit"); !text.empty()) {
    try {
      limit = std::stoi(text);
    } catch (const std::exception&) {
      limit = 0;
    }
    if (limit < 1 || limit > 10000)
      return usage_error("--limit takes a number from 1 to 10000", args);
  }
  return with_database(cfg, [&](storage::database& db) {
    auto rows = storage::kafka_relay_store{db}.list_parked(limit);
    if (args.has_flag("--json")) {
      auto list = nlohmann::json::array();
      for (auto& r : rows)
        list.push_back({{"team_id", r.team_id}, {"event_id", r.event_id}, {"topic", r.topic},
                        {"event_type", r.event_type}, {"reason", r.reason},
                        {"parked_at", r.parked_at},
                        {"requeued_at", r.requeued_at.empty() ? nlohmann::json(nullptr)
                                                              : nlohmann::json(r.requeued_at)}});
      std::cout << nlohmann::json{{"parked", list}}.dump() << "\n";
      return 0;
    }
    if (rows.empty()) {
      std::cout << "no parked Kafka events\n";
      return 0;
    }
    std::vector<std::vector<std::string>> table = {
      {"EVENT", "TEAM", "TOPIC", "TYPE", "REASON", "PARKED", "REQUEUED"}};
    for (auto& r : rows)
      table.push_back({r.event_id, r.team_id, r.topic,
                       r.event_type.empty() ? "(pruned)" : r.event_type, r.reason, r.parked_at,
                       r.requeued_at.empty() ? "-" : r.requeued_at});
    print_table(table);
    return 0;
  });
}

int kafka_requeue(const arguments& args, const config::service_config& cfg) {
  auto event_id = args.option("--event");
  bool all = args.has_flag("--all");
  if (event_id.empty() == !all)
    return usage_error("requeue needs --event ID or --all", args);
  return with_database(cfg, [&](storage::database& db) {
    auto n = storage::kafka_relay_store{db}.requeue(event_id);
    if (n == 0) {
      std::cerr << "connector-manager: "
                << (all ? std::string("no parked Kafka event waits for an operator")
                        : "no parked Kafka event " + event_id + " waits for an operator")
                << " (see 'connector-manager kafka parked'; an event whose outbox row was "
                   "pruned cannot be sent again)\n";
      return 1;
    }
    std::cout << "re-queued " << n << (n == 1 ? " event" : " events")
              << "; the relaying instance produces "
              << (n == 1 ? "it" : "them") << " within about two events.poll_ms ("
              << cfg.events.poll_ms << " ms) and removes "
              << (n == 1 ? "it" : "each") << " from the parked list once acknowledged\n";
    return 0;
  });
}

/// The same command without its subcommand, for its overall help.
arguments command_only(const arguments& args) {
  arguments out;
  out.command = args.command;
  return out;
}

} // namespace

int cmd_service_tokens(const arguments& args, const config::service_config& cfg) {
  quiet_logs();
  if (args.subcommand == "create")
    return service_tokens_create(args, cfg);
  if (args.subcommand == "list")
    return service_tokens_list(args, cfg);
  if (args.subcommand == "revoke")
    return service_tokens_revoke(args, cfg);
  return usage_error(args.subcommand.empty() ? "service-tokens needs a subcommand"
                                             : "unknown subcommand " + args.subcommand,
                     command_only(args));
}

int cmd_kafka(const arguments& args, const config::service_config& cfg) {
  quiet_logs();
  if (args.subcommand == "parked")
    return kafka_parked(args, cfg);
  if (args.subcommand == "requeue")
    return kafka_requeue(args, cfg);
  return usage_error(args.subcommand.empty() ? "kafka needs a subcommand"
                                             : "unknown subcommand " + args.subcommand,
                     command_only(args));
}

int cmd_connections(const arguments& args, const config::service_config& cfg) {
  quiet_logs();
  if (args.subcommand == "list")
    return connections_list(args, cfg);
  if (args.subcommand == "show")
    return connections_show(args, cfg);
  if (args.subcommand == "refresh" || args.subcommand == "disconnect")
    return connections_act(args, cfg);
  return usage_error(args.subcommand.empty() ? "connections needs a subcommand"
                                             : "unknown subcommand " + args.subcommand,
                     command_only(args));
}

} // namespace cm::app

#include "api/api_key_routes.hpp"

#include <algorithm>
#include <regex>

#include <caf/event_based_actor.hpp>

#include "common/log.hpp"
#include "common/time.hpp"
#include "config/template_value.hpp"
#include "http/json_body.hpp"
#include "provider/api_key_check.hpp"
#include "provider/oauth_protocol.hpp"
#include "provider/service_account.hpp"

namespace cm {

namespace {

constexpr size_t max_key_bytes = 4096;

bool printable(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char ch) { return ch > 0x20 && ch < 0x7f; });
}

/// The caller's non-secret fields, checked against the catalog; sets
/// `problem` (naming the field) on the first bad one.
std::optional<nlohmann::json> read_fields(const config::provider_entry& entry,
                                          const nlohmann::json& body, std::string& problem) {
  auto& check = *entry.api_key;
  nlohmann::json fields = nlohmann::json::object();
  auto take = [&](const std::string& name, bool required) {
    if (!body.contains(name) || body[name].is_null() ||
        (body[name].is_string() && body[name].get<std::string>().empty())) {
      if (required)
        problem = name + " is required";
      return required ? false : true;
    }
    if (!body[name].is_string() || body[name].get<std::string>().size() > 512) {
      problem = name + " must be a string of at most 512 characters";
      return false;
    }
    auto value = body[name].get<std::string>();
    // A field that fills a URL placeholder (Zendesk's subdomain) obeys the
    // one rule for such values.
    if (auto pattern = entry.template_params.find(name); pattern != entry.template_params.end()) {
      if (auto why = config::template_value_problem(value, pattern->second); !why.empty()) {
        problem = name + " is not valid: it " + why;
        return false;
      }
    }
    static const std::regex email{R"(^[^@\s]+@[^@\s]+\.[^@\s]+$)"};
    if (name == "email" && !std::regex_match(value, email)) {
      problem = "email is not valid";
      return false;
    }
    fields[name] = value;
    return true;
  };
  for (auto& name : check.required_fields)
    if (!take(name, true))
      return std::nullopt;
  for (auto& name : check.optional_fields)
    if (!take(name, false))
      return std::nullopt;
  return fields;
}

/// Answers 422 or 502 unless the provider accepted; true when it answered.
bool refused(const call& c, const api_key::outcome& verdict, const std::string& refusal) {
  if (verdict.result == api_key::verdict::rejected) {
    c.ex->reply_error(ec::invalid_credentials, refusal + " (" + verdict.reason + ")");
    return true;
  }
  if (verdict.result != api_key::verdict::valid) {
    c.ex->reply_error(ec::provider_failed, "the key could not be validated: " + verdict.reason);
    return true;
  }
  return false;
}

/// Stores a validated connection (with TOKEN_CREATED), starts its actor and
/// answers the caller.
void store_and_reply(const call& c, token_record record) {
  auto key = record.key;
  fence_connection(c.ctx(), key);
  c.self->request(c.ctx().storage, budget(c), connect_atom_v, std::move(record))
    .then(
      [c](const connect_result& result) {
        fence_connection(c.ctx(), result.stored.key);
        c.self->send(c.ctx().registry, reload_atom_v, result.stored.key);
        auto metadata = nlohmann::json::parse(result.stored.metadata, nullptr, false);
        c.ex->reply_json(200, {{"connected", true},
                               {"provider", result.stored.key.provider},
                               {"account_name", metadata.value("account_name", "")}});
      },
      [c, key](const caf::error& err) {
        fence_connection(c.ctx(), key);
        c.ex->reply_error(err);
      });
}

/// The service-account connect once the grant is signed: mint an access
/// token at the token endpoint, check it reads the property, store.
void request_service_account_token(const call& c, const config::provider_entry& entry,
                                   outbound_request signed_grant,
                                   std::shared_ptr<secret> credential, std::string email,
                                   nlohmann::json fields) {
  auto copy = c;
  auto entry_ptr = &entry;
  auto timeout = c.ctx().cfg.refresh.provider_timeout_ms;
  c.self->request(c.ctx().provider_client, budget(c), std::move(signed_grant))
    .then(
      [copy, entry_ptr, credential, email, fields, timeout](const outbound_response& res) mutable {
        auto answer = oauth::read_token_answer(*entry_ptr, res);
        if (answer.result == oauth::outcome::invalid_grant ||
            answer.result == oauth::outcome::rejected) {
          copy.ex->reply_error(ec::invalid_credentials,
                               "the provider rejected the service-account key (" + answer.reason + ")");
          return;
        }
        if (answer.result != oauth::outcome::ok) {
          copy.ex->reply_error(ec::provider_failed, "the key could not be validated: " + answer.reason);
          return;
        }
        auto check = api_key::validation_request(*entry_ptr, answer.access_token.reveal(), fields,
                                                 timeout);
        auto tokens = std::make_shared<oauth::token_answer>(std::move(answer));
        copy.self->request(copy.ctx().provider_client, budget(copy), std::move(*check))
          .then(
            [copy, entry_ptr, credential, email, fields, tokens](const outbound_response& res2) mutable {
              if (refused(copy, api_key::read_validation(*entry_ptr, res2),
                          "the key cannot read this property"))
                return;
              token_record record;
              record.key = {copy.who.team, copy.who.subject, entry_ptr->name};
              record.kind = connection_kind::oauth;
              record.access_token = tokens->access_token;
              record.refresh_token = *credential;
              record.expires_at_ms = unix_now_ms() + tokens->expires_in_s * 1000;
              record.scopes = entry_ptr->scopes;
              fields["client_email"] = email;
              fields["account_name"] = email;
              record.metadata = fields.dump();
              store_and_reply(copy, std::move(record));
            },
            [copy](const caf::error&) {
              copy.ex->reply_error(ec::provider_failed, "the key could not be validated: no answer");
            });
      },
      [copy](const caf::error&) {
        copy.ex->reply_error(ec::provider_failed, "the key could not be validated: no answer");
      });
}

/// Google service-account keys: have the key signer check the key and sign
/// a JWT-bearer grant (off the workers: actors/key_signer_actor.hpp), mint
/// an access token with it, prove it can read the property, then store the
/// key file as the long-lived credential (refresh_token column) and the
/// minted token.
void connect_service_account(const call& c, const config::provider_entry& entry,
                             std::string key_json, nlohmann::json fields) {
  std::string problem;
  auto key = oauth::parse_service_account(key_json, problem);
  if (!key) {
    c.ex->reply_error(ec::bad_request, problem);
    return;
  }
  auto timeout = c.ctx().cfg.refresh.provider_timeout_ms;
  auto email = key->client_email;
  auto grant = oauth::service_account_grant(entry, std::move(*key), unix_now_ms() / 1000, timeout);
  auto credential = std::make_shared<secret>(std::move(key_json));
  c.self->request(c.ctx().key_signer, budget(c), std::move(grant))
    .then(
      [c, entry_ptr = &entry, credential, email, fields](outbound_request& signed_grant) {
        request_service_account_token(c, *entry_ptr, std::move(signed_grant), credential, email,
                                      fields);
      },
      // A refused key (400 naming api_key), or too many signings waiting
      // (503 with Retry-After).
      [c](const caf::error& err) { c.ex->reply_error(err); });
}

} // namespace

void connect_api_key(const call& c) {
  nlohmann::json body;
  std::string problem;
  if (!http::parse_json_object(c.ex->req().body, body, problem)) {
    c.ex->reply_error(ec::bad_request, problem);
    return;
  }
  if (!body.contains("provider") || !body["provider"].is_string()) {
    c.ex->reply_error(ec::bad_request, "provider is required");
    return;
  }
  auto entry = known_provider(c, body["provider"].get<std::string>());
  if (entry == nullptr)
    return;
  if (entry->mode == config::auth_mode::oauth2 || !entry->api_key) {
    c.ex->reply_error(ec::bad_request, "this provider is connected through OAuth");
    return;
  }
  if (!body.contains("api_key") || !body["api_key"].is_string() ||
      body["api_key"].get<std::string>().empty()) {
    c.ex->reply_error(ec::bad_request, "api_key is required");
    return;
  }
  auto key = body["api_key"].get<std::string>();
  bool service_account = entry->mode == config::auth_mode::service_account;
  if (service_account) {
    if (key.size() > 4 * max_key_bytes) {
      c.ex->reply_error(ec::bad_request, "api_key is malformed");
      return;
    }
  } else if (key.size() > max_key_bytes || !printable(key)) {
    c.ex->reply_error(ec::bad_request, "api_key is malformed");
    return;
  }
  auto& prefixes = entry->api_key->key_prefixes;
  if (!prefixes.empty() && std::none_of(prefixes.begin(), prefixes.end(), [&](auto& p) {
        return key.rfind(p, 0) == 0;
      })) {
    c.ex->reply_error(ec::bad_request, "api_key does not look like a " + entry->display_name + " key");
    return;
  }
  auto fields = read_fields(*entry, body, problem);
  if (!fields) {
    c.ex->reply_error(ec::bad_request, problem);
    return;
  }
  if (service_account) {
    connect_service_account(c, *entry, std::move(key), std::move(*fields));
    return;
  }
  auto req = api_key::validation_request(*entry, key, *fields, c.ctx().cfg.refresh.provider_timeout_ms);
  if (!req) {
    c.ex->reply_error(ec::bad_request, "the provider's fields are incomplete");
    return;
  }
  auto copy = c;
  auto values = *fields;
  auto secret_key = std::make_shared<secret>(std::move(key));
  c.self->request(c.ctx().provider_client, budget(c), std::move(*req))
    .then(
      [copy, entry, values, secret_key](const outbound_response& res) mutable {
        auto verdict = api_key::read_validation(*entry, res);
        if (refused(copy, verdict, "the provider rejected the key"))
          return;
        token_record record;
        record.key = {copy.who.team, copy.who.subject, entry->name};
        record.kind = connection_kind::api_key;
        record.access_token = *secret_key;
        values["account_name"] = verdict.account_name;
        record.metadata = values.dump();
        store_and_reply(copy, std::move(record));
      },
      [copy](const caf::error&) {
        copy.ex->reply_error(ec::provider_failed, "the key could not be validated: no answer");
      });
}


std::vector<api::route> api_key_routes() {
  auto body = api::object_of(
    {{"provider", {{"type", "string"}, {"description", "an api_key or service_account provider"}}},
     {"api_key", {{"type", "string"}, {"writeOnly", true},
                  {"description", "the key (GA4: the service-account key file's JSON)"}}},
     {"subdomain", {{"type", "string"}, {"description", "Zendesk, Gorgias"}}},
     {"property_id", {{"type", "string"}, {"description", "Google Analytics 4"}}},
     {"email", {{"type", "string"}, {"description", "Zendesk: the agent's email"}}}},
    {"provider", "api_key"});
  return {
    {"POST", "/api/connectors/connect", http::access::user, "", connect_api_key,
     http::metering::metered,
     {"connectApiKey", "connections", "Connect an API key",
      "Validates the key with a real call to the provider, then stores it encrypted and emits "
      "TOKEN_CREATED. A key the provider rejects is 422 and nothing is stored. The fields "
      "each provider needs are in the providers catalog.",
      {}, body,
      {{200, "connected",
        api::object_of({{"connected", {{"type", "boolean"}, {"const", true}}},
                        {"provider", {{"type", "string"}}},
                        {"account_name", {{"type", "string"}}}})}},
      {404, 413, 422, 502}}},
  };
}

} // namespace cm

#include "api/oauth_routes.hpp"

#include <algorithm>

#include <caf/event_based_actor.hpp>

#include "common/log.hpp"
#include "common/time.hpp"
#include "actors/team_app.hpp"
#include "api/audit_trail.hpp"
#include "api/grant_workflow.hpp"
#include "api/popup_start.hpp"
#include "http/html_page.hpp"
#include "provider/browser_binding.hpp"
#include "provider/oauth_flow.hpp"

namespace cm {

namespace {

constexpr const char* component = "oauth";

/// Provider error codes are echoed only when they look like codes.
std::string safe_error_code(const std::string& code) {
  if (code.empty() || code.size() > 64 ||
      !std::all_of(code.begin(), code.end(),
                   [](unsigned char ch) { return std::isalnum(ch) || ch == '_' || ch == '.'; }))
    return "error";
  return code;
}

/// The provider or connector named by either route family.
std::string route_provider(const call& c) {
  auto it = c.params.find("provider");
  return it != c.params.end() ? it->second : c.params.at("connectorName");
}

bool team_flow(const call& c) { return c.params.count("connectorName") != 0; }

std::string callback_uri(const call& c, const std::string& name) {
  auto& base = c.ctx().cfg.oauth.public_base_url;
  return team_flow(c) ? base + "/api/v1/connectors/" + name + "/oauth/callback"
                      : base + "/api/oauth/" + name + "/callback";
}

std::shared_ptr<const oauth::client_credentials> client_for(const call& c,
                                                            const std::string& provider) {
  auto it = c.ctx().clients.find(provider);
  return it == c.ctx().clients.end() ? nullptr : it->second;
}

using client_ptr = std::shared_ptr<const oauth::client_credentials>;

/// Finds the OAuth app for a team's flow: the team's own when its
/// connector configuration has one, else the deployment's (null if none).
/// `then` runs with the app and whether it is the team's.
/// `failed` answers when the configuration cannot be read (JSON unless
/// given).
template <class Then>
void with_client(const call& c, const std::string& team, const std::string& provider, Then then,
                 std::function<void(const caf::error&)> failed = {}) {
  auto copy = c;
  if (!failed)
    failed = [copy](const caf::error& err) { copy.ex->reply_error(err); };
  c.self->request(c.ctx().configs, budget(c), config_get_atom_v, team, provider)
    .then(
      [copy, provider, then](const connector_config_record& cfg) {
        if (auto team_app = team_client(cfg)) {
          then(team_app, true);
          return;
        }
        then(client_for(copy, provider), false);
      },
      failed);
}

bool wants_html(const call& c) {
  return c.ex->req().header("accept").find("text/html") != std::string::npos;
}

/// A refusal before the flow's state is known: a page for a person, JSON
/// for a program.
void refuse(const call& c, ec code, const std::string& message) {
  if (wants_html(c))
    c.ex->reply(http::html_error_page(code, message));
  else
    c.ex->reply_error(code, message);
}

/// The path of the service's callback as the browser sees it (under
/// public_base_url's own path, if any): the binding cookie's Path.
std::string path_of(const std::string& url) {
  auto scheme = url.find("://");
  auto slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  return slash == std::string::npos ? "/" : url.substr(slash);
}

bool served_over_https(const call& c) {
  return c.ctx().cfg.oauth.public_base_url.rfind("https://", 0) == 0;
}

/// Ends a callback: JSON for programs, a redirect to the recorded
/// redirect_uri for browsers (when the flow's state was genuine).
void finish_callback(const call& c, const std::string& redirect_uri, int status,
                     const nlohmann::json& body, std::vector<std::pair<std::string, std::string>> outcome) {
  if (wants_html(c) && !redirect_uri.empty()) {
    http::response res = http::json_response(302, body);
    auto location = redirect_uri + (redirect_uri.find('?') == std::string::npos ? "?" : "&") +
                    oauth::form_encode(outcome);
    res.headers.emplace_back("Location", location);
    c.ex->reply(std::move(res));
    return;
  }
  c.ex->reply_json(status, body);
}

void fail_callback(const call& c, const std::string& redirect_uri, ec code,
                   const std::string& message) {
  if (wants_html(c) && !redirect_uri.empty()) {
    // The provider is named on failures too: a page that started several
    // flows (or hears them on a BroadcastChannel) knows which one failed.
    finish_callback(c, redirect_uri, http_status(code),
                    {{"error", {{"code", to_string(code)}, {"message", message}}}},
                    {{"connected", "false"}, {"provider", route_provider(c)},
                     {"error", to_string(code)}});
    return;
  }
  refuse(c, code, message);
}

struct exchange_result {
  oauth::token_answer answer;
  nlohmann::json metadata;
};

/// Step 3 of the callback: store the grant (api/grant_workflow.hpp), audit
/// a team flow, answer.
void store_grant(const call& c, const config::provider_entry& entry,
                 std::shared_ptr<const oauth::client_credentials> client,
                 const oauth_state_record& st, std::shared_ptr<exchange_result> got) {
  if (!st.connector_name.empty())
    got->metadata["connector"] = st.connector_name;
  auto record =
    api::grant_record({st.team_id, st.user_id, entry.name}, entry, got->answer, got->metadata);
  auto redirect = st.redirect_uri;
  auto copy = c;
  api::store_grant(
    c, entry, client, std::move(record), std::nullopt,
    [copy, redirect](const connect_result& result) {
      auto& stored = result.stored;
      auto metadata = nlohmann::json::parse(stored.metadata, nullptr, false);
      auto account = metadata.is_object() ? metadata.value("account_name", "") : "";
      log::info(component, "connected",
                {{"provider", stored.key.provider}, {"team_id", stored.key.team_id},
                 {"user_id", stored.key.user_id}, {"request_id", copy.ex->req().request_id}});
      if (metadata.is_object() && metadata.contains("connector")) {
        // A team flow is an admin's change: audited like the others.
        // The callback has no session: the state named the member.
        copy.self->send(copy.ctx().configs, audit_atom_v,
                        storage::audit_row(stored.key.team_id, {"user", stored.key.user_id},
                                           "connector.oauth.connect", stored.key.provider,
                                           copy.ex->req().remote_address,
                                           copy.ex->req().request_id,
                                           {{"replaced", result.replaced_existing}}));
      }
      finish_callback(copy, redirect, 200,
                      {{"connected", true}, {"provider", stored.key.provider},
                       {"account_name", account}},
                      {{"connected", "true"}, {"provider", stored.key.provider}});
    },
    [copy, redirect](const caf::error& err) {
      fail_callback(copy, redirect, code_of(err), message_of(err));
    });
}

/// Step 2b: look up the account name (a failure only leaves it empty).
void lookup_account(const call& c, const config::provider_entry& entry,
                    std::shared_ptr<const oauth::client_credentials> client,
                    const oauth_state_record& st, std::shared_ptr<exchange_result> got) {
  auto req = oauth::account_request(entry, got->answer.access_token, got->metadata,
                                    c.ctx().cfg.refresh.provider_timeout_ms);
  if (!req) {
    store_grant(c, entry, client, st, got);
    return;
  }
  auto copy = c;
  c.self->request(c.ctx().provider_client, budget(c), std::move(*req))
    .then(
      [copy, &entry, client, st, got](const outbound_response& res) {
        if (!oauth::read_account(entry, res, got->metadata))
          log::warn(component, "account lookup failed",
                    {{"provider", entry.name}, {"status", res.status}});
        store_grant(copy, entry, client, st, got);
      },
      [copy, &entry, client, st, got](const caf::error&) {
        log::warn(component, "account lookup failed", {{"provider", entry.name}});
        store_grant(copy, entry, client, st, got);
      });
}

/// Maps a token endpoint failure during the flow to the caller's error.
void token_failure(const call& c, const std::string& redirect, const oauth::token_answer& a) {
  if (a.result == oauth::outcome::invalid_grant)
    fail_callback(c, redirect, ec::bad_request,
                  "the authorization code was rejected (" + a.reason + ")");
  else
    fail_callback(c, redirect, ec::provider_failed, "the token endpoint failed: " + a.reason);
}

/// Step 2: exchange the code (and, for Meta, for a long-lived token).
void exchange_code(const call& c, const config::provider_entry& entry,
                   std::shared_ptr<const oauth::client_credentials> client,
                   const oauth_state_record& st, const std::string& code) {
  auto values = nlohmann::json::parse(st.params, nullptr, false);
  if (!values.is_object())
    values = nlohmann::json::object();
  auto req = oauth::code_request(entry, *client, code, callback_uri(c, entry.name),
                                 st.code_verifier.reveal(), values,
                                 c.ctx().cfg.refresh.provider_timeout_ms);
  if (!req) {
    fail_callback(c, st.redirect_uri, ec::bad_request, "the flow's parameters are incomplete");
    return;
  }
  auto copy = c;
  c.self->request(c.ctx().provider_client, budget(c), std::move(*req))
    .then(
      [copy, &entry, client, st, values](const outbound_response& res) {
        auto got = std::make_shared<exchange_result>();
        got->answer = oauth::read_token_answer(entry, res);
        got->metadata = values;
        for (auto& [k, v] : got->answer.metadata.items())
          got->metadata[k] = v;
        if (got->answer.result != oauth::outcome::ok) {
          token_failure(copy, st.redirect_uri, got->answer);
          return;
        }
        if (entry.token_style != "meta_long_lived") {
          lookup_account(copy, entry, client, st, got);
          return;
        }
        auto long_lived = oauth::long_lived_request(entry, *client, got->answer.access_token,
                                                    values, copy.ctx().cfg.refresh.provider_timeout_ms);
        copy.self->request(copy.ctx().provider_client, budget(copy), std::move(*long_lived))
          .then(
            [copy, &entry, client, st, got](const outbound_response& res2) {
              auto answer = oauth::read_token_answer(entry, res2);
              if (answer.result != oauth::outcome::ok) {
                token_failure(copy, st.redirect_uri, answer);
                return;
              }
              got->answer = std::move(answer);
              lookup_account(copy, entry, client, st, got);
            },
            [copy, st](const caf::error&) {
              fail_callback(copy, st.redirect_uri, ec::provider_failed,
                            "the token endpoint did not answer");
            });
      },
      [copy, st](const caf::error&) {
        fail_callback(copy, st.redirect_uri, ec::provider_failed, "the token endpoint did not answer");
      });
}

/// What starting a flow needs besides the provider: where the browser
/// lands afterwards (already checked) and the authorization parameters
/// the caller gave (Shopify's shop, Microsoft's tenant).
struct flow_request {
  std::string redirect_uri;
  std::map<std::string, std::string> params;
};

/// Stores the flow's state and hands `started` the provider's URL and the
/// `Set-Cookie` that binds the flow to the browser; `refused` gets why not.
using started_fn = std::function<void(const std::string& auth_url, const std::string& set_cookie)>;
using refused_fn = std::function<void(ec, const std::string&)>;
void begin_flow(const call& c, const config::provider_entry& entry, const std::string& name,
                client_ptr client, bool team_app, flow_request flow, started_fn started,
                refused_fn refused);

void finish_callback_exchange(const call& copy, const config::provider_entry& entry,
                              const oauth_state_record& st, const std::string& code,
                              client_ptr client);

} // namespace

void oauth_authorize(const call& c) {
  auto name = route_provider(c);
  auto entry = known_provider(c, name);
  if (entry == nullptr)
    return;
  if (entry->mode != config::auth_mode::oauth2) {
    c.ex->reply_error(ec::bad_request, "this provider is connected with an API key");
    return;
  }
  auto& req = c.ex->req();
  auto redirect = req.query_param("redirect_uri").value_or("");
  if (redirect.empty()) {
    c.ex->reply_error(ec::bad_request, "redirect_uri is required");
    return;
  }
  auto& allowed = c.ctx().cfg.oauth.allowed_redirect_uris;
  // Exact comparison: no prefix, case or trailing-slash leniency.
  if (std::find(allowed.begin(), allowed.end(), redirect) == allowed.end()) {
    c.ex->reply_error(ec::bad_request, "redirect_uri is not on the allowlist");
    return;
  }
  flow_request flow{redirect, req.query};
  with_client(c, c.who.team, name, [c, entry, name, flow](client_ptr client, bool team_app) {
    auto ex = c.ex;
    begin_flow(
      c, *entry, name, std::move(client), team_app, flow,
      // The cookie binds the flow to a browser that called this route
      // from a page of the service's own origin; a program ignores it.
      [ex](const std::string& auth_url, const std::string& set_cookie) {
        auto res = http::json_response(200, {{"auth_url", auth_url}});
        res.headers.emplace_back("Set-Cookie", set_cookie);
        ex->reply(std::move(res));
      },
      [ex](ec code, const std::string& message) { ex->reply_error(code, message); });
  });
}

namespace {

/// The start route's refusals (api/popup_start.hpp), also for those the
/// front actor makes before the handler runs.
http::response start_refused(const call& c, ec code, const std::string& message) {
  return api::start_refusal(c.ex->req(), c.ctx().cfg, route_provider(c), code, message);
}

} // namespace

void oauth_start(const call& c) {
  auto& cfg = c.ctx().cfg;
  std::string problem;
  auto start = api::read_popup_start(c.ex->req(), cfg, problem);
  if (!start) {
    c.ex->reply(http::html_error_page(ec::forbidden, problem));
    return;
  }
  auto refused = [c](ec code, const std::string& message) {
    c.ex->reply(start_refused(c, code, message));
  };
  auto name = route_provider(c);
  auto entry = c.ctx().catalog.find(name);
  if (entry == nullptr) {
    refused(ec::not_found, "unknown provider");
    return;
  }
  if (entry->mode != config::auth_mode::oauth2) {
    refused(ec::bad_request, "this provider is connected with an API key");
    return;
  }
  flow_request flow{start->redirect_uri, start->params};
  with_client(
    c, c.who.team, name,
    [c, entry, name, flow, refused](client_ptr client, bool team_app) {
      auto ex = c.ex;
      begin_flow(
        c, *entry, name, std::move(client), team_app, flow,
        [ex](const std::string& auth_url, const std::string& set_cookie) {
          // 303: the browser follows with a GET to the provider.
          http::response res;
          res.status = 303;
          res.content_type = "text/plain; charset=utf-8";
          res.headers.emplace_back("Location", auth_url);
          res.headers.emplace_back("Set-Cookie", set_cookie);
          res.headers.emplace_back("Cache-Control", "no-store");
          res.headers.emplace_back("Referrer-Policy", "no-referrer");
          ex->reply(std::move(res));
        },
        refused);
    },
    [refused](const caf::error& err) { refused(code_of(err), message_of(err)); });
}

namespace {

void begin_flow(const call& c, const config::provider_entry& entry_ref, const std::string& name,
                client_ptr client, bool team_app, flow_request flow, started_fn started,
                refused_fn refused) {
  auto entry = &entry_ref;
  if (!client) {
    refused(ec::bad_request, "no OAuth app is configured for this provider");
    return;
  }
  std::string problem;
  auto values = oauth::template_values(*entry, flow.params, problem);
  if (!values) {
    refused(ec::bad_request, problem);
    return;
  }
  // Recorded with the flow and, through it, in the grant's metadata: the
  // callback and every refresh must use the same app.
  if (team_app)
    (*values)[oauth_app_key] = oauth_app_team;
  auto state = oauth::new_state();
  auto verifier = entry->pkce ? oauth::new_code_verifier() : std::string{};
  auto callback = callback_uri(c, name);
  auto url = oauth::authorization_url(*entry, client->client_id, callback, state,
                                      entry->pkce ? oauth::code_challenge_s256(verifier) : "",
                                      *values);
  if (!url) {
    std::string missing;
    for (auto& [param, pattern] : entry->template_params)
      if (!values->contains(param))
        missing += (missing.empty() ? "" : ", ") + param;
    refused(ec::bad_request, "missing or invalid parameter: " + missing);
    return;
  }
  oauth_state_record st;
  st.state_hash = oauth::state_hash(*c.ctx().keys, state);
  st.team_id = c.who.team;
  st.user_id = c.who.subject;
  st.provider = name;
  st.connector_name = team_flow(c) ? name : "";
  st.code_verifier = secret{verifier};
  st.redirect_uri = flow.redirect_uri;
  st.params = values->dump();
  auto ttl_s = c.ctx().cfg.oauth.state_ttl_s;
  st.expires_at_ms = unix_now_ms() + int64_t{ttl_s} * 1000;
  auto set_cookie = oauth::binding_set_cookie(
    oauth::binding_cookie_for(state, path_of(callback), served_over_https(c)),
    oauth::binding_cookie_value(*c.ctx().keys, state), ttl_s);
  auto auth_url = *url;
  // At most oauth.max_pending_states per member: a new flow drops the
  // member's oldest (storage/token_store.hpp).
  c.self->request(c.ctx().states, budget(c), state_put_atom_v, std::move(st),
                  int32_t{c.ctx().cfg.oauth.max_pending_states})
    .then([auth_url, set_cookie, started](bool) { started(auth_url, set_cookie); },
          [refused](const caf::error& err) { refused(code_of(err), message_of(err)); });
}

} // namespace

void oauth_callback(const call& c) {
  auto name = route_provider(c);
  auto entry = c.ctx().catalog.find(name);
  if (entry == nullptr) {
    refuse(c, ec::not_found, "unknown provider");
    return;
  }
  auto& q = c.ex->req().query;
  auto get = [&](const std::string& key) {
    auto it = q.find(key);
    return it == q.end() ? std::string{} : it->second;
  };
  auto state = get("state");
  if (state.empty()) {
    refuse(c, ec::bad_request, "state is missing");
    return;
  }
  auto provider_error = get("error");
  auto code = get(entry->code_param);
  if (code.empty())
    code = get("code");
  auto iss = get("iss");
  // Under every key in the ring: the state may predate a key rotation.
  auto hash = oauth::state_hash_candidates(*c.ctx().keys, state);
  // Whether the browser that started the flow is the one back here
  // (provider/browser_binding.hpp); the cookie is spent either way.
  auto& req = c.ex->req();
  auto binding =
    oauth::binding_cookie_for(state, path_of(callback_uri(c, name)), served_over_https(c));
  auto cookie = oauth::request_cookie(req, binding.name);
  bool bound = !cookie.empty() && oauth::binding_cookie_matches(*c.ctx().keys, state, cookie);
  if (!cookie.empty())
    c.ex->add_header("Set-Cookie", oauth::binding_clear_cookie(binding));
  auto copy = c;
  auto entry_ptr = entry;
  // Consumed before anything else: a state works once, whatever happens.
  c.self->request(c.ctx().states, budget(c), state_take_atom_v, hash)
    .then(
      [copy, entry_ptr, name, provider_error, code, iss, bound](oauth_state_record& st) {
        auto& entry = *entry_ptr;
        auto& redirect = st.redirect_uri;
        if (st.provider != name || st.connector_name != (team_flow(copy) ? name : "")) {
          refuse(copy, ec::bad_request, "the state belongs to another flow");
          return;
        }
        // Browsers arrive without a session; a caller that brings one must
        // be the user who started the flow.
        auto& req = copy.ex->req();
        bool starters_session = false;
        if (!req.header("authorization").empty()) {
          auto who = copy.ctx().auth->authenticate(req);
          if (!who || !who->is_user() || who->subject != st.user_id || who->team != st.team_id) {
            refuse(copy, ec::forbidden, "the state belongs to another user");
            return;
          }
          starters_session = true;
        }
        // Someone else's browser completing the consent for this flow's
        // auth_url must not attach their account to the member who
        // started it: nothing is stored, and that browser is not sent to
        // the starter's redirect_uri.
        auto mode = copy.ctx().cfg.oauth.browser_binding;
        using binding = config::oauth_config::binding;
        if (!bound && mode != binding::off &&
            (oauth::from_browser(req) || (mode == binding::always && !starters_session))) {
          log::warn(component, "callback from another browser refused",
                    {{"provider", st.provider}, {"team_id", st.team_id},
                     {"user_id", st.user_id}, {"request_id", req.request_id}});
          refuse(copy, ec::forbidden,
                 "This connection was started in another browser, so nothing was connected. "
                 "Start it again from the application in this browser.");
          return;
        }
        if (unix_now_ms() > st.expires_at_ms) {
          fail_callback(copy, redirect, ec::bad_request, "the state has expired; start again");
          return;
        }
        if (!provider_error.empty()) {
          fail_callback(copy, redirect, ec::bad_request,
                        "the provider refused the authorization: " + safe_error_code(provider_error));
          return;
        }
        if (!iss.empty()) {
          auto expected = entry.issuer.empty() ? oauth::origin_of(entry.authorization_url)
                                               : entry.issuer;
          if (iss != expected) {
            fail_callback(copy, redirect, ec::bad_request, "the callback's issuer does not match");
            return;
          }
        }
        if (code.empty()) {
          fail_callback(copy, redirect, ec::bad_request, "the authorization code is missing");
          return;
        }
        auto values = nlohmann::json::parse(st.params, nullptr, false);
        bool team_app = values.is_object() && values.value(oauth_app_key, "") == oauth_app_team;
        with_client(copy, st.team_id, name,
                    [copy, entry_ptr, st, code, team_app](client_ptr client, bool is_team_app) {
                      // The app that started the flow must finish it.
                      if (is_team_app != team_app)
                        client = nullptr;
                      finish_callback_exchange(copy, *entry_ptr, st, code, std::move(client));
                    },
                    [copy, st](const caf::error& err) {
                      fail_callback(copy, st.redirect_uri, code_of(err), message_of(err));
                    });
      },
      [copy](const caf::error& err) {
        auto code = code_of(err);
        refuse(copy, code,
               code == ec::bad_request ? "unknown or already used state" : message_of(err));
      });
}

namespace {

void finish_callback_exchange(const call& copy, const config::provider_entry& entry,
                              const oauth_state_record& st, const std::string& code,
                              client_ptr client) {
  auto& redirect = st.redirect_uri;
  {
    {
        if (!client) {
          fail_callback(copy, redirect, ec::bad_request,
                        "no OAuth app is configured for this provider");
          return;
        }
        if (entry.callback_verification == "shopify_hmac") {
          auto& query = copy.ex->req().query;
          if (!oauth::verify_shopify_hmac(query, client->client_secret.reveal())) {
            fail_callback(copy, redirect, ec::bad_request, "the callback signature is invalid");
            return;
          }
          auto values = nlohmann::json::parse(st.params, nullptr, false);
          auto shop = query.count("shop") ? oauth::normalize_shop(query.at("shop")) : "";
          if (!values.is_object() || values.value("shop", "") != shop) {
            fail_callback(copy, redirect, ec::bad_request, "the callback names another shop");
            return;
          }
        }
        exchange_code(copy, entry, client, st, code);
    }
  }
}

} // namespace

void disconnect(const call& c) {
  auto name = c.params.at("provider");
  auto entry = known_provider(c, name);
  if (entry == nullptr)
    return;
  connection_key key{c.who.team, c.who.subject, name};
  auto copy = c;
  c.self->request(c.ctx().storage, budget(c), find_atom_v, key)
    .then(
      [copy, entry, key](token_record& grant) {
        auto revoke_with = [copy, entry, key, grant](client_ptr client) {
        auto finish = [copy, key](bool revoked, std::string reason) {
          fence_connection(copy.ctx(), key);
          copy.self->request(copy.ctx().storage, budget(copy), disconnect_atom_v, key,
                             revoked ? std::string{"revoked at the provider"} : reason)
            .then(
              [copy, key, revoked, reason](const token_record&) {
                fence_connection(copy.ctx(), key);
                copy.self->send(copy.ctx().registry, remove_atom_v, key);
                nlohmann::json body = {{"deleted", true}, {"provider", key.provider},
                                       {"revoked", revoked}};
                if (!revoked)
                  body["reason"] = reason;
                copy.ex->reply_json(200, body);
              },
              [copy, key](const caf::error& err) {
                fence_connection(copy.ctx(), key);
                copy.ex->reply_error(err);
              });
        };
        std::optional<outbound_request> req;
        if (grant.kind == connection_kind::oauth && client)
          req = oauth::revoke_request(*entry, *client, grant, copy.ctx().cfg.refresh.provider_timeout_ms);
        if (!req) {
          finish(false, entry->revoke_style == "none" || grant.kind != connection_kind::oauth
                          ? "the provider has no revocation endpoint"
                        : !client ? "no OAuth app is configured for this provider"
                                  // A template value stored before it was refused.
                                  : "the revocation URL cannot be built for this grant");
          return;
        }
        copy.self->request(copy.ctx().provider_client, budget(copy), std::move(*req))
          .then(
            [finish](const outbound_response& res) {
              if (res.ok())
                finish(true, "");
              else
                finish(false, res.error != transport_error::none
                                ? std::string("revocation failed: ") + to_string(res.error)
                                : "revocation failed: HTTP " + std::to_string(res.status));
            },
            [finish](const caf::error&) { finish(false, "revocation did not answer"); });
        };
        // A grant issued by the team's own app is revoked with that app.
        if (issued_by_team_app(grant.metadata))
          with_client(copy, key.team_id, key.provider,
                      [revoke_with](client_ptr client, bool team_app) {
                        revoke_with(team_app ? client : nullptr);
                      });
        else
          revoke_with(client_for(copy, key.provider));
      },
      [copy, key](const caf::error& err) {
        if (code_of(err) != ec::integrity_failure) {
          copy.ex->reply_error(err);
          return;
        }
        // Tampered credentials cannot be revoked, but they can be removed.
        auto reason = std::string{"stored credentials failed their integrity check; not revoked"};
        fence_connection(copy.ctx(), key);
        copy.self->request(copy.ctx().storage, budget(copy), disconnect_atom_v, key, reason)
          .then(
            [copy, key, reason](const token_record&) {
              fence_connection(copy.ctx(), key);
              copy.self->send(copy.ctx().registry, remove_atom_v, key);
              copy.ex->reply_json(200, {{"deleted", true}, {"provider", key.provider},
                                        {"revoked", false}, {"reason", reason}});
            },
            [copy](const caf::error& e) { copy.ex->reply_error(e); });
      });
}


std::vector<api::route> oauth_routes() {
  using http::access;
  constexpr auto metered = http::metering::metered;
  constexpr auto unmetered = http::metering::unmetered;
  auto auth_url = api::object_of({{"auth_url", api::string_of("uri")}});
  std::vector<api::param_doc> authorize_query = {
    {"redirect_uri", "where the browser lands afterwards; must equal an entry of "
                     "oauth.allowed_redirect_uris", true, api::string_of("uri")},
    {"shop", "Shopify: the shop (acme or acme.myshopify.com)"},
    {"tenant", "Microsoft: the tenant (default: common)"}};
  std::vector<api::param_doc> callback_query = {
    {"code", "the authorization code"},
    {"state", "the state authorize issued", true},
    {"error", "the provider's refusal (access_denied, …)"},
    {"iss", "the issuer, checked when the provider sends it"},
    {"shop", "Shopify: the shop"},
    {"hmac", "Shopify: the signature of the query"},
    {"timestamp", "Shopify: when it signed"}};
  auto connected = api::object_of({{"connected", {{"type", "boolean"}, {"const", true}}},
                                   {"provider", {{"type", "string"}}},
                                   {"account_name", {{"type", "string"}}}});
  std::vector<api::response_doc> callback_answers = {
    {200, "connected (API clients)", connected},
    {302, "browsers (Accept: text/html): to the recorded redirect_uri with connected=true or "
          "the error in its query",
     nullptr, "", {{"Location", "the redirect_uri with the outcome"}}}};
  auto start_form = api::object_of(
    {{"session", {{"type", "string"}, {"writeOnly", true},
                  {"description", "the member's session JWT (a navigation cannot send "
                                  "Authorization)"}}},
     {"origin", {{"type", "string"},
                 {"description", "the origin of the page that opened the popup: the service's "
                                 "own or one of cors.allowed_origins; the popup ends on "
                                 "/connect/done, which posts the outcome to it"}}},
     {"redirect_uri", {{"type", "string"}, {"format", "uri"},
                       {"description", "instead of origin: where the browser lands afterwards "
                                       "(an entry of oauth.allowed_redirect_uris)"}}},
     {"shop", {{"type", "string"}, {"description", "Shopify: the shop"}}},
     {"flow", {{"type", "string"}, {"pattern", "^[A-Za-z0-9_-]{16,64}$"},
               {"description", "the page's nonce for this flow, echoed on /connect/done so "
                               "the page accepts only its own flow's outcome"}}},
     {"tenant", {{"type", "string"}, {"description", "Microsoft: the tenant"}}}},
    {"session"});
  auto start_doc = [&](const char* id, const char* tag, const char* summary) {
    api::route_doc d{
      id, tag, summary,
      "A page's form posted into a popup (the Connect page and /connect/sdk.js do this). "
      "The request's Origin (or Sec-Fetch-Site: same-origin) must be the service's origin or "
      "one of cors.allowed_origins and equal the form's origin: a page elsewhere cannot make a "
      "browser start its author's flow. Starts the flow like authorize, sets a short-lived "
      "HttpOnly, SameSite=Lax cookie that binds the flow to this browser, and sends the "
      "browser on to the provider. The callback attaches the grant only when that cookie "
      "comes back (oauth.browser_binding). Once the page is known, a refusal (an expired "
      "session included) sends the popup to where the flow would end, with connected=false, "
      "the provider and the error; otherwise it is an HTML page.",
      {}, start_form,
      {{303, "on to the provider's consent page, or a refusal back to the page", nullptr, "",
        {{"Location", "the provider's authorization URL, or /connect/done (or the "
                      "redirect_uri) with connected=false&provider=…&error=…"},
         {"Set-Cookie", "cm_flow_… (__Host-cm_flow_… over https): the flow's binding to this "
                        "browser"}}}},
      {404}};
    d.body_content_type = "application/x-www-form-urlencoded";
    return d;
  };
  using api::reader;
  return {
    {"POST", "/api/oauth/{provider}/start", access::user, "", oauth_start, metered,
     start_doc("startConnection", "oauth", "Start connecting a provider in a browser popup"),
     reader::browser_form, start_refused},
    {"POST", "/api/v1/connectors/{connectorName}/oauth/start", access::admin, "", oauth_start,
     metered,
     start_doc("startTeamConnector", "team connectors",
               "Start connecting a team connector in a browser popup"),
     reader::browser_form, start_refused},
    {"GET", "/api/oauth/{provider}/authorize", access::user, "", oauth_authorize, metered,
     {"authorizeConnection", "oauth", "Start connecting a provider",
      "Stores a single-use state (PKCE S256 where the provider accepts it) and answers the "
      "provider's authorization URL to send the user's browser to. The answer also sets the "
      "cookie that binds the flow to a browser calling from the service's own origin; a page "
      "on another origin uses POST …/start in a popup instead.",
      authorize_query, nullptr,
      {{200, "the URL to open", auth_url, "application/json",
        {{"Set-Cookie", "cm_flow_…: the flow's binding to a browser"}}}},
      {404}}},
    {"GET", "/api/oauth/{provider}/callback", access::open, "", oauth_callback, unmetered,
     {"oauthCallback", "oauth", "Finish connecting a provider",
      "The provider sends the browser here. The state proves who started the flow and, from "
      "a browser, the cookie its start set proves this is that browser (oauth.browser_binding); "
      "the code is exchanged, the tokens stored encrypted, TOKEN_CREATED emitted. A browser's "
      "failure goes back to the recorded redirect_uri with the error, or, when the state is "
      "unknown or the browser another, gets an HTML page.",
      callback_query, nullptr, callback_answers, {403, 404, 409, 502}},
     reader::program_or_browser},
    {"GET", "/api/v1/connectors/{connectorName}/oauth/authorize", access::admin, "",
     oauth_authorize, metered,
     {"authorizeTeamConnector", "team connectors", "Start connecting a team connector",
      "As /api/oauth/{provider}/authorize, for the team's own OAuth app when it configured one.",
      authorize_query, nullptr,
      {{200, "the URL to open", auth_url, "application/json",
        {{"Set-Cookie", "cm_flow_…: the flow's binding to a browser"}}}},
      {404}}},
    {"GET", "/api/v1/connectors/{connectorName}/oauth/callback", access::open, "",
     oauth_callback, unmetered,
     {"teamConnectorOauthCallback", "team connectors", "Finish connecting a team connector",
      "As /api/oauth/{provider}/callback.", callback_query, nullptr, callback_answers,
      {403, 404, 409, 502}},
     reader::program_or_browser},
    {"DELETE", "/api/connectors/{provider}", access::user, "", disconnect, metered,
     {"disconnectConnection", "connections", "Disconnect the caller's connection",
      "Revokes the tokens at the provider where it has a revocation endpoint, deletes them "
      "and emits TOKEN_REVOKED. A failed revocation still deletes (revoked is false, with "
      "the reason).",
      {}, nullptr,
      {{200, "deleted",
        api::object_of({{"deleted", {{"type", "boolean"}, {"const", true}}},
                        {"provider", {{"type", "string"}}},
                        {"revoked", {{"type", "boolean"}}},
                        {"reason", {{"type", "string"}}}},
                       {"deleted", "provider", "revoked"})}},
      {404}}},
  };
}

} // namespace cm

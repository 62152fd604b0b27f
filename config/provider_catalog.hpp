// The providers catalog (config/providers.yaml): every provider described as
// data — how to authorize, exchange, refresh and revoke, how to validate an
// API key and how to name the account. Code reads behaviour from here; only
// quirks no data can express get a named `style`.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/service_config.hpp"

namespace cm::config {

enum class auth_mode { oauth2, api_key, service_account };

const char* to_string(auth_mode mode);

/// How the client authenticates at the token endpoint.
enum class client_auth_style {
  /// client_id/client_secret in the form body (RFC 6749 §2.3.1).
  post,
  /// HTTP Basic with client_id:client_secret.
  basic,
  /// A JSON body carrying the credentials (TikTok, Shopify, Atlassian).
  json,
};

/// Where and how the account name is read after connecting.
struct account_lookup {
  std::string url;
  /// JSON pointer into the answer, e.g. "/login" or "/data/0/name".
  std::string name_pointer;
  /// How the token is presented: "bearer", "header:<Name>" or
  /// "query:<param>".
  std::string auth = "bearer";
  /// Optional: a JSON pointer to an array ("/" for the answer itself) whose
  /// items' `list_name_pointer` values go into metadata.accounts (Atlassian
  /// sites, Meta ad accounts).
  std::string list_pointer;
  std::string list_name_pointer = "/name";
  /// Metadata key -> JSON pointer into the answer, stored with the
  /// connection (Atlassian's first site id as `cloud_id`, which the
  /// proxy's base URL needs).
  std::map<std::string, std::string> metadata;
};

/// Where the proxy (api/proxy_routes.hpp) sends a connection's calls and
/// how it presents the credential there.
struct api_access {
  /// The provider's API base; placeholders ({shop}, {cloud_id}, {host},
  /// {domain}, {subdomain}) are filled from the connection's metadata.
  std::string base_url;
  /// OAuth only: "bearer", "header:<Name>" or "query:<param>"; empty: the
  /// account lookup's, else bearer. API keys use api_key.scheme.
  std::string auth;
  /// Request headers of the caller's passed on besides the content
  /// headers every provider gets (Stripe-Version, X-GitHub-Api-Version).
  std::vector<std::string> forward_headers;
};

/// How an API key is checked with a real call.
struct api_key_check {
  std::string validate_url;
  std::string method = "GET";
  /// bearer | basic (key as user, empty password) | basic_email
  /// (email:key) | basic_token (email/token:key) | header | klaviyo
  std::string scheme = "bearer";
  /// Request body for POST checks (Railway's GraphQL query).
  std::string body;
  /// Header name for scheme=header (e.g. X-Figma-Token).
  std::string header;
  /// Extra constant headers (e.g. Klaviyo's revision).
  std::map<std::string, std::string> headers;
  /// Request fields the caller must provide besides api_key.
  std::vector<std::string> required_fields;
  /// Optional fields the caller may provide (PostHog host).
  std::vector<std::string> optional_fields;
  /// Accepted key prefixes; empty accepts any.
  std::vector<std::string> key_prefixes;
  /// JSON pointer to the account name in the answer.
  std::string account_pointer;
  /// What the provider calls the key, for the Connect page's form.
  std::string label = "API key";
};

/// The value type of a team-level filter; each maps to one JSON Schema shape
/// (config/connector_schema.hpp).
enum class filter_type { string, string_array, integer, boolean };

const char* to_string(filter_type type);

/// One filter a team admin may set on a connector (POST
/// /api/v1/connectors/filters/:connectorName), e.g. GitHub `repositories`.
struct filter_option {
  /// [a-zA-Z][a-zA-Z0-9_]*: also the JSON property name.
  std::string name;
  filter_type type = filter_type::string;
  std::string description;
  /// Allowed values; only for string and string_array (empty: any value).
  std::vector<std::string> enum_values;
  /// Bounds; only for integer.
  std::optional<int64_t> minimum;
  std::optional<int64_t> maximum;
};

struct provider_entry {
  std::string name;
  std::string display_name;
  auth_mode mode = auth_mode::oauth2;
  /// Public documentation the entry follows.
  std::string docs;

  // OAuth 2.0
  std::string authorization_url;
  std::string token_url;
  std::string refresh_url;
  std::string revoke_url;
  /// rfc7009 | github_token | meta_permissions | shopify_uninstall |
  /// tiktok | none
  std::string revoke_style = "none";
  std::vector<std::string> scopes;
  std::string scope_separator = " ";
  bool pkce = false;
  client_auth_style client_auth = client_auth_style::post;
  std::map<std::string, std::string> authorization_params;
  std::map<std::string, std::string> token_params;
  /// standard | tiktok_envelope | meta_long_lived
  std::string token_style = "standard";
  std::optional<account_lookup> account;
  int refresh_margin_s = 300;
  /// Used when a token answer carries no usable expires_in.
  int default_expires_in_s = 3600;
  /// Placeholders allowed in URLs ({shop}) with the pattern each must match.
  std::map<std::string, std::string> template_params;
  /// Granted scope -> app name (Google Workspace: drive, gmail, calendar).
  std::map<std::string, std::string> scope_apps;
  /// Values for placeholders the caller does not give (Microsoft tenant).
  std::map<std::string, std::string> template_defaults;
  /// Parameter names where a provider departs from RFC 6749 (TikTok:
  /// app_id, secret, auth_code).
  std::string client_id_param = "client_id";
  std::string client_secret_param = "client_secret";
  std::string code_param = "code";
  /// GET (Meta) or POST.
  std::string token_method = "POST";
  /// Metadata key -> JSON pointer into the token answer (TikTok
  /// advertiser_ids).
  std::map<std::string, std::string> token_metadata;
  /// "none" or "shopify_hmac": how a callback proves it came from the provider.
  std::string callback_verification = "none";
  /// Expected `iss` in callbacks (RFC 9207); defaults to the origin of the
  /// authorization URL.
  std::string issuer;
  /// The provider's JSON Web Key Set, to verify OpenID Connect ID tokens.
  std::string jwks_url;

  // API keys
  std::optional<api_key_check> api_key;

  /// The proxy's target; every provider in the shipped catalog has one.
  std::optional<api_access> api;

  /// How the proxy presents this provider's credential: bearer,
  /// header:<Name> or query:<param> for tokens; for API keys, "api_key"
  /// (api_key.scheme says the rest).
  std::string api_auth() const;

  /// Team-level filters, in catalog order.
  std::vector<filter_option> filters;
};

struct provider_catalog {
  std::map<std::string, provider_entry> providers;

  const provider_entry* find(const std::string& name) const {
    auto it = providers.find(name);
    return it == providers.end() ? nullptr : &it->second;
  }
};

/// Loads and validates the catalog file. Throws config_error naming file,
/// line and key.
provider_catalog load_provider_catalog(const std::string& path);
provider_catalog parse_provider_catalog(const std::string& text, const std::string& name);

/// Applies a deployment's URL overrides; an override for a provider the
/// catalog does not know is an error.
void apply_provider_settings(provider_catalog& catalog,
                             const std::map<std::string, provider_settings>& settings);

} // namespace cm::config

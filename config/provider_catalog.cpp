#include "config/provider_catalog.hpp"

#include <algorithm>
#include <cctype>
#include <limits>
#include <regex>

#include "config/template_value.hpp"
#include "config/yaml_schema.hpp"

namespace cm::config {

const char* to_string(auth_mode mode) {
  switch (mode) {
    case auth_mode::oauth2: return "oauth2";
    case auth_mode::api_key: return "api_key";
    case auth_mode::service_account: return "service_account";
  }
  return "oauth2";
}

std::string provider_entry::api_auth() const {
  if (mode == auth_mode::api_key)
    return "api_key";
  if (api && !api->auth.empty())
    return api->auth;
  if (mode == auth_mode::oauth2 && account)
    return account->auth;
  return "bearer";
}

const char* to_string(filter_type type) {
  switch (type) {
    case filter_type::string: return "string";
    case filter_type::string_array: return "string_array";
    case filter_type::integer: return "integer";
    case filter_type::boolean: return "boolean";
  }
  return "string";
}

namespace {

const std::regex& provider_name_pattern() {
  static const std::regex re{"^[a-z][a-z0-9-]{0,39}$"};
  return re;
}

/// Longest template parameter pattern, and largest repetition count or
/// back-reference number in one.
constexpr size_t max_pattern_bytes = 256;
constexpr int max_pattern_number = 1000;

/// Why `pattern` is refused before std::regex sees it, or "". libstdc++
/// reads a repetition count ({n,m}) or back-reference number (\n) into an
/// int without an overflow check (undefined behaviour; found by
/// fuzz_provider_catalog with {0999...9,}), and expands a repetition into
/// that many states; its parser also recurses per alternative.
std::string pattern_problem(const std::string& pattern) {
  if (pattern.size() > max_pattern_bytes)
    return "longer than " + std::to_string(max_pattern_bytes) + " characters";
  bool in_braces = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    bool number_follows = false;
    if (c == '\\') {
      // An escaped digit starts a back-reference; any other escaped
      // character is skipped (it is not a brace or a comma).
      if (i + 1 < pattern.size() && std::isdigit(static_cast<unsigned char>(pattern[i + 1])))
        number_follows = true;
      else
        ++i;
    } else if (c == '{') {
      in_braces = true;
      number_follows = true;
    } else if (c == '}') {
      in_braces = false;
    } else if (c == ',' && in_braces) {
      number_follows = true;
    }
    if (!number_follows)
      continue;
    size_t start = i + 1, end = start;
    while (end < pattern.size() && std::isdigit(static_cast<unsigned char>(pattern[end])))
      ++end;
    // Leading zeros count too: libstdc++ multiplies through them.
    if (end - start > 4 || (end > start && std::stoi(pattern.substr(start, end - start)) >
                                              max_pattern_number))
      return "a repetition count or back-reference above " +
             std::to_string(max_pattern_number);
    i = end - 1;
  }
  return "";
}

/// Every {placeholder} in a URL must be declared in template_params.
void check_url(const yaml_reader& reader, const YAML::Node& node, const std::string& path,
               const std::string& url, const provider_entry& entry) {
  if (url.empty())
    return;
  if (url.rfind("https://", 0) != 0 && url.rfind("http://", 0) != 0)
    reader.fail(node, path, "expected an http(s) URL");
  static const std::regex placeholder{"\\{([a-z_]+)\\}"};
  for (std::sregex_iterator it(url.begin(), url.end(), placeholder), end; it != end; ++it) {
    auto name = (*it)[1].str();
    if (entry.template_params.count(name) == 0)
      reader.fail(node, path, "placeholder {" + name + "} is not declared in template_params");
  }
}

void check_pointer(const yaml_reader& reader, const YAML::Node& node, const std::string& path,
                   const std::string& pointer) {
  if (!pointer.empty() && pointer.front() != '/')
    reader.fail(node, path, "expected a JSON pointer such as /name");
}

bool present(const YAML::Node& map, const char* key) {
  auto node = map[key];
  return node && !node.IsNull();
}

/// `filters:` is a list of {name, type, description, enum?, minimum?,
/// maximum?}. Names become JSON property names, so they must be identifiers
/// and unique; enum and bounds only where the type can honour them.
std::vector<filter_option> read_filters(const yaml_reader& reader, const YAML::Node& entry_node,
                                        const std::string& entry_path) {
  std::vector<filter_option> filters;
  auto list = entry_node["filters"];
  auto path = entry_path + ".filters";
  if (!list || list.IsNull())
    return filters;
  if (!list.IsSequence())
    reader.fail(list, path, "expected a list of filters");
  static const std::regex name_pattern{"^[a-zA-Z][a-zA-Z0-9_]*$"};
  for (size_t i = 0; i < list.size(); ++i) {
    auto item = list[i];
    auto ipath = path + "[" + std::to_string(i) + "]";
    if (!item.IsMap())
      reader.fail(item, ipath, "expected a mapping with name, type and description");
    reader.expect_keys(item, ipath, {"name", "type", "description", "enum", "minimum", "maximum"});
    filter_option filter;

    filter.name = reader.require_string(item, ipath, "name");
    if (!std::regex_match(filter.name, name_pattern))
      reader.fail(item["name"], ipath + ".name",
                  "filter names start with a letter followed by letters, digits or underscores");
    for (auto& earlier : filters)
      if (earlier.name == filter.name)
        reader.fail(item["name"], ipath + ".name", "duplicate filter name '" + filter.name + "'");

    auto type = reader.require_string(item, ipath, "type");
    if (type == "string") filter.type = filter_type::string;
    else if (type == "string_array") filter.type = filter_type::string_array;
    else if (type == "integer") filter.type = filter_type::integer;
    else if (type == "boolean") filter.type = filter_type::boolean;
    else reader.fail(item["type"], ipath + ".type",
                     "expected string, string_array, integer or boolean");

    filter.description = reader.require_string(item, ipath, "description");

    if (present(item, "enum")) {
      auto epath = ipath + ".enum";
      if (filter.type != filter_type::string && filter.type != filter_type::string_array)
        reader.fail(item["enum"], epath, "only allowed for type string or string_array");
      filter.enum_values = reader.get_string_list(item, ipath, "enum");
      if (filter.enum_values.empty())
        reader.fail(item["enum"], epath, "expected at least one value");
      for (size_t v = 0; v < filter.enum_values.size(); ++v)
        if (std::find(filter.enum_values.begin(), filter.enum_values.begin() + v,
                      filter.enum_values[v]) != filter.enum_values.begin() + v)
          reader.fail(item["enum"][v], epath + "[" + std::to_string(v) + "]", "duplicate value");
    }
    auto bound = [&](const char* key) -> std::optional<int64_t> {
      if (!present(item, key))
        return std::nullopt;
      if (filter.type != filter_type::integer)
        reader.fail(item[key], ipath + "." + key, "only allowed for type integer");
      return reader.get_int(item, ipath, key, 0, std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max());
    };
    filter.minimum = bound("minimum");
    filter.maximum = bound("maximum");
    if (filter.minimum && filter.maximum && *filter.minimum > *filter.maximum)
      reader.fail(item["maximum"], ipath + ".maximum", "must not be less than minimum");

    filters.push_back(std::move(filter));
  }
  return filters;
}

provider_entry read_entry(const yaml_reader& reader, const std::string& name,
                          const YAML::Node& node) {
  auto path = join_path("providers", name);
  reader.expect_keys(node, path,
                     {"display_name", "auth_mode", "docs", "authorization_url", "token_url",
                      "refresh_url", "revoke_url", "revoke_style", "scopes", "scope_separator",
                      "pkce", "client_auth", "authorization_params", "token_params",
                      "token_style", "account", "refresh_margin_s", "default_expires_in_s",
                      "template_params", "scope_apps", "api_key", "template_defaults",
                      "client_id_param", "client_secret_param", "code_param", "token_method",
                      "token_metadata", "callback_verification", "issuer", "jwks_url",
                      "filters", "api"});
  provider_entry entry;
  entry.name = name;
  entry.display_name = reader.get_string(node, path, "display_name", name);
  entry.docs = reader.get_string(node, path, "docs", "");
  auto mode = reader.require_string(node, path, "auth_mode");
  if (mode == "oauth2") entry.mode = auth_mode::oauth2;
  else if (mode == "api_key") entry.mode = auth_mode::api_key;
  else if (mode == "service_account") entry.mode = auth_mode::service_account;
  else reader.fail(node["auth_mode"], path + ".auth_mode",
                   "expected oauth2, api_key or service_account");

  entry.template_params = reader.get_string_map(node, path, "template_params");
  for (auto& [param, pattern] : entry.template_params) {
    auto where = path + ".template_params." + param;
    if (pattern.empty())
      reader.fail(node["template_params"][param], where, "expected a pattern");
    if (auto problem = pattern_problem(pattern); !problem.empty())
      reader.fail(node["template_params"][param], where, "pattern " + problem);
    try {
      std::regex{pattern};
    } catch (const std::regex_error&) {
      reader.fail(node["template_params"][param], where, "not a valid regular expression");
    }
  }

  auto url = [&](const char* key) {
    auto value = reader.get_string(node, path, key, "");
    check_url(reader, node[key], join_path(path, key), value, entry);
    return value;
  };
  entry.authorization_url = url("authorization_url");
  entry.token_url = url("token_url");
  entry.refresh_url = url("refresh_url");
  entry.revoke_url = url("revoke_url");
  entry.jwks_url = url("jwks_url");
  entry.revoke_style = reader.get_string(node, path, "revoke_style", "none");
  static const std::vector<std::string> revoke_styles = {
    "none", "rfc7009", "github_token", "meta_permissions", "shopify_uninstall", "tiktok"};
  if (std::find(revoke_styles.begin(), revoke_styles.end(), entry.revoke_style) ==
      revoke_styles.end())
    reader.fail(node["revoke_style"], path + ".revoke_style",
                "expected none, rfc7009, github_token, meta_permissions, "
                "shopify_uninstall or tiktok");
  if (entry.revoke_style != "none" && entry.revoke_url.empty())
    reader.fail(node, path + ".revoke_url", "required when revoke_style is not none");

  entry.scopes = reader.get_string_list(node, path, "scopes");
  entry.scope_separator = reader.get_string(node, path, "scope_separator", " ");
  entry.pkce = reader.get_bool(node, path, "pkce", false);
  auto client_auth = reader.get_string(node, path, "client_auth", "post");
  if (client_auth == "post") entry.client_auth = client_auth_style::post;
  else if (client_auth == "basic") entry.client_auth = client_auth_style::basic;
  else if (client_auth == "json") entry.client_auth = client_auth_style::json;
  else reader.fail(node["client_auth"], path + ".client_auth", "expected post, basic or json");
  entry.authorization_params = reader.get_string_map(node, path, "authorization_params");
  entry.token_params = reader.get_string_map(node, path, "token_params");
  entry.token_style = reader.get_string(node, path, "token_style", "standard");
  if (entry.token_style != "standard" && entry.token_style != "tiktok_envelope" &&
      entry.token_style != "meta_long_lived")
    reader.fail(node["token_style"], path + ".token_style",
                "expected standard, tiktok_envelope or meta_long_lived");
  entry.refresh_margin_s =
    static_cast<int>(reader.get_int(node, path, "refresh_margin_s", 300, 0, 86400));
  entry.default_expires_in_s =
    static_cast<int>(reader.get_int(node, path, "default_expires_in_s", 3600, 60, 400 * 86400));
  entry.scope_apps = reader.get_string_map(node, path, "scope_apps");
  entry.template_defaults = reader.get_string_map(node, path, "template_defaults");
  for (auto& [param, value] : entry.template_defaults) {
    auto where = path + ".template_defaults." + param;
    if (entry.template_params.count(param) == 0)
      reader.fail(node["template_defaults"][param], where,
                  "must be a declared template parameter");
    if (auto why = template_value_problem(value, entry.template_params.at(param)); !why.empty())
      reader.fail(node["template_defaults"][param], where, "the value " + why);
  }
  entry.client_id_param = reader.get_string(node, path, "client_id_param", "client_id");
  entry.client_secret_param = reader.get_string(node, path, "client_secret_param", "client_secret");
  entry.code_param = reader.get_string(node, path, "code_param", "code");
  entry.token_method = reader.get_string(node, path, "token_method", "POST");
  if (entry.token_method != "POST" && entry.token_method != "GET")
    reader.fail(node["token_method"], path + ".token_method", "expected GET or POST");
  entry.token_metadata = reader.get_string_map(node, path, "token_metadata");
  for (auto& [key, pointer] : entry.token_metadata)
    check_pointer(reader, node["token_metadata"][key], path + ".token_metadata." + key, pointer);
  entry.callback_verification = reader.get_string(node, path, "callback_verification", "none");
  if (entry.callback_verification != "none" && entry.callback_verification != "shopify_hmac")
    reader.fail(node["callback_verification"], path + ".callback_verification",
                "expected none or shopify_hmac");
  entry.issuer = reader.get_string(node, path, "issuer", "");
  entry.filters = read_filters(reader, node, path);

  auto account = node["account"];
  if (account && !account.IsNull()) {
    auto apath = path + ".account";
    reader.expect_keys(account, apath, {"url", "name_pointer", "auth", "list_pointer",
                                        "list_name_pointer", "metadata"});
    account_lookup lookup;
    lookup.url = reader.require_string(account, apath, "url");
    check_url(reader, account["url"], apath + ".url", lookup.url, entry);
    lookup.name_pointer = reader.require_string(account, apath, "name_pointer");
    check_pointer(reader, account["name_pointer"], apath + ".name_pointer", lookup.name_pointer);
    lookup.auth = reader.get_string(account, apath, "auth", "bearer");
    if (lookup.auth != "bearer" && lookup.auth.rfind("header:", 0) != 0 &&
        lookup.auth.rfind("query:", 0) != 0)
      reader.fail(account["auth"], apath + ".auth", "expected bearer, header:<Name> or query:<param>");
    lookup.list_pointer = reader.get_string(account, apath, "list_pointer", "");
    check_pointer(reader, account["list_pointer"], apath + ".list_pointer", lookup.list_pointer);
    lookup.list_name_pointer = reader.get_string(account, apath, "list_name_pointer", "/name");
    check_pointer(reader, account["list_name_pointer"], apath + ".list_name_pointer",
                  lookup.list_name_pointer);
    lookup.metadata = reader.get_string_map(account, apath, "metadata");
    for (auto& [meta_key, pointer] : lookup.metadata)
      check_pointer(reader, account["metadata"][meta_key], apath + ".metadata." + meta_key,
                    pointer);
    entry.account = lookup;
  }

  auto api = node["api"];
  if (api && !api.IsNull()) {
    auto ppath = path + ".api";
    reader.expect_keys(api, ppath, {"base_url", "auth", "forward_headers"});
    api_access access;
    access.base_url = reader.require_string(api, ppath, "base_url");
    check_url(reader, api["base_url"], ppath + ".base_url", access.base_url, entry);
    if (access.base_url.find_first_of("?#") != std::string::npos)
      reader.fail(api["base_url"], ppath + ".base_url", "a base URL has no query or fragment");
    access.auth = reader.get_string(api, ppath, "auth", "");
    if (!access.auth.empty() && access.auth != "bearer" && access.auth.rfind("header:", 0) != 0 &&
        access.auth.rfind("query:", 0) != 0)
      reader.fail(api["auth"], ppath + ".auth", "expected bearer, header:<Name> or query:<param>");
    access.forward_headers = reader.get_string_list(api, ppath, "forward_headers");
    for (auto& name : access.forward_headers)
      if (name.empty() || name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                 "0123456789-") != std::string::npos)
        reader.fail(api["forward_headers"], ppath + ".forward_headers", "expected header names");
    entry.api = access;
  }

  auto key = node["api_key"];
  if (key && !key.IsNull()) {
    auto kpath = path + ".api_key";
    reader.expect_keys(key, kpath, {"validate_url", "method", "scheme", "header", "headers",
                                    "required_fields", "optional_fields", "key_prefixes",
                                    "account_pointer", "body", "label"});
    api_key_check check;
    check.validate_url = reader.require_string(key, kpath, "validate_url");
    check_url(reader, key["validate_url"], kpath + ".validate_url", check.validate_url, entry);
    check.method = reader.get_string(key, kpath, "method", "GET");
    if (check.method != "GET" && check.method != "POST")
      reader.fail(key["method"], kpath + ".method", "expected GET or POST");
    check.scheme = reader.get_string(key, kpath, "scheme", "bearer");
    static const std::vector<std::string> schemes = {"bearer", "basic", "basic_email",
                                                     "basic_token", "header", "klaviyo"};
    if (std::find(schemes.begin(), schemes.end(), check.scheme) == schemes.end())
      reader.fail(key["scheme"], kpath + ".scheme",
                  "expected bearer, basic, basic_email, basic_token, header or klaviyo");
    check.header = reader.get_string(key, kpath, "header", "");
    if (check.scheme == "header" && check.header.empty())
      reader.fail(key, kpath + ".header", "required when scheme is header");
    check.headers = reader.get_string_map(key, kpath, "headers");
    check.required_fields = reader.get_string_list(key, kpath, "required_fields");
    check.optional_fields = reader.get_string_list(key, kpath, "optional_fields");
    check.body = reader.get_string(key, kpath, "body", "");
    check.key_prefixes = reader.get_string_list(key, kpath, "key_prefixes");
    check.account_pointer = reader.get_string(key, kpath, "account_pointer", "");
    check.label = reader.get_string(key, kpath, "label", check.label);
    check_pointer(reader, key["account_pointer"], kpath + ".account_pointer",
                  check.account_pointer);
    entry.api_key = check;
  }

  if (entry.mode == auth_mode::oauth2) {
    if (entry.authorization_url.empty())
      reader.fail(node, path + ".authorization_url", "required for auth_mode oauth2");
    if (entry.token_url.empty())
      reader.fail(node, path + ".token_url", "required for auth_mode oauth2");
  } else if (!entry.api_key) {
    reader.fail(node, path + ".api_key", "required for auth_mode " + mode);
  } else if (entry.mode == auth_mode::service_account && entry.token_url.empty()) {
    reader.fail(node, path + ".token_url", "required for auth_mode service_account");
  }
  return entry;
}

provider_catalog from_root(const YAML::Node& root, const std::string& name) {
  yaml_reader reader{name};
  if (!root.IsMap())
    throw config_error(name + ": the document must be a mapping with a 'providers' key");
  reader.expect_keys(root, "", {"providers"});
  auto providers = root["providers"];
  if (!providers || !providers.IsMap() || providers.size() == 0)
    reader.fail(providers ? providers : root, "providers", "expected a non-empty mapping");
  provider_catalog catalog;
  for (auto it = providers.begin(); it != providers.end(); ++it) {
    auto provider_name = it->first.Scalar();
    if (!std::regex_match(provider_name, provider_name_pattern()))
      reader.fail(it->first, join_path("providers", provider_name),
                  "provider names are lower-case letters, digits and hyphens");
    if (!it->second.IsMap())
      reader.fail(it->second, join_path("providers", provider_name), "expected a mapping");
    catalog.providers[provider_name] = read_entry(reader, provider_name, it->second);
  }
  return catalog;
}

} // namespace

provider_catalog parse_provider_catalog(const std::string& text, const std::string& name) {
  return from_root(parse_yaml(text, name), name);
}

provider_catalog load_provider_catalog(const std::string& path) {
  return from_root(load_yaml_file(path), path);
}

void apply_provider_settings(provider_catalog& catalog,
                             const std::map<std::string, provider_settings>& settings) {
  for (auto& [name, s] : settings) {
    auto it = catalog.providers.find(name);
    if (it == catalog.providers.end())
      throw config_error("providers." + name + ": no such provider in the catalog");
    auto& entry = it->second;
    // This deployment's client id fills {client_id} (GitHub's revocation
    // path) like any other template value, so it obeys the same rule.
    if (!s.client_id.empty()) {
      auto pattern = entry.template_params.find("client_id");
      if (auto why = template_value_problem(
            s.client_id, pattern == entry.template_params.end() ? "" : pattern->second);
          !why.empty())
        throw config_error("providers." + name + ".client_id: the value " + why);
    }
    bool oauth = entry.mode == auth_mode::oauth2;
    bool service_account = entry.mode == auth_mode::service_account;
    for (auto& [key, url] : s.urls) {
      if (key == "authorization_url" && oauth) entry.authorization_url = url;
      else if (key == "token_url" && (oauth || service_account)) entry.token_url = url;
      else if (key == "refresh_url" && oauth) entry.refresh_url = url;
      else if (key == "revoke_url" && oauth) entry.revoke_url = url;
      // ID tokens only come out of the OAuth flow.
      else if (key == "jwks_url" && oauth) entry.jwks_url = url;
      else if (key == "account_url" && entry.account) entry.account->url = url;
      else if (key == "validate_url" && entry.api_key) entry.api_key->validate_url = url;
      else if (key == "api_base_url" && entry.api) entry.api->base_url = url;
      else
        throw config_error("providers." + name + "." + key +
                           ": provider has no such URL to override");
    }
  }
}

} // namespace cm::config

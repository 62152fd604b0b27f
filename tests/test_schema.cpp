// Connector configuration schemas: what the catalog's filters and auth mode
// turn into, the validator the routes check bodies with, and the catalog's
// own checks of `filters` and `jwks_url`.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/connector_schema.hpp"
#include "config/provider_catalog.hpp"
#include "config/schema_validator.hpp"
#include "config/service_config.hpp"
#include "config/yaml_schema.hpp"
#include "tests/support/test_env.hpp"

using namespace cm::config;
using nlohmann::json;

namespace {

const provider_catalog& shipped() {
  static const provider_catalog catalog =
    load_provider_catalog(cm::test::source_dir() + "/config/providers.yaml");
  return catalog;
}

const provider_entry& provider(const std::string& name) {
  auto entry = shipped().find(name);
  if (!entry)
    throw std::runtime_error("no provider " + name + " in the shipped catalog");
  return *entry;
}

/// "" when `value` is valid, else the validator's message. Also checks that
/// the verdict and the message agree.
std::string error_of(const json& schema, const json& value) {
  std::string error = "left over from before";
  bool ok = validate_against_schema(schema, value, error);
  EXPECT_EQ(ok, error.empty()) << error;
  return ok ? "" : error;
}

std::string config_error_of(const std::string& connector, const json& body) {
  return error_of(connector_config_schema(provider(connector)), body);
}

std::string catalog_error(const std::string& text) {
  try {
    parse_provider_catalog(text, "providers.yaml");
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

/// An API-key provider with the given `filters:` list items appended.
std::string with_filters(const std::string& items) {
  return "providers:\n"
         "  x:\n"
         "    auth_mode: api_key\n"
         "    api_key:\n"
         "      validate_url: https://a.example/\n"
         "    filters:\n" +
         items;
}

/// A value every filter of `entry` accepts, so a body can exercise every
/// filter subschema.
json valid_filters(const provider_entry& entry) {
  json filters = json::object();
  for (auto& f : entry.filters) {
    switch (f.type) {
      case filter_type::string:
        filters[f.name] = f.enum_values.empty() ? json("x") : json(f.enum_values.front());
        break;
      case filter_type::string_array:
        filters[f.name] = f.enum_values.empty() ? json::array({"a", "b"})
                                                : json::array({f.enum_values.front()});
        break;
      case filter_type::integer:
        filters[f.name] = f.minimum ? *f.minimum : (f.maximum ? *f.maximum : 0);
        break;
      case filter_type::boolean:
        filters[f.name] = true;
        break;
    }
  }
  return filters;
}

const json minimal_body = {{"baseUrl", "https://example.com"}};

json github_body() {
  return {
    {"baseUrl", "https://api.github.com"},
    {"auth", {{"clientId", "Iv1.abc"}, {"clientSecret", "s3cret"}, {"scopes", {"repo"}}}},
    {"sync", {{"mode", "scheduled"}, {"interval", 3600}}},
    {"filters", {{"repositories", {"acme/web", "acme/api"}}, {"includeArchived", false}}},
  };
}

} // namespace

// ---------------------------------------------------------------------------
// Generated schemas

// Sub-schemas are read through non-const copies: a missing key then reads as
// null and fails the comparison, where const operator[] would abort the run.
TEST(ConnectorSchema, OAuthConnectorRequiresBaseUrlAndHidesTheSecret) {
  auto schema = connector_config_schema(provider("github"));
  EXPECT_EQ(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
  EXPECT_EQ(schema["$id"], "urn:connector-manager:connector-config:github");
  EXPECT_EQ(schema["title"], "GitHub");
  EXPECT_EQ(schema["type"], "object");
  EXPECT_EQ(schema["additionalProperties"], false);
  EXPECT_EQ(schema["required"], json::array({"baseUrl"}));

  auto base_url = schema["properties"]["baseUrl"];
  EXPECT_EQ(base_url["type"], "string");
  EXPECT_EQ(base_url["format"], "uri");
  EXPECT_EQ(base_url["pattern"], "^https?://");
  EXPECT_EQ(base_url["maxLength"], 2048);

  auto auth = schema["properties"]["auth"];
  EXPECT_EQ(auth["additionalProperties"], false);
  EXPECT_EQ(auth["properties"]["clientSecret"]["writeOnly"], true);
  EXPECT_EQ(auth["properties"]["clientSecret"]["maxLength"], 4096);
  EXPECT_FALSE(auth["properties"]["clientId"].contains("writeOnly"));
  EXPECT_EQ(auth["properties"]["scopes"]["uniqueItems"], true);
  EXPECT_EQ(auth["properties"]["scopes"]["maxItems"], 64);

  auto sync = schema["properties"]["sync"];
  EXPECT_EQ(sync["properties"]["mode"]["enum"], json::array({"manual", "scheduled", "realtime"}));
  EXPECT_EQ(sync["properties"]["interval"]["minimum"], 300);
  EXPECT_EQ(sync["properties"]["interval"]["maximum"], 86400);
}

TEST(ConnectorSchema, PerUserKeyConnectorsTakeNoTeamCredentials) {
  for (auto name : {"stripe", "google-analytics"}) {
    SCOPED_TRACE(name);
    auto schema = connector_config_schema(provider(name));
    auto auth = schema["properties"]["auth"];
    EXPECT_EQ(auth["type"], "object");
    EXPECT_EQ(auth["additionalProperties"], false);
    EXPECT_EQ(auth["properties"], json::object());
    EXPECT_EQ(error_of(schema, {{"baseUrl", "https://x.example"}, {"auth", json::object()}}), "");
    EXPECT_EQ(error_of(schema, {{"baseUrl", "https://x.example"}, {"auth", {{"clientId", "a"}}}}),
              "unknown field auth.clientId");
  }
}

TEST(ConnectorSchema, FiltersSchemaFollowsTheCatalog) {
  auto github = connector_filters_schema(provider("github"));
  EXPECT_EQ(github["additionalProperties"], false);
  auto repositories = github["properties"]["repositories"];
  EXPECT_EQ(repositories["type"], "array");
  EXPECT_EQ(repositories["items"]["type"], "string");
  EXPECT_EQ(repositories["maxItems"], 256);
  EXPECT_EQ(repositories["uniqueItems"], true);
  EXPECT_FALSE(repositories["description"].get<std::string>().empty());
  EXPECT_EQ(github["properties"]["includeArchived"]["type"], "boolean");

  auto shopify = connector_filters_schema(provider("shopify"));
  auto status = shopify["properties"]["orderStatus"];
  EXPECT_EQ(status["type"], "string");
  EXPECT_EQ(status["maxLength"], 1024);
  EXPECT_EQ(status["enum"], json::array({"any", "open", "closed", "cancelled"}));

  auto stripe = connector_filters_schema(provider("stripe"));
  EXPECT_EQ(stripe["properties"]["lookbackDays"]["type"], "integer");
  EXPECT_EQ(stripe["properties"]["lookbackDays"]["minimum"], 1);
  EXPECT_EQ(stripe["properties"]["lookbackDays"]["maximum"], 730);

  // The config schema embeds the same filters schema.
  EXPECT_EQ(connector_config_schema(provider("stripe"))["properties"]["filters"], stripe);
  // A connector without filters accepts none.
  EXPECT_EQ(connector_filters_schema(provider("vercel"))["properties"], json::object());
}

TEST(ConnectorSchema, FilterOptionsListTheCatalogFiltersInOrder) {
  auto github = filter_options_json(provider("github"));
  ASSERT_EQ(github.size(), 2u);
  EXPECT_EQ(github[0]["name"], "repositories");
  EXPECT_EQ(github[0]["type"], "string_array");
  EXPECT_EQ(github[1]["name"], "includeArchived");
  EXPECT_EQ(github[1]["type"], "boolean");
  EXPECT_FALSE(github[0].contains("enum"));
  EXPECT_FALSE(github[0].contains("minimum"));

  auto shopify = filter_options_json(provider("shopify"));
  ASSERT_EQ(shopify.size(), 1u);
  EXPECT_EQ(shopify[0]["enum"], json::array({"any", "open", "closed", "cancelled"}));
  EXPECT_FALSE(shopify[0].contains("maximum"));

  auto stripe = filter_options_json(provider("stripe"));
  ASSERT_EQ(stripe.size(), 1u);
  EXPECT_EQ(stripe[0],
            json({{"name", "lookbackDays"},
                  {"type", "integer"},
                  {"description", provider("stripe").filters.at(0).description},
                  {"minimum", 1},
                  {"maximum", 730}}));

  EXPECT_EQ(filter_options_json(provider("vercel")), json::array());
}

// ---------------------------------------------------------------------------
// Validating bodies

TEST(ConnectorSchema, ValidBodiesPass) {
  EXPECT_EQ(config_error_of("github", github_body()), "");
  EXPECT_EQ(config_error_of("github", minimal_body), "");
  EXPECT_EQ(config_error_of("github", {{"baseUrl", "http://127.0.0.1:8080/api"}}), "");
  EXPECT_EQ(config_error_of("shopify", {{"baseUrl", "https://acme.myshopify.com"},
                                        {"filters", {{"orderStatus", "any"}}}}),
            "");
  EXPECT_EQ(config_error_of("stripe", {{"baseUrl", "https://api.stripe.com"},
                                       {"sync", {{"mode", "manual"}}},
                                       {"filters", {{"lookbackDays", 730}}}}),
            "");
  // Bounds are inclusive.
  auto body = github_body();
  body["sync"]["interval"] = 300;
  EXPECT_EQ(config_error_of("github", body), "");
  body["sync"]["interval"] = 86400;
  EXPECT_EQ(config_error_of("github", body), "");
}

TEST(ConnectorSchema, EachViolationNamesTheField) {
  struct violation {
    const char* what;
    std::function<void(json&)> change;
    std::string expected;
  };
  const std::vector<violation> cases = {
    {"no baseUrl", [](json& b) { b.erase("baseUrl"); }, "baseUrl is required"},
    {"baseUrl a number", [](json& b) { b["baseUrl"] = 5; }, "baseUrl must be a string"},
    {"baseUrl not http", [](json& b) { b["baseUrl"] = "ftp://files.example"; },
     "baseUrl must match the pattern ^https?://"},
    {"baseUrl too long",
     [](json& b) { b["baseUrl"] = "https://" + std::string(2041, 'a'); },
     "baseUrl must be at most 2048 characters long"},
    {"unknown top-level field", [](json& b) { b["colour"] = "red"; }, "unknown field colour"},
    {"misspelt baseUrl is reported as unknown, not missing",
     [](json& b) {
       b["baseURL"] = b["baseUrl"];
       b.erase("baseUrl");
     },
     "unknown field baseURL"},
    {"auth not an object", [](json& b) { b["auth"] = "x"; }, "auth must be an object"},
    {"clientSecret a number", [](json& b) { b["auth"]["clientSecret"] = 42; },
     "auth.clientSecret must be a string"},
    {"clientId empty", [](json& b) { b["auth"]["clientId"] = ""; },
     "auth.clientId must be at least 1 character long"},
    {"clientId too long", [](json& b) { b["auth"]["clientId"] = std::string(513, 'i'); },
     "auth.clientId must be at most 512 characters long"},
    {"unknown auth field", [](json& b) { b["auth"]["password"] = "x"; },
     "unknown field auth.password"},
    {"scopes not a list", [](json& b) { b["auth"]["scopes"] = "repo"; },
     "auth.scopes must be an array"},
    {"empty scope", [](json& b) { b["auth"]["scopes"] = {"repo", ""}; },
     "auth.scopes[1] must be at least 1 character long"},
    {"repeated scope", [](json& b) { b["auth"]["scopes"] = {"repo", "user", "repo"}; },
     "auth.scopes[2] repeats an earlier item"},
    {"too many scopes", [](json& b) { b["auth"]["scopes"] = std::vector<std::string>(65, "s"); },
     "auth.scopes must have at most 64 items"},
    {"interval too short", [](json& b) { b["sync"]["interval"] = 299; },
     "sync.interval must be at least 300"},
    {"interval too long", [](json& b) { b["sync"]["interval"] = 86401; },
     "sync.interval must be at most 86400"},
    {"interval negative", [](json& b) { b["sync"]["interval"] = -1; },
     "sync.interval must be at least 300"},
    {"interval a float", [](json& b) { b["sync"]["interval"] = 600.0; },
     "sync.interval must be an integer"},
    {"interval a boolean", [](json& b) { b["sync"]["interval"] = true; },
     "sync.interval must be an integer"},
    {"interval a string", [](json& b) { b["sync"]["interval"] = "600"; },
     "sync.interval must be an integer"},
    {"unknown mode", [](json& b) { b["sync"]["mode"] = "hourly"; },
     "sync.mode must be one of: manual, scheduled, realtime"},
    {"unknown sync field", [](json& b) { b["sync"]["cron"] = "* * * * *"; },
     "unknown field sync.cron"},
    {"repository not a string", [](json& b) { b["filters"]["repositories"] = {"a/b", "c/d", 3}; },
     "filters.repositories[2] must be a string"},
    {"unknown filter", [](json& b) { b["filters"]["foo"] = 1; }, "unknown field filters.foo"},
    {"boolean filter given a string", [](json& b) { b["filters"]["includeArchived"] = "yes"; },
     "filters.includeArchived must be a boolean"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto body = github_body();
    ASSERT_EQ(config_error_of("github", body), "");
    c.change(body);
    EXPECT_EQ(config_error_of("github", body), c.expected);
  }
  std::string error;
  EXPECT_FALSE(validate_against_schema(connector_config_schema(provider("github")),
                                       json::array({minimal_body}), error));
  EXPECT_EQ(error, "body must be an object");
}

TEST(ConnectorSchema, FiltersRespectEnumAndBounds) {
  auto shopify = connector_filters_schema(provider("shopify"));
  for (auto status : {"any", "open", "closed", "cancelled"})
    EXPECT_EQ(error_of(shopify, {{"orderStatus", status}}), "") << status;
  EXPECT_EQ(error_of(shopify, {{"orderStatus", "pending"}}),
            "orderStatus must be one of: any, open, closed, cancelled");
  EXPECT_EQ(error_of(shopify, {{"orderStatus", json::array({"open"})}}),
            "orderStatus must be a string");

  auto stripe = connector_filters_schema(provider("stripe"));
  EXPECT_EQ(error_of(stripe, {{"lookbackDays", 1}}), "");
  EXPECT_EQ(error_of(stripe, {{"lookbackDays", 730}}), "");
  EXPECT_EQ(error_of(stripe, {{"lookbackDays", 0}}), "lookbackDays must be at least 1");
  EXPECT_EQ(error_of(stripe, {{"lookbackDays", 731}}), "lookbackDays must be at most 730");
  EXPECT_EQ(error_of(stripe, json::parse(R"({"lookbackDays": 5.0})")),
            "lookbackDays must be an integer");
  EXPECT_EQ(error_of(stripe, {{"lookbackDays", false}}), "lookbackDays must be an integer");
  EXPECT_EQ(error_of(stripe, json::parse(R"({"lookbackDays": 18446744073709551615})")),
            "lookbackDays must be at most 730");
  EXPECT_EQ(error_of(stripe, json::parse(R"({"lookbackDays": -9223372036854775808})")),
            "lookbackDays must be at least 1");
  EXPECT_EQ(error_of(stripe, {{"days", 3}}), "unknown field days");

  auto github = connector_filters_schema(provider("github"));
  EXPECT_EQ(error_of(github, {{"repositories", json::array()}, {"includeArchived", true}}), "");
  EXPECT_EQ(error_of(github, {{"repositories", {"a/b", "a/b"}}}),
            "repositories[1] repeats an earlier item");
  EXPECT_EQ(error_of(github, {{"repositories", std::vector<std::string>(257, "x")}}),
            "repositories must have at most 256 items");
  EXPECT_EQ(error_of(github, {{"repositories", {std::string(1025, 'r')}}}),
            "repositories[0] must be at most 1024 characters long");
  EXPECT_EQ(error_of(github, {{"foo", 1}}), "unknown field foo");

  EXPECT_EQ(error_of(connector_filters_schema(provider("vercel")), {{"anything", 1}}),
            "unknown field anything");
  EXPECT_EQ(error_of(connector_filters_schema(provider("vercel")), json::object()), "");
}

TEST(ConnectorSchema, StringArrayEnumAppliesToEachItem) {
  provider_entry entry;
  entry.name = "x";
  filter_option regions;
  regions.name = "regions";
  regions.type = filter_type::string_array;
  regions.description = "Regions";
  regions.enum_values = {"eu", "us"};
  entry.filters.push_back(regions);
  auto schema = connector_filters_schema(entry);
  EXPECT_EQ(error_of(schema, {{"regions", {"eu", "us"}}}), "");
  EXPECT_EQ(error_of(schema, {{"regions", {"eu", "apac"}}}), "regions[1] must be one of: eu, us");
}

TEST(ConnectorSchema, ErrorsNeverRepeatTheValue) {
  const std::string canary = "CANARY-7f3a9-do-not-echo";
  auto github = connector_config_schema(provider("github"));
  auto shopify = connector_config_schema(provider("shopify"));
  std::vector<std::pair<json, json>> cases = {
    {github, {{"baseUrl", "ftp://" + canary}}},
    {github, {{"baseUrl", "https://" + canary + std::string(2048, 'x')}}},
    {github, {{"baseUrl", json::array({canary})}}},
    {github, {{"baseUrl", "https://a"}, {"auth", {{"clientSecret", canary + std::string(4096, 'x')}}}}},
    {github, {{"baseUrl", "https://a"}, {"auth", {{"clientSecret", {{"k", canary}}}}}}},
    {github, {{"baseUrl", "https://a"}, {"auth", {{"scopes", {canary, canary}}}}}},
    {github, {{"baseUrl", "https://a"}, {"sync", {{"mode", canary}}}}},
    {github, {{"baseUrl", "https://a"}, {"sync", {{"interval", canary}}}}},
    {github, {{"baseUrl", "https://a"}, {"filters", {{"includeArchived", canary}}}}},
    {shopify, {{"baseUrl", "https://a"}, {"filters", {{"orderStatus", canary}}}}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    auto error = error_of(cases[i].first, cases[i].second);
    EXPECT_FALSE(error.empty()) << "case " << i;
    EXPECT_EQ(error.find("CANARY"), std::string::npos) << "case " << i << ": " << error;
  }
}

TEST(ConnectorSchema, EveryShippedConnectorAcceptsAMinimalAndAFullBody) {
  ASSERT_GT(shipped().providers.size(), 10u);
  for (auto& [name, entry] : shipped().providers) {
    SCOPED_TRACE(name);
    auto schema = connector_config_schema(entry);
    EXPECT_EQ(schema["$id"], "urn:connector-manager:connector-config:" + name);
    EXPECT_EQ(schema["title"], entry.display_name);
    EXPECT_EQ(error_of(schema, minimal_body), "");
    EXPECT_EQ(error_of(schema, json::object()), "baseUrl is required");

    // Every subschema the generator emits, exercised once.
    json full = minimal_body;
    full["auth"] = entry.mode == auth_mode::oauth2
                     ? json{{"clientId", "id"}, {"clientSecret", "secret"}, {"scopes", {"a"}}}
                     : json::object();
    full["sync"] = {{"mode", "scheduled"}, {"interval", 900}};
    full["filters"] = valid_filters(entry);
    EXPECT_EQ(error_of(schema, full), "");
    EXPECT_EQ(error_of(connector_filters_schema(entry), full["filters"]), "");
  }
}

// ---------------------------------------------------------------------------
// The validator on its own

TEST(SchemaValidator, IntegersNumbersAndTypeLists) {
  json integer = {{"type", "integer"}};
  json number = {{"type", "number"}, {"minimum", 0.5}};
  EXPECT_EQ(error_of(integer, json::parse("5")), "");
  EXPECT_EQ(error_of(integer, json::parse("5.0")), "body must be an integer");
  EXPECT_EQ(error_of(integer, json::parse("5e0")), "body must be an integer");
  EXPECT_EQ(error_of(integer, json::parse("true")), "body must be an integer");
  EXPECT_EQ(error_of(number, json::parse("5.0")), "");
  EXPECT_EQ(error_of(number, json::parse("1")), "");
  EXPECT_EQ(error_of(number, json::parse("0.25")), "body must be at least 0.5");
  EXPECT_EQ(error_of(number, json::parse("false")), "body must be a number");

  json nullable = {{"type", {"string", "integer", "null"}}};
  EXPECT_EQ(error_of(nullable, "x"), "");
  EXPECT_EQ(error_of(nullable, 3), "");
  EXPECT_EQ(error_of(nullable, nullptr), "");
  EXPECT_EQ(error_of(nullable, 3.5), "body must be a string, an integer or null");
}

TEST(SchemaValidator, LengthsCountCharactersNotBytes) {
  json schema = {{"type", "string"}, {"minLength", 2}, {"maxLength", 3}};
  EXPECT_EQ(error_of(schema, "\xc3\xa9\xc3\xa9\xc3\xa9"), "");  // "ééé": 6 bytes
  EXPECT_EQ(error_of(schema, "\xc3\xa9"), "body must be at least 2 characters long");
  EXPECT_EQ(error_of(schema, "abcd"), "body must be at most 3 characters long");
}

TEST(SchemaValidator, PatternsAreSearchedAndCarryTheirAnchors) {
  EXPECT_EQ(error_of({{"type", "string"}, {"pattern", "b"}}, "abc"), "");
  EXPECT_EQ(error_of({{"type", "string"}, {"pattern", "^b"}}, "abc"),
            "body must match the pattern ^b");
}

TEST(SchemaValidator, UnknownFieldNamesAreClipped) {
  json schema = {{"type", "object"}, {"additionalProperties", false}};
  auto error = error_of(schema, {{std::string(10000, 'k'), 1}});
  EXPECT_EQ(error, "unknown field " + std::string(64, 'k') + "...");
}

TEST(SchemaValidator, SchemasItCannotApplyFailInsteadOfPassing) {
  std::string error;
  EXPECT_FALSE(validate_against_schema({{"type", "array"}, {"minItems", 1}}, json::array(), error));
  EXPECT_NE(error.find("unsupported keyword 'minItems'"), std::string::npos) << error;
  EXPECT_FALSE(validate_against_schema({{"type", "string"}, {"pattern", "(("}}, "x", error));
  EXPECT_NE(error.find("not a valid regular expression"), std::string::npos) << error;
  EXPECT_FALSE(validate_against_schema({{"type", "decimal"}}, 1, error));
  EXPECT_NE(error.find("invalid schema"), std::string::npos) << error;
  EXPECT_FALSE(validate_against_schema("not a schema", 1, error));
  EXPECT_NE(error.find("invalid schema"), std::string::npos) << error;
  EXPECT_FALSE(validate_against_schema({{"type", "integer"}, {"maximum", "ten"}}, 1, error));
  EXPECT_NE(error.find("invalid schema"), std::string::npos) << error;
  EXPECT_FALSE(validate_against_schema(
    {{"type", "object"}, {"additionalProperties", {{"type", "string"}}}}, json::object(), error));
  EXPECT_NE(error.find("invalid schema"), std::string::npos) << error;
}

// ---------------------------------------------------------------------------
// Catalog: filters and jwks_url

TEST(ConnectorCatalog, FiltersAreReadWithTheirConstraints) {
  auto catalog = parse_provider_catalog(with_filters("      - name: region\n"
                                                     "        type: string\n"
                                                     "        enum: [eu, us]\n"
                                                     "        description: Data region\n"
                                                     "      - name: pageSize\n"
                                                     "        type: integer\n"
                                                     "        minimum: 10\n"
                                                     "        maximum: 500\n"
                                                     "        description: Items per call\n"),
                                        "providers.yaml");
  const auto& filters = catalog.find("x")->filters;
  ASSERT_EQ(filters.size(), 2u);
  EXPECT_EQ(filters[0].name, "region");
  EXPECT_EQ(filters[0].type, filter_type::string);
  EXPECT_EQ(filters[0].enum_values, (std::vector<std::string>{"eu", "us"}));
  EXPECT_EQ(filters[0].description, "Data region");
  EXPECT_FALSE(filters[0].minimum.has_value());
  EXPECT_EQ(filters[1].type, filter_type::integer);
  EXPECT_EQ(filters[1].minimum, 10);
  EXPECT_EQ(filters[1].maximum, 500);
}

TEST(ConnectorCatalog, BadFilterDefinitionsNameTheKey) {
  struct bad {
    const char* items;
    std::string key;
    std::string problem;
  };
  const std::vector<bad> cases = {
    {"      - name: a\n        type: date\n        description: d\n",
     "providers.x.filters[0].type", "expected string, string_array, integer or boolean"},
    {"      - name: a\n        type: boolean\n        enum: [yes, no]\n        description: d\n",
     "providers.x.filters[0].enum", "only allowed for type string or string_array"},
    {"      - name: a\n        type: string\n        description: d\n"
     "      - name: a\n        type: integer\n        description: e\n",
     "providers.x.filters[1].name", "duplicate filter name 'a'"},
    {"      - name: a\n        type: string\n        minimum: 1\n        description: d\n",
     "providers.x.filters[0].minimum", "only allowed for type integer"},
    {"      - name: a\n        type: integer\n        minimum: 5\n        maximum: 4\n"
     "        description: d\n",
     "providers.x.filters[0].maximum", "must not be less than minimum"},
    {"      - name: a\n        type: integer\n        maximum: lots\n        description: d\n",
     "providers.x.filters[0].maximum", "expected an integer"},
    {"      - name: 1st\n        type: string\n        description: d\n",
     "providers.x.filters[0].name", "start with a letter"},
    {"      - name: a-b\n        type: string\n        description: d\n",
     "providers.x.filters[0].name", "start with a letter"},
    {"      - name: a\n        type: string\n", "providers.x.filters[0].description",
     "required key"},
    {"      - type: string\n        description: d\n", "providers.x.filters[0].name",
     "required key"},
    {"      - name: a\n        type: string\n        description: d\n        default: x\n",
     "providers.x.filters[0].default", "unknown key"},
    {"      - name: a\n        type: string\n        enum: []\n        description: d\n",
     "providers.x.filters[0].enum", "at least one value"},
    {"      - name: a\n        type: string\n        enum: [eu, eu]\n        description: d\n",
     "providers.x.filters[0].enum[1]", "duplicate value"},
    {"      - just-a-name\n", "providers.x.filters[0]", "expected a mapping"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.items);
    auto error = catalog_error(with_filters(c.items));
    EXPECT_NE(error.find("'" + c.key + "'"), std::string::npos) << error;
    EXPECT_NE(error.find(c.problem), std::string::npos) << error;
    EXPECT_EQ(error.rfind("providers.yaml:", 0), 0u) << error;
  }
  // The position is the offending node: the second item's name, line 10.
  auto duplicate = catalog_error(with_filters("      - name: a\n        type: string\n"
                                              "        description: d\n"
                                              "      - name: a\n        type: string\n"
                                              "        description: d\n"));
  EXPECT_EQ(duplicate.rfind("providers.yaml:10:15:", 0), 0u) << duplicate;
  auto not_a_list = catalog_error(with_filters("      name: a\n"));
  EXPECT_NE(not_a_list.find("'providers.x.filters'"), std::string::npos) << not_a_list;
}

TEST(ConnectorCatalog, JwksUrlIsReadCheckedAndOverridable) {
  EXPECT_EQ(provider("google-workspace").jwks_url, "https://www.googleapis.com/oauth2/v3/certs");
  EXPECT_EQ(provider("github").jwks_url, "");

  auto bad = catalog_error("providers:\n  x:\n    auth_mode: oauth2\n"
                           "    authorization_url: https://a/\n    token_url: https://a/t\n"
                           "    jwks_url: ftp://a/keys\n");
  EXPECT_NE(bad.find("'providers.x.jwks_url'"), std::string::npos) << bad;
  EXPECT_NE(bad.find("http(s) URL"), std::string::npos) << bad;

  // Overridable from the service file or the environment like other URLs.
  std::string env_var = "CM_PROVIDERS__GOOGLE_WORKSPACE__JWKS_URL=http://127.0.0.1:9/certs";
  char* env[] = {env_var.data(), nullptr};
  auto cfg = parse_service_config("database:\n  url: \"dbname=x\"\ncrypto:\n  key_file: k\n"
                                  "auth:\n  jwt:\n    hs256_secret_file: /s\n",
                                  "/etc/cm/service.yaml", env);
  auto catalog = shipped();
  apply_provider_settings(catalog, cfg.providers);
  EXPECT_EQ(catalog.find("google-workspace")->jwks_url, "http://127.0.0.1:9/certs");

  // Only OAuth connectors get ID tokens, so only they take a key set.
  std::map<std::string, provider_settings> api_key;
  api_key["stripe"].urls["jwks_url"] = "http://127.0.0.1:9/certs";
  EXPECT_THROW(apply_provider_settings(catalog, api_key), config_error);
}

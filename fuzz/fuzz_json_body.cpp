// Request bodies. The input is one HTTP request body, as a JSON route gets
// it. Covered, in the order routes run them:
//   * http::parse_json_object (every JSON route): one object, valid UTF-8,
//     depth <= max_json_depth, problems that never quote the body;
//   * the connector routes' checks: validate_against_schema against the
//     config and filters schemas of every shipped catalog entry
//     (config/connector_schema.cpp, config/schema_validator.cpp), then what
//     PUT /config does with an accepted body (clientSecret split off);
//   * oauth::parse_service_account (a service-account key given as api_key)
//     and oauth::check_signing_key on the private key it holds;
//   * the JSON response writer (http::json_response) on the parsed body.
#include <nlohmann/json.hpp>

#include "config/connector_schema.hpp"
#include "config/schema_validator.hpp"
#include "fuzz/fuzz_support.hpp"
#include "http/exchange.hpp"
#include "http/json_body.hpp"
#include "provider/oauth_protocol.hpp"
#include "provider/service_account.hpp"

using namespace cm;
using nlohmann::json;

namespace {

struct schemas {
  std::string name;
  json config;
  json filters;
  std::string config_text;
  std::string filters_text;
};

const std::vector<schemas>& all_schemas() {
  static const std::vector<schemas> list = [] {
    std::vector<schemas> out;
    for (auto& [name, entry] : fuzz::shipped_catalog().providers) {
      auto cfg = config::connector_config_schema(entry);
      auto flt = config::connector_filters_schema(entry);
      out.push_back({name, cfg, flt, cfg.dump(), flt.dump()});
    }
    return out;
  }();
  return list;
}

int depth_of(const json& j) {
  if (!j.is_structured())
    return 0;
  int deepest = 0;
  for (auto& child : j)
    deepest = std::max(deepest, depth_of(child));
  return deepest + 1;
}

/// String values long enough to be recognisable in a message, and every
/// key (messages name fields, so a key may be quoted).
void strings_of(const json& j, std::vector<std::string>& values, std::string& keys) {
  if (j.is_string()) {
    auto& s = j.get_ref<const std::string&>();
    if (s.size() >= 8 && values.size() < 64)
      values.push_back(s);
  } else if (j.is_object()) {
    for (auto& [key, child] : j.items()) {
      keys += key;
      keys += '\n';
      strings_of(child, values, keys);
    }
  } else if (j.is_array()) {
    for (auto& child : j)
      strings_of(child, values, keys);
  }
}

/// Validation messages name fields and the schema's limits, never a value:
/// a value may be a client secret. (A value that also occurs in a field name
/// or in the schema cannot be told apart, so it is not checked.)
void check_no_value_quoted(const std::string& error, const std::vector<std::string>& values,
                           const std::string& keys, const std::string& schema_text) {
  for (auto& v : values)
    if (schema_text.find(v) == std::string::npos && keys.find(v) == std::string::npos)
      CM_FUZZ_CHECK(error.find(v) == std::string::npos, "a validation message quotes a value");
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  all_schemas();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto text = fuzz::as_text(data, size);
  json body;
  std::string problem;
  if (!http::parse_json_object(text, body, problem)) {
    CM_FUZZ_CHECK(problem == "request body is not valid JSON" ||
                    problem == "request body is nested too deeply" ||
                    problem == "request body must be a JSON object",
                  "parse_json_object explains a refusal in its own words only");
    // The service-account reader takes the raw key text, JSON or not.
    std::string sa_problem;
    oauth::parse_service_account(std::string(text), sa_problem);
    return 0;
  }
  CM_FUZZ_CHECK(body.is_object(), "an accepted body is an object");
  CM_FUZZ_CHECK(depth_of(body) <= http::max_json_depth, "an accepted body respects the depth limit");

  std::vector<std::string> values;
  std::string keys;
  strings_of(body, values, keys);

  for (auto& s : all_schemas()) {
    std::string error;
    if (config::validate_against_schema(s.config, body, error)) {
      // PUT /config relies on the schema for this: it reads the secret
      // with get<std::string>() once the body is accepted.
      json copy = body;
      if (copy.contains("auth") && copy["auth"].contains("clientSecret")) {
        CM_FUZZ_CHECK(copy["auth"]["clientSecret"].is_string(),
                      "an accepted config carries clientSecret as a string");
        secret kept{copy["auth"]["clientSecret"].get<std::string>()};
        copy["auth"].erase("clientSecret");
      }
      (void)copy.dump();
    } else {
      CM_FUZZ_CHECK(!error.empty(), "a refused config says why");
      check_no_value_quoted(error, values, keys, s.config_text);
    }
    // POST /filters takes {"filters": {...}} or the filters object itself.
    auto filters = body.contains("filters") && body.size() == 1 ? body["filters"] : body;
    error.clear();
    if (!config::validate_against_schema(s.filters, filters, error)) {
      CM_FUZZ_CHECK(!error.empty(), "refused filters say why");
      check_no_value_quoted(error, values, keys, s.filters_text);
    } else {
      CM_FUZZ_CHECK(filters.is_object(), "accepted filters are an object");
    }
  }

  std::string sa_problem;
  auto key = oauth::parse_service_account(std::string(text), sa_problem);
  if (key) {
    CM_FUZZ_CHECK(key->client_email.find('@') != std::string::npos, "a key has a client_email");
    // The private key's checks (PEM, PKCS#8, RSA sizes) before any signing.
    std::string key_problem;
    if (!oauth::check_signing_key(key->private_key, key_problem))
      CM_FUZZ_CHECK(key_problem.rfind("api_key: private_key ", 0) == 0,
                    "a refused private key names the field");
  } else {
    CM_FUZZ_CHECK(!sa_problem.empty(), "a refused key says why");
  }

  auto res = http::json_response(200, body);
  CM_FUZZ_CHECK(!res.body.empty(), "a response has a body");
  return 0;
}

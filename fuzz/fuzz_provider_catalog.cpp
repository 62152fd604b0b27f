// YAML configuration: config/providers.yaml through
// config::parse_provider_catalog (yaml-cpp, config/yaml_schema.cpp and every
// check in config/provider_catalog.cpp), and the same text as the service
// file through config::parse_service_config. A catalog that loads is then
// used the way the service uses it: its JSON schemas are built
// (config/connector_schema.cpp), its URLs expanded with the defaults, and a
// deployment's URL overrides applied.
//
// A bad file must end in an exception the service reports (config_error,
// or another std::exception, which `serve` and hot reload also catch):
// never a crash, a hang or a leak.
#include <stdexcept>

#include "config/connector_schema.hpp"
#include "config/provider_catalog.hpp"
#include "config/service_config.hpp"
#include "config/yaml_schema.hpp"
#include "fuzz/fuzz_support.hpp"
#include "provider/oauth_protocol.hpp"

using namespace cm;

namespace {

void use_catalog(config::provider_catalog& catalog) {
  CM_FUZZ_CHECK(!catalog.providers.empty(), "a loaded catalog has providers");
  for (auto& [name, entry] : catalog.providers) {
    CM_FUZZ_CHECK(entry.mode != config::auth_mode::oauth2 ||
                    (!entry.authorization_url.empty() && !entry.token_url.empty()),
                  "an OAuth entry has its URLs");
    CM_FUZZ_CHECK(entry.mode == config::auth_mode::oauth2 || entry.api_key.has_value(),
                  "a key entry says how to check a key");
    (void)config::connector_config_schema(entry);
    (void)config::connector_filters_schema(entry);
    (void)config::filter_options_json(entry);
    nlohmann::json defaults = nlohmann::json::object();
    for (auto& [k, v] : entry.template_defaults)
      defaults[k] = v;
    (void)oauth::expand_url(entry, entry.token_url, defaults);
  }
  std::map<std::string, config::provider_settings> settings;
  settings[catalog.providers.begin()->first].urls["token_url"] = "http://127.0.0.1:1/token";
  try {
    config::apply_provider_settings(catalog, settings);
  } catch (const config::config_error&) {
  }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(fuzz::as_text(data, size));
  try {
    auto catalog = config::parse_provider_catalog(text, "providers.yaml");
    use_catalog(catalog);
  } catch (const config::config_error& e) {
    CM_FUZZ_CHECK(std::string(e.what()).rfind("providers.yaml", 0) == 0,
                  "a catalog error names the file");
  } catch (const std::exception&) {
  }
  char* no_env[] = {nullptr};
  try {
    (void)config::parse_service_config(text, "connector-manager.yaml", no_env);
  } catch (const config::config_error& e) {
    CM_FUZZ_CHECK(std::string(e.what()).rfind("connector-manager.yaml", 0) == 0,
                  "a service config error names the file");
  } catch (const std::exception&) {
  }
  return 0;
}

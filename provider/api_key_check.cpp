#include "provider/api_key_check.hpp"

#include "provider/credential_scheme.hpp"
#include "provider/oauth_protocol.hpp"

namespace cm::api_key {

std::optional<outbound_request> validation_request(const config::provider_entry& entry,
                                                   const std::string& key,
                                                   const nlohmann::json& fields,
                                                   int64_t timeout_ms) {
  if (!entry.api_key)
    return std::nullopt;
  auto& check = *entry.api_key;
  auto values = fields.is_object() ? fields : nlohmann::json::object();
  for (auto& [k, v] : entry.template_defaults)
    if (!values.contains(k))
      values[k] = v;
  auto made = oauth::provider_request(entry, check.validate_url, values, timeout_ms);
  if (!made)
    return std::nullopt;
  auto& req = *made;
  req.method = check.method;
  // A validation answer is small; anything large is not the answer we want.
  req.max_response_bytes = 256 * 1024;
  credential::present_api_key(check, key, values, req);
  for (auto& [name, value] : check.headers)
    req.headers.emplace_back(name, value);
  if (!check.body.empty()) {
    req.body = check.body;
    req.headers.emplace_back("Content-Type", "application/json");
  }
  return made;
}

outcome read_validation(const config::provider_entry& entry, const outbound_response& res) {
  outcome out;
  if (res.error != transport_error::none) {
    out.reason = std::string("provider unreachable (") + to_string(res.error) + ")";
    return out;
  }
  auto status = "HTTP " + std::to_string(res.status);
  bool klaviyo = entry.api_key && entry.api_key->scheme == "klaviyo";
  if (res.status == 401 || res.status == 403 || (klaviyo && res.status == 400)) {
    out.result = verdict::rejected;
    out.reason = status;
    return out;
  }
  if (res.status < 200 || res.status >= 300) {
    out.reason = status;
    return out;
  }
  auto json = nlohmann::json::parse(res.body, nullptr, false);
  if (json.is_discarded() || !(json.is_object() || json.is_array())) {
    out.reason = status + " with an answer that is not JSON";
    return out;
  }
  // GraphQL reports a refused token as errors without data.
  if (json.is_object() && json.contains("errors") &&
      (!json.contains("data") || json["data"].is_null())) {
    out.result = verdict::rejected;
    out.reason = status + " with GraphQL errors";
    return out;
  }
  out.result = verdict::valid;
  out.reason = status;
  auto& pointer = entry.api_key->account_pointer;
  if (!pointer.empty()) {
    nlohmann::json::json_pointer ptr{pointer};
    if (json.contains(ptr) && !json[ptr].is_null())
      out.account_name = json[ptr].is_string() ? json[ptr].get<std::string>() : json[ptr].dump();
  }
  return out;
}

} // namespace cm::api_key

#include "provider/api_key_check.hpp"

#include <cstring>

#include <sodium.h>

#include "provider/oauth_protocol.hpp"

namespace cm::api_key {

namespace {

std::string basic(const std::string& user, const std::string& password) {
  auto plain = user + ":" + password;
  std::string b64(sodium_base64_ENCODED_LEN(plain.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(b64.data(), b64.size(), reinterpret_cast<const unsigned char*>(plain.data()),
                    plain.size(), sodium_base64_VARIANT_ORIGINAL);
  b64.resize(std::strlen(b64.c_str()));
  sodium_memzero(plain.data(), plain.size());
  return "Basic " + b64;
}

} // namespace

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
  auto url = oauth::expand_url(entry, check.validate_url, values);
  if (!url)
    return std::nullopt;
  outbound_request req;
  req.method = check.method;
  req.url = *url;
  req.timeout_ms = timeout_ms;
  // A validation answer is small; anything large is not the answer we want.
  req.max_response_bytes = 256 * 1024;
  req.headers.emplace_back("Accept", "application/json");
  auto email = values.value("email", "");
  if (check.scheme == "bearer")
    req.headers.emplace_back("Authorization", "Bearer " + key);
  else if (check.scheme == "basic")
    req.headers.emplace_back("Authorization", basic(key, ""));
  else if (check.scheme == "basic_email")
    req.headers.emplace_back("Authorization", basic(email, key));
  else if (check.scheme == "basic_token")
    req.headers.emplace_back("Authorization", basic(email + "/token", key));
  else if (check.scheme == "klaviyo")
    req.headers.emplace_back("Authorization", "Klaviyo-API-Key " + key);
  else
    req.headers.emplace_back(check.header, key);
  for (auto& [name, value] : check.headers)
    req.headers.emplace_back(name, value);
  if (!check.body.empty()) {
    req.body = check.body;
    req.headers.emplace_back("Content-Type", "application/json");
  }
  return req;
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

#include "provider/credential_scheme.hpp"

#include "provider/oauth_protocol.hpp"

namespace cm::credential {

void present_token(const std::string& auth, const std::string& token, outbound_request& req) {
  if (auth.rfind("header:", 0) == 0) {
    req.headers.emplace_back(auth.substr(7), token);
  } else if (auth.rfind("query:", 0) == 0) {
    req.url += req.url.find('?') == std::string::npos ? "?" : "&";
    req.url += oauth::form_encode({{auth.substr(6), token}});
  } else {
    req.headers.emplace_back("Authorization", "Bearer " + token);
  }
}

void present_api_key(const config::api_key_check& check, const std::string& key,
                     const nlohmann::json& fields, outbound_request& req) {
  auto email = fields.is_object() ? fields.value("email", "") : std::string{};
  if (check.scheme == "bearer")
    req.headers.emplace_back("Authorization", "Bearer " + key);
  else if (check.scheme == "basic")
    req.headers.emplace_back("Authorization", oauth::basic_auth(key, ""));
  else if (check.scheme == "basic_email")
    req.headers.emplace_back("Authorization", oauth::basic_auth(email, key));
  else if (check.scheme == "basic_token")
    req.headers.emplace_back("Authorization", oauth::basic_auth(email + "/token", key));
  else if (check.scheme == "klaviyo")
    req.headers.emplace_back("Authorization", "Klaviyo-API-Key " + key);
  else
    req.headers.emplace_back(check.header, key);
}

} // namespace cm::credential

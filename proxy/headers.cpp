#include "proxy/headers.hpp"

#include <algorithm>
#include <cctype>
#include <string_view>

#include "provider/oauth_protocol.hpp"

namespace cm::proxy {

namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

/// Request headers every provider gets, lower case.
bool content_header(const std::string& name) {
  static const char* const names[] = {
    "content-type",      "accept",         "accept-language",     "content-language",
    "if-match",          "if-none-match",  "if-modified-since",   "if-unmodified-since",
    "idempotency-key",
  };
  return std::any_of(std::begin(names), std::end(names), [&](const char* n) { return name == n; });
}

/// Answer headers a caller gets, lower case (Content-Type apart).
bool safe_answer_header(const std::string& name) {
  static const char* const names[] = {
    "content-language", "cache-control", "etag",     "last-modified", "expires",
    "location",         "link",          "retry-after",
    // Rate limits and request ids of the providers in the catalog.
    "x-shopify-shop-api-call-limit", "x-github-request-id", "request-id",
    "x-business-use-case-usage", "x-app-usage", "x-ad-account-usage",
    "x-ms-throttle-limit-percentage", "x-ms-resource-unit",
  };
  if (std::any_of(std::begin(names), std::end(names), [&](const char* n) { return name == n; }))
    return true;
  return starts_with(name, "x-ratelimit-") || starts_with(name, "ratelimit") ||
         starts_with(name, "x-rate-limit-");
}

} // namespace

header_list forwarded_request_headers(const header_list& caller,
                                      const std::vector<std::string>& also) {
  header_list out;
  for (auto& [name, value] : caller) {
    auto key = lower(name);
    bool extra = std::any_of(also.begin(), also.end(),
                             [&](const std::string& a) { return lower(a) == key; });
    // No value may carry a line break into the provider's request.
    if ((content_header(key) || extra) && value.find_first_of("\r\n") == std::string::npos)
      out.emplace_back(name, value);
  }
  return out;
}

header_list returned_headers(const std::map<std::string, std::string>& lower_headers,
                             const std::string& credential, std::string& content_type) {
  header_list out;
  content_type.clear();
  for (auto& [name, value] : lower_headers) {
    if (!credential.empty() && value.find(credential) != std::string::npos)
      continue;
    if (name == "content-type")
      content_type = value;
    else if (safe_answer_header(name))
      out.emplace_back(name, value);
  }
  return out;
}

size_t redact(std::string& text, const std::string& credential) {
  if (credential.empty())
    return 0;
  size_t count = 0;
  auto encoded = oauth::form_encode({{"", credential}}).substr(1);
  for (const std::string* form : {&credential, static_cast<const std::string*>(&encoded)}) {
    size_t at = 0;
    while ((at = text.find(*form, at)) != std::string::npos) {
      text.replace(at, form->size(), "[redacted]");
      at += 10;
      ++count;
    }
    if (encoded == credential)
      break;
  }
  return count;
}

} // namespace cm::proxy

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
    "content-language", "etag",     "last-modified", "location", "link", "retry-after",
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

bool never_forwarded(const std::string& name) {
  static const char* const names[] = {
    "authorization", "proxy-authorization", "cookie",            "set-cookie",
    "host",          "content-length",      "transfer-encoding", "connection",
    "keep-alive",    "te",                  "trailer",           "upgrade",
    "proxy-connection", "expect",           "x-connection-user-id", "x-connection-team-id",
    "x-services-token", "forwarded",        "x-forwarded-for",   "x-forwarded-host",
  };
  return std::any_of(std::begin(names), std::end(names), [&](const char* n) { return name == n; });
}

header_list forwarded_request_headers(const header_list& caller,
                                      const std::vector<std::string>& also) {
  header_list out;
  for (auto& [name, value] : caller) {
    auto key = lower(name);
    if (never_forwarded(key))
      continue;
    bool extra = std::any_of(also.begin(), also.end(),
                             [&](const std::string& a) { return lower(a) == key; });
    // No value may carry a line break into the provider's request.
    if ((content_header(key) || extra) && value.find_first_of("\r\n") == std::string::npos)
      out.emplace_back(name, value);
  }
  return out;
}

std::vector<std::string> credential_forms(const std::vector<std::string>& presented) {
  std::vector<std::string> bases;
  for (auto& value : presented) {
    if (value.empty())
      continue;
    bases.push_back(value);
    if (value.rfind("Basic ", 0) == 0 && value.size() > 6)
      bases.push_back(value.substr(6));
  }
  std::vector<std::string> forms;
  auto add = [&](std::string form) {
    if (!form.empty() && std::find(forms.begin(), forms.end(), form) == forms.end())
      forms.push_back(std::move(form));
  };
  for (auto& value : bases) {
    add(value);
    auto upper = oauth::form_encode({{"", value}}).substr(1);
    add(upper);
    std::string lower_hex = upper;
    for (size_t i = 0; i + 2 < lower_hex.size(); ++i)
      if (lower_hex[i] == '%') {
        lower_hex[i + 1] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower_hex[i + 1])));
        lower_hex[i + 2] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower_hex[i + 2])));
      }
    add(lower_hex);
    // As a JSON string would carry it: nlohmann escapes no '/', others do.
    std::string json_escaped;
    for (char c : value) {
      if (c == '/')
        json_escaped += "\\/";
      else if (c == '+')
        json_escaped += "\\u002b";
      else
        json_escaped += c;
    }
    add(json_escaped);
  }
  return forms;
}

header_list returned_headers(const std::map<std::string, std::string>& lower_headers,
                             const std::vector<std::string>& forms, std::string& content_type) {
  header_list out;
  content_type.clear();
  for (auto& [name, value] : lower_headers) {
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      continue;
    if (std::any_of(forms.begin(), forms.end(),
                    [&](const std::string& f) { return value.find(f) != std::string::npos; }))
      continue;
    if (name == "content-type")
      content_type = value;
    else if (safe_answer_header(name))
      out.emplace_back(name, value);
  }
  return out;
}

size_t redact(std::string& text, const std::vector<std::string>& forms) {
  size_t count = 0;
  for (auto& form : forms) {
    if (form.empty())
      continue;
    size_t at = 0;
    while ((at = text.find(form, at)) != std::string::npos) {
      text.replace(at, form.size(), "[redacted]");
      at += 10;
      ++count;
    }
  }
  return count;
}

} // namespace cm::proxy

#include "provider/oauth_protocol.hpp"

#include <cctype>
#include <cstring>
#include <cmath>
#include <ctime>
#include <regex>

#include <sodium.h>

#include "config/template_value.hpp"

namespace cm::oauth {

const char* to_string(outcome o) {
  switch (o) {
    case outcome::ok: return "ok";
    case outcome::invalid_grant: return "invalid_grant";
    case outcome::rejected: return "rejected";
    case outcome::rate_limited: return "rate_limited";
    case outcome::unavailable: return "unavailable";
    case outcome::possibly_consumed: return "possibly_consumed";
    case outcome::malformed: return "malformed";
  }
  return "malformed";
}

int64_t clamp_expires_in(const nlohmann::json& value, int64_t fallback) {
  double seconds = 0;
  if (value.is_number()) {
    seconds = value.get<double>();
  } else if (value.is_string()) {
    auto text = value.get<std::string>();
    char* end = nullptr;
    seconds = std::strtod(text.c_str(), &end);
    if (text.empty() || end == nullptr || *end != '\0')
      seconds = 0;
  }
  // Below one second is zero once truncated: 0.5 must not become "expires
  // now" (a refresh loop with a refresh token, "never" without one).
  if (!std::isfinite(seconds) || seconds < 1)
    return fallback;
  if (seconds > static_cast<double>(max_expires_in_s))
    return max_expires_in_s;
  return static_cast<int64_t>(seconds);
}

int64_t parse_retry_after(const std::string& value) {
  if (value.empty())
    return 0;
  int64_t seconds = 0;
  if (std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c); })) {
    seconds = value.size() > 9 ? 3600 : std::stoll(value);
  } else {
    std::tm tm{};
    if (strptime(value.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) == nullptr)
      return 0;
    seconds = static_cast<int64_t>(timegm(&tm) - std::time(nullptr));
  }
  return std::clamp<int64_t>(seconds, 0, 3600);
}

std::string form_encode(const std::vector<std::pair<std::string, std::string>>& fields) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  auto encode = [&](const std::string& s) {
    for (unsigned char c : s) {
      if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
        out.push_back(static_cast<char>(c));
      } else {
        out.push_back('%');
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 0xf]);
      }
    }
  };
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i)
      out.push_back('&');
    encode(fields[i].first);
    out.push_back('=');
    encode(fields[i].second);
  }
  return out;
}

std::optional<std::string> expand_url(const config::provider_entry& entry, const std::string& url,
                                      const nlohmann::json& values) {
  static const std::regex placeholder{"\\{([a-z_]+)\\}"};
  std::string out;
  auto begin = url.cbegin();
  for (std::sregex_iterator it(url.begin(), url.end(), placeholder), end; it != end; ++it) {
    auto name = (*it)[1].str();
    auto pattern = entry.template_params.find(name);
    if (pattern == entry.template_params.end() || !values.is_object() ||
        !values.contains(name) || !values[name].is_string())
      return std::nullopt;
    auto value = values[name].get<std::string>();
    if (!config::template_value_problem(value, pattern->second).empty())
      return std::nullopt;
    out.append(begin, url.cbegin() + it->position());
    out += value;
    begin = url.cbegin() + it->position() + it->length();
  }
  out.append(begin, url.cend());
  return out;
}

std::string basic_auth(const std::string& user, const std::string& password) {
  auto plain = user + ":" + password;
  std::string b64(sodium_base64_ENCODED_LEN(plain.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(b64.data(), b64.size(), reinterpret_cast<const unsigned char*>(plain.data()),
                    plain.size(), sodium_base64_VARIANT_ORIGINAL);
  b64.resize(std::strlen(b64.c_str()));
  sodium_memzero(plain.data(), plain.size());
  return "Basic " + b64;
}

std::string basic_credentials(const client_credentials& client) {
  // RFC 6749 §2.3.1: both parts form-encoded before base64.
  return basic_auth(form_encode({{"", client.client_id}}).substr(1),
                    form_encode({{"", client.client_secret.reveal()}}).substr(1));
}

std::optional<outbound_request> provider_request(const config::provider_entry& entry,
                                                 const std::string& url_template,
                                                 const nlohmann::json& values,
                                                 int64_t timeout_ms) {
  auto url = expand_url(entry, url_template, values);
  if (!url)
    return std::nullopt;
  outbound_request req;
  req.url = *url;
  req.timeout_ms = timeout_ms;
  req.provider = entry.name;
  req.headers.emplace_back("Accept", "application/json");
  return req;
}

namespace {

std::vector<std::string> split_scopes(const std::string& text, const std::string& separator) {
  std::vector<std::string> out;
  std::string sep = separator.empty() ? " " : separator;
  size_t pos = 0;
  while (pos <= text.size()) {
    auto next = text.find(sep, pos);
    auto part = text.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    // Some providers mix separators (comma-separated with spaces).
    part.erase(0, part.find_first_not_of(' '));
    if (auto last = part.find_last_not_of(' '); last != std::string::npos)
      part.erase(last + 1);
    if (!part.empty())
      out.push_back(part);
    if (next == std::string::npos)
      break;
    pos = next + sep.size();
  }
  return out;
}

/// Maps an OAuth error code to an outcome.
outcome classify_error(const std::string& code) {
  // GitHub says bad_refresh_token for a dead refresh token.
  if (code == "invalid_grant" || code == "bad_refresh_token" || code == "token_expired")
    return outcome::invalid_grant;
  if (code == "temporarily_unavailable" || code == "server_error")
    return outcome::unavailable;
  if (code == "slow_down")
    return outcome::rate_limited;
  return outcome::rejected;
}

/// Only a short, known-safe error code may travel on into reasons.
std::string safe_code(const nlohmann::json& value) {
  if (!value.is_string())
    return "error";
  auto code = value.get<std::string>();
  if (code.size() > 64 || !std::all_of(code.begin(), code.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '_' || c == '.' || c == '-';
      }))
    return "error";
  return code;
}

} // namespace

std::optional<outbound_request> refresh_request(const config::provider_entry& entry,
                                                const client_credentials& client,
                                                const secret& refresh_token,
                                                const nlohmann::json& url_values,
                                                int64_t timeout_ms) {
  auto url = expand_url(entry, entry.refresh_url.empty() ? entry.token_url : entry.refresh_url,
                        url_values);
  if (!url)
    return std::nullopt;
  outbound_request req;
  req.method = "POST";
  req.url = *url;
  req.timeout_ms = timeout_ms;
  req.provider = entry.name;
  req.headers.emplace_back("Accept", "application/json");
  if (entry.client_auth == config::client_auth_style::json) {
    nlohmann::json body = {{"grant_type", "refresh_token"},
                           {"refresh_token", refresh_token.reveal()},
                           {"client_id", client.client_id},
                           {"client_secret", client.client_secret.reveal()}};
    for (auto& [k, v] : entry.token_params)
      body[k] = v;
    req.body = body.dump();
    req.headers.emplace_back("Content-Type", "application/json");
    return req;
  }
  std::vector<std::pair<std::string, std::string>> fields = {
    {"grant_type", "refresh_token"}, {"refresh_token", refresh_token.reveal()}};
  if (entry.client_auth == config::client_auth_style::basic) {
    req.headers.emplace_back("Authorization", basic_credentials(client));
  } else {
    fields.emplace_back("client_id", client.client_id);
    fields.emplace_back("client_secret", client.client_secret.reveal());
  }
  for (auto& [k, v] : entry.token_params)
    fields.emplace_back(k, v);
  req.body = form_encode(fields);
  req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  return req;
}

token_answer read_token_answer(const config::provider_entry& entry, const outbound_response& res) {
  token_answer answer;
  auto status_text = "HTTP " + std::to_string(res.status);
  switch (res.error) {
    case transport_error::none: break;
    case transport_error::timeout_after_send:
    case transport_error::network:
      answer.result = outcome::possibly_consumed;
      answer.reason = std::string("no answer after sending (") + to_string(res.error) + ")";
      return answer;
    case transport_error::too_large:
      answer.result = outcome::malformed;
      answer.reason = "answer too large";
      return answer;
    default:
      answer.result = outcome::unavailable;
      answer.reason = std::string("provider unreachable (") + to_string(res.error) + ")";
      return answer;
  }
  answer.retry_after_s = parse_retry_after(res.header("retry-after"));
  if (res.status == 429) {
    answer.result = outcome::rate_limited;
    answer.reason = status_text;
    return answer;
  }
  if (res.status >= 500) {
    answer.result = outcome::unavailable;
    answer.reason = status_text;
    return answer;
  }
  auto json = nlohmann::json::parse(res.body, nullptr, false);
  if (entry.token_style == "tiktok_envelope" && json.is_object()) {
    // {code, message, data}: code 0 is success whatever the HTTP status.
    // Untrusted: `code` may be missing or not a number.
    auto code = json.contains("code") && json["code"].is_number_integer()
                  ? json["code"].get<int64_t>() : int64_t{-1};
    if (code != 0) {
      answer.result = outcome::rejected;
      answer.reason = status_text + " code " + std::to_string(code);
      return answer;
    }
    json = json.contains("data") ? json["data"] : nlohmann::json::object();
  }
  if (!json.is_object()) {
    answer.result = res.status >= 400 ? outcome::rejected : outcome::malformed;
    answer.reason = status_text + " (not JSON)";
    return answer;
  }
  if (json.contains("error")) {
    auto code = safe_code(json["error"]);
    answer.result = classify_error(code);
    answer.reason = status_text + " " + code;
    return answer;
  }
  if (res.status >= 400) {
    answer.result = outcome::rejected;
    answer.reason = status_text;
    return answer;
  }
  if (!json.contains("access_token") || !json["access_token"].is_string() ||
      json["access_token"].get<std::string>().empty()) {
    answer.result = outcome::malformed;
    answer.reason = status_text + " without access_token";
    return answer;
  }
  answer.result = outcome::ok;
  answer.access_token = secret{json["access_token"].get<std::string>()};
  if (json.contains("refresh_token") && json["refresh_token"].is_string())
    answer.refresh_token = secret{json["refresh_token"].get<std::string>()};
  auto expires_in = json.value("expires_in", nlohmann::json{});
  answer.expires_in_s = clamp_expires_in(expires_in, entry.default_expires_in_s);
  answer.expires_in_given = clamp_expires_in(expires_in, -1) > 0;
  for (auto& [key, pointer] : entry.token_metadata) {
    nlohmann::json::json_pointer ptr{pointer};
    if (json.contains(ptr))
      answer.metadata[key] = json[ptr];
  }
  if (json.contains("token_type") && json["token_type"].is_string())
    answer.token_type = json["token_type"].get<std::string>();
  if (json.contains("scope") && json["scope"].is_string())
    answer.scopes = split_scopes(json["scope"].get<std::string>(), entry.scope_separator);
  answer.reason = status_text;
  return answer;
}

} // namespace cm::oauth

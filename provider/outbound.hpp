// Outbound HTTP to providers: the request and response as plain data, so
// they can travel in actor messages.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <caf/meta/type_name.hpp>

namespace cm {

struct outbound_request {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  int64_t timeout_ms = 10000;
  /// Larger answers are cut off and reported as `too_large`.
  int64_t max_response_bytes = 1 << 20;
  /// Whom the call is for (the catalog's provider name, "webhook", …):
  /// the label of its latency in GET /metrics; "" counts as "other".
  std::string provider;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, outbound_request& x) {
    return f(caf::meta::type_name("outbound_request"), x.method, x.url, x.headers, x.body,
             x.timeout_ms, x.max_response_bytes, x.provider);
  }
};

/// What went wrong below HTTP, if anything.
enum class transport_error : uint8_t {
  none = 0,
  /// No connection could be made; the request was certainly not sent.
  connect_failed,
  /// Timed out before the request was sent.
  timeout_before_send,
  /// Timed out after the request was sent: the provider may have acted on
  /// it (e.g. consumed a one-time refresh token).
  timeout_after_send,
  /// The connection broke after sending.
  network,
  /// The answer exceeded max_response_bytes.
  too_large,
  /// Shut down before completion.
  cancelled,
};

const char* to_string(transport_error e);

struct outbound_response {
  transport_error error = transport_error::none;
  int64_t status = 0;
  /// Header names in lower case.
  std::map<std::string, std::string> headers;
  std::string body;

  bool ok() const { return error == transport_error::none && status >= 200 && status < 300; }
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string{} : it->second;
  }

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, outbound_response& x) {
    return f(caf::meta::type_name("outbound_response"), x.error, x.status, x.headers, x.body);
  }
};

} // namespace cm

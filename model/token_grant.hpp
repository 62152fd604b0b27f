// A token handed to a caller (over HTTP, by message, to the routes that
// call providers): never the refresh token.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/meta/type_name.hpp>

#include "common/secret.hpp"
#include "model/connection_key.hpp"
#include "model/connection_kind.hpp"

namespace cm {

struct token_grant {
  connection_key key;
  connection_kind kind = connection_kind::oauth;
  secret access_token;
  /// "Bearer" for OAuth, "api_key" for keys.
  std::string token_type = "Bearer";
  /// Unix milliseconds; 0 when it does not expire.
  int64_t expires_at_ms = 0;
  std::vector<std::string> scopes;
  /// JSON object text.
  std::string metadata = "{}";

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, token_grant& x) {
    return f(caf::meta::type_name("token_grant"), x.key, x.kind, x.access_token, x.token_type,
             x.expires_at_ms, x.scopes, x.metadata);
  }
};

} // namespace cm

// Plain data that crosses the storage boundary: what a stored connection is,
// and the summary that may be shown without revealing a secret.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include <caf/meta/type_name.hpp>

#include "common/secret.hpp"

namespace cm {

/// Identifies one connection: a user's grant for one provider in one team.
struct connection_key {
  std::string team_id;
  std::string user_id;
  std::string provider;

  friend bool operator<(const connection_key& a, const connection_key& b) {
    return std::tie(a.team_id, a.user_id, a.provider) <
           std::tie(b.team_id, b.user_id, b.provider);
  }
  friend bool operator==(const connection_key& a, const connection_key& b) {
    return a.team_id == b.team_id && a.user_id == b.user_id && a.provider == b.provider;
  }
  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, connection_key& x) {
    return f(caf::meta::type_name("connection_key"), x.team_id, x.user_id, x.provider);
  }
};

/// A stored connection with its secrets decrypted.
struct token_record {
  /// UUID, chosen by the service so ciphertexts can bind to it before insert.
  std::string id;
  connection_key key;
  /// "oauth" or "api_key".
  std::string kind = "oauth";
  /// "connected", "needs_reauth" or "disconnected".
  std::string status = "connected";
  std::string reason;
  secret access_token;
  secret refresh_token;
  /// Unix milliseconds; 0 when the token does not expire.
  int64_t expires_at_ms = 0;
  std::vector<std::string> scopes;
  /// JSON object text (account name, provider fields); never a secret.
  std::string metadata = "{}";
  /// Fencing counter, bumped by every write.
  int64_t version = 0;
  int64_t created_at_ms = 0;
  int64_t updated_at_ms = 0;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, token_record& x) {
    return f(caf::meta::type_name("token_record"), x.id, x.key, x.kind, x.status, x.reason,
             x.access_token, x.refresh_token, x.expires_at_ms, x.scopes, x.metadata,
             x.version, x.created_at_ms, x.updated_at_ms);
  }
};

/// What a listing shows: everything but the secrets.
struct token_summary {
  connection_key key;
  std::string kind;
  std::string status;
  std::string reason;
  int64_t expires_at_ms = 0;
  std::vector<std::string> scopes;
  std::string metadata = "{}";
  int64_t updated_at_ms = 0;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, token_summary& x) {
    return f(caf::meta::type_name("token_summary"), x.key, x.kind, x.status, x.reason,
             x.expires_at_ms, x.scopes, x.metadata, x.updated_at_ms);
  }
};

using token_summaries = std::vector<token_summary>;

} // namespace cm

// SQL for service_tokens (migration 0011): the service tokens an operator
// creates with `connector-manager service-tokens`, stored as SHA-256
// hashes. Used by that command and by the watcher every instance runs
// (storage/service_token_watcher.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "storage/database.hpp"

namespace cm::storage {

struct stored_service_token {
  std::string id;
  std::string name;
  /// Lower-case hex SHA-256 of the token.
  std::string sha256_hex;
  std::vector<std::string> scopes;
  int64_t created_at_ms = 0;
  /// 0 while the token is live.
  int64_t revoked_at_ms = 0;
};

class service_token_store {
public:
  explicit service_token_store(database& db) : db_(db) {}

  /// Stores a new token's hash. Throws db_error(conflict) when a live
  /// token has this name (or, by a 2^-256 chance, this hash).
  stored_service_token create(const std::string& name, const std::string& sha256_hex,
                              const std::vector<std::string>& scopes);

  /// The live tokens (and the revoked ones too with `with_revoked`),
  /// oldest first.
  std::vector<stored_service_token> list(bool with_revoked);

  /// Revokes the live token named `name`; false when there is none.
  bool revoke(const std::string& name);

private:
  database& db_;
};

/// A new service token: "cmst_" and 43 characters of base64url (256
/// random bits). The prefix lets secret scanners recognize a leaked one.
std::string new_service_token();

/// Whether `name` can name a service token: 1 to 64 of A-Z a-z 0-9 "._-".
bool valid_service_token_name(const std::string& name);

/// Whether `scope` can be a scope: 1 to 64 of A-Z 0-9 "_" (FETCH_CONFIG).
bool valid_scope(const std::string& scope);

} // namespace cm::storage

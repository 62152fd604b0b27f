// Who is calling: users by Bearer JWT (HS256 shared secret or RS256 public
// key, via libjwt), services by a configured service token (compared in
// constant time against its stored SHA-256) or by a Bearer JWT whose
// `scopes` claim names what it may do. Guards turn an identity into an
// allow/deny decision for a route.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "config/service_config.hpp"
#include "http/exchange.hpp"

namespace cm::http {

struct identity {
  enum class kind { user, service };
  kind type = kind::user;
  /// User id (`sub`) or service name.
  std::string subject;
  std::string team;
  std::string email;
  /// "admin" or "member" for users; empty for services.
  std::string role;
  std::vector<std::string> scopes;

  bool is_user() const { return type == kind::user; }
  bool is_service() const { return type == kind::service; }
  bool is_admin() const { return is_user() && role == "admin"; }
  bool has_scope(const std::string& scope) const;
};

/// The scope services need for the /api/v1/connectors internal routes.
inline constexpr const char* scope_fetch_config = "FETCH_CONFIG";

/// The scope a service needs to scrape GET /metrics on the main port.
inline constexpr const char* scope_metrics = "METRICS";

/// The scope a service needs to call providers through /api/proxy.
inline constexpr const char* scope_proxy = "PROXY";

/// The service tokens an operator created (stored as hashes in the
/// database, storage/service_token_watcher.hpp), replaced whole whenever
/// they are read again. One set is shared by every authenticator a
/// configuration reload builds. Thread-safe.
class stored_service_tokens {
public:
  struct entry {
    std::string name;
    std::vector<std::string> scopes;
  };
  /// By lower-case hex SHA-256 of the token.
  using by_digest = std::unordered_map<std::string, entry>;

  void replace(by_digest tokens);
  /// The current set (never null).
  std::shared_ptr<const by_digest> current() const;

private:
  std::shared_ptr<const by_digest> current_ = std::make_shared<const by_digest>();
};

class authenticator {
public:
  /// Loads the key files named in `cfg`. Throws config::config_error.
  /// `stored`: the operator's tokens besides the configured ones (null:
  /// only the configured ones).
  explicit authenticator(const config::auth_config& cfg,
                         std::shared_ptr<const stored_service_tokens> stored = nullptr);
  ~authenticator();
  authenticator(const authenticator&) = delete;
  authenticator& operator=(const authenticator&) = delete;

  /// Identifies the caller from the request headers. Errors are
  /// `unauthenticated` with a message that never quotes the credential.
  caf::expected<identity> authenticate(const request& req) const;

  /// Identifies a member from a browser form's field `session` (a session
  /// JWT; a form posted by a navigation cannot carry Authorization). Only
  /// application/x-www-form-urlencoded bodies are read.
  caf::expected<identity> authenticate_form(const request& req) const;

  /// Verifies one Bearer JWT.
  caf::expected<identity> verify_jwt(const std::string& token) const;

  /// Checks a service token against the configured hashes, then the
  /// stored ones.
  caf::expected<identity> verify_service_token(const std::string& token) const;

  /// The operator's tokens this authenticator also accepts (may be null).
  const std::shared_ptr<const stored_service_tokens>& stored_tokens() const { return stored_; }

  /// Signs a session JWT with the HS256 secret (for `mint-token`).
  /// Throws std::runtime_error if no HS256 secret is configured.
  std::string mint(const std::string& user, const std::string& team, const std::string& email,
                   const std::string& role, long ttl_seconds) const;

private:
  config::auth_config cfg_;
  std::string hs256_secret_;
  std::string rs256_public_key_;
  std::vector<std::string> service_headers_;
  std::shared_ptr<const stored_service_tokens> stored_;
};

/// Lower-case hex SHA-256 (for service token hashes).
std::string sha256_hex(std::string_view data);

// Guards: an empty error means allowed.

/// Any user of a team.
caf::error require_user(const identity& who);
/// A team admin.
caf::error require_admin(const identity& who);
/// A service (token or JWT) holding `scope`.
caf::error require_service(const identity& who, const std::string& scope);
/// An admin user, or a service holding `scope`.
caf::error require_admin_or_service(const identity& who, const std::string& scope);

} // namespace cm::http

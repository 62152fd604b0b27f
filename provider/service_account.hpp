// Google service-account keys (the JSON key file a member gives as the
// Google Analytics `api_key`) and the JWT-bearer grant (RFC 7523) signed
// with them. Pure functions, no I/O.
//
// Whoever writes a key file chooses what signing with it costs: an RSA
// modulus of 30,000 bits whose CRT values do not match makes OpenSSL fall
// back to a full-size exponentiation that takes seconds (45,000 bits: about
// a minute). So a key is signed with only once it passed, in order of cost:
// the shape (one unencrypted PKCS#8 block holding a two-prime RSA key), the
// sizes Google issues (a 2048- to 4096-bit modulus, every other part no
// longer than the modulus, primes of half its size), then OpenSSL's own
// consistency check (RSA_check_key: primes, n = p·q, d, the CRT values),
// which the sizes bound. Checking and signing are still CPU work (up to
// about half a second for a 4096-bit key on a loaded machine): they run on
// the key signer's threads (actors/key_signer_actor.hpp), never on a CAF
// worker.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <caf/meta/type_name.hpp>

#include "common/secret.hpp"
#include "provider/outbound.hpp"

namespace cm::config {
struct provider_entry;
}

namespace cm::oauth {

/// A Google service-account key (the JSON file), checked for the fields the
/// JWT-bearer grant needs.
struct service_account_key {
  std::string client_email;
  std::string private_key_id;
  secret private_key;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, service_account_key& x) {
    return f(caf::meta::type_name("service_account_key"), x.client_email, x.private_key_id,
             x.private_key);
  }
};

/// Parses a service-account key file (JSON only: the private key is checked
/// by check_signing_key); nullopt (with `problem`) when it is not one.
std::optional<service_account_key> parse_service_account(const std::string& json,
                                                         std::string& problem);

/// Modulus sizes accepted: Google issues 2048-bit keys; 4096 leaves room.
inline constexpr int min_signing_key_bits = 2048;
inline constexpr int max_signing_key_bits = 4096;

/// Whether `pem` is a private key this service signs with (see the top of
/// this file). On refusal, `problem` names the field (api_key) and says
/// what is wrong, never any key material.
bool check_signing_key(const secret& pem, std::string& problem);

/// Everything a JWT-bearer grant needs. Cheap to build; signing it is not.
/// Travels to the key signer in a message (in-process only).
struct jwt_bearer_grant {
  service_account_key key;
  /// The audience and the URL called: the configured token URL, never the
  /// key file's token_uri (which the caller controls).
  std::string token_url;
  /// Space-separated.
  std::string scope;
  int64_t issued_at_s = 0;
  int64_t timeout_ms = 10000;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, jwt_bearer_grant& x) {
    return f(caf::meta::type_name("jwt_bearer_grant"), x.key, x.token_url, x.scope,
             x.issued_at_s, x.timeout_ms);
  }
};

/// The grant for the entry's scopes and token URL.
jwt_bearer_grant service_account_grant(const config::provider_entry& entry,
                                       service_account_key key, int64_t now_s,
                                       int64_t timeout_ms);

/// Checks the key (check_signing_key) and signs the RS256 assertion with
/// exactly the key checked: the token request. The CPU-heavy step. nullopt
/// (with `problem`, as check_signing_key) when the key is refused.
std::optional<outbound_request> sign_grant(const jwt_bearer_grant& grant, std::string& problem);

} // namespace cm::oauth

// Verifying an OpenID Connect ID token (a JWS compact serialisation) against
// the provider's JWKS document, as a pure function: no network, no clock of
// its own, no exceptions. Used by getTokenFromCode (Google Workspace) before
// the token's email is taken to be the caller's.
//
// What is checked, in this order (OIDC Core §3.1.3.7, RFC 7515/7517/7519):
//   * sizes: token <= 16 KiB, JWKS <= 256 KiB;
//   * the header's alg is exactly "RS256" — decided before any key is looked
//     at, so "none", HS256 (even with the RSA public key as HMAC secret), ES*
//     and anything else never reach a verifier; a "crit" header is refused
//     (we implement no extensions); jku/x5u/jwk headers are ignored, keys come
//     only from the JWKS given;
//   * the key: the JWK whose kid equals the header's kid; a header without
//     kid is accepted only when the JWKS has exactly one RSA signing key. The
//     JWK must be kty RSA with n and e, "use" absent or "sig", "alg" absent or
//     "RS256", a 2048..8192-bit modulus and an odd exponent >= 3;
//   * the RSASSA-PKCS1-v1_5 SHA-256 signature (OpenSSL 3 EVP_DigestVerify);
//   * iss in `issuers`; aud equal to `audience` or an array containing it —
//     with several audiences azp must be present and equal `audience`, and a
//     present azp must always equal it (OIDC Core §3.1.3.7 items 4-5);
//   * exp, iat (both required) and nbf (if present), with `leeway_s`: expired
//     when now > exp + leeway, refused when iat > now + leeway or
//     nbf > now + leeway;
//   * nonce, when the expectations carry one;
//   * sub and email present, non-empty strings; email_verified must be true
//     (boolean, or the string "true" some providers send) unless
//     `require_email_verified` is false — then it is only reported.
//
// Errors are fixed sentences naming at most a claim, never the token, a
// claim's value or a key, so they can be logged and returned to a caller.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cm::oauth {

struct id_token_expectations {
  /// Accepted "iss" values (Google uses both "https://accounts.google.com"
  /// and "accounts.google.com"). Empty: every token is refused.
  std::vector<std::string> issuers;
  /// Our OAuth client id. Empty: every token is refused.
  std::string audience;
  /// The current time, seconds since the epoch (injected for tests).
  int64_t now_s = 0;
  /// Clock skew tolerated on exp, iat and nbf.
  int leeway_s = 60;
  /// When not empty, the token's "nonce" must equal it.
  std::string nonce;
  /// Fail closed by default: an unverified email must not identify anyone.
  /// Set to false only to read the claims of such a token.
  bool require_email_verified = true;
};

struct id_token_claims {
  std::string subject;        // sub
  std::string email;
  std::string issuer;         // iss
  std::string audience;       // the aud value that matched (our client id)
  std::string authorized_party; // azp, empty when absent
  bool email_verified = false;
  int64_t issued_at_s = 0;    // iat
  int64_t expires_at_s = 0;   // exp
  std::string hosted_domain;  // hd (Google Workspace domain), empty when absent
};

inline constexpr size_t max_id_token_bytes = 16 * 1024;
inline constexpr size_t max_jwks_bytes = 256 * 1024;

/// Verifies an RS256-signed ID token against a JWKS document (JSON text).
/// True and `out` filled when every check passes; otherwise false, `out`
/// untouched and `error` set to a sentence safe to log.
bool verify_id_token(const std::string& jwt, const std::string& jwks_json,
                     const id_token_expectations& expect, id_token_claims& out,
                     std::string& error);

} // namespace cm::oauth

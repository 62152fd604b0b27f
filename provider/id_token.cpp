#include "provider/id_token.hpp"

#include <cmath>
#include <memory>

#include <nlohmann/json.hpp>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

namespace cm::oauth {

namespace {

using json = nlohmann::json;

// Below 2048 bits RSA is not a signature we want to trust an identity to;
// above 8192 verification gets slow enough to be a lever for abuse.
constexpr int min_modulus_bits = 2048;
constexpr int max_modulus_bits = 8192;
constexpr int max_exponent_bits = 64;

template <typename T, void (*Free)(T*)>
struct openssl_deleter {
  void operator()(T* p) const { Free(p); }
};
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_deleter<BIGNUM, BN_free>>;
using param_bld_ptr =
  std::unique_ptr<OSSL_PARAM_BLD, openssl_deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using params_ptr = std::unique_ptr<OSSL_PARAM, openssl_deleter<OSSL_PARAM, OSSL_PARAM_free>>;
using pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, openssl_deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, openssl_deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;

/// Strict base64url (RFC 4648 §5) without padding, as JWS requires
/// (RFC 7515 §2). `allow_padding` tolerates trailing '=' for JWK members,
/// which some providers pad although RFC 7518 says not to.
bool base64url_decode(const std::string& in, std::string& out, bool allow_padding = false) {
  size_t len = in.size();
  if (allow_padding)
    while (len > 0 && in[len - 1] == '=')
      --len;
  if (len % 4 == 1)
    return false; // a single leftover character cannot encode a byte
  out.clear();
  out.reserve(len * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; ++i) {
    char c = in[i];
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '-') v = 62;
    else if (c == '_') v = 63;
    else return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // Leftover bits must be zero, so each byte string has a single encoding.
  return (acc & ((1u << bits) - 1)) == 0;
}

/// RFC 7519 NumericDate: integer or (rarely) fractional seconds. Bounded far
/// beyond any real date so that adding the leeway can never overflow.
bool numeric_date(const json& v, int64_t& out) {
  constexpr int64_t bound = 1'000'000'000'000'000; // ~31 million years
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(bound))
      return false;
    out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    auto i = v.get<int64_t>();
    if (i > bound || i < -bound)
      return false;
    out = i;
    return true;
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    // Checked before the cast, which is undefined for out-of-range values.
    if (!std::isfinite(d) || d > static_cast<double>(bound) || d < -static_cast<double>(bound))
      return false;
    out = static_cast<int64_t>(std::floor(d));
    return true;
  }
  return false;
}

/// A JWK we may verify RS256 with, apart from its n and e.
bool rsa_signing_key(const json& jwk) {
  if (!jwk.is_object())
    return false;
  auto kty = jwk.find("kty");
  if (kty == jwk.end() || !kty->is_string() || *kty != "RSA")
    return false;
  auto use = jwk.find("use");
  if (use != jwk.end() && (!use->is_string() || *use != "sig"))
    return false;
  auto alg = jwk.find("alg");
  if (alg != jwk.end() && (!alg->is_string() || *alg != "RS256"))
    return false;
  return true;
}

/// The JWK to verify with, or nullptr and `error`.
const json* pick_key(const json& keys, const json& header, std::string& error) {
  auto kid = header.find("kid");
  if (kid == header.end()) {
    // No kid: only unambiguous when there is a single candidate.
    const json* only = nullptr;
    int count = 0;
    for (auto& jwk : keys)
      if (rsa_signing_key(jwk)) {
        only = &jwk;
        ++count;
      }
    if (count != 1) {
      error = "id token has no key id and the JWKS has no single signing key";
      return nullptr;
    }
    return only;
  }
  if (!kid->is_string()) {
    error = "id token header is malformed";
    return nullptr;
  }
  bool matched = false;
  for (auto& jwk : keys) {
    if (!jwk.is_object())
      continue;
    auto k = jwk.find("kid");
    if (k == jwk.end() || !k->is_string() || *k != *kid)
      continue;
    matched = true;
    if (rsa_signing_key(jwk))
      return &jwk;
  }
  error = matched ? "id token signing key is not a usable RSA key"
                  : "id token signed by an unknown key";
  return nullptr;
}

/// The RSA public key of a JWK (n, e), via OpenSSL 3's provider-neutral
/// OSSL_PARAM import; nullptr when malformed or outside our size bounds.
pkey_ptr rsa_public_key(const json& jwk) {
  auto n_it = jwk.find("n");
  auto e_it = jwk.find("e");
  if (n_it == jwk.end() || e_it == jwk.end() || !n_it->is_string() || !e_it->is_string())
    return nullptr;
  std::string n_bytes, e_bytes;
  if (!base64url_decode(n_it->get<std::string>(), n_bytes, true) ||
      !base64url_decode(e_it->get<std::string>(), e_bytes, true) || n_bytes.empty() ||
      e_bytes.empty() || n_bytes.size() > max_modulus_bits / 8 + 1 || e_bytes.size() > 16)
    return nullptr;
  bignum_ptr n{BN_bin2bn(reinterpret_cast<const unsigned char*>(n_bytes.data()),
                         static_cast<int>(n_bytes.size()), nullptr)};
  bignum_ptr e{BN_bin2bn(reinterpret_cast<const unsigned char*>(e_bytes.data()),
                         static_cast<int>(e_bytes.size()), nullptr)};
  if (!n || !e)
    return nullptr;
  int n_bits = BN_num_bits(n.get());
  int e_bits = BN_num_bits(e.get());
  // EVP_PKEY_fromdata does not validate: an exponent of 1 would make every
  // "signature" equal its own padded digest, so check the basics here.
  if (n_bits < min_modulus_bits || n_bits > max_modulus_bits || !BN_is_odd(n.get()) ||
      e_bits < 2 || e_bits > max_exponent_bits || !BN_is_odd(e.get()))
    return nullptr;
  param_bld_ptr bld{OSSL_PARAM_BLD_new()};
  if (!bld || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()))
    return nullptr;
  params_ptr params{OSSL_PARAM_BLD_to_param(bld.get())};
  pkey_ctx_ptr ctx{EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr)};
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0)
    return nullptr;
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0)
    return nullptr;
  return pkey_ptr{raw};
}

/// RSASSA-PKCS1-v1_5 with SHA-256 over the signing input (RFC 7518 §3.3).
bool rs256_valid(EVP_PKEY* key, const std::string& signing_input, const std::string& signature) {
  // A signature is exactly as long as the modulus; refuse anything else
  // rather than rely on how a given OpenSSL version pads or truncates.
  if (EVP_PKEY_get_size(key) <= 0 || signature.size() != static_cast<size_t>(EVP_PKEY_get_size(key)))
    return false;
  md_ctx_ptr md{EVP_MD_CTX_new()};
  if (!md || EVP_DigestVerifyInit(md.get(), nullptr, EVP_sha256(), nullptr, key) != 1)
    return false;
  return EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(),
                          reinterpret_cast<const unsigned char*>(signing_input.data()),
                          signing_input.size()) == 1;
}

enum class lookup { absent, ok, malformed };

lookup string_claim(const json& payload, const char* name, std::string& out) {
  auto it = payload.find(name);
  if (it == payload.end())
    return lookup::absent;
  if (!it->is_string())
    return lookup::malformed;
  out = it->get<std::string>();
  return lookup::ok;
}

std::string malformed_claim(const char* name) {
  return std::string("id token claim ") + name + " is malformed";
}

/// The claim checks, after the signature has been verified.
bool check_claims(const json& payload, const id_token_expectations& expect, id_token_claims& c,
                  std::string& error) {
  switch (string_claim(payload, "iss", c.issuer)) {
  case lookup::absent: error = "id token has no issuer"; return false;
  case lookup::malformed: error = malformed_claim("iss"); return false;
  case lookup::ok: break;
  }
  bool trusted = false;
  for (auto& iss : expect.issuers)
    trusted = trusted || iss == c.issuer;
  if (!trusted) {
    error = "id token issuer is not trusted";
    return false;
  }

  auto aud = payload.find("aud");
  if (aud == payload.end()) {
    error = "id token has no audience";
    return false;
  }
  size_t audiences = 0;
  bool ours = false;
  if (aud->is_string()) {
    audiences = 1;
    ours = *aud == expect.audience;
  } else if (aud->is_array()) {
    for (auto& a : *aud) {
      if (!a.is_string()) {
        error = malformed_claim("aud");
        return false;
      }
      ++audiences;
      ours = ours || a == expect.audience;
    }
  } else {
    error = malformed_claim("aud");
    return false;
  }
  if (!ours) {
    error = "id token audience does not match";
    return false;
  }
  c.audience = expect.audience;
  auto azp = string_claim(payload, "azp", c.authorized_party);
  if (azp == lookup::malformed) {
    error = malformed_claim("azp");
    return false;
  }
  // A token minted for several clients may have been presented by another
  // one; OIDC Core §3.1.3.7 (4, 5) asks for azp to name us then.
  if ((audiences > 1 && azp == lookup::absent) ||
      (azp == lookup::ok && c.authorized_party != expect.audience)) {
    error = "id token authorized party does not match";
    return false;
  }

  auto exp = payload.find("exp");
  if (exp == payload.end()) {
    error = "id token has no expiry";
    return false;
  }
  if (!numeric_date(*exp, c.expires_at_s)) {
    error = malformed_claim("exp");
    return false;
  }
  auto iat = payload.find("iat");
  if (iat == payload.end()) {
    error = "id token has no issue time";
    return false;
  }
  if (!numeric_date(*iat, c.issued_at_s)) {
    error = malformed_claim("iat");
    return false;
  }
  // Dates are bounded by numeric_date and leeway is an int: no overflow.
  int64_t leeway = expect.leeway_s < 0 ? 0 : expect.leeway_s;
  if (expect.now_s > c.expires_at_s + leeway) {
    error = "id token expired";
    return false;
  }
  if (c.issued_at_s > expect.now_s + leeway) {
    error = "id token issued in the future";
    return false;
  }
  auto nbf = payload.find("nbf");
  if (nbf != payload.end()) {
    int64_t not_before = 0;
    if (!numeric_date(*nbf, not_before)) {
      error = malformed_claim("nbf");
      return false;
    }
    if (not_before > expect.now_s + leeway) {
      error = "id token not yet valid";
      return false;
    }
  }

  if (!expect.nonce.empty()) {
    std::string nonce;
    auto found = string_claim(payload, "nonce", nonce);
    if (found == lookup::malformed) {
      error = malformed_claim("nonce");
      return false;
    }
    if (found == lookup::absent || nonce != expect.nonce) {
      error = "id token nonce does not match";
      return false;
    }
  }

  auto sub = string_claim(payload, "sub", c.subject);
  if (sub == lookup::malformed) {
    error = malformed_claim("sub");
    return false;
  }
  if (sub == lookup::absent || c.subject.empty()) {
    error = "id token has no subject";
    return false;
  }
  auto email = string_claim(payload, "email", c.email);
  if (email == lookup::malformed) {
    error = malformed_claim("email");
    return false;
  }
  if (email == lookup::absent || c.email.empty()) {
    error = "id token has no email";
    return false;
  }
  auto verified = payload.find("email_verified");
  if (verified != payload.end()) {
    // Google's tokens carry a boolean; some providers have sent the string.
    if (verified->is_boolean())
      c.email_verified = verified->get<bool>();
    else if (verified->is_string() && (*verified == "true" || *verified == "false"))
      c.email_verified = *verified == "true";
    else {
      error = malformed_claim("email_verified");
      return false;
    }
  }
  if (expect.require_email_verified && !c.email_verified) {
    error = "id token email is not verified";
    return false;
  }
  if (string_claim(payload, "hd", c.hosted_domain) == lookup::malformed) {
    error = malformed_claim("hd");
    return false;
  }
  return true;
}

bool verify(const std::string& jwt, const std::string& jwks_json,
            const id_token_expectations& expect, id_token_claims& out, std::string& error) {
  if (expect.issuers.empty() || expect.audience.empty()) {
    error = "id token expectations name no issuer or audience";
    return false;
  }
  if (jwt.size() > max_id_token_bytes) {
    error = "id token is too large";
    return false;
  }
  if (jwks_json.size() > max_jwks_bytes) {
    error = "JWKS document is too large";
    return false;
  }
  auto first = jwt.find('.');
  auto second = first == std::string::npos ? first : jwt.find('.', first + 1);
  if (second == std::string::npos || jwt.find('.', second + 1) != std::string::npos) {
    error = "id token is malformed";
    return false;
  }
  std::string header_text, payload_text, signature;
  if (!base64url_decode(jwt.substr(0, first), header_text)) {
    error = "id token is malformed";
    return false;
  }
  auto header = json::parse(header_text, nullptr, false);
  if (!header.is_object()) {
    error = "id token header is malformed";
    return false;
  }
  // The algorithm is ours to choose, not the token's: anything but RS256
  // (none, HS256 keyed with the public key, ES*, ...) stops here, before a
  // key is even looked up.
  auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string() || *alg != "RS256") {
    error = "id token algorithm is not allowed (only RS256)";
    return false;
  }
  // RFC 7515 §4.1.11: extensions we do not understand must be refused.
  if (header.contains("crit")) {
    error = "id token header has critical extensions";
    return false;
  }
  if (!base64url_decode(jwt.substr(first + 1, second - first - 1), payload_text) ||
      !base64url_decode(jwt.substr(second + 1), signature) || signature.empty()) {
    error = "id token is malformed";
    return false;
  }

  auto jwks = json::parse(jwks_json, nullptr, false);
  if (!jwks.is_object() || !jwks.contains("keys") || !jwks["keys"].is_array()) {
    error = "JWKS document is malformed";
    return false;
  }
  const json* jwk = pick_key(jwks["keys"], header, error);
  if (!jwk)
    return false;
  auto key = rsa_public_key(*jwk);
  if (!key) {
    error = "id token signing key is malformed";
    return false;
  }
  // The signing input is the token's own ASCII, not a re-encoding.
  if (!rs256_valid(key.get(), jwt.substr(0, second), signature)) {
    error = "id token signature is invalid";
    return false;
  }

  auto payload = json::parse(payload_text, nullptr, false);
  if (!payload.is_object()) {
    error = "id token payload is malformed";
    return false;
  }
  id_token_claims claims;
  if (!check_claims(payload, expect, claims, error))
    return false;
  out = std::move(claims);
  return true;
}

} // namespace

bool verify_id_token(const std::string& jwt, const std::string& jwks_json,
                     const id_token_expectations& expect, id_token_claims& out,
                     std::string& error) {
  bool ok = false;
  try {
    ok = verify(jwt, jwks_json, expect, out, error);
  } catch (...) {
    // Only allocation failures should get here; say nothing about the input.
    error = "id token could not be verified";
    ok = false;
  }
  // Failed imports and verifications leave entries on OpenSSL's per-thread
  // error queue; do not let them surface in an unrelated caller (curl, TLS).
  ERR_clear_error();
  return ok;
}

} // namespace cm::oauth

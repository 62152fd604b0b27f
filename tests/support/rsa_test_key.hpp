// RSA signing keys for tests and the fake provider: generated in-process with
// OpenSSL 3, published as a JWK, used to sign ID tokens with libjwt (RS256).
// Header-only so the fake provider, which does not link the test support
// library, shares it.
#pragma once

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace cm::test {

struct rsa_test_key {
  std::string private_pem; // PKCS#8, what libjwt signs with
  std::string public_pem;  // SubjectPublicKeyInfo
  std::string n, e;        // base64url, no padding (RFC 7518 §6.3.1)
};

inline std::string base64url(const std::string& bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                  '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::char_traits<char>::length(out.c_str()));
  return out;
}

namespace detail {

inline std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string{};
}

inline std::string bn_param(EVP_PKEY* key, const char* name) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &bn) != 1)
    throw std::runtime_error("reading an RSA key parameter failed");
  std::string bytes(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(bytes.data()));
  BN_free(bn);
  return base64url(bytes);
}

} // namespace detail

/// A fresh key pair; throws if OpenSSL fails.
inline rsa_test_key generate_rsa_test_key(unsigned bits = 2048) {
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> key{
    EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(bits)), EVP_PKEY_free};
  if (!key)
    throw std::runtime_error("RSA key generation failed");
  rsa_test_key out;
  std::unique_ptr<BIO, int (*)(BIO*)> priv{BIO_new(BIO_s_mem()), BIO_free};
  std::unique_ptr<BIO, int (*)(BIO*)> pub{BIO_new(BIO_s_mem()), BIO_free};
  if (!priv || !pub ||
      PEM_write_bio_PrivateKey(priv.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      PEM_write_bio_PUBKEY(pub.get(), key.get()) != 1)
    throw std::runtime_error("writing an RSA key as PEM failed");
  out.private_pem = detail::bio_text(priv.get());
  out.public_pem = detail::bio_text(pub.get());
  out.n = detail::bn_param(key.get(), OSSL_PKEY_PARAM_RSA_N);
  out.e = detail::bn_param(key.get(), OSSL_PKEY_PARAM_RSA_E);
  return out;
}

/// The public half as a JWK, as Google publishes its keys.
inline nlohmann::json jwk_of(const rsa_test_key& key, const std::string& kid) {
  return {{"kty", "RSA"}, {"kid", kid}, {"use", "sig"}, {"alg", "RS256"},
          {"n", key.n},   {"e", key.e}};
}

/// An RS256 JWS of `claims` (any JSON object) with libjwt; no kid header when
/// `kid` is empty. Throws if libjwt fails.
inline std::string sign_rs256(const rsa_test_key& key, const nlohmann::json& claims,
                              const std::string& kid) {
  jwt_t* raw = nullptr;
  if (jwt_new(&raw) != 0)
    throw std::runtime_error("jwt_new failed");
  std::unique_ptr<jwt_t, void (*)(jwt_t*)> jwt{raw, jwt_free};
  if (jwt_add_grants_json(jwt.get(), claims.dump().c_str()) != 0 ||
      (!kid.empty() && jwt_add_header(jwt.get(), "kid", kid.c_str()) != 0) ||
      jwt_set_alg(jwt.get(), JWT_ALG_RS256,
                  reinterpret_cast<const unsigned char*>(key.private_pem.data()),
                  static_cast<int>(key.private_pem.size())) != 0)
    throw std::runtime_error("preparing the JWT failed");
  char* token = jwt_encode_str(jwt.get());
  if (token == nullptr)
    throw std::runtime_error("signing the JWT failed");
  std::string out{token};
  free(token);
  return out;
}

} // namespace cm::test

#include "provider/service_account.hpp"

#include <cstring>
#include <initializer_list>
#include <memory>

#include <nlohmann/json.hpp>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "config/provider_catalog.hpp"
#include "provider/oauth_protocol.hpp"

namespace cm::oauth {

std::optional<service_account_key> parse_service_account(const std::string& text,
                                                         std::string& problem) {
  auto json = nlohmann::json::parse(text, nullptr, false);
  auto str = [&](const char* name) {
    return json.is_object() && json.contains(name) && json[name].is_string()
             ? json[name].get<std::string>() : std::string{};
  };
  if (!json.is_object() || str("type") != "service_account") {
    problem = "api_key must be a service-account JSON key";
    return std::nullopt;
  }
  service_account_key key;
  key.client_email = str("client_email");
  key.private_key_id = str("private_key_id");
  auto pem = str("private_key");
  if (key.client_email.find('@') == std::string::npos) {
    problem = "the service-account key has no client_email";
    return std::nullopt;
  }
  if (pem.find("-----BEGIN PRIVATE KEY-----") == std::string::npos) {
    problem = "the service-account key has no private_key";
    return std::nullopt;
  }
  key.private_key = secret{std::move(pem)};
  return key;
}

namespace {

struct pkey_free {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct bn_free {
  void operator()(BIGNUM* n) const { BN_clear_free(n); }
};
struct pkey_ctx_free {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct md_ctx_free {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using bn_ptr = std::unique_ptr<BIGNUM, bn_free>;

const std::string field = "api_key: private_key ";

/// One RSA part of the key, or null when the key has none of that name.
bn_ptr rsa_part(EVP_PKEY* key, const char* name) {
  BIGNUM* out = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &out) != 1)
    return nullptr;
  return bn_ptr{out};
}

/// The first PEM block of `pem`, which must be an unencrypted PKCS#8 private
/// key, as an OpenSSL key; null with `problem` otherwise. Decoded by hand
/// rather than with PEM_read_bio_PrivateKey, which would accept encrypted
/// keys (and ask a terminal for their passphrase, or spend an attacker-chosen
/// number of key-derivation rounds) and legacy formats.
pkey_ptr read_pkcs8(const secret& pem, std::string& problem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio{
    BIO_new_mem_buf(pem.reveal().data(), static_cast<int>(pem.size())), BIO_free};
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* der = nullptr;
  long der_len = 0;
  if (!bio || PEM_read_bio(bio.get(), &name, &header, &der, &der_len) != 1) {
    problem = field + "must hold a PEM block (-----BEGIN PRIVATE KEY-----)";
    return nullptr;
  }
  bool plain_pkcs8 = std::strcmp(name, "PRIVATE KEY") == 0 && header[0] == '\0';
  pkey_ptr key;
  if (plain_pkcs8) {
    const unsigned char* cursor = der;
    std::unique_ptr<PKCS8_PRIV_KEY_INFO, decltype(&PKCS8_PRIV_KEY_INFO_free)> info{
      d2i_PKCS8_PRIV_KEY_INFO(nullptr, &cursor, der_len), PKCS8_PRIV_KEY_INFO_free};
    if (info && cursor == der + der_len)
      key.reset(EVP_PKCS82PKEY(info.get()));
  }
  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_clear_free(der, static_cast<size_t>(der_len));
  if (!plain_pkcs8) {
    problem = field + "must be an unencrypted PKCS#8 key (-----BEGIN PRIVATE KEY-----)";
    return nullptr;
  }
  if (!key)
    problem = field + "is not a readable PKCS#8 key";
  return key;
}

/// Every check of check_signing_key; the key when it passed them all.
pkey_ptr load_signing_key(const secret& pem, std::string& problem) {
  auto key = read_pkcs8(pem, problem);
  if (!key)
    return nullptr;
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA) {
    problem = field + "must be an RSA key";
    return nullptr;
  }
  // The sizes first: they are what bounds everything after.
  int bits = EVP_PKEY_get_bits(key.get());
  if (bits < min_signing_key_bits || bits > max_signing_key_bits) {
    problem = field + "must be an RSA key of " + std::to_string(min_signing_key_bits) + " to " +
              std::to_string(max_signing_key_bits) + " bits (this one has " +
              std::to_string(bits) + ")";
    return nullptr;
  }
  if (rsa_part(key.get(), OSSL_PKEY_PARAM_RSA_FACTOR3)) {
    problem = field + "must be a two-prime RSA key";
    return nullptr;
  }
  auto n = rsa_part(key.get(), OSSL_PKEY_PARAM_RSA_N);
  auto e = rsa_part(key.get(), OSSL_PKEY_PARAM_RSA_E);
  auto d = rsa_part(key.get(), OSSL_PKEY_PARAM_RSA_D);
  auto p = rsa_part(key.get(), OSSL_PKEY_PARAM_RSA_FACTOR1);
  auto q = rsa_part(key.get(), OSSL_PKEY_PARAM_RSA_FACTOR2);
  auto dp = rsa_part(key.get(), OSSL_PKEY_PARAM_RSA_EXPONENT1);
  auto dq = rsa_part(key.get(), OSSL_PKEY_PARAM_RSA_EXPONENT2);
  auto qinv = rsa_part(key.get(), OSSL_PKEY_PARAM_RSA_COEFFICIENT1);
  if (!n || !e || !d || !p || !q || !dp || !dq || !qinv) {
    problem = field + "lacks RSA parts (primes and CRT values are required)";
    return nullptr;
  }
  // OpenSSL's check below tests p and q for primality before it compares
  // n with p·q: a prime as long as a 30,000-bit modulus would take it
  // minutes. Primes of half the modulus and no part longer than the
  // modulus keep the check itself short.
  int half = (bits + 1) / 2 + 1;
  bool proportionate = BN_num_bits(p.get()) <= half && BN_num_bits(q.get()) <= half;
  for (auto* part : {e.get(), d.get(), dp.get(), dq.get(), qinv.get()})
    proportionate = proportionate && BN_num_bits(part) <= bits;
  if (!proportionate) {
    problem = field + "has RSA parts out of proportion to its modulus";
    return nullptr;
  }
  std::unique_ptr<EVP_PKEY_CTX, pkey_ctx_free> ctx{
    EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr)};
  // The whole key pair (RSA_check_key): p and q prime, n = p·q, d·e = 1 mod
  // lcm(p-1, q-1), and the CRT values those imply. With inconsistent CRT
  // values OpenSSL would sign by the slow path.
  if (!ctx || EVP_PKEY_pairwise_check(ctx.get()) != 1) {
    problem = field + "is not a consistent RSA key";
    return nullptr;
  }
  return key;
}

std::string base64url(const unsigned char* data, size_t size) {
  std::string out(sodium_base64_ENCODED_LEN(size, sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), data, size, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::string base64url(const std::string& text) {
  return base64url(reinterpret_cast<const unsigned char*>(text.data()), text.size());
}

/// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) over `input`; empty on failure.
std::string sign_rs256(EVP_PKEY* key, const std::string& input) {
  std::unique_ptr<EVP_MD_CTX, md_ctx_free> md{EVP_MD_CTX_new()};
  size_t size = 0;
  auto data = reinterpret_cast<const unsigned char*>(input.data());
  if (!md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &size, data, input.size()) != 1)
    return {};
  std::string signature(size, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(signature.data()), &size, data,
                     input.size()) != 1)
    return {};
  signature.resize(size);
  return signature;
}

} // namespace

bool check_signing_key(const secret& pem, std::string& problem) {
  return load_signing_key(pem, problem) != nullptr;
}

jwt_bearer_grant service_account_grant(const config::provider_entry& entry,
                                       service_account_key key, int64_t now_s,
                                       int64_t timeout_ms) {
  jwt_bearer_grant grant;
  grant.key = std::move(key);
  grant.token_url = entry.token_url;
  for (auto& s : entry.scopes)
    grant.scope += (grant.scope.empty() ? "" : " ") + s;
  grant.issued_at_s = now_s;
  grant.timeout_ms = timeout_ms;
  return grant;
}

std::optional<outbound_request> sign_grant(const jwt_bearer_grant& grant, std::string& problem) {
  auto key = load_signing_key(grant.key.private_key, problem);
  if (!key)
    return std::nullopt;
  // Signed with the key just checked: the PEM is not parsed a second time
  // (by libjwt), so what was checked is what signs.
  nlohmann::json header = {{"alg", "RS256"}, {"typ", "JWT"}};
  if (!grant.key.private_key_id.empty())
    header["kid"] = grant.key.private_key_id;
  nlohmann::json claims = {{"iss", grant.key.client_email},
                           {"scope", grant.scope},
                           {"aud", grant.token_url},
                           {"iat", grant.issued_at_s},
                           {"exp", grant.issued_at_s + 3600}};
  auto signing_input = base64url(header.dump()) + "." + base64url(claims.dump());
  auto signature = sign_rs256(key.get(), signing_input);
  if (signature.empty()) {
    problem = field + "cannot sign";
    return std::nullopt;
  }
  auto assertion = signing_input + "." + base64url(signature);
  outbound_request req;
  req.method = "POST";
  req.url = grant.token_url;
  req.timeout_ms = grant.timeout_ms;
  req.headers.emplace_back("Accept", "application/json");
  req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  req.body = form_encode({{"grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"},
                          {"assertion", assertion}});
  return req;
}

} // namespace cm::oauth

#include "tests/support/hostile_keys.hpp"

#include <memory>
#include <stdexcept>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

namespace cm::test {

namespace {

struct bn_free {
  void operator()(BIGNUM* n) const { BN_free(n); }
};
struct pkey_free {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using bn_ptr = std::unique_ptr<BIGNUM, bn_free>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;

/// The eight parts of a two-prime RSA private key.
struct rsa_parts {
  bn_ptr n, e, d, p, q, dp, dq, qinv;
};

bn_ptr word(unsigned long value) {
  bn_ptr out{BN_new()};
  BN_set_word(out.get(), value);
  return out;
}

/// Random, odd, exactly `bits` long; with `top_two`, its two top bits set
/// (so a small multiple of it has a known length).
bn_ptr random_odd(int bits, bool top_two = false) {
  bn_ptr out{BN_new()};
  int top = top_two ? BN_RAND_TOP_TWO : BN_RAND_TOP_ONE;
  if (BN_rand(out.get(), bits, top, BN_RAND_BOTTOM_ODD) != 1)
    throw std::runtime_error("BN_rand failed");
  return out;
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string{};
}

std::string pem_of(EVP_PKEY* key) {
  std::unique_ptr<BIO, int (*)(BIO*)> bio{BIO_new(BIO_s_mem()), BIO_free};
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw std::runtime_error("writing a key as PEM failed");
  return bio_text(bio.get());
}

/// The key OpenSSL makes of `parts`, unchecked, as PKCS#8 PEM.
std::string pem_from_parts(const rsa_parts& parts) {
  std::unique_ptr<OSSL_PARAM_BLD, void (*)(OSSL_PARAM_BLD*)> build{OSSL_PARAM_BLD_new(),
                                                                  OSSL_PARAM_BLD_free};
  bool ok = build &&
            OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_N, parts.n.get()) &&
            OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_E, parts.e.get()) &&
            OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_D, parts.d.get()) &&
            OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_FACTOR1, parts.p.get()) &&
            OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_FACTOR2, parts.q.get()) &&
            OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_EXPONENT1, parts.dp.get()) &&
            OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_EXPONENT2, parts.dq.get()) &&
            OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_COEFFICIENT1, parts.qinv.get());
  if (!ok)
    throw std::runtime_error("building RSA parameters failed");
  std::unique_ptr<OSSL_PARAM, void (*)(OSSL_PARAM*)> params{OSSL_PARAM_BLD_to_param(build.get()),
                                                          OSSL_PARAM_free};
  std::unique_ptr<EVP_PKEY_CTX, void (*)(EVP_PKEY_CTX*)> ctx{
    EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr), EVP_PKEY_CTX_free};
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params.get()) != 1)
    throw std::runtime_error("making an RSA key from parts failed");
  pkey_ptr key{raw};
  return pem_of(key.get());
}

pkey_ptr read_pem(const std::string& pem) {
  std::unique_ptr<BIO, int (*)(BIO*)> bio{
    BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free};
  pkey_ptr key{PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)};
  if (!key)
    throw std::runtime_error("reading a PEM key failed");
  return key;
}

bn_ptr part(EVP_PKEY* key, const char* name) {
  BIGNUM* out = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &out) != 1)
    throw std::runtime_error("reading an RSA part failed");
  return bn_ptr{out};
}

pkey_ptr generate(const char* type, const char* arg, int bits) {
  EVP_PKEY* raw = bits > 0 ? EVP_PKEY_Q_keygen(nullptr, nullptr, type, static_cast<size_t>(bits))
                           : EVP_PKEY_Q_keygen(nullptr, nullptr, type, arg);
  if (raw == nullptr)
    throw std::runtime_error("key generation failed");
  return pkey_ptr{raw};
}

} // namespace

std::string service_account_file(const std::string& private_pem, const std::string& client_email) {
  return nlohmann::json{{"type", "service_account"},
                        {"project_id", "acme-project"},
                        {"private_key_id", "k1"},
                        {"private_key", private_pem},
                        {"client_email", client_email}}
    .dump();
}

std::string oversized_bogus_crt_pem(int bits) {
  rsa_parts parts;
  parts.n = random_odd(bits);
  parts.e = word(65537);
  parts.d = random_odd(bits - 1);
  parts.p = word(4294967291UL); // odd, so OpenSSL's Montgomery setup accepts it
  parts.q = word(4294967279UL);
  parts.dp = word(12345);
  parts.dq = word(6789);
  parts.qinv = word(1011);
  return pem_from_parts(parts);
}

std::string bogus_crt_pem(const std::string& good_pem) {
  auto key = read_pem(good_pem);
  rsa_parts parts;
  parts.n = part(key.get(), OSSL_PKEY_PARAM_RSA_N);
  parts.e = part(key.get(), OSSL_PKEY_PARAM_RSA_E);
  parts.d = part(key.get(), OSSL_PKEY_PARAM_RSA_D);
  parts.p = part(key.get(), OSSL_PKEY_PARAM_RSA_FACTOR1);
  parts.q = part(key.get(), OSSL_PKEY_PARAM_RSA_FACTOR2);
  parts.dp = part(key.get(), OSSL_PKEY_PARAM_RSA_EXPONENT1);
  parts.dq = part(key.get(), OSSL_PKEY_PARAM_RSA_EXPONENT2);
  parts.qinv = part(key.get(), OSSL_PKEY_PARAM_RSA_COEFFICIENT1);
  BN_add_word(parts.dp.get(), 2);
  return pem_from_parts(parts);
}

std::string unbalanced_primes_pem() {
  rsa_parts parts;
  parts.p = word(3);
  parts.q = random_odd(2046, true); // 3·q then has exactly 2048 bits
  parts.n.reset(BN_new());
  std::unique_ptr<BN_CTX, void (*)(BN_CTX*)> ctx{BN_CTX_new(), BN_CTX_free};
  BN_mul(parts.n.get(), parts.p.get(), parts.q.get(), ctx.get());
  parts.e = word(65537);
  parts.d = random_odd(2040);
  parts.dp = word(1);
  parts.dq = random_odd(2000);
  parts.qinv = word(1);
  return pem_from_parts(parts);
}

std::string ec_pem() {
  auto key = generate("EC", "P-256", 0);
  return pem_of(key.get());
}

std::string encrypted_pem(int bits) {
  auto key = generate("RSA", nullptr, bits);
  std::unique_ptr<BIO, int (*)(BIO*)> bio{BIO_new(BIO_s_mem()), BIO_free};
  static const char passphrase[] = "hostile-passphrase";
  if (!bio || PEM_write_bio_PKCS8PrivateKey(bio.get(), key.get(), EVP_aes_256_cbc(), passphrase,
                                            sizeof(passphrase) - 1, nullptr, nullptr) != 1)
    throw std::runtime_error("writing an encrypted key failed");
  return bio_text(bio.get());
}

} // namespace cm::test

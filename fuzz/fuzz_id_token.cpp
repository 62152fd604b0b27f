// OpenID Connect ID tokens: oauth::verify_id_token (compact JWS parsing,
// base64url, header checks, JWKS parsing and key choice, RSA import, the
// RS256 signature and every claim check). A 2048-bit key pair is made at
// start; the JWKS lists its public half as kid "k1" next to a decoy "k2".
//
// The first input byte picks the mode (seeds use the digits '0'..'2'):
//   '0'  the rest is a raw token, checked against that JWKS;
//   '1'  the rest is "<header JSON>\n<claims JSON>", signed here with k1,
//        so the claim checks see arbitrary claims behind a valid signature;
//   '2'  the rest is a JWKS document, against which a valid token signed
//        with k1 is checked.
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_support.hpp"
#include "provider/id_token.hpp"

using namespace cm;
using nlohmann::json;

namespace {

constexpr int64_t now_s = 1'700'000'000;
const std::string audience = "fuzz-client.apps.googleusercontent.com";
const std::string nonce = "fuzz-nonce-1";

struct world {
  EVP_PKEY* key = nullptr;
  std::string jwks;
  std::string valid_token;
  oauth::id_token_expectations expect;
};

std::string bn_param(EVP_PKEY* key, const char* name) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &bn) != 1)
    std::abort();
  std::string bytes(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(bytes.data()));
  BN_free(bn);
  return fuzz::base64url(bytes);
}

std::string rs256_sign(EVP_PKEY* key, const std::string& input) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  size_t len = 0;
  std::string sig;
  if (EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, key) == 1 &&
      EVP_DigestSign(md, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                     input.size()) == 1) {
    sig.resize(len);
    if (EVP_DigestSign(md, reinterpret_cast<unsigned char*>(sig.data()), &len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
      sig.clear();
    sig.resize(len);
  }
  EVP_MD_CTX_free(md);
  return sig;
}

std::string signed_token(EVP_PKEY* key, const std::string& header, const std::string& claims) {
  auto input = fuzz::base64url(header) + "." + fuzz::base64url(claims);
  return input + "." + fuzz::base64url(rs256_sign(key, input));
}

world& the_world() {
  static world w = [] {
    world made;
    made.key = EVP_RSA_gen(2048);
    EVP_PKEY* decoy = EVP_RSA_gen(2048);
    if (made.key == nullptr || decoy == nullptr)
      std::abort();
    auto jwk = [](EVP_PKEY* k, const char* kid) {
      return json{{"kty", "RSA"}, {"kid", kid}, {"use", "sig"}, {"alg", "RS256"},
                  {"n", bn_param(k, OSSL_PKEY_PARAM_RSA_N)},
                  {"e", bn_param(k, OSSL_PKEY_PARAM_RSA_E)}};
    };
    made.jwks = json{{"keys", {jwk(made.key, "k1"), jwk(decoy, "k2")}}}.dump();
    EVP_PKEY_free(decoy);
    json claims = {{"iss", "https://accounts.google.com"}, {"aud", audience},
                   {"sub", "1234567890"},  {"email", "user@fuzz.test"},
                   {"email_verified", true}, {"iat", now_s - 10},
                   {"exp", now_s + 3600},   {"nonce", nonce}};
    made.valid_token = signed_token(made.key, R"({"alg":"RS256","kid":"k1","typ":"JWT"})",
                                    claims.dump());
    made.expect.issuers = {"https://accounts.google.com", "accounts.google.com"};
    made.expect.audience = audience;
    made.expect.now_s = now_s;
    made.expect.leeway_s = 60;
    made.expect.nonce = nonce;
    return made;
  }();
  return w;
}

void check_refusal(bool ok, const std::string& error) {
  if (ok)
    return;
  CM_FUZZ_CHECK(!error.empty(), "a refused ID token says why");
  CM_FUZZ_CHECK(error.size() < 120 && fuzz::printable_ascii(error),
                "the reason is one short plain sentence");
}

/// An accepted token's claims, read independently of the verifier.
void check_accepted(const std::string& header, const std::string& claims,
                    const oauth::id_token_claims& got) {
  auto h = json::parse(header, nullptr, false);
  auto c = json::parse(claims, nullptr, false);
  CM_FUZZ_CHECK(h.is_object() && h.value("alg", json{}) == "RS256" && !h.contains("crit"),
                "only an RS256 header without crit is accepted");
  CM_FUZZ_CHECK(c.is_object(), "accepted claims are an object");
  auto& expect = the_world().expect;
  CM_FUZZ_CHECK(c.value("iss", json{}) == got.issuer &&
                  (got.issuer == expect.issuers[0] || got.issuer == expect.issuers[1]),
                "the issuer is trusted");
  CM_FUZZ_CHECK(c.value("sub", json{}) == got.subject && !got.subject.empty(), "sub is taken as is");
  CM_FUZZ_CHECK(c.value("email", json{}) == got.email && !got.email.empty(), "email is taken as is");
  CM_FUZZ_CHECK(got.email_verified, "the email is verified");
  CM_FUZZ_CHECK(c.value("nonce", json{}) == nonce, "the nonce matches");
  CM_FUZZ_CHECK(got.audience == audience, "the audience is ours");
  CM_FUZZ_CHECK(expect.now_s <= got.expires_at_s + expect.leeway_s, "the token has not expired");
  CM_FUZZ_CHECK(got.issued_at_s <= expect.now_s + expect.leeway_s, "not issued in the future");
  auto aud = c.value("aud", json{});
  CM_FUZZ_CHECK(aud == audience || (aud.is_array() && c.value("azp", json{}) == audience) ||
                  (aud.is_array() && aud.size() == 1),
                "several audiences need azp naming us");
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  the_world();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  auto& w = the_world();
  auto mode = data[0] % 3;
  std::string rest(fuzz::as_text(data + 1, size - 1));
  oauth::id_token_claims got;
  std::string error;

  if (mode == 0) {
    bool ok = oauth::verify_id_token(rest, w.jwks, w.expect, got, error);
    check_refusal(ok, error);
    return 0;
  }
  if (mode == 1) {
    auto [header, claims] = fuzz::split_line(rest);
    auto token = signed_token(w.key, header, claims);
    bool ok = oauth::verify_id_token(token, w.jwks, w.expect, got, error);
    check_refusal(ok, error);
    if (ok)
      check_accepted(header, claims, got);
    return 0;
  }
  bool ok = oauth::verify_id_token(w.valid_token, rest, w.expect, got, error);
  check_refusal(ok, error);
  if (ok)
    CM_FUZZ_CHECK(got.subject == "1234567890", "a JWKS cannot change what a token says");
  return 0;
}

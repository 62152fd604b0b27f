// OpenID Connect ID-token verification (provider/id_token): tokens signed
// in-process with libjwt against JWKS documents built here, every refusal the
// verifier owes, and the fake provider's id_token and /jwks end to end.
#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <ctime>
#include <limits>
#include <memory>

#include "provider/id_token.hpp"
#include "provider/oauth_protocol.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/rsa_test_key.hpp"

using namespace cm;
using namespace cm::test;
using nlohmann::json;

namespace {

const std::string issuer = "https://accounts.google.com";
const std::string client = "1234-abc.apps.googleusercontent.com";
const int64_t now = 1'800'000'000;
// Must never show up in an error message.
const std::string canary = "canary-7f3a9c@leak.example";

// Key generation is the slow part; one set for the whole file.
const rsa_test_key& good_key() {
  static const auto key = generate_rsa_test_key();
  return key;
}
const rsa_test_key& other_key() {
  static const auto key = generate_rsa_test_key();
  return key;
}

json good_claims() {
  return {{"iss", issuer},
          {"aud", client},
          {"azp", client},
          {"sub", "110169484474386276334"},
          {"email", canary},
          {"email_verified", true},
          {"hd", "acme.example"},
          {"iat", now - 10},
          {"exp", now + 3590}};
}

/// Google-like: two published keys; k1 is the one tokens are signed with.
std::string good_jwks() {
  return json{{"keys", {jwk_of(good_key(), "k1"), jwk_of(other_key(), "k2")}}}.dump();
}

oauth::id_token_expectations expectations() {
  oauth::id_token_expectations e;
  e.issuers = {issuer, "accounts.google.com"};
  e.audience = client;
  e.now_s = now;
  return e;
}

std::string sign(const json& claims, const std::string& kid = "k1",
                 const rsa_test_key& key = good_key()) {
  return sign_rs256(key, claims, kid);
}

/// An RS256 signature over any header, so a test controls every header field
/// while the signature itself is valid for good_key().
std::string sign_raw(const json& header, const json& claims) {
  auto input = base64url(header.dump()) + "." + base64url(claims.dump());
  auto& pem = good_key().private_pem;
  std::unique_ptr<BIO, int (*)(BIO*)> bio{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                          BIO_free};
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> key{
    PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free};
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> md{EVP_MD_CTX_new(), EVP_MD_CTX_free};
  size_t len = 0;
  if (!key || !md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &len,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    throw std::runtime_error("signing failed");
  std::string sig(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    throw std::runtime_error("signing failed");
  sig.resize(len);
  return input + "." + base64url(sig);
}

/// libjwt with any algorithm and key (alg none: no key).
std::string sign_libjwt(jwt_alg_t alg, const std::string& key, const json& claims,
                        const std::string& kid) {
  jwt_t* raw = nullptr;
  jwt_new(&raw);
  std::unique_ptr<jwt_t, void (*)(jwt_t*)> jwt{raw, jwt_free};
  jwt_add_grants_json(jwt.get(), claims.dump().c_str());
  if (!kid.empty())
    jwt_add_header(jwt.get(), "kid", kid.c_str());
  EXPECT_EQ(jwt_set_alg(jwt.get(), alg,
                        alg == JWT_ALG_NONE ? nullptr
                                            : reinterpret_cast<const unsigned char*>(key.data()),
                        alg == JWT_ALG_NONE ? 0 : static_cast<int>(key.size())),
            0);
  char* token = jwt_encode_str(jwt.get());
  std::string out = token ? token : "";
  free(token);
  return out;
}

bool verify(const std::string& token, oauth::id_token_claims& claims,
            const oauth::id_token_expectations& expect = expectations(),
            const std::string& jwks = good_jwks()) {
  std::string error;
  bool ok = oauth::verify_id_token(token, jwks, expect, claims, error);
  EXPECT_TRUE(ok) << error;
  return ok;
}

/// The error of a refused token, after checking it gives nothing away: not
/// the canary email, not the token or its parts.
std::string refusal(const std::string& token, const oauth::id_token_expectations& expect = expectations(),
                    const std::string& jwks = good_jwks()) {
  oauth::id_token_claims claims;
  claims.email = "untouched";
  std::string error;
  EXPECT_FALSE(oauth::verify_id_token(token, jwks, expect, claims, error));
  EXPECT_FALSE(error.empty());
  EXPECT_EQ(claims.email, "untouched") << "claims are only written on success";
  EXPECT_EQ(error.find(canary), std::string::npos) << error;
  EXPECT_EQ(error.find("leak"), std::string::npos) << error;
  size_t start = 0;
  while (!token.empty() && start < token.size()) {
    auto end = std::min(token.find('.', start), token.size());
    if (end - start >= 8) {
      EXPECT_EQ(error.find(token.substr(start, end - start)), std::string::npos) << error;
    }
    start = end + 1;
  }
  return error;
}

std::string with(json claims, const std::string& name, const json& value) {
  claims[name] = value;
  return sign(claims);
}
std::string without(json claims, const std::string& name) {
  claims.erase(name);
  return sign(claims);
}

} // namespace

TEST(IdToken, ValidTokenAcceptedAndClaimsRead) {
  oauth::id_token_claims c;
  ASSERT_TRUE(verify(sign(good_claims()), c));
  EXPECT_EQ(c.subject, "110169484474386276334");
  EXPECT_EQ(c.email, canary);
  EXPECT_TRUE(c.email_verified);
  EXPECT_EQ(c.issuer, issuer);
  EXPECT_EQ(c.audience, client);
  EXPECT_EQ(c.authorized_party, client);
  EXPECT_EQ(c.hosted_domain, "acme.example");
  EXPECT_EQ(c.issued_at_s, now - 10);
  EXPECT_EQ(c.expires_at_s, now + 3590);
}

TEST(IdToken, EitherGoogleIssuerSpellingAccepted) {
  oauth::id_token_claims c;
  EXPECT_TRUE(verify(with(good_claims(), "iss", "accounts.google.com"), c));
  auto no_hd = good_claims();
  no_hd.erase("hd");
  no_hd.erase("azp");
  ASSERT_TRUE(verify(sign(no_hd), c));
  EXPECT_EQ(c.hosted_domain, "");
  EXPECT_EQ(c.authorized_party, "");
}

TEST(IdToken, SignatureByAnotherKeyUnderOurKidRejected) {
  EXPECT_EQ(refusal(sign(good_claims(), "k1", other_key())), "id token signature is invalid");
}

TEST(IdToken, TamperedPayloadRejected) {
  auto token = sign(good_claims());
  auto forged = good_claims();
  forged["email"] = "ceo@acme.example";
  auto first = token.find('.');
  auto second = token.find('.', first + 1);
  auto tampered = token.substr(0, first + 1) + base64url(forged.dump()) + token.substr(second);
  EXPECT_EQ(refusal(tampered), "id token signature is invalid");
  // A flipped bit in the signature.
  auto flipped = token;
  flipped[second + 5] = flipped[second + 5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(refusal(flipped), "id token signature is invalid");
}

TEST(IdToken, UnknownKidRejected) {
  EXPECT_EQ(refusal(sign(good_claims(), "k9")), "id token signed by an unknown key");
  EXPECT_EQ(refusal(sign(good_claims()), expectations(), R"({"keys":[]})"),
            "id token signed by an unknown key");
}

TEST(IdToken, NoKidUsesTheOnlySigningKey) {
  oauth::id_token_claims c;
  auto single = json{{"keys", {jwk_of(good_key(), "k1")}}}.dump();
  EXPECT_TRUE(verify(sign(good_claims(), ""), c, expectations(), single));
  // An encryption key next to it does not make the choice ambiguous.
  auto enc = jwk_of(other_key(), "k2");
  enc["use"] = "enc";
  auto with_enc = json{{"keys", {jwk_of(good_key(), "k1"), enc}}}.dump();
  EXPECT_TRUE(verify(sign(good_claims(), ""), c, expectations(), with_enc));
  EXPECT_EQ(refusal(sign(good_claims(), "")),
            "id token has no key id and the JWKS has no single signing key");
}

TEST(IdToken, UnusableJwkRejected) {
  auto token = sign(good_claims());
  auto as = [](json jwk) { return json{{"keys", {jwk}}}.dump(); };
  auto jwk = jwk_of(good_key(), "k1");
  auto ec = json{{"kty", "EC"}, {"kid", "k1"}, {"crv", "P-256"}, {"x", "AA"}, {"y", "AA"}};
  EXPECT_EQ(refusal(token, expectations(), as(ec)), "id token signing key is not a usable RSA key");
  auto enc = jwk;
  enc["use"] = "enc";
  EXPECT_EQ(refusal(token, expectations(), as(enc)), "id token signing key is not a usable RSA key");
  auto rs512 = jwk;
  rs512["alg"] = "RS512";
  EXPECT_EQ(refusal(token, expectations(), as(rs512)), "id token signing key is not a usable RSA key");
  auto no_n = jwk;
  no_n.erase("n");
  EXPECT_EQ(refusal(token, expectations(), as(no_n)), "id token signing key is malformed");
  auto bad_e = jwk;
  bad_e["e"] = "AQ"; // e = 1: every "signature" would verify
  EXPECT_EQ(refusal(token, expectations(), as(bad_e)), "id token signing key is malformed");
  auto bad_n = jwk;
  bad_n["n"] = "not*base64";
  EXPECT_EQ(refusal(token, expectations(), as(bad_n)), "id token signing key is malformed");
}

TEST(IdToken, WeakKeyRejected) {
  auto weak = generate_rsa_test_key(1024);
  auto jwks = json{{"keys", {jwk_of(weak, "k1")}}}.dump();
  EXPECT_EQ(refusal(sign(good_claims(), "k1", weak), expectations(), jwks),
            "id token signing key is malformed");
}

TEST(IdToken, PaddedJwkMembersAccepted) {
  auto jwk = jwk_of(good_key(), "k1");
  auto pad = [](std::string s) { return s + std::string((4 - s.size() % 4) % 4, '='); };
  jwk["n"] = pad(jwk["n"].get<std::string>());
  jwk["e"] = pad(jwk["e"].get<std::string>());
  oauth::id_token_claims c;
  EXPECT_TRUE(verify(sign(good_claims()), c, expectations(), json{{"keys", {jwk}}}.dump()));
}

TEST(IdToken, AlgNoneRejected) {
  auto token = sign_libjwt(JWT_ALG_NONE, "", good_claims(), "k1");
  ASSERT_EQ(token.back(), '.'); // libjwt's unsigned form
  EXPECT_EQ(refusal(token), "id token algorithm is not allowed (only RS256)");
  // The same with a real signature glued on changes nothing.
  auto signed_token = sign(good_claims());
  EXPECT_EQ(refusal(token + signed_token.substr(signed_token.rfind('.') + 1)),
            "id token algorithm is not allowed (only RS256)");
}

TEST(IdToken, Hs256KeyedWithThePublicKeyRejected) {
  // The classic confusion: a verifier that takes the alg from the header and
  // the public key PEM as "the key" would accept this HMAC.
  auto token = sign_libjwt(JWT_ALG_HS256, good_key().public_pem, good_claims(), "k1");
  EXPECT_EQ(refusal(token), "id token algorithm is not allowed (only RS256)");
  auto with_jwk_text = sign_libjwt(JWT_ALG_HS256, good_jwks(), good_claims(), "k1");
  EXPECT_EQ(refusal(with_jwk_text), "id token algorithm is not allowed (only RS256)");
}

TEST(IdToken, EveryOtherAlgorithmRejectedEvenWithAValidRsaSignature) {
  for (json alg : {json("RS512"), json("RS384"), json("PS256"), json("ES256"), json("HS256"),
                   json("none"), json("rs256"), json("RS256 "), json::array({"RS256"}),
                   json(nullptr)}) {
    EXPECT_EQ(refusal(sign_raw({{"alg", alg}, {"kid", "k1"}}, good_claims())),
              "id token algorithm is not allowed (only RS256)")
      << alg.dump();
  }
  EXPECT_EQ(refusal(sign_raw({{"kid", "k1"}}, good_claims())),
            "id token algorithm is not allowed (only RS256)");
  // The control: the same construction with RS256 passes.
  oauth::id_token_claims c;
  EXPECT_TRUE(verify(sign_raw({{"alg", "RS256"}, {"kid", "k1"}, {"typ", "JWT"}}, good_claims()), c));
}

TEST(IdToken, CriticalHeaderRejectedAndEmbeddedKeysIgnored) {
  EXPECT_EQ(refusal(sign_raw({{"alg", "RS256"}, {"kid", "k1"}, {"crit", {"exp"}}}, good_claims())),
            "id token header has critical extensions");
  // A token naming its own key (jwk/jku) still needs a key from our JWKS.
  auto own = jwk_of(good_key(), "mine");
  EXPECT_EQ(refusal(sign_raw({{"alg", "RS256"}, {"kid", "mine"}, {"jwk", own},
                              {"jku", "https://evil.example/jwks"}},
                             good_claims())),
            "id token signed by an unknown key");
  EXPECT_EQ(refusal(sign_raw({{"alg", "RS256"}, {"kid", 7}}, good_claims())),
            "id token header is malformed");
}

TEST(IdToken, ExpiryWithLeeway) {
  oauth::id_token_claims c;
  EXPECT_TRUE(verify(with(good_claims(), "exp", now - 59), c));
  EXPECT_EQ(refusal(with(good_claims(), "exp", now - 61)), "id token expired");
  auto strict = expectations();
  strict.leeway_s = 0;
  EXPECT_EQ(refusal(with(good_claims(), "exp", now - 1), strict), "id token expired");
  EXPECT_EQ(refusal(without(good_claims(), "exp")), "id token has no expiry");
  EXPECT_EQ(refusal(with(good_claims(), "exp", "tomorrow")), "id token claim exp is malformed");
  EXPECT_EQ(refusal(with(good_claims(), "exp", 1e300)), "id token claim exp is malformed");
  // Would overflow when the leeway is added (signed without libjwt, whose
  // JSON library refuses integers beyond int64).
  const json rs256 = {{"alg", "RS256"}, {"kid", "k1"}};
  auto far = good_claims();
  far["exp"] = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(refusal(sign_raw(rs256, far)), "id token claim exp is malformed");
  far["exp"] = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(refusal(sign_raw(rs256, far)), "id token claim exp is malformed");
  EXPECT_TRUE(verify(with(good_claims(), "exp", static_cast<double>(now) + 0.5), c));
}

TEST(IdToken, IssuedInTheFutureBeyondLeewayRejected) {
  oauth::id_token_claims c;
  EXPECT_TRUE(verify(with(good_claims(), "iat", now + 59), c));
  EXPECT_EQ(refusal(with(good_claims(), "iat", now + 61)), "id token issued in the future");
  EXPECT_EQ(refusal(without(good_claims(), "iat")), "id token has no issue time");
  EXPECT_EQ(refusal(with(good_claims(), "nbf", now + 600)), "id token not yet valid");
  EXPECT_TRUE(verify(with(good_claims(), "nbf", now - 5), c));
}

TEST(IdToken, AudienceChecks) {
  EXPECT_EQ(refusal(with(good_claims(), "aud", "someone-else.apps.googleusercontent.com")),
            "id token audience does not match");
  EXPECT_EQ(refusal(without(good_claims(), "aud")), "id token has no audience");
  EXPECT_EQ(refusal(with(good_claims(), "aud", json::array())), "id token audience does not match");
  EXPECT_EQ(refusal(with(good_claims(), "aud", 42)), "id token claim aud is malformed");

  oauth::id_token_claims c;
  // An array containing ours, azp naming us (Google's multi-audience form).
  ASSERT_TRUE(verify(with(good_claims(), "aud", {"other-client", client}), c));
  EXPECT_EQ(c.audience, client);
  auto single = good_claims();
  single["aud"] = {client};
  single.erase("azp");
  EXPECT_TRUE(verify(sign(single), c));

  // Several audiences and nobody named as the presenter: OIDC says refuse.
  auto many = good_claims();
  many["aud"] = {"other-client", client};
  many.erase("azp");
  EXPECT_EQ(refusal(sign(many)), "id token authorized party does not match");
  EXPECT_EQ(refusal(with(good_claims(), "azp", "other-client")),
            "id token authorized party does not match");
}

TEST(IdToken, WrongIssuerRejected) {
  auto error = refusal(with(good_claims(), "iss", "https://evil.example"));
  EXPECT_EQ(error, "id token issuer is not trusted");
  EXPECT_EQ(error.find("evil"), std::string::npos);
  EXPECT_EQ(refusal(without(good_claims(), "iss")), "id token has no issuer");
  EXPECT_EQ(refusal(with(good_claims(), "iss", "https://accounts.google.com/")),
            "id token issuer is not trusted");
}

TEST(IdToken, EmailAndSubjectRequired) {
  EXPECT_EQ(refusal(without(good_claims(), "email")), "id token has no email");
  EXPECT_EQ(refusal(with(good_claims(), "email", "")), "id token has no email");
  EXPECT_EQ(refusal(with(good_claims(), "email", json::array({canary}))),
            "id token claim email is malformed");
  EXPECT_EQ(refusal(without(good_claims(), "sub")), "id token has no subject");
  EXPECT_EQ(refusal(with(good_claims(), "sub", 123)), "id token claim sub is malformed");
}

TEST(IdToken, UnverifiedEmailRefusedByDefaultAndReportedOnRequest) {
  EXPECT_EQ(refusal(with(good_claims(), "email_verified", false)), "id token email is not verified");
  EXPECT_EQ(refusal(without(good_claims(), "email_verified")), "id token email is not verified");
  EXPECT_EQ(refusal(with(good_claims(), "email_verified", "yes")),
            "id token claim email_verified is malformed");

  auto lenient = expectations();
  lenient.require_email_verified = false;
  oauth::id_token_claims c;
  ASSERT_TRUE(verify(with(good_claims(), "email_verified", false), c, lenient));
  EXPECT_FALSE(c.email_verified);
  EXPECT_EQ(c.email, canary);
  // Some providers send the boolean as a string.
  ASSERT_TRUE(verify(with(good_claims(), "email_verified", "true"), c));
  EXPECT_TRUE(c.email_verified);
}

TEST(IdToken, NonceCheckedWhenExpected) {
  auto expect = expectations();
  expect.nonce = "n-0S6_WzA2Mj";
  oauth::id_token_claims c;
  EXPECT_TRUE(verify(with(good_claims(), "nonce", "n-0S6_WzA2Mj"), c, expect));
  EXPECT_EQ(refusal(with(good_claims(), "nonce", "other"), expect), "id token nonce does not match");
  EXPECT_EQ(refusal(sign(good_claims()), expect), "id token nonce does not match");
  // Not expected: not checked.
  EXPECT_TRUE(verify(with(good_claims(), "nonce", "anything"), c));
}

TEST(IdToken, EmptyExpectationsRefuseEverything) {
  auto no_issuer = expectations();
  no_issuer.issuers.clear();
  refusal(sign(good_claims()), no_issuer);
  auto no_audience = expectations();
  no_audience.audience.clear();
  refusal(with(good_claims(), "aud", ""), no_audience);
}

TEST(IdToken, GarbageRejectedWithoutCrashing) {
  auto token = sign(good_claims());
  auto first = token.find('.');
  auto second = token.find('.', first + 1);
  auto header = token.substr(0, first);
  auto payload = token.substr(first + 1, second - first - 1);
  auto signature = token.substr(second + 1);
  for (const std::string& junk :
       {std::string{}, std::string{"."}, std::string{".."}, std::string{"abc"},
        std::string{"a.b"}, token + ".x", std::string{"!!!.???.###"}, "." + payload + "." + signature,
        header + "." + payload + ".", header + ".." + signature,
        header + "." + payload + "." + signature + "=", header + "." + payload + ".A",
        header + "." + payload + "." + signature.substr(0, signature.size() - 4),
        header + "." + payload + "*." + signature, base64url("not json") + "." + payload + "." + signature,
        base64url("[1,2]") + "." + payload + "." + signature,
        base64url(std::string("\xff\xfe", 2)) + "." + payload + "." + signature,
        std::string(3, '\0')}) {
    auto error = refusal(junk);
    EXPECT_NE(error.find("id token"), std::string::npos) << error;
  }
  // A payload that is signed but not a JSON object.
  auto not_object = sign_raw({{"alg", "RS256"}, {"kid", "k1"}}, json::array({1, 2}));
  EXPECT_EQ(refusal(not_object), "id token payload is malformed");

  EXPECT_EQ(refusal(token + std::string(oauth::max_id_token_bytes, 'A')), "id token is too large");
  EXPECT_EQ(refusal(std::string(oauth::max_id_token_bytes + 1, '.')), "id token is too large");
  auto huge_jwks = json{{"keys", {jwk_of(good_key(), "k1")}}, {"pad", std::string(300 * 1024, 'x')}};
  EXPECT_EQ(refusal(token, expectations(), huge_jwks.dump()), "JWKS document is too large");
  for (const std::string& jwks : {std::string{}, std::string{"{"}, std::string{"[]"},
                                  std::string{R"({"keys":{}})"}, std::string{R"({"nokeys":[]})"}})
    EXPECT_EQ(refusal(token, expectations(), jwks), "JWKS document is malformed") << jwks;
  // Non-object entries in keys are skipped, not fatal.
  oauth::id_token_claims c;
  EXPECT_TRUE(verify(token, c, expectations(),
                     json{{"keys", {1, "x", nullptr, jwk_of(good_key(), "k1")}}}.dump()));
}

TEST(IdToken, ErrorsNeverCarryTheEmailOrToken) {
  // refusal() checks each message; this gathers every kind in one place.
  std::vector<std::string> errors = {
    refusal(sign(good_claims(), "k1", other_key())),
    refusal(with(good_claims(), "aud", canary)),
    refusal(with(good_claims(), "iss", canary)),
    refusal(with(good_claims(), "azp", canary)),
    refusal(with(good_claims(), "exp", now - 3600)),
    refusal(with(good_claims(), "email_verified", false)),
    refusal(with(good_claims(), "email", 5)),
    refusal(sign(good_claims(), canary)),
    refusal(sign_raw({{"alg", canary}, {"kid", "k1"}}, good_claims())),
  };
  for (auto& e : errors) {
    EXPECT_EQ(e.find(canary), std::string::npos) << e;
    EXPECT_EQ(e.find("canary"), std::string::npos) << e;
  }
}

// The fake provider as getTokenFromCode's tests will use it: a code minted
// without a browser, exchanged at /token, its id_token checked against /jwks.
class FakeProviderIdToken : public ::testing::Test {
protected:
  fake_provider_process fake;

  std::string mint_code(const std::string& scope, const std::string& redirect = "postmessage") {
    auto reply = json::parse(
      fake.admin("/__code", json{{"redirect_uri", redirect}, {"scope", scope}}.dump()));
    return reply.at("code").get<std::string>();
  }

  http_reply exchange(const std::string& code, const std::string& redirect = "postmessage",
                      const std::string& scope = "") {
    std::vector<std::pair<std::string, std::string>> form = {
      {"grant_type", "authorization_code"}, {"code", code}, {"redirect_uri", redirect},
      {"client_id", "cm-test-client"}, {"client_secret", "cm-test-secret"}};
    if (!scope.empty())
      form.emplace_back("scope", scope);
    return http_call(fake.port(), "POST", "/token",
                     {{"Content-Type", "application/x-www-form-urlencoded"}},
                     oauth::form_encode(form));
  }

  oauth::id_token_expectations expect() {
    oauth::id_token_expectations e;
    e.issuers = {fake.url("")};
    e.audience = "cm-test-client";
    e.now_s = static_cast<int64_t>(std::time(nullptr));
    return e;
  }

  /// The id_token of a fresh openid code, verified against /jwks.
  bool id_token_verifies(oauth::id_token_claims& claims, std::string& error) {
    auto reply = exchange(mint_code("openid email"));
    EXPECT_EQ(reply.status, 200) << reply.body;
    auto token = reply.json().value("id_token", "");
    EXPECT_FALSE(token.empty()) << reply.body;
    auto jwks = http_call(fake.port(), "GET", "/jwks");
    EXPECT_EQ(jwks.status, 200);
    return oauth::verify_id_token(token, jwks.body, expect(), claims, error);
  }
};

TEST_F(FakeProviderIdToken, MintedCodeYieldsAnIdTokenThatVerifies) {
  fake.admin("/__id_token", json{{"email", canary}, {"hd", "acme.example"}}.dump());
  oauth::id_token_claims c;
  std::string error;
  ASSERT_TRUE(id_token_verifies(c, error)) << error;
  EXPECT_EQ(c.email, canary);
  EXPECT_TRUE(c.email_verified);
  EXPECT_EQ(c.issuer, fake.url(""));
  EXPECT_EQ(c.audience, "cm-test-client");
  EXPECT_EQ(c.hosted_domain, "acme.example");
  EXPECT_FALSE(c.subject.empty());
  EXPECT_GT(c.expires_at_s, c.issued_at_s);

  auto jwks = http_call(fake.port(), "GET", "/jwks").json();
  ASSERT_EQ(jwks["keys"].size(), 1u);
  EXPECT_EQ(jwks["keys"][0]["kid"], "fake-1");
  EXPECT_EQ(jwks["keys"][0]["kty"], "RSA");
  EXPECT_FALSE(jwks["keys"][0].contains("d")) << "only the public half is published";
}

TEST_F(FakeProviderIdToken, MintedCodeWorksOnceAndOnlyWithItsRedirectUri) {
  auto code = mint_code("openid email");
  EXPECT_EQ(exchange(code, "https://elsewhere.example/cb").status, 400);
  auto again = mint_code("openid email");
  auto first = exchange(again);
  EXPECT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(exchange(again).status, 400) << "a code works once";
  // Without openid there is no id_token, unless the token request asks.
  auto plain = exchange(mint_code("email"));
  ASSERT_EQ(plain.status, 200);
  EXPECT_FALSE(plain.json().contains("id_token"));
  auto asked = exchange(mint_code(""), "postmessage", "openid email");
  ASSERT_EQ(asked.status, 200);
  EXPECT_TRUE(asked.json().contains("id_token"));
}

TEST_F(FakeProviderIdToken, SettingsProduceTokensTheVerifierRefuses) {
  oauth::id_token_claims c;
  std::string error;
  fake.admin("/__id_token", R"({"sign_with":"other"})");
  EXPECT_FALSE(id_token_verifies(c, error));
  EXPECT_EQ(error, "id token signature is invalid");
  fake.admin("/__id_token", R"({"kid":"fake-2"})");
  EXPECT_FALSE(id_token_verifies(c, error));
  EXPECT_EQ(error, "id token signed by an unknown key");
  fake.admin("/__id_token", R"({"aud":"another-client"})");
  EXPECT_FALSE(id_token_verifies(c, error));
  EXPECT_EQ(error, "id token audience does not match");
  fake.admin("/__id_token", R"({"email_verified":false})");
  EXPECT_FALSE(id_token_verifies(c, error));
  EXPECT_EQ(error, "id token email is not verified");
  fake.admin("/__id_token", R"({"email":null})");
  EXPECT_FALSE(id_token_verifies(c, error));
  EXPECT_EQ(error, "id token has no email");
  // The state stays until changed: two tokens in a row, both refused.
  EXPECT_FALSE(id_token_verifies(c, error));
  fake.admin("/__id_token", "{}");
  EXPECT_TRUE(id_token_verifies(c, error)) << error;
  EXPECT_EQ(c.email, "ops@acme.test");
}

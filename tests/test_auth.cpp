// Identity: session JWTs (HS256 and RS256), the attacks on them, service
// tokens, service JWTs with scopes, and the route guards.
#include <jwt.h>
#include <sodium.h>

#include <cstdio>
#include <ctime>
#include <limits>

#include <gtest/gtest.h>

#include "config/yaml_schema.hpp"
#include "http/auth.hpp"
#include "tests/support/test_env.hpp"

using namespace cm;
using namespace cm::http;

namespace {

const std::string hs_secret = "0123456789abcdef0123456789abcdef-test-secret";

struct keys {
  cm::test::temp_dir dir;
  std::string hs_file = dir.file("hs.secret");
  std::string rsa_private = dir.file("rsa.pem");
  std::string rsa_public = dir.file("rsa.pub");
  std::string other_private = dir.file("other.pem");
  keys() {
    cm::test::write_file(hs_file, hs_secret + "\n");
    auto gen = [](const std::string& priv) {
      return cm::test::run_command("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " +
                                   priv + " 2>/dev/null");
    };
    if (gen(rsa_private) != 0 || gen(other_private) != 0 ||
        cm::test::run_command("openssl pkey -in " + rsa_private + " -pubout -out " + rsa_public +
                              " 2>/dev/null") != 0)
      throw std::runtime_error("openssl failed");
  }
};

keys& test_keys() {
  static keys k;
  return k;
}

config::auth_config hs_config() {
  config::auth_config cfg;
  cfg.hs256_secret_file = test_keys().hs_file;
  cfg.service_tokens.push_back({"reporting", sha256_hex("svc-token-with-scope"), {"FETCH_CONFIG"}});
  cfg.service_tokens.push_back({"metrics", sha256_hex("svc-token-no-scope"), {}});
  return cfg;
}

config::auth_config rs_config() {
  config::auth_config cfg;
  cfg.rs256_public_key_file = test_keys().rsa_public;
  return cfg;
}

/// Signs claims with libjwt; alg NONE leaves the token unsigned.
std::string sign(jwt_alg_t alg, const std::string& key, const nlohmann::json& claims) {
  jwt_t* jwt = nullptr;
  jwt_new(&jwt);
  jwt_add_grants_json(jwt, claims.dump().c_str());
  jwt_set_alg(jwt, alg, alg == JWT_ALG_NONE ? nullptr : reinterpret_cast<const unsigned char*>(key.data()),
              alg == JWT_ALG_NONE ? 0 : static_cast<int>(key.size()));
  char* out = jwt_encode_str(jwt);
  std::string token = out ? out : "";
  free(out);
  jwt_free(jwt);
  return token;
}

nlohmann::json user_claims(long exp_offset = 600) {
  return {{"sub", "alice"}, {"team", "acme"}, {"email", "alice@acme.test"},
          {"role", "member"}, {"exp", static_cast<long>(std::time(nullptr)) + exp_offset}};
}

request with_header(const std::string& name, const std::string& value) {
  request r;
  r.headers.emplace_back(name, value);
  return r;
}

ec code_of_result(const caf::expected<identity>& r) {
  return r ? ec::none : cm::code_of(r.error());
}

} // namespace

TEST(Auth, ValidHs256TokenYieldsTheUser) {
  authenticator auth{hs_config()};
  auto who = auth.authenticate(with_header("authorization", "Bearer " + sign(JWT_ALG_HS256, hs_secret, user_claims())));
  ASSERT_TRUE(who) << to_string(who.error());
  EXPECT_TRUE(who->is_user());
  EXPECT_EQ(who->subject, "alice");
  EXPECT_EQ(who->team, "acme");
  EXPECT_EQ(who->email, "alice@acme.test");
  EXPECT_FALSE(who->is_admin());
}

TEST(Auth, MissingMalformedExpiredAndForgedTokensAre401) {
  authenticator auth{hs_config()};
  EXPECT_EQ(code_of_result(auth.authenticate(request{})), ec::unauthenticated);
  EXPECT_EQ(code_of_result(auth.authenticate(with_header("authorization", "Basic abc"))),
            ec::unauthenticated);
  EXPECT_EQ(code_of_result(auth.authenticate(with_header("authorization", "Bearer not.a.jwt"))),
            ec::unauthenticated);
  EXPECT_EQ(code_of_result(auth.authenticate(with_header("authorization", "Bearer "))),
            ec::unauthenticated);
  auto expired = sign(JWT_ALG_HS256, hs_secret, user_claims(-3600));
  EXPECT_EQ(code_of_result(auth.verify_jwt(expired)), ec::unauthenticated);
  auto forged = sign(JWT_ALG_HS256, "another-secret-of-sufficient-length-0000", user_claims());
  EXPECT_EQ(code_of_result(auth.verify_jwt(forged)), ec::unauthenticated);
  auto no_exp = user_claims();
  no_exp.erase("exp");
  EXPECT_EQ(code_of_result(auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, no_exp))),
            ec::unauthenticated);
  auto no_team = user_claims();
  no_team.erase("team");
  EXPECT_EQ(code_of_result(auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, no_team))),
            ec::unauthenticated);
  auto bad_role = user_claims();
  bad_role["role"] = "root";
  EXPECT_EQ(code_of_result(auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, bad_role))),
            ec::unauthenticated);
  EXPECT_EQ(code_of_result(auth.verify_jwt(std::string(10000, 'a'))), ec::unauthenticated);
}

// Found by fuzz/fuzz_jwt (UBSan): exp + leeway overflowed for an exp near
// LONG_MAX. Such a token is signed by us and has not expired.
TEST(Auth, ExpiryAtTheEndOfTimeDoesNotOverflow) {
  authenticator auth{hs_config()};
  auto claims = user_claims();
  claims["exp"] = std::numeric_limits<long>::max();
  auto who = auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, claims));
  ASSERT_TRUE(who) << to_string(who.error());
  EXPECT_EQ(who->subject, "alice");
  claims["exp"] = std::numeric_limits<long>::min();
  EXPECT_EQ(code_of_result(auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, claims))),
            ec::unauthenticated);
}

TEST(Auth, TamperedPayloadIsRefused) {
  authenticator auth{hs_config()};
  auto token = sign(JWT_ALG_HS256, hs_secret, user_claims());
  auto first = token.find('.');
  auto second = token.find('.', first + 1);
  auto admin = user_claims();
  admin["role"] = "admin";
  auto payload = nlohmann::json(admin).dump();
  std::string b64(payload.size() * 2, '\0');
  sodium_bin2base64(b64.data(), b64.size(), reinterpret_cast<const unsigned char*>(payload.data()),
                    payload.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  b64.resize(strlen(b64.c_str()));
  auto tampered = token.substr(0, first + 1) + b64 + token.substr(second);
  EXPECT_EQ(code_of_result(auth.verify_jwt(tampered)), ec::unauthenticated);
}

TEST(Auth, AlgNoneIsRefused) {
  authenticator auth{hs_config()};
  auto unsigned_token = sign(JWT_ALG_NONE, "", user_claims());
  ASSERT_FALSE(unsigned_token.empty());
  EXPECT_EQ(code_of_result(auth.verify_jwt(unsigned_token)), ec::unauthenticated);
  // The same with a bogus signature appended.
  EXPECT_EQ(code_of_result(auth.verify_jwt(unsigned_token + "c2ln")), ec::unauthenticated);
}

TEST(Auth, Rs256PublicKeyVerifies) {
  authenticator auth{rs_config()};
  auto priv = cm::test::read_file(test_keys().rsa_private);
  auto who = auth.verify_jwt(sign(JWT_ALG_RS256, priv, user_claims()));
  ASSERT_TRUE(who) << to_string(who.error());
  EXPECT_EQ(who->subject, "alice");
  auto other = cm::test::read_file(test_keys().other_private);
  EXPECT_EQ(code_of_result(auth.verify_jwt(sign(JWT_ALG_RS256, other, user_claims()))),
            ec::unauthenticated);
}

TEST(Auth, Rs256KeyCannotBeUsedAsAnHmacSecret) {
  // The classic algorithm-confusion attack: HS256 signed with the public key.
  authenticator auth{rs_config()};
  auto pub = cm::test::read_file(test_keys().rsa_public);
  EXPECT_EQ(code_of_result(auth.verify_jwt(sign(JWT_ALG_HS256, pub, user_claims()))),
            ec::unauthenticated);
}

TEST(Auth, IssuerIsCheckedWhenConfigured) {
  auto cfg = hs_config();
  cfg.issuer = "https://login.acme.test";
  authenticator auth{cfg};
  auto claims = user_claims();
  EXPECT_EQ(code_of_result(auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, claims))),
            ec::unauthenticated);
  claims["iss"] = "https://login.acme.test";
  EXPECT_TRUE(auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, claims)));
}

// Issue 16: a token minted with the same key for another service was
// accepted. With auth.jwt.audience set, `aud` (a string or an array, RFC
// 7519 §4.1.3) must name this service.
TEST(Auth, AudienceIsCheckedWhenConfigured) {
  auto cfg = hs_config();
  cfg.issuer = "https://login.acme.test";
  cfg.audience = "connector-manager";
  authenticator auth{cfg};
  auto claims = user_claims();
  claims["iss"] = "https://login.acme.test";
  auto verdict = [&](const nlohmann::json& aud) {
    auto c = claims;
    if (!aud.is_null())
      c["aud"] = aud;
    return code_of_result(auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, c)));
  };
  EXPECT_EQ(verdict(nullptr), ec::unauthenticated) << "no aud";
  EXPECT_EQ(verdict("billing-service"), ec::unauthenticated) << "another service's token";
  EXPECT_EQ(verdict(nlohmann::json::array({"billing-service"})), ec::unauthenticated);
  EXPECT_EQ(verdict(nlohmann::json::array()), ec::unauthenticated);
  EXPECT_EQ(verdict(42), ec::unauthenticated);
  EXPECT_EQ(verdict("connector-manager "), ec::unauthenticated) << "compared exactly";
  EXPECT_EQ(verdict(nlohmann::json::array({nlohmann::json::array({"connector-manager"})})),
            ec::unauthenticated)
    << "only strings count";
  EXPECT_EQ(verdict("connector-manager"), ec::none);
  EXPECT_EQ(verdict(nlohmann::json::array({"billing-service", "connector-manager"})), ec::none);
  // Service JWTs are held to it too.
  nlohmann::json service = {{"sub", "sync-worker"}, {"scopes", {"FETCH_CONFIG"}},
                            {"iss", "https://login.acme.test"}, {"aud", "billing-service"},
                            {"exp", static_cast<long>(std::time(nullptr)) + 600}};
  EXPECT_EQ(code_of_result(auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, service))),
            ec::unauthenticated);
  // RS256 tokens as well.
  auto rs = rs_config();
  rs.audience = "connector-manager";
  authenticator rs_auth{rs};
  auto key = cm::test::read_file(test_keys().rsa_private);
  auto rs_claims = user_claims();
  rs_claims["aud"] = "billing-service";
  EXPECT_EQ(code_of_result(rs_auth.verify_jwt(sign(JWT_ALG_RS256, key, rs_claims))),
            ec::unauthenticated);
  rs_claims["aud"] = "connector-manager";
  EXPECT_TRUE(rs_auth.verify_jwt(sign(JWT_ALG_RS256, key, rs_claims)));
  // Without the setting, aud is not looked at (as before).
  authenticator lenient{hs_config()};
  auto other = user_claims();
  other["aud"] = "billing-service";
  EXPECT_TRUE(lenient.verify_jwt(sign(JWT_ALG_HS256, hs_secret, other)));
}

TEST(Auth, MintedTokensCarryTheConfiguredIssuerAndAudience) {
  auto cfg = hs_config();
  cfg.issuer = "https://login.acme.test";
  cfg.audience = "connector-manager";
  authenticator auth{cfg};
  auto token = auth.mint("alice", "acme", "", "member", 600);
  EXPECT_TRUE(auth.verify_jwt(token));
  jwt_t* raw = nullptr;
  ASSERT_EQ(jwt_decode(&raw, token.c_str(), reinterpret_cast<const unsigned char*>(hs_secret.data()),
                       static_cast<int>(hs_secret.size())),
            0);
  EXPECT_STREQ(jwt_get_grant(raw, "iss"), "https://login.acme.test");
  EXPECT_STREQ(jwt_get_grant(raw, "aud"), "connector-manager");
  jwt_free(raw);
  // Without them configured, neither claim is set.
  authenticator plain{hs_config()};
  raw = nullptr;
  auto bare = plain.mint("alice", "acme", "", "member", 600);
  ASSERT_EQ(jwt_decode(&raw, bare.c_str(), reinterpret_cast<const unsigned char*>(hs_secret.data()),
                       static_cast<int>(hs_secret.size())),
            0);
  EXPECT_EQ(jwt_get_grant(raw, "iss"), nullptr);
  EXPECT_EQ(jwt_get_grant(raw, "aud"), nullptr);
  jwt_free(raw);
}

// Issue 16: the HS256 secret signs every session; like the keyring it must
// not be readable by anyone but the service's user.
TEST(Auth, Hs256SecretFileReadableByOthersIsRefused) {
  cm::test::temp_dir dir;
  auto path = dir.file("loose.secret");
  for (unsigned mode : {0640u, 0604u, 0620u, 0601u, 0660u, 0644u}) {
    std::remove(path.c_str());
    cm::test::write_file(path, hs_secret, mode);
    auto cfg = hs_config();
    cfg.hs256_secret_file = path;
    try {
      authenticator auth{cfg};
      ADD_FAILURE() << "accepted mode " << std::oct << mode;
    } catch (const config::config_error& e) {
      std::string what = e.what();
      EXPECT_NE(what.find(path), std::string::npos) << what;
      EXPECT_NE(what.find("chmod 600"), std::string::npos) << what;
      EXPECT_EQ(what.find(hs_secret), std::string::npos) << "the secret is never quoted";
    }
  }
  for (unsigned mode : {0600u, 0400u}) {
    std::remove(path.c_str());
    cm::test::write_file(path, hs_secret, mode);
    auto cfg = hs_config();
    cfg.hs256_secret_file = path;
    EXPECT_NO_THROW(authenticator{cfg}) << std::oct << mode;
  }
}

// Issue 16, as README documents: only line endings at the end of the file
// are dropped; every other byte, spaces and tabs included, is the secret.
TEST(Auth, Hs256SecretFileDropsOnlyTrailingLineEndings) {
  cm::test::temp_dir dir;
  auto path = dir.file("hs.secret");
  auto cfg = hs_config();
  cfg.hs256_secret_file = path;
  auto accepts = [&](const std::string& content, const std::string& key) {
    cm::test::write_file(path, content);
    authenticator auth{cfg};
    return static_cast<bool>(auth.verify_jwt(sign(JWT_ALG_HS256, key, user_claims())));
  };
  EXPECT_TRUE(accepts(hs_secret, hs_secret));
  EXPECT_TRUE(accepts(hs_secret + "\n", hs_secret));
  EXPECT_TRUE(accepts(hs_secret + "\r\n", hs_secret));
  EXPECT_TRUE(accepts(hs_secret + "\n\n", hs_secret));
  EXPECT_TRUE(accepts(hs_secret + " \t\n", hs_secret + " \t"));
  EXPECT_FALSE(accepts(hs_secret + " \t\n", hs_secret)) << "trailing spaces are the secret's";
  EXPECT_TRUE(accepts(" " + hs_secret + "\n", " " + hs_secret));
  EXPECT_FALSE(accepts(" " + hs_secret + "\n", hs_secret));
}

TEST(Auth, ServiceTokensFromEitherHeaderCarryTheirScopes) {
  authenticator auth{hs_config()};
  auto svc = auth.authenticate(with_header("x-services-token", "svc-token-with-scope"));
  ASSERT_TRUE(svc);
  EXPECT_TRUE(svc->is_service());
  EXPECT_EQ(svc->subject, "reporting");
  EXPECT_TRUE(svc->has_scope("FETCH_CONFIG"));
  auto reeve = auth.authenticate(with_header("x-reeve-services-token", "svc-token-no-scope"));
  ASSERT_TRUE(reeve);
  EXPECT_EQ(reeve->subject, "metrics");
  EXPECT_FALSE(reeve->has_scope("FETCH_CONFIG"));
  EXPECT_EQ(code_of_result(auth.authenticate(with_header("x-services-token", "svc-token-with-scop"))),
            ec::unauthenticated);
  EXPECT_EQ(code_of_result(auth.authenticate(with_header("x-services-token", "svc-token-with-scope "))),
            ec::unauthenticated);
}

TEST(Auth, ConfiguredServiceHeaderNameWorks) {
  auto cfg = hs_config();
  cfg.service_header = "X-Internal-Token";
  authenticator auth{cfg};
  EXPECT_TRUE(auth.authenticate(with_header("x-internal-token", "svc-token-with-scope")));
}

TEST(Auth, ServiceJwtWithScopesIsAService) {
  authenticator auth{hs_config()};
  nlohmann::json claims = {{"sub", "sync-worker"},
                           {"scopes", {"FETCH_CONFIG"}},
                           {"exp", static_cast<long>(std::time(nullptr)) + 600}};
  auto who = auth.verify_jwt(sign(JWT_ALG_HS256, hs_secret, claims));
  ASSERT_TRUE(who);
  EXPECT_TRUE(who->is_service());
  EXPECT_TRUE(who->has_scope("FETCH_CONFIG"));
  EXPECT_FALSE(require_service(*who, "FETCH_CONFIG"));
}

TEST(Auth, GuardsAllowExactlyTheRightCallers) {
  identity member{identity::kind::user, "alice", "acme", "", "member", {}};
  identity admin{identity::kind::user, "bob", "acme", "", "admin", {}};
  identity svc{identity::kind::service, "reporting", "", "", "", {"FETCH_CONFIG"}};
  identity weak{identity::kind::service, "metrics", "", "", "", {}};
  EXPECT_FALSE(require_user(member));
  EXPECT_FALSE(require_user(admin));
  EXPECT_EQ(cm::code_of(require_user(svc)), ec::forbidden);
  EXPECT_EQ(cm::code_of(require_admin(member)), ec::forbidden);
  EXPECT_FALSE(require_admin(admin));
  EXPECT_EQ(cm::code_of(require_admin(svc)), ec::forbidden);
  EXPECT_FALSE(require_service(svc, "FETCH_CONFIG"));
  EXPECT_EQ(cm::code_of(require_service(weak, "FETCH_CONFIG")), ec::forbidden);
  EXPECT_EQ(cm::code_of(require_service(admin, "FETCH_CONFIG")), ec::forbidden);
  EXPECT_FALSE(require_admin_or_service(admin, "FETCH_CONFIG"));
  EXPECT_FALSE(require_admin_or_service(svc, "FETCH_CONFIG"));
  EXPECT_EQ(cm::code_of(require_admin_or_service(member, "FETCH_CONFIG")), ec::forbidden);
}

TEST(Auth, MintedTokensVerify) {
  authenticator auth{hs_config()};
  auto token = auth.mint("carol", "acme", "carol@acme.test", "admin", 60);
  auto who = auth.verify_jwt(token);
  ASSERT_TRUE(who);
  EXPECT_EQ(who->subject, "carol");
  EXPECT_TRUE(who->is_admin());
  authenticator rs{rs_config()};
  EXPECT_THROW(rs.mint("carol", "acme", "", "member", 60), std::runtime_error);
}

TEST(Auth, ShortHs256SecretIsAConfigError) {
  cm::test::temp_dir dir;
  cm::test::write_file(dir.file("short"), "tooshort");
  config::auth_config cfg;
  cfg.hs256_secret_file = dir.file("short");
  EXPECT_THROW(authenticator auth{cfg}, config::config_error);
}

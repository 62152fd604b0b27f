// Service-account keys (issue 16): which keys are signed with
// (provider/service_account.hpp), the bounded pool the signing runs on
// (common/bounded_work_pool.hpp) and the key signer actor in front of it
// (actors/key_signer_actor.hpp). The end-to-end cases (400 and nothing
// stored, other requests answered while keys are signed, stored keys
// checked on refresh) are in tests/test_api_keys.cpp.
#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>
#include <jwt.h>

#include "actors/actor_config.hpp"
#include "actors/key_signer_actor.hpp"
#include "common/error.hpp"
#include "provider/oauth_protocol.hpp"
#include "provider/service_account.hpp"
#include "tests/support/hostile_keys.hpp"
#include "tests/support/rsa_test_key.hpp"

using namespace cm;
using namespace std::chrono_literals;

namespace {

const std::string email = "cm-ga4@acme-project.iam.gserviceaccount.com";

oauth::jwt_bearer_grant grant_for(const std::string& pem) {
  std::string problem;
  auto key = oauth::parse_service_account(test::service_account_file(pem, email), problem);
  if (!key)
    throw std::runtime_error("test key file refused: " + problem);
  oauth::jwt_bearer_grant grant;
  grant.key = std::move(*key);
  grant.token_url = "https://oauth2.example/token";
  grant.scope = "https://www.googleapis.com/auth/analytics.readonly";
  grant.issued_at_s = 1700000000;
  grant.timeout_ms = 3000;
  return grant;
}

/// The refusal of `pem`, or "" when it is accepted.
std::string refusal(const std::string& pem) {
  std::string problem;
  return oauth::check_signing_key(secret{pem}, problem) ? std::string{} : problem;
}

std::string form_value(const std::string& body, const std::string& name) {
  auto at = body.find(name + "=");
  if (at == std::string::npos)
    return {};
  auto start = at + name.size() + 1;
  return body.substr(start, body.find('&', start) - start);
}

const test::rsa_test_key& google_sized_key() {
  static const auto key = test::generate_rsa_test_key(2048);
  return key;
}

} // namespace

TEST(KeySigning, AGoogleSizedKeySignsAGrantItsPublicKeyVerifies) {
  auto& key = google_sized_key();
  EXPECT_EQ(refusal(key.private_pem), "");
  std::string problem;
  auto req = oauth::sign_grant(grant_for(key.private_pem), problem);
  ASSERT_TRUE(req) << problem;
  EXPECT_EQ(req->method, "POST");
  EXPECT_EQ(req->url, "https://oauth2.example/token");
  EXPECT_EQ(form_value(req->body, "grant_type"),
            "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
  auto assertion = form_value(req->body, "assertion");
  ASSERT_FALSE(assertion.empty());
  jwt_t* raw = nullptr;
  ASSERT_EQ(jwt_decode(&raw, assertion.c_str(),
                       reinterpret_cast<const unsigned char*>(key.public_pem.data()),
                       static_cast<int>(key.public_pem.size())),
            0);
  std::unique_ptr<jwt_t, void (*)(jwt_t*)> jwt{raw, jwt_free};
  EXPECT_EQ(jwt_get_alg(jwt.get()), JWT_ALG_RS256);
  EXPECT_STREQ(jwt_get_header(jwt.get(), "kid"), "k1");
  EXPECT_STREQ(jwt_get_grant(jwt.get(), "iss"), email.c_str());
  EXPECT_STREQ(jwt_get_grant(jwt.get(), "aud"), "https://oauth2.example/token");
  EXPECT_STREQ(jwt_get_grant(jwt.get(), "scope"),
               "https://www.googleapis.com/auth/analytics.readonly");
  EXPECT_EQ(jwt_get_grant_int(jwt.get(), "iat"), 1700000000);
  EXPECT_EQ(jwt_get_grant_int(jwt.get(), "exp"), 1700003600);
  // Another key's public half does not verify it.
  auto other = test::generate_rsa_test_key(2048);
  jwt_t* forged = nullptr;
  EXPECT_NE(jwt_decode(&forged, assertion.c_str(),
                       reinterpret_cast<const unsigned char*>(other.public_pem.data()),
                       static_cast<int>(other.public_pem.size())),
            0);
  jwt_free(forged);
}

TEST(KeySigning, KeysOfOtherSizesShapesOrInconsistentPartsAreRefusedNamingTheField) {
  auto starts_with = [](const std::string& text, const std::string& prefix) {
    return text.rfind(prefix, 0) == 0;
  };
  // A 30,000-bit modulus with bogus CRT values: refused by its size, before
  // anything costly (signing with it takes tens of seconds).
  auto start = std::chrono::steady_clock::now();
  auto huge = refusal(test::oversized_bogus_crt_pem(30000));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s) << "a generous bound";
  EXPECT_EQ(huge, "api_key: private_key must be an RSA key of 2048 to 4096 bits (this one has "
                  "30000)");
  EXPECT_EQ(refusal(test::generate_rsa_test_key(1024).private_pem),
            "api_key: private_key must be an RSA key of 2048 to 4096 bits (this one has 1024)");
  // Right size, CRT value off by two: OpenSSL would still sign (by the slow
  // path); the consistency check refuses it.
  EXPECT_EQ(refusal(test::bogus_crt_pem(google_sized_key().private_pem)),
            "api_key: private_key is not a consistent RSA key");
  // Primes out of proportion would make the consistency check itself slow.
  EXPECT_EQ(refusal(test::unbalanced_primes_pem()),
            "api_key: private_key has RSA parts out of proportion to its modulus");
  EXPECT_EQ(refusal(test::ec_pem()), "api_key: private_key must be an RSA key");
  // Encrypted keys are refused unread, even with the expected marker after.
  auto encrypted = test::encrypted_pem(2048);
  EXPECT_TRUE(starts_with(refusal(encrypted + "-----BEGIN PRIVATE KEY-----\n"),
                          "api_key: private_key must be an unencrypted PKCS#8 key"));
  EXPECT_TRUE(starts_with(refusal("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
                          "api_key: private_key is not a readable PKCS#8 key"));
  EXPECT_TRUE(starts_with(refusal("-----BEGIN PRIVATE KEY-----\nnot base64"),
                          "api_key: private_key must hold a PEM block"));
  // A refused key signs nothing.
  std::string problem;
  EXPECT_FALSE(oauth::sign_grant(grant_for(test::bogus_crt_pem(google_sized_key().private_pem)),
                                 problem));
  EXPECT_EQ(problem, "api_key: private_key is not a consistent RSA key");
}

TEST(KeySigning, ThePoolRunsJobsOnItsOwnThreadsAndRefusesBeyondItsQueue) {
  bounded_work_pool pool{1, 2, "test-pool"};
  std::promise<void> started, release;
  auto released = release.get_future().share();
  std::promise<std::thread::id> ran_on;
  ASSERT_TRUE(pool.try_submit([&, released] {
    ran_on.set_value(std::this_thread::get_id());
    started.set_value();
    released.wait();
  }));
  started.get_future().wait();
  EXPECT_NE(ran_on.get_future().get(), std::this_thread::get_id());
  std::atomic<int> done{0};
  EXPECT_TRUE(pool.try_submit([&] { ++done; }));
  EXPECT_TRUE(pool.try_submit([&] { ++done; }));
  EXPECT_EQ(pool.queued(), 2u);
  EXPECT_FALSE(pool.try_submit([&] { ++done; })) << "the queue holds two";
  release.set_value();
  std::promise<void> last;
  // Once the queue drains there is room again.
  while (!pool.try_submit([&] { last.set_value(); }))
    std::this_thread::yield();
  last.get_future().wait();
  EXPECT_EQ(done.load(), 2);
}

namespace {

struct signer_fixture : ::testing::Test {
  actor_config cfg{false};
  caf::actor_system sys{cfg};
  std::shared_ptr<bounded_work_pool> pool =
    std::make_shared<bounded_work_pool>(1, 1, "test-signer");
  key_signer_actor signer = sys.spawn(key_signer, pool);

  /// The signer's answer: the request, or the error.
  std::pair<std::optional<outbound_request>, caf::error> sign(oauth::jwt_bearer_grant grant) {
    caf::scoped_actor self{sys};
    std::pair<std::optional<outbound_request>, caf::error> out;
    self->request(signer, 30s, std::move(grant))
      .receive([&](outbound_request& r) { out.first = std::move(r); },
               [&](caf::error& e) { out.second = std::move(e); });
    return out;
  }
  ~signer_fixture() override { caf::anon_send_exit(signer, caf::exit_reason::user_shutdown); }
};

} // namespace

TEST_F(signer_fixture, SignsOnItsPoolRefusesBadKeysAndAnswersUnavailableWhenFull) {
  auto signed_grant = sign(grant_for(google_sized_key().private_pem));
  ASSERT_TRUE(signed_grant.first) << to_string(signed_grant.second);
  EXPECT_NE(signed_grant.first->body.find("assertion="), std::string::npos);

  auto refused = sign(grant_for(test::oversized_bogus_crt_pem(8192)));
  EXPECT_EQ(code_of(refused.second), ec::bad_request);
  EXPECT_EQ(message_of(refused.second),
            "api_key: private_key must be an RSA key of 2048 to 4096 bits (this one has 8192)");

  // Its one thread busy and its one queue place taken: refused at once.
  std::promise<void> started, release;
  auto released = release.get_future().share();
  ASSERT_TRUE(pool->try_submit([&, released] {
    started.set_value();
    released.wait();
  }));
  started.get_future().wait();
  ASSERT_TRUE(pool->try_submit([released] { released.wait(); }));
  auto full = sign(grant_for(google_sized_key().private_pem));
  EXPECT_EQ(code_of(full.second), ec::unavailable);
  EXPECT_EQ(http_status(code_of(full.second)), 503);
  release.set_value();
  while (pool->queued() > 0)
    std::this_thread::yield();
  auto after = sign(grant_for(google_sized_key().private_pem));
  EXPECT_TRUE(after.first) << "the queue drained: " << to_string(after.second);
}

// OAuth query strings. The input is the raw query of a request to
// /api/oauth/:provider/authorize or .../callback (what follows '?'). The
// server splits it with http::parse_query (ours, not Pistache's); then:
//   * authorize: oauth::template_values (catalog patterns, Shopify's shop
//     normalised), expand_url and authorization_url for every entry with
//     template parameters; a caller-chosen value must never move a provider
//     URL to another host;
//   * callback: state_hash of `state`, the `iss` comparison's origin_of,
//     normalize_shop and verify_shopify_hmac. The HMAC is checked against a
//     signature computed here: the query signed with the app secret must
//     verify, the same query with a wrong or missing hmac must not.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <map>

#include "config/template_value.hpp"
#include "fuzz/fuzz_support.hpp"
#include "http/exchange.hpp"
#include "provider/oauth_flow.hpp"

using namespace cm;

namespace {

const std::string app_secret = "shpss_fuzz_app_secret_0123456789";

std::string hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(digits[p[i] >> 4]);
    out.push_back(digits[p[i] & 0xf]);
  }
  return out;
}

/// Shopify's documented scheme: sorted key=value pairs without hmac and
/// signature, joined by '&', HMAC-SHA256 with the app secret, hex.
std::string shopify_signature(const std::map<std::string, std::string>& query) {
  std::string message;
  for (auto& [k, v] : query) {
    if (k == "hmac" || k == "signature")
      continue;
    if (!message.empty())
      message += '&';
    message += k + "=" + v;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), app_secret.data(), static_cast<int>(app_secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &len);
  return hex(digest, len);
}

/// scheme://host of a URL, host without userinfo tricks: what a request
/// to it would connect to, as far as this check needs.
std::string host_of(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos)
    return {};
  auto end = url.find_first_of("/?#", scheme + 3);
  return url.substr(scheme + 3, end == std::string::npos ? std::string::npos : end - scheme - 3);
}

/// Characters that would change where a URL points if a value put them
/// into its authority.
bool plain_host(const std::string& host) {
  return host.find_first_of("@\\ \t\r\n%") == std::string::npos;
}

/// How many of the characters that delimit a URL's parts it holds: a
/// filled template must hold exactly as many as the template itself.
size_t delimiters(const std::string& url) {
  return static_cast<size_t>(std::count_if(url.begin(), url.end(), [](char c) {
    return c == '/' || c == '\\' || c == '?' || c == '#' || c == '@' || c == ':' || c == '%';
  }));
}

/// Whether a path segment of `url` is "." or "..", which libcurl and most
/// servers resolve away.
bool has_dot_segment(const std::string& url) {
  auto start = url.find("://");
  auto end = url.find_first_of("?#");
  auto path = url.substr(0, end);
  for (size_t pos = start == std::string::npos ? 0 : start + 3; pos < path.size();) {
    auto slash = path.find('/', pos);
    auto segment = path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    if (segment == "." || segment == "..")
      return true;
    if (slash == std::string::npos)
      break;
    pos = slash + 1;
  }
  return false;
}

void check_expansions(const config::provider_entry& entry,
                      const std::map<std::string, std::string>& query) {
  std::string problem;
  auto values = oauth::template_values(entry, query, problem);
  if (!values) {
    CM_FUZZ_CHECK(!problem.empty(), "a refused parameter is named");
    CM_FUZZ_CHECK(fuzz::printable_ascii(problem), "the problem is plain text");
    return;
  }
  // Values run through std::regex, which recurses per character: only
  // bounded ones may get that far (the server crashed on a 30,000-letter
  // shop before the bound).
  for (auto& [name, pattern] : entry.template_params)
    if (query.count(name) && values->contains(name))
      CM_FUZZ_CHECK((*values)[name].get_ref<const std::string&>().size() <=
                      config::max_template_value_bytes,
                    "a template value is bounded before its pattern runs");
  auto urls = {entry.authorization_url, entry.token_url, entry.refresh_url, entry.revoke_url,
               entry.account ? entry.account->url : std::string{},
               entry.api_key ? entry.api_key->validate_url : std::string{}};
  for (auto& url : urls) {
    if (url.empty())
      continue;
    auto expanded = oauth::expand_url(entry, url, *values);
    if (!expanded)
      continue;
    auto host = host_of(*expanded);
    CM_FUZZ_CHECK(plain_host(host), "a template value cannot reshape a provider's host");
    CM_FUZZ_CHECK(delimiters(*expanded) == delimiters(url) && !has_dot_segment(*expanded),
                  "a template value keeps the URL's shape (issue 16: tenant=..)");
    if (entry.name == "shopify") {
      static const std::string suffix = ".myshopify.com";
      CM_FUZZ_CHECK(host.size() > suffix.size() &&
                      host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0 &&
                      host.find('.') == host.size() - suffix.size(),
                    "a shop value keeps Shopify URLs on one shop's myshopify.com host");
    }
  }
  auto url = oauth::authorization_url(entry, "client-id", "https://cm.test/api/oauth/cb",
                                      "state-value", "challenge", *values);
  if (url && !entry.authorization_url.empty())
    CM_FUZZ_CHECK(plain_host(host_of(*url)), "the authorization URL's host is plain");
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  fuzz::shipped_catalog();
  fuzz::test_keyring();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::map<std::string, std::string> query;
  if (!http::parse_query(fuzz::as_text(data, size), query))
    return 0;

  auto get = [&](const char* key) {
    auto it = query.find(key);
    return it == query.end() ? std::string{} : it->second;
  };

  // Callback: the state is only ever looked up by its keyed hash.
  auto hash = oauth::state_hash(*fuzz::test_keyring(), get("state"));
  CM_FUZZ_CHECK(hash.size() == 64 && hash.find_first_not_of("0123456789abcdef") == std::string::npos,
                "a state hash is 64 hex digits");
  (void)oauth::origin_of(get("iss"));
  auto shop = oauth::normalize_shop(get("shop"));
  CM_FUZZ_CHECK(shop.size() <= get("shop").size(), "normalising a shop never grows it");

  bool verified = oauth::verify_shopify_hmac(query, app_secret);
  auto expected = shopify_signature(query);
  CM_FUZZ_CHECK(verified == (query.count("hmac") && query.at("hmac").size() == 64 &&
                             [&] {
                               std::string given = query.at("hmac");
                               for (auto& c : given)
                                 c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                               return given == expected;
                             }()),
                "verify_shopify_hmac accepts exactly the right signature");
  auto signed_query = query;
  signed_query["hmac"] = expected;
  CM_FUZZ_CHECK(oauth::verify_shopify_hmac(signed_query, app_secret),
                "a correctly signed callback verifies");
  auto tampered = signed_query;
  tampered["hmac"][0] = tampered["hmac"][0] == '0' ? '1' : '0';
  CM_FUZZ_CHECK(!oauth::verify_shopify_hmac(tampered, app_secret),
                "a wrong signature does not verify");
  CM_FUZZ_CHECK(!oauth::verify_shopify_hmac(signed_query, app_secret + "x"),
                "another app's secret does not verify");

  // Authorize: template parameters from the query.
  for (auto& [name, entry] : fuzz::shipped_catalog().providers)
    if (!entry.template_params.empty())
      check_expansions(entry, query);
  return 0;
}

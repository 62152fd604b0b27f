// Provider answers. The input is the body a provider sends back; its first
// line also serves as a Retry-After value. Covered:
//   * oauth::read_token_answer for each token style of the shipped catalog
//     (standard, tiktok_envelope, meta_long_lived) and the statuses that
//     read a body (200, 400, 401) or only the header (429, 503): error
//     bodies, expires_in clamping, scope splitting, token_metadata
//     pointers;
//   * oauth::clamp_expires_in and parse_retry_after on their own;
//   * oauth::read_account for every entry with an account lookup, and
//     api_key::read_validation for every API-key entry.
// Nothing here may throw: these run inside actors, on whatever a provider
// (or someone in its place) sends.
#include <set>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_support.hpp"
#include "provider/api_key_check.hpp"
#include "provider/oauth_flow.hpp"
#include "provider/oauth_protocol.hpp"

using namespace cm;
using nlohmann::json;

namespace {

struct entries {
  std::vector<const config::provider_entry*> token_styles;
  std::vector<const config::provider_entry*> with_account;
  std::vector<const config::provider_entry*> with_api_key;
};

const entries& the_entries() {
  static const entries e = [] {
    entries made;
    std::set<std::string> styles;
    for (auto& [name, entry] : fuzz::shipped_catalog().providers) {
      if (entry.mode == config::auth_mode::oauth2 && styles.insert(entry.token_style).second)
        made.token_styles.push_back(&entry);
      // TikTok's entry is also the one with token_metadata pointers.
      if (!entry.token_metadata.empty())
        made.token_styles.push_back(&entry);
      if (entry.account)
        made.with_account.push_back(&entry);
      if (entry.api_key)
        made.with_api_key.push_back(&entry);
    }
    return made;
  }();
  return e;
}

void check_answer(const config::provider_entry& entry, const outbound_response& res,
                  const oauth::token_answer& a) {
  CM_FUZZ_CHECK(a.retry_after_s >= 0 && a.retry_after_s <= 3600, "Retry-After is capped");
  CM_FUZZ_CHECK(!a.reason.empty() && a.reason.size() <= 128 && fuzz::printable_ascii(a.reason),
                "the reason is short plain text");
  if (res.status == 429)
    CM_FUZZ_CHECK(a.result == oauth::outcome::rate_limited, "429 is rate limiting");
  if (res.status >= 500)
    CM_FUZZ_CHECK(a.result == oauth::outcome::unavailable, "5xx is unavailable");
  if (a.result != oauth::outcome::ok) {
    CM_FUZZ_CHECK(a.access_token.empty() && a.refresh_token.empty(),
                  "a failed answer carries no token");
    return;
  }
  CM_FUZZ_CHECK(res.status >= 200 && res.status < 300, "only a 2xx brings tokens");
  CM_FUZZ_CHECK(!a.access_token.empty(), "an ok answer has an access token");
  int64_t ceiling = std::max<int64_t>(oauth::max_expires_in_s, entry.default_expires_in_s);
  CM_FUZZ_CHECK(a.expires_in_s > 0 && a.expires_in_s <= ceiling, "expires_in is clamped");
  // The reason is logged: it must not carry what the provider sent.
  if (a.access_token.size() >= 8)
    CM_FUZZ_CHECK(a.reason.find(a.access_token.reveal()) == std::string::npos,
                  "the reason does not quote the access token");
  for (auto& s : a.scopes)
    CM_FUZZ_CHECK(!s.empty(), "no empty scope");
  CM_FUZZ_CHECK(a.metadata.is_object(), "metadata is an object");
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  the_entries();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string body(fuzz::as_text(data, size));
  auto first_line = fuzz::split_line(body).first;

  auto retry = oauth::parse_retry_after(first_line);
  CM_FUZZ_CHECK(retry >= 0 && retry <= 3600, "parse_retry_after is capped");

  auto parsed = json::parse(body, nullptr, false);
  if (parsed.is_object() && parsed.contains("expires_in")) {
    auto clamped = oauth::clamp_expires_in(parsed["expires_in"], 3600);
    CM_FUZZ_CHECK(clamped > 0 && clamped <= oauth::max_expires_in_s, "clamp_expires_in bounds");
  }

  auto& e = the_entries();
  for (int64_t status : {200, 400, 401, 429, 503}) {
    outbound_response res;
    res.status = status;
    res.body = body;
    res.headers["retry-after"] = first_line;
    for (auto* entry : e.token_styles)
      check_answer(*entry, res, oauth::read_token_answer(*entry, res));
  }
  outbound_response ok;
  ok.status = 200;
  ok.body = body;
  for (auto* entry : e.with_account) {
    json metadata = json::object();
    if (oauth::read_account(*entry, ok, metadata))
      CM_FUZZ_CHECK(metadata.contains("account_name"), "a named account is recorded");
  }
  for (auto* entry : e.with_api_key) {
    auto verdict = api_key::read_validation(*entry, ok);
    CM_FUZZ_CHECK(fuzz::printable_ascii(verdict.reason), "the reason is plain text");
  }
  outbound_response cut;
  cut.error = transport_error::too_large;
  CM_FUZZ_CHECK(oauth::read_token_answer(*e.token_styles.front(), cut).result ==
                  oauth::outcome::malformed,
                "a cut-off answer is malformed");
  return 0;
}

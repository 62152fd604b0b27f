// The authorization-code flow as pure functions: PKCE, state values and
// their keyed hashes, the authorization URL, the code exchange (and Meta's
// long-lived exchange), the account lookup, revocation requests, and
// Shopify's callback HMAC. No I/O here.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "provider/oauth_protocol.hpp"
#include "storage/keyring.hpp"
#include "storage/records.hpp"

namespace cm::oauth {

/// 256 random bits, base64url: the `state` sent to the provider.
std::string new_state();

/// Keyed BLAKE2b of a state (hex) under the active key: what the database
/// stores.
std::string state_hash(const storage::keyring& keys, const std::string& state);

/// The state's keyed hash under every key in the ring, the active key's
/// first, comma-separated: what a callback looks up. A state stored before a
/// key rotation, or by an instance whose active key differs during one, is
/// still found (docs/STORAGE.md, "Key rotation").
std::string state_hash_candidates(const storage::keyring& keys, const std::string& state);

/// RFC 7636 verifier (64 base64url characters) and its S256 challenge.
std::string new_code_verifier();
std::string code_challenge_s256(const std::string& verifier);

/// Template values for a connection: catalog defaults overlaid by `given`
/// (only declared parameters, each matching its pattern). nullopt with
/// `problem` set when a given value is invalid.
std::optional<nlohmann::json> template_values(const config::provider_entry& entry,
                                              const std::map<std::string, std::string>& given,
                                              std::string& problem);

/// Normalizes a Shopify shop ("https://Acme.myshopify.com/" -> "acme").
std::string normalize_shop(std::string shop);

/// The URL the user's browser is sent to.
std::optional<std::string> authorization_url(const config::provider_entry& entry,
                                             const std::string& client_id,
                                             const std::string& callback_uri,
                                             const std::string& state,
                                             const std::string& code_challenge,
                                             const nlohmann::json& values);

/// grant_type=authorization_code (with the verifier when PKCE is used).
std::optional<outbound_request> code_request(const config::provider_entry& entry,
                                             const client_credentials& client,
                                             const std::string& code,
                                             const std::string& callback_uri,
                                             const std::string& code_verifier,
                                             const nlohmann::json& values, int64_t timeout_ms);

/// Meta: trade a short-lived token for a ~60-day one (fb_exchange_token).
std::optional<outbound_request> long_lived_request(const config::provider_entry& entry,
                                                   const client_credentials& client,
                                                   const secret& access_token,
                                                   const nlohmann::json& values,
                                                   int64_t timeout_ms);

/// The account lookup call, or nullopt when the entry has none.
std::optional<outbound_request> account_request(const config::provider_entry& entry,
                                                const secret& access_token,
                                                const nlohmann::json& values, int64_t timeout_ms);

/// Puts account_name (and accounts) from an account answer into metadata;
/// false when the answer carries no name.
bool read_account(const config::provider_entry& entry, const outbound_response& res,
                  nlohmann::json& metadata);

/// The revocation call for a stored grant, per revoke_style; nullopt when
/// the provider has none.
std::optional<outbound_request> revoke_request(const config::provider_entry& entry,
                                               const client_credentials& client,
                                               const token_record& grant, int64_t timeout_ms);

/// Shopify: HMAC-SHA256 (hex) over the sorted query without hmac/signature,
/// keyed with the app secret, compared in constant time.
bool verify_shopify_hmac(const std::map<std::string, std::string>& query,
                         const std::string& client_secret);

/// Apps enabled by the granted scopes (scope_apps), sorted, unique.
std::vector<std::string> granted_apps(const config::provider_entry& entry,
                                      const std::vector<std::string>& scopes);

/// The origin (scheme://host[:port]) of a URL, for the default issuer.
std::string origin_of(const std::string& url);

} // namespace cm::oauth

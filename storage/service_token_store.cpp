#include "storage/service_token_store.hpp"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>
#include <sodium.h>

#include "storage/token_store.hpp"

namespace cm::storage {

namespace {

const statement insert_token{"service_tokens_insert", R"(
INSERT INTO service_tokens (id, name, token_sha256, scopes)
VALUES ($1::uuid, $2, $3, ARRAY(SELECT jsonb_array_elements_text($4::jsonb)))
RETURNING (extract(epoch from created_at) * 1000)::bigint)"};

const statement select_tokens{"service_tokens_select", R"(
SELECT id::text, name, token_sha256, array_to_json(scopes)::text,
       (extract(epoch from created_at) * 1000)::bigint,
       coalesce((extract(epoch from revoked_at) * 1000)::bigint, 0)
FROM service_tokens WHERE $1 OR revoked_at IS NULL
ORDER BY created_at, name)"};

const statement revoke_token{"service_tokens_revoke", R"(
UPDATE service_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL)"};

} // namespace

stored_service_token service_token_store::create(const std::string& name,
                                                 const std::string& sha256_hex,
                                                 const std::vector<std::string>& scopes) {
  stored_service_token out;
  out.id = random_uuid();
  out.name = name;
  out.sha256_hex = sha256_hex;
  out.scopes = scopes;
  auto res = db_.exec(insert_token, {param::text(out.id), param::text(name),
                                     param::text(sha256_hex),
                                     param::text(nlohmann::json(scopes).dump())});
  out.created_at_ms = res.integer(0, 0);
  return out;
}

std::vector<stored_service_token> service_token_store::list(bool with_revoked) {
  auto res = db_.exec(select_tokens, {param::text(with_revoked ? "true" : "false")});
  std::vector<stored_service_token> out;
  out.reserve(static_cast<size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i) {
    stored_service_token t;
    t.id = std::string(res.text(i, 0));
    t.name = std::string(res.text(i, 1));
    t.sha256_hex = std::string(res.text(i, 2));
    auto scopes = nlohmann::json::parse(res.text(i, 3), nullptr, false);
    if (scopes.is_array())
      for (auto& s : scopes)
        if (s.is_string())
          t.scopes.push_back(s.get<std::string>());
    t.created_at_ms = res.integer(i, 4);
    t.revoked_at_ms = res.integer(i, 5);
    out.push_back(std::move(t));
  }
  return out;
}

bool service_token_store::revoke(const std::string& name) {
  return db_.exec(revoke_token, {param::text(name)}).affected() > 0;
}

std::string new_service_token() {
  unsigned char bits[32];
  randombytes_buf(bits, sizeof bits);
  char text[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
  sodium_bin2base64(text, sizeof text, bits, sizeof bits, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  sodium_memzero(bits, sizeof bits);
  std::string token = std::string("cmst_") + text;
  sodium_memzero(text, sizeof text);
  return token;
}

bool valid_service_token_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 &&
         std::all_of(name.begin(), name.end(), [](unsigned char c) {
           return std::isalnum(c) || c == '.' || c == '_' || c == '-';
         });
}

bool valid_scope(const std::string& scope) {
  return !scope.empty() && scope.size() <= 64 &&
         std::all_of(scope.begin(), scope.end(), [](unsigned char c) {
           return std::isupper(c) || std::isdigit(c) || c == '_';
         });
}

} // namespace cm::storage

#include "storage/unbound_format.hpp"

namespace cm::storage {

namespace {

const statement refused_stmt{"unbound_format_refused",
  "SELECT unbound_refused_since IS NOT NULL FROM cipher_formats"};

const statement refuse_stmt{"unbound_format_refuse",
  "UPDATE cipher_formats SET unbound_refused_since = coalesce(unbound_refused_since, now())"};

// The first byte of a ciphertext is its format; substring never fails on a
// value too short to have one. An OAuth state without a verifier counts
// too: states were sealed only when they had one before issue 16.
#define CM_UNBOUND(column) \
  "(" column " IS NOT NULL AND substring(" column " FROM 1 FOR 1) = '\\x01'::bytea)"

const statement count_stmt{"unbound_format_count",
  "SELECT (SELECT count(*) FILTER (WHERE " CM_UNBOUND("access_token") ") + "
  "count(*) FILTER (WHERE " CM_UNBOUND("refresh_token") ") FROM connector_tokens) + "
  "(SELECT count(*) FROM connector_configs WHERE " CM_UNBOUND("secrets") ") + "
  "(SELECT count(*) FROM oauth_states WHERE code_verifier IS NULL OR "
  CM_UNBOUND("code_verifier") ")"};

} // namespace

bool unbound_format_policy::allowed() {
  if (refused_)
    return false;
  auto now = std::chrono::steady_clock::now();
  if (now < allowed_until_)
    return true;
  auto res = db_.exec(refused_stmt);
  // No row (a database migrated by hand): nothing recorded, so allowed.
  refused_ = res.rows() > 0 && res.text(0, 0) == "t";
  if (refused_)
    return false;
  allowed_until_ = now + recheck_;
  return true;
}

int64_t unbound_values(database& db) {
  return db.exec(count_stmt).integer(0, 0);
}

void refuse_unbound_format(database& db) {
  db.exec(refuse_stmt);
}

} // namespace cm::storage

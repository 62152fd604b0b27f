// Plain data that crosses the storage boundary: what a stored connection is,
// and the summary that may be shown without revealing a secret. The
// vocabulary every layer shares (the key, kinds, statuses, the grant handed
// out) lives in model/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/meta/type_name.hpp>

#include "common/secret.hpp"
#include "model/connection_key.hpp"
#include "model/connection_kind.hpp"
#include "model/connection_status.hpp"
#include "model/grant_status.hpp"
#include "model/token_grant.hpp"

namespace cm {

/// A stored connection with its secrets decrypted.
struct token_record {
  /// UUID, chosen by the service so ciphertexts can bind to it before insert.
  std::string id;
  connection_key key;
  connection_kind kind = connection_kind::oauth;
  grant_status status = grant_status::connected;
  std::string reason;
  secret access_token;
  secret refresh_token;
  /// Unix milliseconds; 0 when the token does not expire.
  int64_t expires_at_ms = 0;
  std::vector<std::string> scopes;
  /// JSON object text (account name, provider fields); never a secret.
  std::string metadata = "{}";
  /// Fencing counter, bumped by every write.
  int64_t version = 0;
  int64_t created_at_ms = 0;
  int64_t updated_at_ms = 0;
  /// When the last refresh of this grant was stored (unix ms); 0: never.
  int64_t refreshed_at_ms = 0;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, token_record& x) {
    return f(caf::meta::type_name("token_record"), x.id, x.key, x.kind, x.status, x.reason,
             x.access_token, x.refresh_token, x.expires_at_ms, x.scopes, x.metadata,
             x.version, x.created_at_ms, x.updated_at_ms, x.refreshed_at_ms);
  }
};

/// What a listing shows: everything but the secrets.
struct token_summary {
  /// The row's id: what events call the connection (connectionId).
  std::string id;
  connection_key key;
  connection_kind kind = connection_kind::oauth;
  grant_status status = grant_status::connected;
  std::string reason;
  int64_t expires_at_ms = 0;
  std::vector<std::string> scopes;
  std::string metadata = "{}";
  int64_t updated_at_ms = 0;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, token_summary& x) {
    return f(caf::meta::type_name("token_summary"), x.id, x.key, x.kind, x.status, x.reason,
             x.expires_at_ms, x.scopes, x.metadata, x.updated_at_ms);
  }
};

using token_summaries = std::vector<token_summary>;
using token_records = std::vector<token_record>;

/// One page of start-up hydration, with the keyset cursor to continue from
/// (rows failing their integrity check are skipped but still advance it).
struct hydrate_batch {
  token_records rows;
  std::string last_team;
  std::string last_id;
  /// True when the table has no more rows.
  bool done = false;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, hydrate_batch& x) {
    return f(caf::meta::type_name("hydrate_batch"), x.rows, x.last_team, x.last_id, x.done);
  }
};

/// A pending OAuth authorization (the state itself is never stored, only
/// its keyed hash).
struct oauth_state_record {
  /// Hex of the keyed BLAKE2b hash of the state value.
  std::string state_hash;
  std::string team_id;
  std::string user_id;
  std::string provider;
  /// Set for team flows (/api/v1/connectors/:connectorName/oauth/…).
  std::string connector_name;
  secret code_verifier;
  /// Where the user's browser goes after the callback.
  std::string redirect_uri;
  /// JSON object: template values such as the Shopify shop.
  std::string params = "{}";
  int64_t expires_at_ms = 0;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, oauth_state_record& x) {
    return f(caf::meta::type_name("oauth_state_record"), x.state_hash, x.team_id, x.user_id,
             x.provider, x.connector_name, x.code_verifier, x.redirect_uri, x.params,
             x.expires_at_ms);
  }
};

/// What storing a new grant changed.
struct connect_result {
  token_record stored;
  /// The grant it replaced, with its secrets, so it can be revoked.
  bool replaced_existing = false;
  token_record replaced;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, connect_result& x) {
    return f(caf::meta::type_name("connect_result"), x.stored, x.replaced_existing, x.replaced);
  }
};

/// New tokens from a refresh, to be written under a lease.
struct refreshed_tokens {
  secret access_token;
  /// Empty: the provider returned none, keep the stored one.
  secret refresh_token;
  int64_t expires_at_ms = 0;
  /// Empty: keep the stored scopes.
  std::vector<std::string> scopes;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, refreshed_tokens& x) {
    return f(caf::meta::type_name("refreshed_tokens"), x.access_token, x.refresh_token,
             x.expires_at_ms, x.scopes);
  }
};

/// One row of the audit log. Never a secret.
struct audit_entry {
  std::string team_id;
  /// "user", "service" or "system".
  std::string actor_type;
  std::string actor_id;
  std::string action;
  std::string target;
  std::string remote_addr;
  std::string request_id;
  /// JSON object text.
  std::string details = "{}";

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, audit_entry& x) {
    return f(caf::meta::type_name("audit_entry"), x.team_id, x.actor_type, x.actor_id, x.action,
             x.target, x.remote_addr, x.request_id, x.details);
  }
};

/// An audit row as read back, newest first.
struct audit_row {
  int64_t seq = 0;
  int64_t at_ms = 0;
  audit_entry entry;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, audit_row& x) {
    return f(caf::meta::type_name("audit_row"), x.seq, x.at_ms, x.entry);
  }
};
using audit_rows = std::vector<audit_row>;

/// A position in the outbox's delivery order: (inserting transaction id,
/// seq). Rows are read in this order and only once their transaction is
/// older than every running one, so no later commit lands behind it.
struct outbox_position {
  int64_t txid = 0;
  int64_t seq = 0;

  friend bool operator<(const outbox_position& a, const outbox_position& b) {
    return a.txid != b.txid ? a.txid < b.txid : a.seq < b.seq;
  }
  friend bool operator<=(const outbox_position& a, const outbox_position& b) { return !(b < a); }
  friend bool operator==(const outbox_position& a, const outbox_position& b) {
    return a.txid == b.txid && a.seq == b.seq;
  }

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, outbox_position& x) {
    return f(caf::meta::type_name("outbox_position"), x.txid, x.seq);
  }
};

/// One lifecycle event as stored in the outbox.
struct outbox_event {
  /// Where it is in delivery order; "txid.seq" is its SSE id.
  outbox_position at;
  std::string team_id;
  std::string event_id;
  std::string topic;
  std::string event_type;
  /// JSON object text (storage/events.hpp builds it; never a secret).
  std::string payload;
  int64_t created_at_ms = 0;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, outbox_event& x) {
    return f(caf::meta::type_name("outbox_event"), x.at, x.team_id, x.event_id, x.topic,
             x.event_type, x.payload, x.created_at_ms);
  }
};
using outbox_events = std::vector<outbox_event>;

/// One read of the outbox: the events, and whether newer rows exist that
/// are not readable yet (their transaction, or an older one still running,
/// has not ended), so the reader knows to look again soon.
struct outbox_page {
  outbox_events events;
  bool pending = false;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, outbox_page& x) {
    return f(caf::meta::type_name("outbox_page"), x.events, x.pending);
  }
};

/// A webhook endpoint as the outbox knows it: which topics it receives.
struct webhook_target {
  std::string name;
  std::vector<std::string> topics;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, webhook_target& x) {
    return f(caf::meta::type_name("webhook_target"), x.name, x.topics);
  }
};
using webhook_targets = std::vector<webhook_target>;

/// A webhook delivery claimed for one attempt.
struct webhook_job {
  std::string team_id;
  std::string event_id;
  std::string webhook;
  /// Attempts made before this one.
  int32_t attempts = 0;
  std::string payload;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, webhook_job& x) {
    return f(caf::meta::type_name("webhook_job"), x.team_id, x.event_id, x.webhook, x.attempts,
             x.payload);
  }
};
using webhook_jobs = std::vector<webhook_job>;

/// A team's configuration of one catalog connector.
struct connector_config_record {
  std::string team_id;
  std::string connector_name;
  /// False when the team never configured or toggled it (defaults shown).
  bool exists = false;
  bool enabled = false;
  /// JSON object text: baseUrl, auth (without secrets), sync.
  std::string config = "{}";
  /// JSON object text.
  std::string filters = "{}";
  /// The team's OAuth app secret; empty when none is stored. Never
  /// returned by any route.
  secret client_secret;
  int64_t version = 0;
  std::string updated_by;
  int64_t updated_at_ms = 0;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, connector_config_record& x) {
    return f(caf::meta::type_name("connector_config_record"), x.team_id, x.connector_name,
             x.exists, x.enabled, x.config, x.filters, x.client_secret, x.version, x.updated_by,
             x.updated_at_ms);
  }
};
using connector_config_records = std::vector<connector_config_record>;

/// An admin's change to a connector's configuration; `audit` says who.
struct connector_change {
  std::string team_id;
  std::string connector_name;
  /// "config" (config + secret), "filters", "toggle".
  std::string what;
  /// For config: the new config JSON (without secrets). For filters: the
  /// filters JSON.
  std::string body = "{}";
  /// For config: a new client secret, or empty to keep the stored one.
  secret client_secret;
  /// For toggle.
  bool enabled = false;
  /// For toggle: none | immediate | scheduled.
  std::string sync_action = "none";
  /// For toggle: apps the event names (JSON array text).
  std::string apps = "[]";
  audit_entry audit;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, connector_change& x) {
    return f(caf::meta::type_name("connector_change"), x.team_id, x.connector_name, x.what,
             x.body, x.client_secret, x.enabled, x.sync_action, x.apps, x.audit);
  }
};

} // namespace cm

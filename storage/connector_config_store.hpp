// SQL for connector_configs (a team's configuration of each catalog
// connector) and for reading the audit log. The team's OAuth client secret
// is encrypted, bound to (team, connector), and write-only: it leaves
// storage only towards the OAuth flows, never towards a route's answer.
// Every change writes its audit row, and a toggle its event, in the same
// transaction. Called only by the storage actor.
#pragma once

#include <string>

#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/outbox.hpp"
#include "storage/records.hpp"
#include "storage/token_store.hpp"

namespace cm::storage {

class connector_config_store {
public:
  connector_config_store(database& db, const column_cipher& cipher, outbox& events,
                         token_store& tokens)
    : db_(db), cipher_(cipher), events_(events), tokens_(tokens) {}

  /// The team's configuration of a connector; `exists` is false (and the
  /// rest defaults) when the team never touched it.
  connector_config_record get(const std::string& team_id, const std::string& connector_name);

  /// Every connector the team configured or toggled.
  connector_config_records list(const std::string& team_id);

  /// Applies an admin's change (config, filters or toggle) with its audit
  /// row, and for a toggle its appEnabled/appDisabled event, atomically.
  connector_config_record apply(const connector_change& change);

  /// Stores a grant obtained by an admin (Google Workspace code flow) and
  /// enables the connector, with TOKEN_CREATED, appEnabled and the audit
  /// row, in one transaction.
  connect_result connect_and_enable(token_record grant, const connector_change& enable);

  /// One page of the team's audit log, newest first, with seq < before_seq
  /// (0: from the newest).
  audit_rows audit_page(const std::string& team_id, int64_t before_seq, int limit);

private:
  connector_config_record read_row(const result& res, int row, const std::string& team_id,
                                   const std::string& connector_name);

  database& db_;
  const column_cipher& cipher_;
  outbox& events_;
  token_store& tokens_;
};

} // namespace cm::storage

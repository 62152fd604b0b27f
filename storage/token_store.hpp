// SQL for connector_tokens: stores and loads connections, encrypting and
// decrypting the secret columns on the way. Called only by the storage actor.
#pragma once

#include <optional>
#include <string>

#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/records.hpp"

namespace cm::storage {

class token_store {
public:
  token_store(database& db, const column_cipher& cipher) : db_(db), cipher_(cipher) {}

  /// Inserts or replaces the connection for record.key. A replacement gets
  /// the record's (new) id, so ciphertexts bound to the old row are gone.
  /// Fills id (if empty), version and timestamps. Throws db_error.
  token_record save(token_record record);

  /// Loads and decrypts one connection. A ciphertext that does not
  /// authenticate raises db_error(integrity_failure) and logs an alarm.
  std::optional<token_record> find(const connection_key& key);

  /// Connections of one user (user_id non-empty) or of the whole team.
  token_summaries list(const std::string& team_id, const std::string& user_id);

  /// Deletes one connection; false when there was none.
  bool remove(const connection_key& key);

private:
  database& db_;
  const column_cipher& cipher_;
};

/// A fresh random UUID (version 4) in canonical text form.
std::string random_uuid();

} // namespace cm::storage

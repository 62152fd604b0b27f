// Ciphertexts as versions before issue 16 sealed them: format 1, whose
// associated data leaves out team_id. The service no longer writes them;
// tests make them to stand for rows stored before an upgrade, and turn a
// database into one such deployment.
#pragma once

#include <string>
#include <string_view>

#include "storage/cipher.hpp"
#include "storage/database.hpp"
#include "storage/keyring.hpp"

namespace cm::test {

/// `plaintext` sealed in format 1 under the keyring's active key for
/// `where` (its team_id is ignored, as it was then).
std::string seal_unbound(const storage::keyring& keys, std::string_view plaintext,
                         const storage::cipher_binding& where);

/// Re-seals every stored value (tokens, team secrets, OAuth verifiers) in
/// format 1 (an empty verifier becomes none, as then) and forgets
/// migration 0007, so the next apply_migrations (or
/// server start) meets the database as an upgrade does. Returns the number
/// of values re-sealed.
int make_deployment_before_team_binding(storage::database& db, const storage::column_cipher& cipher);

} // namespace cm::test

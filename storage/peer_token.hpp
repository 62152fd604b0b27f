// The credential instances of one deployment present to each other's token
// service when one forwards a request to the owner of a connection
// (actors/owner_forwarder.hpp). It is a keyed BLAKE2b hash of a fixed label
// under a key's state-hashing subkey: every instance holding the keyring
// computes the same value, and nobody without the keyring can. The sender
// uses the active key; the receiver accepts any key of its ring, so a
// rotation in progress (docs/STORAGE.md, "Key rotation") does not cut
// instances off from each other.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "storage/keyring.hpp"

namespace cm::storage {

/// This instance's peer token (hex), from the active key.
std::string peer_token(const keyring& keys);

/// The peer token of every key in `keys`: what a receiver accepts. Computed
/// once (at start), not per forwarded request.
std::vector<std::string> accepted_peer_tokens(const keyring& keys);

/// Whether `candidate` is one of `accepted`, compared in constant time.
bool is_peer_token(const std::vector<std::string>& accepted, std::string_view candidate);

} // namespace cm::storage

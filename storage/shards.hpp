// Which shard a connection belongs to (migration 0008). The same function
// as the SQL `connection_shard`: the first four bytes of SHA-256 over
// team, user and provider joined by 0x1f, big-endian, modulo the count.
// The registry uses it to tell its own connections from those another
// instance owns; the database stores it in connector_tokens.shard.
#pragma once

#include <cstdint>
#include <string_view>

#include "storage/records.hpp"

namespace cm::storage {

/// The default shard count of a new deployment (`cluster.shards`).
constexpr int32_t default_shard_count = 256;
/// Bounds of `cluster.shards`, as the migration's CHECK.
constexpr int32_t max_shard_count = 16384;

int32_t shard_of(std::string_view team_id, std::string_view user_id, std::string_view provider,
                 int32_t shard_count);

inline int32_t shard_of(const connection_key& key, int32_t shard_count) {
  return shard_of(key.team_id, key.user_id, key.provider, shard_count);
}

} // namespace cm::storage

#include "storage/shards.hpp"

#include <string>

#include <sodium.h>

namespace cm::storage {

int32_t shard_of(std::string_view team_id, std::string_view user_id, std::string_view provider,
                 int32_t shard_count) {
  std::string joined;
  joined.reserve(team_id.size() + user_id.size() + provider.size() + 2);
  joined.append(team_id).push_back('\x1f');
  joined.append(user_id).push_back('\x1f');
  joined.append(provider);
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(joined.data()), joined.size());
  uint32_t head = (uint32_t{digest[0]} << 24) | (uint32_t{digest[1]} << 16) |
                  (uint32_t{digest[2]} << 8) | uint32_t{digest[3]};
  return static_cast<int32_t>(head % static_cast<uint32_t>(shard_count));
}

} // namespace cm::storage

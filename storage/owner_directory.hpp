// Which instance owns each shard, and where its token service listens, as
// of the last ownership round (storage/shard_ownership.cpp reads it from
// pg_locks joined with service_instances, migration 0010). The owner
// forwarder (actors/owner_forwarder.hpp) reads it for every request it
// forwards: a snapshot swapped whole under a mutex, never edited in place.
//
// It may be a round out of date. That costs at most a detour: an instance
// that is asked for a shard it no longer owns says so, and the asker serves
// the request itself from the database under the lease.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace cm::storage {

struct shard_owner {
  std::string instance_id;
  /// host:port of its token service; empty when it publishes none.
  std::string token_address;
};

class owner_directory {
public:
  explicit owner_directory(int32_t shard_count) : shard_count_(shard_count) {}

  int32_t shard_count() const { return shard_count_; }

  /// The owner of `shard` at the last round; nullopt when none was seen.
  std::optional<shard_owner> owner_of(int32_t shard) const {
    std::shared_ptr<const snapshot> now;
    {
      std::lock_guard<std::mutex> guard{mutex_};
      now = current_;
    }
    if (!now || shard < 0 || static_cast<size_t>(shard) >= now->owner_of_shard.size())
      return std::nullopt;
    auto index = now->owner_of_shard[static_cast<size_t>(shard)];
    if (index < 0)
      return std::nullopt;
    return now->owners[static_cast<size_t>(index)];
  }

  /// Replaces what is known: `owners[i]` holds every shard in `shards[i]`.
  void replace(std::vector<shard_owner> owners, const std::vector<std::vector<int32_t>>& shards) {
    auto next = std::make_shared<snapshot>();
    next->owner_of_shard.assign(static_cast<size_t>(shard_count_), -1);
    for (size_t i = 0; i < owners.size() && i < shards.size(); ++i)
      for (auto s : shards[i])
        if (s >= 0 && s < shard_count_)
          next->owner_of_shard[static_cast<size_t>(s)] = static_cast<int32_t>(i);
    next->owners = std::move(owners);
    std::lock_guard<std::mutex> guard{mutex_};
    current_ = std::move(next);
  }

  /// Forgets every owner (this instance lost its view of the database).
  void clear() {
    std::lock_guard<std::mutex> guard{mutex_};
    current_.reset();
  }

private:
  struct snapshot {
    std::vector<int32_t> owner_of_shard;
    std::vector<shard_owner> owners;
  };
  int32_t shard_count_;
  mutable std::mutex mutex_;
  std::shared_ptr<const snapshot> current_;
};

using owner_directory_ptr = std::shared_ptr<owner_directory>;

} // namespace cm::storage

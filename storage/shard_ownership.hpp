// Which shards this instance owns (issue 17, docs/DECISIONS.md "Shards and
// their owners"). Ownership is a session-level advisory lock per shard,
// held on a database connection of this object's own, so it ends the
// moment PostgreSQL ends the session: a process killed with -9, or cut off
// from the database, loses every shard as soon as PostgreSQL notices, and
// the others take them over at their next round.
//
// Every instance also holds one membership lock. The number of membership
// locks granted is the number of live instances, as PostgreSQL sees it, so
// a fair share is ceil(shards / members). Each round (every `interval`):
//   1. the locks this session really holds are read back from pg_locks;
//      shards thought owned but no longer held (the connection was replaced)
//      are reported lost;
//   2. above the fair share (an instance joined): the surplus is handed over
//      gracefully, first `releasing` (refreshes in flight finish, the actors
//      stop), then the locks are released;
//   3. below it: free shards are locked, then `acquired` loads them.
// Ownership is for efficiency only. Every refresh still takes the row's
// lease and writes under its fence, so two instances that both believe
// they own a shard for a moment cannot corrupt anything.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/service_config.hpp"
#include "storage/owner_directory.hpp"

namespace cm::storage {

class database;

/// The shards an instance owns, readable from any thread without a lock
/// (one atomic flag per shard).
class shard_set {
public:
  explicit shard_set(int32_t shard_count)
    : count_(shard_count), flags_(std::make_unique<std::atomic<bool>[]>(
                             static_cast<size_t>(shard_count))) {}

  int32_t shard_count() const { return count_; }
  bool owns(int32_t shard) const {
    return shard >= 0 && shard < count_ && flags_[static_cast<size_t>(shard)].load(std::memory_order_acquire);
  }
  void set(int32_t shard, bool owned) {
    flags_[static_cast<size_t>(shard)].store(owned, std::memory_order_release);
  }
  int32_t owned_count() const {
    int32_t n = 0;
    for (int32_t i = 0; i < count_; ++i)
      n += owns(i) ? 1 : 0;
    return n;
  }
  /// Live instances at the owner's last round (0 before the first).
  int64_t members() const { return members_.load(std::memory_order_relaxed); }
  void set_members(int64_t n) { members_.store(n, std::memory_order_relaxed); }

private:
  int32_t count_;
  std::atomic<int64_t> members_{0};
  std::unique_ptr<std::atomic<bool>[]> flags_;
};

using shard_set_ptr = std::shared_ptr<shard_set>;

/// What one round changed.
struct ownership_round {
  int64_t members = 0;
  int32_t target = 0;
  std::vector<int32_t> acquired;
  std::vector<int32_t> released;
  std::vector<int32_t> lost;
};

class shard_ownership {
public:
  /// Called on the ownership thread; each returns when its work is done.
  struct handlers {
    /// Shards just locked: load their connections.
    std::function<void(const std::vector<int32_t>&)> acquired;
    /// Shards about to be released: stop their actors once the refreshes
    /// in flight are stored. The locks are released after it returns.
    std::function<void(const std::vector<int32_t>&)> releasing;
    /// Shards whose locks are gone already (the connection was lost).
    std::function<void(const std::vector<int32_t>&)> lost;
  };

  shard_ownership(config::database_config db, std::string instance_id, int32_t shard_count,
                  std::chrono::milliseconds interval, handlers on);
  ~shard_ownership();
  shard_ownership(const shard_ownership&) = delete;
  shard_ownership& operator=(const shard_ownership&) = delete;

  /// Runs the first round (bounded by `limit`: the database may be slow to
  /// answer), then goes on in the background. False when no round worked.
  bool start(std::chrono::milliseconds limit);

  /// Stops. hand_over: every shard goes through `releasing` first (the
  /// destructor does this); otherwise the locks are released at once, for a
  /// shutdown that has already drained its refreshes and stops every actor.
  void stop(bool hand_over = true);

  /// One round on the caller's thread (tests; `start` before it is not
  /// needed). Throws db_error.
  ownership_round round_once();

  /// One round as the background thread runs it: a round that fails (the
  /// session may be gone, and every lock with it) gives every shard up as
  /// lost until a later round succeeds. Returns whether the round succeeded.
  bool round_or_give_up();

  /// The shards owned now.
  shard_set_ptr owned() const { return owned_; }
  int32_t shard_count() const { return shard_count_; }
  /// Live instances at the last round (0 before the first).
  int64_t members() const { return owned_->members(); }

  /// Every shard's owner and its token service, as of the last round.
  owner_directory_ptr directory() const { return directory_; }

  /// Where this instance's token service listens, as the others should
  /// dial it (host:port); written to service_instances from the next round
  /// on. Empty: it publishes none.
  void advertise(std::string token_address);

private:
  void run();
  void read_owners(database& db);
  enum class drop { hand_over, lost, quietly };
  void drop_all(drop how);

  config::database_config db_cfg_;
  std::string instance_id_;
  int32_t shard_count_;
  std::chrono::milliseconds interval_;
  handlers on_;
  shard_set_ptr owned_;
  owner_directory_ptr directory_;
  std::mutex address_mutex_;
  std::string token_address_;
  /// Serialises rounds with stop().
  std::mutex round_mutex_;
  struct connection;
  std::unique_ptr<connection> conn_;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
  std::atomic<bool> failing_{false}; // the last round failed
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

/// Fair share of `shards` among `members` live instances.
int32_t fair_share(int32_t shards, int64_t members);

} // namespace cm::storage

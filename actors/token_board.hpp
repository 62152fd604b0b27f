// The token board: immutable snapshots of tokens that may be handed out
// without asking their connection actor (issue 18).
//
// A connection actor publishes a snapshot when it serves a token from
// memory (so only connections that are read have one: a million idle
// connections cost the board nothing) and withdraws it before anything
// could make it stale: a refresh starting, a reload, a handover, a
// re-authorization, its own stop. Readers (the HTTP fast path on Pistache's
// threads, the registry, the actor itself) take the snapshot under a short
// lock of one stripe and check, on their own clock, that it is still
// before `serve_until_ms`: the start of the token's refresh window or its
// expiry, whichever comes first. Past it, or without a snapshot, the
// request goes to the actor as before.
//
// Writers outside the actor (a reconnect or disconnect storing a new row)
// `hold` the key before they write and again once it is stored: the
// snapshot goes, and a publication from a view read before the hold is
// refused (its fence is old), so the actor reads its row again first. So
// a token older than the newest stored is never served from here (issue
// 9's rule). Fences live in a fixed array of slots that keys share by
// hash, not per key: memory stays bounded by the snapshots published, and
// a hold on another key of the same slot only costs an actor one read.
//
// While other instances are live, a token in memory may be older than the
// one another instance stored; the actor then checks the stored version on
// every read, and the board serves nothing (`serve` is empty unless the
// cluster view says this instance is alone). A snapshot published before
// another instance was seen is never served again, even once this one is
// alone again (the cluster view's `crowded` count moved since).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "model/token_grant.hpp"
#include "storage/cluster_view.hpp"

namespace cm {

/// What a snapshot hands out, and until when.
struct served_token {
  token_grant grant;
  /// Unix ms: not served from the board from here on (the refresh window
  /// opens, or the token expires). Never, for keys.
  int64_t serve_until_ms = std::numeric_limits<int64_t>::max();
  /// The row version it was read from (tests, logs).
  int64_t version = 0;
  /// The cluster view's `crowded` count when it was published.
  uint64_t crowded = 0;
  /// Set when the board lets go of it (a withdraw or a hold): whoever kept
  /// a copy of the pointer (its actor) stops serving it too.
  mutable std::atomic<bool> withdrawn{false};

  /// The HTTP answer's body, rendered once by whoever reads it over HTTP
  /// first (the board knows no HTTP; `render` comes from the route).
  template <class Render>
  const std::string& body(Render&& render) const {
    std::call_once(rendered_, [&] { body_ = render(grant); });
    return body_;
  }

private:
  mutable std::once_flag rendered_;
  mutable std::string body_;
};

using served_token_ptr = std::shared_ptr<const served_token>;

class token_board {
public:
  /// `cluster`: who else shares the database (null: always alone).
  explicit token_board(storage::cluster_view_ptr cluster = nullptr)
    : cluster_(std::move(cluster)) {}
  token_board(const token_board&) = delete;
  token_board& operator=(const token_board&) = delete;

  /// The snapshot to serve at `now_ms` (unix), or null: none, past its
  /// window, or other instances are live.
  served_token_ptr serve(std::string_view team, std::string_view user,
                         std::string_view provider, int64_t now_ms) const;
  served_token_ptr serve(const connection_key& key, int64_t now_ms) const {
    return serve(key.team_id, key.user_id, key.provider, now_ms);
  }

  /// The key's fence: read by a connection actor before it loads its row.
  uint32_t fence(const connection_key& key) const;

  /// Publishes a snapshot read under `seen_fence`; refused (false) when
  /// the key was held since.
  bool publish(const connection_key& key, served_token_ptr snapshot, uint32_t seen_fence);

  /// Removes the key's snapshot (the actor's own state changed).
  void withdraw(const connection_key& key);

  /// Removes the snapshot and refuses publications of views read before
  /// now: called by whoever is about to store a new row for the key.
  void hold(const connection_key& key);

  /// Snapshots published (tests, health).
  size_t size() const;

  /// Tokens handed out from snapshots since start (tests, health).
  int64_t served() const { return served_.load(std::memory_order_relaxed); }

  /// Whether serving from the board is allowed at all right now.
  bool alone() const { return !cluster_ || cluster_->alone(); }

  /// Whether `snapshot` may still be served: this instance is alone, and
  /// has seen nobody else since it was published.
  bool current(const served_token& snapshot) const {
    return !cluster_ || (cluster_->alone() && cluster_->crowded() == snapshot.crowded);
  }

  /// What a snapshot published now records (see `current`).
  uint64_t crowded() const { return cluster_ ? cluster_->crowded() : 0; }

private:
  struct stripe {
    mutable std::mutex mutex;
    std::unordered_map<std::string, served_token_ptr> entries;
  };
  static constexpr size_t stripe_count = 64;
  /// A multiple of stripe_count, so a slot's fence is always changed under
  /// the same stripe's lock.
  static constexpr size_t fence_slots = 64 * stripe_count;

  static std::string key_text(std::string_view team, std::string_view user,
                              std::string_view provider);
  static size_t hash_of(const std::string& text);
  stripe& stripe_of(size_t hash) const { return stripes_[hash % stripe_count]; }
  /// Removes the key's snapshot, marked withdrawn; the caller holds the
  /// stripe's lock (and releases the pointer after it).
  static served_token_ptr take_locked(stripe& s, const std::string& text);

  storage::cluster_view_ptr cluster_;
  mutable std::array<stripe, stripe_count> stripes_;
  /// Changed only under the lock of the stripe of the keys they serve.
  std::array<std::atomic<uint32_t>, fence_slots> fences_{};
  mutable std::atomic<int64_t> served_{0};
};

using token_board_ptr = std::shared_ptr<token_board>;

} // namespace cm

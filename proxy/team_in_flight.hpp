// Proxied calls each team has waiting on providers: bounded, so one team's
// slow provider cannot hold every connection and buffer of the instance
// (with proxy.max_response_bytes it bounds the memory a team can pin).
// Shared by the front actors; internally synchronized.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace cm::proxy {

class team_in_flight : public std::enable_shared_from_this<team_in_flight> {
public:
  /// Held while a call is open; the slot is given back when the last copy
  /// goes, however the call ends.
  using slot = std::shared_ptr<void>;

  /// A slot for `team`, or null when it has `limit` open already.
  slot enter(const std::string& team, int64_t limit);

  /// Calls `team` has open now.
  int64_t open(const std::string& team) const;

private:
  void leave(const std::string& team);

  mutable std::mutex mutex_;
  std::unordered_map<std::string, int64_t> open_;
};

} // namespace cm::proxy

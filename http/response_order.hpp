// Writes the responses of one connection in the order its requests came.
//
// A client may send the next request before the previous answer arrived
// (pipelining). Our answers are written from whichever thread finishes the
// work, so a quick one could overtake a slow one and the client would pair
// them wrongly. Each request takes a ticket on the reactor thread; its
// writer is held back until every earlier ticket was written. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

namespace cm::http {

class response_order {
public:
  using write_fn = std::function<void()>;

  /// The next request's place in line.
  uint64_t take_ticket();

  /// Runs `write` once every earlier ticket has been delivered, then any
  /// later ones that were waiting for it. A ticket delivered twice, or one
  /// already passed, is ignored. `write` must not call deliver on this
  /// object.
  void deliver(uint64_t ticket, write_fn write);

  /// Tickets taken whose writer has not run yet.
  uint64_t outstanding() const;

private:
  mutable std::mutex mutex_;
  uint64_t issued_ = 0;
  uint64_t next_ = 0;
  std::map<uint64_t, write_fn> waiting_;
  /// One thread writes at a time, so writes leave in ticket order even
  /// when another thread delivers meanwhile.
  bool writing_ = false;
};

} // namespace cm::http

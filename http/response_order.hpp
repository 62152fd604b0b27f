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

  /// The same for an answer written over time (http/body_stream.hpp):
  /// `start` runs in the ticket's turn, and later tickets wait until
  /// `release(ticket)` says its last byte is out.
  void deliver_held(uint64_t ticket, write_fn start);

  /// Ends a held ticket's turn: later answers waiting for it are written
  /// (on the calling thread). A ticket not holding the line is ignored.
  void release(uint64_t ticket);

  /// Tickets taken whose writer has not run yet (or whose held answer is
  /// not finished).
  uint64_t outstanding() const;

private:
  mutable std::mutex mutex_;
  uint64_t issued_ = 0;
  uint64_t next_ = 0;
  struct waiting_writer {
    write_fn write;
    bool holds = false;
  };
  std::map<uint64_t, waiting_writer> waiting_;
  /// The ticket whose held answer is being written, if any; it is next_.
  bool holding_ = false;
  void enqueue(uint64_t ticket, waiting_writer writer);
  void run_ready(std::unique_lock<std::mutex>& lock);
  /// One thread writes at a time, so writes leave in ticket order even
  /// when another thread delivers meanwhile.
  bool writing_ = false;
};

} // namespace cm::http

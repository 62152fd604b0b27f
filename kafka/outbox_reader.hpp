// Reads the outbox ahead of the Kafka relay, on a thread and a database
// connection of its own, so the next page is read while the relay produces
// the current one (bench/bench_kafka_relay.cpp: the read was most of an
// event's cost, and done while nothing was produced).
//
// It holds at most `pages_ahead` pages. Only the relay thread calls
// restart(), pause(), take() and unread(); wake() may come from anywhere.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "config/service_config.hpp"
#include "storage/kafka_relay_store.hpp"
#include "storage/records.hpp"

namespace cm::kafka {

class outbox_reader {
public:
  using keyed_event = storage::kafka_relay_store::keyed_event;

  /// `ready` is called (on the reader's thread) when events arrive for a
  /// relay that may be waiting.
  outbox_reader(config::database_config db, int page, int pages_ahead,
                std::chrono::milliseconds poll, std::function<void()> ready);
  ~outbox_reader();
  outbox_reader(const outbox_reader&) = delete;
  outbox_reader& operator=(const outbox_reader&) = delete;

  /// Forgets what was read and reads the events after `from` on.
  void restart(const outbox_position& from);
  /// Stops reading (this instance does not relay) and forgets what was read.
  void pause();
  /// New events were committed: look now.
  void wake();

  /// Stops the thread (before the relay its callback wakes goes away).
  void stop();
  /// Its last read failed (the database is away for this connection).
  bool failing() const { return failing_.load(); }

  /// Whether take() would return something now.
  bool has_ready();
  /// Up to `max` events in outbox order, as read so far.
  std::vector<keyed_event> take(size_t max);
  /// Gives back the tail of what take() returned and the relay could not
  /// produce yet: it comes first next time.
  void unread(std::vector<keyed_event> events, size_t from);

private:
  void run();

  config::database_config db_cfg_;
  size_t page_;
  size_t capacity_;
  std::chrono::milliseconds poll_;
  std::function<void()> ready_callback_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<keyed_event> ready_;
  outbox_position next_from_{};
  /// Moves at every restart or pause: a read begun before is dropped.
  uint64_t generation_ = 0;
  bool active_ = false;
  bool woken_ = false;
  bool stopping_ = false;
  std::atomic<bool> failing_{false};
  std::thread thread_;
};

} // namespace cm::kafka

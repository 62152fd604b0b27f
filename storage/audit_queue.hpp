// Audit rows waiting to be written, shared by whoever records them (the
// token route on Pistache's threads, the front actors) and the storage
// actor that writes them in batches (issue 18).
//
// Nothing is dropped. A token read is recorded before it is answered, and
// when the queue is full (the database is away, or slower than the reads)
// the read is refused with 503 and Retry-After instead of being served
// unaudited (`try_push`). Rows of changes already made (connects, admin
// changes) are always taken (`push`): refusing them would not undo the
// change. Rows count against the capacity until they are written.
//
// Waking the writer costs one message per idle period, not one per row:
// the push that finds the writer idle says so, its caller sends the
// message, and the writer stays awake until it finds the queue empty.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "storage/records.hpp"

namespace cm::storage {

class audit_queue {
public:
  explicit audit_queue(size_t capacity) : capacity_(capacity) {}
  audit_queue(const audit_queue&) = delete;
  audit_queue& operator=(const audit_queue&) = delete;

  enum class pushed {
    /// Queued; the writer is awake already.
    queued,
    /// Queued; the writer was idle: the caller must wake it.
    queued_wake,
    /// Refused: the queue is full (try_push only).
    full,
  };

  /// Queues a row unless the queue holds `capacity` already.
  pushed try_push(audit_entry entry);
  /// Queues a row whatever the queue holds.
  pushed push(audit_entry entry);

  /// Takes up to `max` of the oldest rows to write. They still count
  /// against the capacity until `written` or `put_back` says how it went.
  std::vector<audit_entry> take(size_t max);
  /// The rows taken last were written.
  void written(size_t n);
  /// The rows taken last could not be written: first in line again.
  void put_back(std::vector<audit_entry> rows);
  /// The writer is done with a batch: true when rows are waiting (it stays
  /// awake and goes on), false when the queue is empty (it sleeps; the
  /// next push wakes it).
  bool keep_writing();

  size_t size() const;
  size_t capacity() const { return capacity_; }
  /// Rows refused by try_push since start (tests, health).
  int64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  /// Rows written since start.
  int64_t written_total() const { return written_.load(std::memory_order_relaxed); }

private:
  pushed push_locked(audit_entry&& entry);

  const size_t capacity_;
  mutable std::mutex mutex_;
  std::deque<audit_entry> rows_;
  /// Taken by the writer, not yet written.
  size_t in_flight_ = 0;
  bool writer_awake_ = false;
  std::atomic<int64_t> refused_{0};
  std::atomic<int64_t> written_{0};
};

using audit_queue_ptr = std::shared_ptr<audit_queue>;

} // namespace cm::storage

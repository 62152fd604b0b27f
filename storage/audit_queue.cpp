#include "storage/audit_queue.hpp"

#include <algorithm>
#include <iterator>

namespace cm::storage {

audit_queue::pushed audit_queue::push_locked(audit_entry&& entry) {
  rows_.push_back(std::move(entry));
  if (writer_awake_)
    return pushed::queued;
  writer_awake_ = true;
  return pushed::queued_wake;
}

audit_queue::pushed audit_queue::try_push(audit_entry entry) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (rows_.size() + in_flight_ >= capacity_) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return pushed::full;
  }
  return push_locked(std::move(entry));
}

audit_queue::pushed audit_queue::push(audit_entry entry) {
  std::lock_guard<std::mutex> guard{mutex_};
  return push_locked(std::move(entry));
}

std::vector<audit_entry> audit_queue::take(size_t max) {
  std::vector<audit_entry> out;
  std::lock_guard<std::mutex> guard{mutex_};
  auto n = std::min(max, rows_.size());
  out.reserve(n);
  // Moved out under the lock: the token route's threads wait on it, so no
  // row is copied here.
  for (size_t i = 0; i < n; ++i)
    out.push_back(std::move(rows_[i]));
  rows_.erase(rows_.begin(), rows_.begin() + static_cast<std::ptrdiff_t>(n));
  in_flight_ += n;
  return out;
}

void audit_queue::written(size_t n) {
  std::lock_guard<std::mutex> guard{mutex_};
  in_flight_ -= std::min(n, in_flight_);
  written_.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
}

void audit_queue::put_back(std::vector<audit_entry> rows) {
  std::lock_guard<std::mutex> guard{mutex_};
  in_flight_ -= std::min(rows.size(), in_flight_);
  rows_.insert(rows_.begin(), std::make_move_iterator(rows.begin()),
               std::make_move_iterator(rows.end()));
}

bool audit_queue::keep_writing() {
  std::lock_guard<std::mutex> guard{mutex_};
  writer_awake_ = !rows_.empty();
  return writer_awake_;
}

size_t audit_queue::size() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return rows_.size() + in_flight_;
}

} // namespace cm::storage

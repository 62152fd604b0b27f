#include "storage/audit_queue.hpp"

#include <algorithm>

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
  if (rows_.size() >= capacity_) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return pushed::full;
  }
  return push_locked(std::move(entry));
}

audit_queue::pushed audit_queue::push(audit_entry entry) {
  std::lock_guard<std::mutex> guard{mutex_};
  return push_locked(std::move(entry));
}

std::vector<audit_entry> audit_queue::peek(size_t max) const {
  std::lock_guard<std::mutex> guard{mutex_};
  auto n = std::min(max, rows_.size());
  return {rows_.begin(), rows_.begin() + static_cast<std::ptrdiff_t>(n)};
}

void audit_queue::pop(size_t n) {
  std::lock_guard<std::mutex> guard{mutex_};
  n = std::min(n, rows_.size());
  rows_.erase(rows_.begin(), rows_.begin() + static_cast<std::ptrdiff_t>(n));
  written_.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
}

bool audit_queue::keep_writing() {
  std::lock_guard<std::mutex> guard{mutex_};
  writer_awake_ = !rows_.empty();
  return writer_awake_;
}

size_t audit_queue::size() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return rows_.size();
}

} // namespace cm::storage

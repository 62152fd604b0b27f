#include "http/response_order.hpp"

#include "common/log.hpp"

namespace cm::http {

uint64_t response_order::take_ticket() {
  std::lock_guard<std::mutex> lock(mutex_);
  return issued_++;
}

uint64_t response_order::outstanding() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return issued_ - next_;
}

void response_order::deliver(uint64_t ticket, write_fn write) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (ticket < next_ || ticket >= issued_)
    return;
  waiting_.emplace(ticket, std::move(write));
  if (writing_)
    return; // the writing thread picks it up
  writing_ = true;
  for (auto it = waiting_.find(next_); it != waiting_.end(); it = waiting_.find(next_)) {
    auto ready = std::move(it->second);
    waiting_.erase(it);
    ++next_;
    lock.unlock();
    try {
      if (ready)
        ready();
    } catch (const std::exception&) {
      log::warn("http", "could not write a response");
    }
    lock.lock();
  }
  writing_ = false;
}

} // namespace cm::http

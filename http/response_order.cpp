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
  enqueue(ticket, {std::move(write), false});
}

void response_order::deliver_held(uint64_t ticket, write_fn start) {
  enqueue(ticket, {std::move(start), true});
}

void response_order::enqueue(uint64_t ticket, waiting_writer writer) {
  std::unique_lock<std::mutex> lock(mutex_);
  // A ticket written (or holding the line now) takes no second answer.
  if (ticket < next_ || ticket >= issued_ || (holding_ && ticket == next_))
    return;
  waiting_.emplace(ticket, std::move(writer));
  run_ready(lock);
}

void response_order::release(uint64_t ticket) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!holding_ || ticket != next_)
    return;
  holding_ = false;
  ++next_;
  run_ready(lock);
}

void response_order::run_ready(std::unique_lock<std::mutex>& lock) {
  if (writing_)
    return; // the writing thread picks it up
  writing_ = true;
  while (!holding_) {
    auto it = waiting_.find(next_);
    if (it == waiting_.end())
      break;
    auto ready = std::move(it->second);
    waiting_.erase(it);
    // A held answer keeps its place (next_) until released.
    if (ready.holds)
      holding_ = true;
    else
      ++next_;
    lock.unlock();
    try {
      if (ready.write)
        ready.write();
    } catch (const std::exception&) {
      log::warn("http", "could not write a response");
    }
    lock.lock();
  }
  writing_ = false;
}

} // namespace cm::http

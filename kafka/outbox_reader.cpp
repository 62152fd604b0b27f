#include "kafka/outbox_reader.hpp"

#include <pthread.h>

#include "common/log.hpp"
#include "storage/database.hpp"

namespace cm::kafka {

outbox_reader::outbox_reader(config::database_config db, int page, int pages_ahead,
                             std::chrono::milliseconds poll, std::function<void()> ready)
    : db_cfg_(std::move(db)), page_(static_cast<size_t>(page)),
      capacity_(static_cast<size_t>(page) * static_cast<size_t>(pages_ahead)), poll_(poll),
      ready_callback_(std::move(ready)) {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "cm-kafka-read");
}

outbox_reader::~outbox_reader() { stop(); }

void outbox_reader::stop() {
  {
    std::lock_guard<std::mutex> lock{mutex_};
    stopping_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

void outbox_reader::restart(const outbox_position& from) {
  {
    std::lock_guard<std::mutex> lock{mutex_};
    ++generation_;
    ready_.clear();
    next_from_ = from;
    active_ = true;
  }
  changed_.notify_all();
}

void outbox_reader::pause() {
  std::lock_guard<std::mutex> lock{mutex_};
  ++generation_;
  ready_.clear();
  active_ = false;
}

void outbox_reader::wake() {
  {
    std::lock_guard<std::mutex> lock{mutex_};
    woken_ = true;
  }
  changed_.notify_all();
}

bool outbox_reader::has_ready() {
  std::lock_guard<std::mutex> lock{mutex_};
  return !ready_.empty();
}

std::vector<outbox_reader::keyed_event> outbox_reader::take(size_t max) {
  std::vector<keyed_event> out;
  {
    std::lock_guard<std::mutex> lock{mutex_};
    auto n = std::min(max, ready_.size());
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      out.push_back(std::move(ready_.front()));
      ready_.pop_front();
    }
  }
  // Room again: the reader may go on.
  changed_.notify_all();
  return out;
}

void outbox_reader::unread(std::vector<keyed_event> events, size_t from) {
  std::lock_guard<std::mutex> lock{mutex_};
  for (size_t i = events.size(); i > from; --i)
    ready_.push_front(std::move(events[i - 1]));
}

void outbox_reader::run() {
  storage::database db{db_cfg_};
  storage::kafka_relay_store store{db};
  std::unique_lock<std::mutex> lock{mutex_};
  while (!stopping_) {
    if (!active_ || ready_.size() >= capacity_) {
      changed_.wait_for(lock, poll_);
      continue;
    }
    auto from = next_from_;
    auto generation = generation_;
    auto room = std::min(page_, capacity_ - ready_.size());
    woken_ = false;
    lock.unlock();
    std::vector<keyed_event> got;
    bool failed = false;
    try {
      db.ensure_connected();
      got = store.events_after(from, static_cast<int>(room));
      if (failing_)
        log::info("kafka", "reading the outbox again");
      failing_ = false;
    } catch (const std::exception& e) {
      if (!failing_)
        log::warn("kafka", "cannot read the outbox", {{"reason", e.what()}});
      failing_ = failed = true;
    }
    lock.lock();
    if (generation != generation_)
      continue; // restarted or paused meanwhile: what was read is stale
    if (failed || got.empty()) {
      // Caught up (or the database is away): until something is
      // committed, or the next poll for rows an older transaction held
      // back. A wake during the read was kept in woken_.
      changed_.wait_for(lock, poll_, [&] {
        return stopping_ || woken_ || generation != generation_;
      });
      continue;
    }
    next_from_ = got.back().event.at;
    bool was_empty = ready_.empty();
    for (auto& e : got)
      ready_.push_back(std::move(e));
    if (was_empty && ready_callback_ && !stopping_) {
      lock.unlock();
      ready_callback_();
      lock.lock();
    }
  }
}

} // namespace cm::kafka

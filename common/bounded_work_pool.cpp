#include "common/bounded_work_pool.hpp"

#include <pthread.h>

#include "common/log.hpp"

namespace cm {

bounded_work_pool::bounded_work_pool(size_t threads, size_t max_queued, const std::string& name)
  : max_queued_(max_queued) {
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { run(); });
    // Linux limits thread names to 15 characters.
    pthread_setname_np(threads_.back().native_handle(), name.substr(0, 15).c_str());
  }
}

bounded_work_pool::~bounded_work_pool() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    stopping_ = true;
    queue_.clear();
  }
  wake_.notify_all();
  for (auto& t : threads_)
    t.join();
}

bool bounded_work_pool::try_submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (stopping_ || queue_.size() >= max_queued_)
      return false;
    queue_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

size_t bounded_work_pool::queued() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return queue_.size();
}

void bounded_work_pool::run() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock{mutex_};
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_)
        return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      job();
    } catch (...) {
      // A job must not throw; if one does, the thread keeps serving.
      log::error("work-pool", "a pooled job threw");
    }
  }
}

} // namespace cm

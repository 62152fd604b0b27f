// A few threads of their own for CPU-heavy jobs (checking and signing with
// service-account keys), so that such work never holds a CAF worker that
// serves everyone. The queue in front of them is bounded: a job that finds
// it full is refused at once, and the caller answers "try again later"
// instead of letting waiting work pile up without limit.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cm {

class bounded_work_pool {
public:
  /// `threads` threads (named `name`, as `top` shows them); at most
  /// `max_queued` jobs wait for one besides those running.
  bounded_work_pool(size_t threads, size_t max_queued, const std::string& name);
  /// Lets running jobs finish, drops the queued ones, joins the threads.
  ~bounded_work_pool();
  bounded_work_pool(const bounded_work_pool&) = delete;
  bounded_work_pool& operator=(const bounded_work_pool&) = delete;

  /// Queues `job` for the next free thread; false (and `job` never runs)
  /// when `max_queued` jobs are already waiting. A job must not throw.
  bool try_submit(std::function<void()> job);

  /// Jobs waiting for a thread now.
  size_t queued() const;

private:
  void run();

  const size_t max_queued_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

} // namespace cm

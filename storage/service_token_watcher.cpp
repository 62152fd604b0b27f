#include "storage/service_token_watcher.hpp"

#include "common/log.hpp"

namespace cm::storage {

service_token_watcher::service_token_watcher(config::database_config cfg,
                                             std::chrono::milliseconds poll, callback on_tokens)
  : db_(std::move(cfg)), poll_(poll), on_tokens_(std::move(on_tokens)) {
  loaded_ = read_once();
  thread_ = std::thread([this] { run(); });
}

service_token_watcher::~service_token_watcher() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

bool service_token_watcher::read_once() {
  try {
    auto tokens = service_token_store{db_}.list(false);
    if (failing_)
      log::info("auth", "service tokens are read from the database again",
                {{"count", tokens.size()}});
    failing_ = false;
    on_tokens_(tokens);
    return true;
  } catch (const db_error& e) {
    if (!failing_)
      log::warn("auth", "cannot read the stored service tokens; the last ones read stay in force",
                {{"error", e.what()}});
    failing_ = true;
    return false;
  } catch (const std::exception&) {
    // Nothing may end this thread; the last tokens read stay in force.
    if (!failing_)
      log::warn("auth", "cannot read the stored service tokens; the last ones read stay in force");
    failing_ = true;
    return false;
  }
}

void service_token_watcher::run() {
  std::unique_lock<std::mutex> lock{mutex_};
  while (!wake_.wait_for(lock, poll_, [this] { return stopping_; })) {
    lock.unlock();
    read_once();
    lock.lock();
  }
}

} // namespace cm::storage

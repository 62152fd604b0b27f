// Reads the live service tokens (storage/service_token_store.hpp) every
// `poll` on a connection and thread of its own and hands each complete
// list to `on_tokens`, so a token an operator creates or revokes takes
// effect on every instance within one poll, without a restart. While the
// database is away the last list stays in force (a revocation then waits
// for the database; refusing every service instead would turn an outage
// of PostgreSQL into an outage of every internal caller).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "config/service_config.hpp"
#include "storage/service_token_store.hpp"

namespace cm::storage {

class service_token_watcher {
public:
  using callback = std::function<void(const std::vector<stored_service_token>&)>;

  /// Reads once before returning (false from `loaded()` if that failed),
  /// then every `poll` on its own thread.
  service_token_watcher(config::database_config cfg, std::chrono::milliseconds poll,
                        callback on_tokens);
  ~service_token_watcher();
  service_token_watcher(const service_token_watcher&) = delete;
  service_token_watcher& operator=(const service_token_watcher&) = delete;

  /// Whether the first read succeeded.
  bool loaded() const { return loaded_; }

private:
  bool read_once();
  void run();

  database db_;
  std::chrono::milliseconds poll_;
  callback on_tokens_;
  bool loaded_ = false;
  /// Whether the last read failed (an outage is logged once, not per poll).
  bool failing_ = false;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

} // namespace cm::storage

// Listens on PostgreSQL channel `connector_events` (see migration 0003) on
// a connection and thread of its own, and calls `on_event` whenever any
// instance committed new outbox events, and once after every (re)connect,
// since notifications sent while disconnected are lost. Callers also poll,
// so this only makes delivery prompt; it is never the only path.
#pragma once

#include <atomic>
#include <functional>
#include <thread>

#include "config/service_config.hpp"

namespace cm::storage {

class notify_listener {
public:
  notify_listener(config::database_config cfg, std::function<void()> on_event);
  ~notify_listener();
  notify_listener(const notify_listener&) = delete;
  notify_listener& operator=(const notify_listener&) = delete;

  /// Stops the thread (also done by the destructor).
  void stop();

private:
  void run();

  config::database_config cfg_;
  std::function<void()> on_event_;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

} // namespace cm::storage

#include "storage/notify_listener.hpp"

#include <algorithm>
#include <chrono>

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include "common/log.hpp"

namespace cm::storage {

notify_listener::notify_listener(config::database_config cfg, std::function<void()> on_event)
  : cfg_(std::move(cfg)), on_event_(std::move(on_event)) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0)
    throw std::runtime_error("cannot create a pipe");
  thread_ = std::thread([this] { run(); });
}

notify_listener::~notify_listener() {
  stop();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void notify_listener::stop() {
  if (stopping_.exchange(true))
    return;
  char byte = 1;
  [[maybe_unused]] auto n = ::write(wake_[1], &byte, 1);
  if (thread_.joinable())
    thread_.join();
}

void notify_listener::run() {
  PGconn* conn = nullptr;
  auto backoff = cfg_.reconnect_min_backoff;
  // Waits for the wake pipe or `ms`; true when asked to stop.
  auto pause = [this](std::chrono::milliseconds ms) {
    pollfd p{wake_[0], POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(ms.count()));
    return stopping_.load();
  };
  while (!stopping_.load()) {
    if (conn == nullptr) {
      // Same keyword form as storage/database.cpp: the URL stays opaque.
      auto timeout = std::to_string(cfg_.connect_timeout_s);
      const char* keys[] = {"dbname", "connect_timeout", "application_name", "keepalives",
                            "keepalives_idle", nullptr};
      const char* values[] = {cfg_.url.c_str(), timeout.c_str(), "connector-manager-listen", "1",
                              "30", nullptr};
      conn = PQconnectdbParams(keys, values, 1);
      PGresult* res = nullptr;
      if (PQstatus(conn) == CONNECTION_OK)
        res = PQexec(conn, "LISTEN connector_events");
      bool ok = res != nullptr && PQresultStatus(res) == PGRES_COMMAND_OK;
      if (res)
        PQclear(res);
      if (!ok) {
        PQfinish(conn);
        conn = nullptr;
        log::warn("events", "cannot listen for event notifications; retrying");
        if (pause(backoff))
          break;
        backoff = std::min(backoff * 2, cfg_.reconnect_max_backoff);
        continue;
      }
      backoff = cfg_.reconnect_min_backoff;
      // Anything committed while we were not listening is picked up now.
      on_event_();
    }
    pollfd fds[2] = {{PQsocket(conn), POLLIN, 0}, {wake_[0], POLLIN, 0}};
    ::poll(fds, 2, 1000);
    if (stopping_.load())
      break;
    if (fds[0].revents == 0)
      continue;
    if (PQconsumeInput(conn) == 0) {
      PQfinish(conn);
      conn = nullptr;
      continue;
    }
    bool any = false;
    while (PGnotify* n = PQnotifies(conn)) {
      any = true;
      PQfreemem(n);
    }
    if (any)
      on_event_();
  }
  if (conn)
    PQfinish(conn);
}

} // namespace cm::storage

#include "storage/instance_heartbeat.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "common/log.hpp"
#include "storage/database.hpp"

namespace cm::storage {

namespace {

constexpr const char* component = "cluster";

// Beats are serialised by a transaction-scoped advisory lock, so two
// instances joining at once cannot both see the other absent.
const statement lock_stmt{"instances_lock", "SELECT pg_advisory_xact_lock(727003)"};

// $1 instance, $2 grace ms, $3 active ms, $4 settle ms. clock_timestamp(),
// not now(): the transaction may have waited for the lock.
const statement beat_stmt{"instances_beat",
  "WITH others AS ("
  "  SELECT count(*) FILTER (WHERE active_until >= clock_timestamp()) AS active,"
  "         count(*) AS present"
  "  FROM service_instances"
  "  WHERE instance_id <> $1"
  "    AND active_until > clock_timestamp() - $4::bigint * interval '1 millisecond'),"
  " me AS ("
  "  INSERT INTO service_instances AS s (instance_id, active_from, active_until, beat_at)"
  "  SELECT $1, clock_timestamp() + CASE WHEN active = 0 THEN interval '0'"
  "                                      ELSE $2::bigint * interval '1 millisecond' END,"
  "         clock_timestamp() + $3::bigint * interval '1 millisecond', clock_timestamp()"
  "  FROM others"
  "  ON CONFLICT (instance_id) DO UPDATE SET"
  "    beat_at = excluded.beat_at, active_until = excluded.active_until,"
  // Still active: keep its start. Lapsed: join again, with the grace when
  // others are active.
  "    active_from = CASE WHEN s.active_until >= clock_timestamp() THEN s.active_from"
  "                       ELSE excluded.active_from END"
  "  RETURNING active_from <= clock_timestamp() AS active_now)"
  " SELECT others.present, me.active_now FROM others, me"};

const statement leave_stmt{"instances_leave",
  "UPDATE service_instances SET active_until = clock_timestamp() WHERE instance_id = $1"};

const statement forget_stmt{"instances_forget",
  "DELETE FROM service_instances WHERE active_until < clock_timestamp() - interval '1 day'"};

std::string ms_text(std::chrono::milliseconds ms) { return std::to_string(ms.count()); }

} // namespace

struct instance_heartbeat::connection {
  explicit connection(const config::database_config& cfg) : db(cfg) {}
  database db;
};

instance_heartbeat::instance_heartbeat(config::database_config db, std::string instance_id,
                                       heartbeat_timing timing, cluster_view_ptr view)
  : db_cfg_(std::move(db)), instance_id_(std::move(instance_id)), timing_(timing),
    view_(std::move(view)), conn_(std::make_unique<connection>(db_cfg_)) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0)
    throw std::runtime_error("cannot create a pipe");
}

instance_heartbeat::~instance_heartbeat() {
  leave();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

beat_result instance_heartbeat::beat_once() {
  auto sent = cluster_view::clock::now();
  auto& db = conn_->db;
  db.ensure_connected();
  database::transaction tx{db};
  db.exec(lock_stmt);
  auto res = db.exec(beat_stmt, {param::text(instance_id_), param::text(ms_text(timing_.grace())),
                                 param::text(ms_text(timing_.active())),
                                 param::text(ms_text(timing_.settle()))});
  tx.commit();
  beat_result out;
  out.others = res.integer(0, 0);
  out.active = res.text(0, 1) == "t";
  if (view_)
    view_->observed(sent, out.others);
  return out;
}

bool instance_heartbeat::join(std::chrono::milliseconds limit) {
  auto give_up = std::chrono::steady_clock::now() + limit;
  bool announced = false;
  bool waited = false;
  while (std::chrono::steady_clock::now() < give_up) {
    try {
      if (!announced)
        conn_->db.exec(forget_stmt);
      auto beat = beat_once();
      if (!announced && !beat.active)
        log::info(component, "other instances are active; waiting out the join grace",
                  {{"others", beat.others}, {"grace_ms", timing_.grace().count()}});
      announced = true;
      if (beat.active) {
        thread_ = std::thread([this] { run(); });
        return true;
      }
      waited = true;
    } catch (const db_error& e) {
      log::warn(component, "heartbeat failed", {{"error", e.what()}});
    }
    std::this_thread::sleep_for(waited ? timing_.interval / 4 : timing_.interval);
  }
  return false;
}

void instance_heartbeat::leave() {
  if (stopping_.exchange(true))
    return;
  char byte = 1;
  [[maybe_unused]] auto n = ::write(wake_[1], &byte, 1);
  if (thread_.joinable())
    thread_.join();
  try {
    conn_->db.exec(leave_stmt, {param::text(instance_id_)});
  } catch (const db_error& e) {
    // Its activity then ends by itself, `active` after the last beat.
    log::warn(component, "could not leave the cluster", {{"error", e.what()}});
  }
}

void instance_heartbeat::run() {
  bool failing = false;
  while (!stopping_.load()) {
    pollfd p{wake_[0], POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(timing_.interval.count()));
    if (stopping_.load())
      break;
    try {
      auto beat = beat_once();
      if (failing)
        log::info(component, "heartbeat restored", {{"others", beat.others}});
      failing = false;
    } catch (const db_error& e) {
      // The view ages out by itself (trust), and the database fences this
      // instance once `active` has passed without a beat.
      if (!failing)
        log::warn(component, "heartbeat failed", {{"error", e.what()}});
      failing = true;
    }
  }
}

} // namespace cm::storage

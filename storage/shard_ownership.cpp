#include "storage/shard_ownership.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "common/log.hpp"
#include "storage/database.hpp"

namespace cm::storage {

namespace {

constexpr const char* component = "shards";

// Two-integer advisory keys: (727004, slot) is a membership, (727005,
// shard) a shard. They do not overlap the other keys of this service
// (727001 migrations, 727002 a member's OAuth states, 727003 heartbeats).
// pg_locks shows a two-integer key as classid, objid with objsubid = 2.
constexpr int64_t member_space = 727004;
constexpr int64_t shard_space = 727005;
constexpr int32_t member_slots = 4096;

#define CM_THIS_DATABASE "(SELECT oid FROM pg_database WHERE datname = current_database())"

const statement held_stmt{"shards_held",
  "SELECT classid::bigint, objid::bigint FROM pg_locks "
  "WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND objsubid = 2 AND granted "
  "AND classid IN (727004, 727005)"};

const statement take_membership_stmt{"shards_take_membership",
  "SELECT slot FROM generate_series(0, $1::integer - 1) AS slot "
  "WHERE pg_try_advisory_lock(727004, slot) LIMIT 1"};

const statement members_stmt{"shards_members",
  "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = " CM_THIS_DATABASE
  " AND classid = 727004 AND objsubid = 2 AND granted"};

const statement taken_stmt{"shards_taken",
  "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND database = "
  CM_THIS_DATABASE " AND classid = 727005 AND objsubid = 2"};

const statement try_lock_stmt{"shards_try_lock",
  "SELECT pg_try_advisory_lock(727005, $1::integer)"};

const statement unlock_stmt{"shards_unlock", "SELECT pg_advisory_unlock(727005, $1::integer)"};

const statement unlock_all_stmt{"shards_unlock_all", "SELECT pg_advisory_unlock_all()"};

// Names this session as the one holding the instance's shard locks, and
// where its token service listens (migration 0010). A pid is reused by
// later sessions: any other row still naming it is cleared first.
const statement advertise_stmt{"shards_advertise",
  "WITH stale AS (UPDATE service_instances SET shards_pid = NULL "
  "               WHERE shards_pid = pg_backend_pid() AND instance_id <> $1) "
  "UPDATE service_instances SET shards_pid = pg_backend_pid(), token_address = nullif($2, '') "
  "WHERE instance_id = $1 AND (shards_pid IS DISTINCT FROM pg_backend_pid() "
  "                            OR token_address IS DISTINCT FROM nullif($2, ''))"};

// Each locked shard with the instance whose locking session holds it.
const statement owners_stmt{"shards_owners",
  "SELECT i.instance_id, coalesce(i.token_address, ''), l.objid::bigint "
  "FROM pg_locks l JOIN service_instances i ON i.shards_pid = l.pid "
  "WHERE l.locktype = 'advisory' AND l.database = " CM_THIS_DATABASE
  " AND l.classid = 727005 AND l.objsubid = 2 AND l.granted ORDER BY 1"};

} // namespace

int32_t fair_share(int32_t shards, int64_t members) {
  if (members <= 1)
    return shards;
  return static_cast<int32_t>((shards + members - 1) / members);
}

struct shard_ownership::connection {
  explicit connection(const config::database_config& cfg) : db(cfg) {}
  database db;
};

shard_ownership::shard_ownership(config::database_config db, std::string instance_id,
                                 int32_t shard_count, std::chrono::milliseconds interval,
                                 handlers on)
  : db_cfg_(std::move(db)), instance_id_(std::move(instance_id)), shard_count_(shard_count),
    interval_(interval), on_(std::move(on)), owned_(std::make_shared<shard_set>(shard_count)),
    directory_(std::make_shared<owner_directory>(shard_count)),
    conn_(std::make_unique<connection>(db_cfg_)) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0)
    throw std::runtime_error("cannot create a pipe");
}

shard_ownership::~shard_ownership() {
  stop();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

ownership_round shard_ownership::round_once() {
  std::lock_guard<std::mutex> guard{round_mutex_};
  ownership_round out;
  if (stopped_)
    return out;
  auto& db = conn_->db;
  db.ensure_connected();

  // 1. What this session holds, as PostgreSQL sees it.
  bool member = false;
  std::set<int32_t> held;
  auto res = db.exec(held_stmt);
  for (int i = 0; i < res.rows(); ++i) {
    if (res.integer(i, 0) == member_space)
      member = true;
    else if (res.integer(i, 0) == shard_space)
      held.insert(static_cast<int32_t>(res.integer(i, 1)));
  }
  for (int32_t s = 0; s < shard_count_; ++s)
    if (owned_->owns(s) && held.count(s) == 0)
      out.lost.push_back(s);
  if (!out.lost.empty()) {
    for (auto s : out.lost)
      owned_->set(s, false);
    log::warn(component, "shards lost with the database session", {{"count", out.lost.size()}});
    if (on_.lost)
      on_.lost(out.lost);
  }
  if (!member) {
    auto slot = db.exec(take_membership_stmt, {param::text(std::to_string(member_slots))});
    if (slot.rows() != 1)
      throw db_error(ec::unavailable, "", "no free membership slot");
  }

  // 2. The fair share among the live instances.
  out.members = db.exec(members_stmt).integer(0, 0);
  owned_->set_members(out.members);
  out.target = fair_share(shard_count_, out.members);

  // Locks held but not yet known as owned (a round that failed after
  // locking) are adopted; the surplus check below may hand them on.
  std::vector<int32_t> adopted;
  for (auto s : held)
    if (!owned_->owns(s))
      adopted.push_back(s);

  auto mine = static_cast<int32_t>(held.size());
  if (mine > out.target) {
    // Hand over the highest-numbered surplus.
    for (auto it = held.rbegin(); it != held.rend() && mine > out.target; ++it, --mine)
      out.released.push_back(*it);
    for (auto s : out.released)
      owned_->set(s, false);
    // The adopted ones that are also released never had actors here.
    std::vector<int32_t> handed;
    for (auto s : out.released)
      if (std::find(adopted.begin(), adopted.end(), s) == adopted.end())
        handed.push_back(s);
    if (on_.releasing && !handed.empty())
      on_.releasing(handed);
    for (auto s : out.released)
      db.exec(unlock_stmt, {param::text(std::to_string(s))});
    log::info(component, "shards handed over",
              {{"count", out.released.size()}, {"members", out.members}, {"target", out.target}});
    adopted.erase(std::remove_if(adopted.begin(), adopted.end(),
                                 [&](int32_t s) {
                                   return std::find(out.released.begin(), out.released.end(),
                                                    s) != out.released.end();
                                 }),
                  adopted.end());
  } else if (mine < out.target) {
    std::set<int32_t> taken;
    auto locked = db.exec(taken_stmt);
    for (int i = 0; i < locked.rows(); ++i)
      taken.insert(static_cast<int32_t>(locked.integer(i, 0)));
    // Instances try the free shards from different starting points, so two
    // of them taking over at once rarely race for the same lock (a lost
    // race is harmless: the try-lock simply fails).
    auto start = static_cast<int32_t>(std::hash<std::string>{}(instance_id_) %
                                      static_cast<size_t>(shard_count_));
    for (int32_t i = 0; i < shard_count_ && mine < out.target; ++i) {
      auto s = (start + i) % shard_count_;
      if (taken.count(s) != 0)
        continue;
      auto got = db.exec(try_lock_stmt, {param::text(std::to_string(s))});
      if (got.text(0, 0) == "t") {
        out.acquired.push_back(s);
        ++mine;
      }
    }
  }
  for (auto s : adopted)
    out.acquired.push_back(s);
  // Where every shard's owner is, for requests this instance forwards.
  {
    std::string address;
    {
      std::lock_guard<std::mutex> guard{address_mutex_};
      address = token_address_;
    }
    db.exec(advertise_stmt, {param::text(instance_id_), param::text(address)});
  }
  read_owners(db);
  if (!out.acquired.empty()) {
    std::sort(out.acquired.begin(), out.acquired.end());
    for (auto s : out.acquired)
      owned_->set(s, true);
    log::info(component, "shards taken",
              {{"count", out.acquired.size()}, {"members", out.members}, {"target", out.target},
               {"owned", owned_->owned_count()}});
    if (on_.acquired)
      on_.acquired(out.acquired);
  }
  return out;
}

void shard_ownership::read_owners(database& db) {
  auto res = db.exec(owners_stmt);
  std::vector<shard_owner> owners;
  std::vector<std::vector<int32_t>> shards;
  for (int i = 0; i < res.rows(); ++i) {
    std::string id{res.text(i, 0)};
    if (owners.empty() || owners.back().instance_id != id) {
      owners.push_back({id, std::string{res.text(i, 1)}});
      shards.emplace_back();
    }
    shards.back().push_back(static_cast<int32_t>(res.integer(i, 2)));
  }
  directory_->replace(std::move(owners), shards);
}

void shard_ownership::advertise(std::string token_address) {
  std::lock_guard<std::mutex> guard{address_mutex_};
  token_address_ = std::move(token_address);
}

bool shard_ownership::start(std::chrono::milliseconds limit) {
  auto give_up = std::chrono::steady_clock::now() + limit;
  while (true) {
    try {
      round_once();
      break;
    } catch (const db_error& e) {
      log::warn(component, "shard ownership round failed", {{"error", e.what()}});
      drop_all(drop::lost);
      if (std::chrono::steady_clock::now() >= give_up)
        return false;
      std::this_thread::sleep_for(interval_);
    }
  }
  thread_ = std::thread([this] { run(); });
  return true;
}

void shard_ownership::drop_all(drop how) {
  std::vector<int32_t> owned;
  for (int32_t s = 0; s < shard_count_; ++s)
    if (owned_->owns(s))
      owned.push_back(s);
  for (auto s : owned)
    owned_->set(s, false);
  if (!owned.empty()) {
    if (how == drop::hand_over && on_.releasing)
      on_.releasing(owned);
    else if (how == drop::lost && on_.lost)
      on_.lost(owned);
  }
  owned_->set_members(0);
  directory_->clear();
  if (how != drop::lost) {
    try {
      conn_->db.exec(unlock_all_stmt);
    } catch (const db_error& e) {
      log::warn(component, "could not release the shards", {{"error", e.what()}});
    }
  }
  // A new session next round: the old one's locks are gone with it (or go
  // when PostgreSQL notices that it is closed).
  conn_->db.disconnect();
}

void shard_ownership::stop(bool hand_over) {
  if (stopping_.exchange(true))
    return;
  char byte = 1;
  [[maybe_unused]] auto n = ::write(wake_[1], &byte, 1);
  if (thread_.joinable())
    thread_.join();
  std::lock_guard<std::mutex> guard{round_mutex_};
  if (stopped_)
    return;
  stopped_ = true;
  drop_all(hand_over ? drop::hand_over : drop::quietly);
}

bool shard_ownership::round_or_give_up() {
  try {
    round_once();
    if (failing_.exchange(false))
      log::info(component, "shard ownership restored", {{"owned", owned_->owned_count()}});
    return true;
  } catch (const db_error& e) {
    // The session, and with it every lock, may be gone: stop acting as the
    // owner of anything until a round succeeds again.
    if (!failing_.exchange(true))
      log::warn(component, "shard ownership round failed; every shard is given up",
                {{"error", e.what()}});
    std::lock_guard<std::mutex> guard{round_mutex_};
    drop_all(drop::lost);
    return false;
  }
}

void shard_ownership::run() {
  while (!stopping_.load()) {
    pollfd p{wake_[0], POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(interval_.count()));
    if (stopping_.load())
      break;
    round_or_give_up();
  }
}

} // namespace cm::storage

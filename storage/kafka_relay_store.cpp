#include "storage/kafka_relay_store.hpp"

namespace cm::storage {

namespace {

// The relay's lock key: "cm-kafka" as an int64 (0x636d2d6b61666b61),
// distinct from every other advisory lock the service takes. pg_locks
// shows it split in classid (high 32 bits) and objid (low 32 bits).
#define CM_KAFKA_LOCK_KEY "7164432521435179873"
#define CM_HOLDS_KAFKA_LOCK                                                               \
  "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "               \
  "AND pid = pg_backend_pid() AND ((classid::bigint << 32) | objid::bigint) = " CM_KAFKA_LOCK_KEY ")"

const statement try_lock_stmt{"kafka_relay_try_lock",
  "SELECT pg_try_advisory_lock(" CM_KAFKA_LOCK_KEY ")"};

const statement holds_lock_stmt{"kafka_relay_holds_lock", "SELECT " CM_HOLDS_KAFKA_LOCK};

const statement unlock_stmt{"kafka_relay_unlock",
  "SELECT pg_advisory_unlock(" CM_KAFKA_LOCK_KEY ")"};

const statement cursor_stmt{"kafka_relay_cursor",
  "SELECT txid::text::bigint, seq FROM kafka_relay_cursor WHERE id = 1"};

// Forward only, and only by the lock's holder: a relay that lost its lock
// (its connection dropped) cannot move the cursor behind the new one.
const statement advance_stmt{"kafka_relay_advance",
  "INSERT INTO kafka_relay_cursor AS c (id, txid, seq) "
  "SELECT 1, $1::text::xid8, $2::bigint WHERE " CM_HOLDS_KAFKA_LOCK " "
  "ON CONFLICT (id) DO UPDATE SET txid = excluded.txid, seq = excluded.seq, updated_at = now() "
  "WHERE (c.txid, c.seq) < (excluded.txid, excluded.seq)"};

const statement park_stmt{"kafka_relay_park",
  "INSERT INTO kafka_parked (team_id, event_id, topic, reason) VALUES ($1, $2::uuid, $3, $4) "
  "ON CONFLICT DO NOTHING"};

const statement parked_stmt{"kafka_relay_parked", "SELECT count(*) FROM kafka_parked"};

} // namespace

bool kafka_relay_store::try_lead() { return db_.exec(try_lock_stmt).text(0, 0) == "t"; }

bool kafka_relay_store::leading() { return db_.exec(holds_lock_stmt).text(0, 0) == "t"; }

void kafka_relay_store::step_down() {
  // A session may hold the lock more than once (try_lead again): release
  // every hold.
  while (leading())
    db_.exec(unlock_stmt);
}

outbox_position kafka_relay_store::cursor() {
  auto res = db_.exec(cursor_stmt);
  if (res.rows() == 0)
    return {0, 0};
  return {res.integer(0, 0), res.integer(0, 1)};
}

bool kafka_relay_store::advance(const outbox_position& to) {
  auto res = db_.exec(advance_stmt, {param::text(std::to_string(to.txid)),
                                     param::text(std::to_string(to.seq))});
  return res.affected() > 0;
}

void kafka_relay_store::park(const std::string& team_id, const std::string& event_id,
                             const std::string& topic, const std::string& reason) {
  db_.exec(park_stmt, {param::text(team_id), param::text(event_id), param::text(topic),
                       param::text(reason)});
}

int64_t kafka_relay_store::parked() { return db_.exec(parked_stmt).integer(0, 0); }

} // namespace cm::storage

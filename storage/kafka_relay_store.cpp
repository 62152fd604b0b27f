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
  "ON CONFLICT (team_id, event_id) DO UPDATE SET reason = excluded.reason, "
  "topic = excluded.topic, parked_at = now(), requeued_at = NULL"};

const statement parked_stmt{"kafka_relay_parked", "SELECT count(*) FROM kafka_parked"};

// Counted up to backlog_cap rows, so a backlog of millions (an old
// outbox, a long outage) costs a bounded index walk; the oldest is the
// first row in commit order (an index probe).
#define CM_KAFKA_BACKLOG_CAP "100000"
const statement backlog_stmt{"kafka_relay_backlog",
  "SELECT (SELECT count(*) FROM (SELECT 1 FROM event_outbox "
  "         WHERE (txid, seq) > ($1::text::xid8, $2::bigint) LIMIT " CM_KAFKA_BACKLOG_CAP ") b), "
  "(SELECT coalesce((extract(epoch FROM now() - created_at) * 1000)::bigint, 0) "
  " FROM event_outbox WHERE (txid, seq) > ($1::text::xid8, $2::bigint) "
  " ORDER BY event_outbox.txid, event_outbox.seq LIMIT 1), "
  "(SELECT count(*) FROM kafka_parked WHERE requeued_at IS NULL)"};

// The message key (kafka/relay.hpp, key_of): the connectionId of a token
// event, <team>/<connectorName> of an entity event, read from the jsonb
// here rather than parsed from the text for each event.
#define CM_KAFKA_KEY(o)                                                               \
  "CASE WHEN jsonb_typeof(" o ".payload->'connectionId') = 'string' "                 \
  "THEN " o ".payload->>'connectionId' "                                              \
  "WHEN jsonb_typeof(" o ".payload->'connectorName') = 'string' "                     \
  "THEN " o ".team_id || '/' || (" o ".payload->>'connectorName') ELSE " o ".team_id END"

// The outbox in commit order after the cursor, committed rows only, as
// outbox::after reads it (the ORDER BY names the indexed columns).
const statement events_after_stmt{"kafka_relay_events_after",
  "SELECT o.txid::text::bigint, o.seq, o.team_id, o.event_id::text, o.topic, o.event_type, "
  "o.payload::text, " CM_KAFKA_KEY("o") " FROM event_outbox o "
  "WHERE (o.txid, o.seq) > ($1::text::xid8, $2::bigint) "
  "AND o.txid < pg_snapshot_xmin(pg_current_snapshot()) "
  "ORDER BY o.txid, o.seq LIMIT $3::integer"};

const statement requeued_stmt{"kafka_relay_requeued",
  "SELECT o.txid::text::bigint, o.seq, o.team_id, o.event_id::text, o.topic, o.event_type, "
  "o.payload::text, " CM_KAFKA_KEY("o") ", p.requeued_at::text "
  "FROM kafka_parked p JOIN event_outbox o ON o.team_id = p.team_id AND o.event_id = p.event_id "
  "WHERE p.requeued_at IS NOT NULL ORDER BY p.requeued_at, o.txid, o.seq LIMIT $1::integer"};

const statement requeue_done_stmt{"kafka_relay_requeue_done",
  "DELETE FROM kafka_parked WHERE team_id = $1 AND event_id = $2::uuid "
  "AND requeued_at = $3::timestamptz"};

const statement list_parked_stmt{"kafka_relay_list_parked",
  "SELECT p.team_id, p.event_id::text, p.topic, coalesce(o.event_type, ''), p.reason, "
  "to_char(p.parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
  "coalesce(to_char(p.requeued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') "
  "FROM kafka_parked p LEFT JOIN event_outbox o ON o.team_id = p.team_id AND o.event_id = p.event_id "
  "ORDER BY p.parked_at DESC LIMIT $1::integer"};

// One request shares one time (now()), so the relay produces its events
// in outbox order. Only events whose outbox row is still there (not
// pruned) can be sent again.
const statement requeue_stmt{"kafka_relay_requeue",
  "UPDATE kafka_parked p SET requeued_at = now() "
  "WHERE p.requeued_at IS NULL AND ($1 = '' OR p.event_id::text = lower($1)) "
  "AND EXISTS (SELECT 1 FROM event_outbox o WHERE o.team_id = p.team_id "
  "AND o.event_id = p.event_id)"};

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

kafka_relay_store::backlog_figures kafka_relay_store::backlog(const outbox_position& cursor) {
  auto res = db_.exec(backlog_stmt, {param::text(std::to_string(cursor.txid)),
                                     param::text(std::to_string(cursor.seq))});
  // No row after the cursor: the age's subquery is NULL, read as 0.
  return {res.integer(0, 0), res.is_null(0, 1) ? 0 : res.integer(0, 1), res.integer(0, 2)};
}

namespace {

/// Row `i` of events_after_stmt or requeued_stmt: the event, then its key.
kafka_relay_store::keyed_event keyed_event_at(const result& res, int i) {
  kafka_relay_store::keyed_event k;
  k.event.at = {res.integer(i, 0), res.integer(i, 1)};
  k.event.team_id = res.text(i, 2);
  k.event.event_id = res.text(i, 3);
  k.event.topic = res.text(i, 4);
  k.event.event_type = res.text(i, 5);
  k.event.payload = res.text(i, 6);
  k.key = res.text(i, 7);
  return k;
}

} // namespace

std::vector<kafka_relay_store::keyed_event> kafka_relay_store::events_after(
  const outbox_position& after, int limit) {
  auto res = db_.exec(events_after_stmt, {param::text(std::to_string(after.txid)),
                                          param::text(std::to_string(after.seq)),
                                          param::text(std::to_string(limit))});
  std::vector<keyed_event> out;
  out.reserve(res.rows());
  for (int i = 0; i < res.rows(); ++i)
    out.push_back(keyed_event_at(res, i));
  return out;
}

std::vector<kafka_relay_store::requeued_event> kafka_relay_store::requeued(int limit) {
  auto res = db_.exec(requeued_stmt, {param::text(std::to_string(limit))});
  std::vector<requeued_event> out;
  out.reserve(res.rows());
  for (int i = 0; i < res.rows(); ++i) {
    auto [event, key] = keyed_event_at(res, i);
    out.push_back({std::move(event), std::move(key), std::string(res.text(i, 8))});
  }
  return out;
}

void kafka_relay_store::requeue_done(const requeued_event& r) {
  db_.exec(requeue_done_stmt, {param::text(r.event.team_id), param::text(r.event.event_id),
                               param::text(r.requeued_at)});
}

std::vector<kafka_relay_store::parked_row> kafka_relay_store::list_parked(int limit) {
  auto res = db_.exec(list_parked_stmt, {param::text(std::to_string(limit))});
  std::vector<parked_row> out;
  for (int i = 0; i < res.rows(); ++i) {
    parked_row r;
    r.team_id = res.text(i, 0);
    r.event_id = res.text(i, 1);
    r.topic = res.text(i, 2);
    r.event_type = res.text(i, 3);
    r.reason = res.text(i, 4);
    r.parked_at = res.text(i, 5);
    r.requeued_at = res.text(i, 6);
    out.push_back(std::move(r));
  }
  return out;
}

int64_t kafka_relay_store::requeue(const std::string& event_id) {
  return db_.exec(requeue_stmt, {param::text(event_id)}).affected();
}

} // namespace cm::storage

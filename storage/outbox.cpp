#include "storage/outbox.hpp"

#include <algorithm>
#include <map>

namespace cm::storage {

namespace {

const statement insert_event_stmt{"outbox_insert",
  "INSERT INTO event_outbox (team_id, event_id, topic, event_type, payload) "
  "VALUES ($1, $2::uuid, $3, $4, $5::jsonb)"};

const statement insert_delivery_stmt{"webhook_delivery_insert",
  "INSERT INTO webhook_deliveries (team_id, event_id, webhook) VALUES ($1, $2::uuid, $3) "
  "ON CONFLICT DO NOTHING"};

#define CM_OUTBOX_COLUMNS                                                              \
  "txid::text::bigint, seq, team_id, event_id::text, topic, event_type, payload::text, " \
  "(extract(epoch from created_at) * 1000)::bigint"

// Only rows whose transaction is older than every running transaction:
// nothing can commit behind them later (migration 0004). ORDER BY names
// the table's columns: a bare "txid" would be the output column
// txid::text::bigint, which no index has, and every read would sort the
// whole rest of the outbox.
const statement events_after_stmt{"outbox_after_committed",
  "SELECT " CM_OUTBOX_COLUMNS " FROM event_outbox "
  "WHERE (txid, seq) > ($1::text::xid8, $2::bigint) "
  "AND txid < pg_snapshot_xmin(pg_current_snapshot()) "
  "AND ($3 = '' OR team_id = $3) ORDER BY event_outbox.txid, event_outbox.seq "
  "LIMIT $4::integer"};

const statement pending_stmt{"outbox_pending",
  "SELECT EXISTS (SELECT 1 FROM event_outbox "
  "WHERE txid >= pg_snapshot_xmin(pg_current_snapshot()))"};

const statement head_stmt{"outbox_head_committed",
  "SELECT txid::text::bigint, seq FROM event_outbox "
  "WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) "
  "ORDER BY event_outbox.txid DESC, event_outbox.seq DESC LIMIT 1"};

// SKIP LOCKED lets several instances claim disjoint batches; pushing
// next_attempt_at forward is the claim, so a crashed claimer's deliveries
// become due again when the lease runs out.
const statement claim_stmt{"webhook_claim", R"(
WITH due AS (
  SELECT team_id, event_id, webhook FROM webhook_deliveries
  WHERE delivered_at IS NULL AND next_attempt_at <= now() AND webhook = ANY($3::text[])
  ORDER BY next_attempt_at LIMIT $1::integer FOR UPDATE SKIP LOCKED)
UPDATE webhook_deliveries d
SET next_attempt_at = now() + ($2::bigint * interval '1 millisecond')
FROM due, event_outbox o
WHERE d.team_id = due.team_id AND d.event_id = due.event_id AND d.webhook = due.webhook
  AND o.team_id = d.team_id AND o.event_id = d.event_id
RETURNING d.team_id, d.event_id::text, d.webhook, d.attempts, o.payload::text)"};

const statement waiting_stmt{"webhook_waiting",
  "SELECT count(*) FROM webhook_deliveries "
  "WHERE delivered_at IS NULL AND next_attempt_at <> 'infinity'::timestamptz"};

// retry_in_ms: -1 delivered, -2 given up (kept, never due again), else the
// delay before the next attempt.
const statement finish_stmt{"webhook_finish",
  "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $4::integer, "
  "last_error = NULLIF($5, ''), "
  "delivered_at = CASE WHEN $6::bigint = -1 THEN now() ELSE NULL END, "
  "next_attempt_at = CASE WHEN $6::bigint = -1 THEN next_attempt_at "
  "WHEN $6::bigint = -2 THEN 'infinity'::timestamptz "
  "ELSE now() + ($6::bigint * interval '1 millisecond') END "
  "WHERE team_id = $1 AND event_id = $2::uuid AND webhook = $3 "
  // Only the claimer's outcome counts: after its claim ran out another
  // instance may have attempted (and recorded) the delivery again.
  "AND delivered_at IS NULL AND attempts = $7::integer"};

// The events of a group as one JSON array: one statement, whatever its size.
const statement insert_events_stmt{"outbox_insert_many",
  "INSERT INTO event_outbox (team_id, event_id, topic, event_type, payload) "
  "SELECT e_team, e_id::uuid, e_topic, e_type, e_payload "
  "FROM jsonb_to_recordset($1::jsonb) AS e(e_team text, e_id text, e_topic text, e_type text, "
  "e_payload jsonb)"};

const statement insert_deliveries_stmt{"webhook_delivery_insert_many",
  "INSERT INTO webhook_deliveries (team_id, event_id, webhook) "
  "SELECT e_team, e_id::uuid, $2 FROM jsonb_to_recordset($1::jsonb) AS e(e_team text, e_id text) "
  "ON CONFLICT DO NOTHING"};

} // namespace

void outbox::append(const std::string& team_id, const nlohmann::json& event) {
  auto event_id = event.at("eventId").get<std::string>();
  auto topic = event.at("topic").get<std::string>();
  db_.exec(insert_event_stmt, {param::text(team_id), param::text(event_id), param::text(topic),
                               param::text(event.at("eventType").get<std::string>()),
                               param::text(event.dump())});
  for (auto& hook : webhooks_)
    if (std::find(hook.topics.begin(), hook.topics.end(), topic) != hook.topics.end())
      db_.exec(insert_delivery_stmt,
               {param::text(team_id), param::text(event_id), param::text(hook.name)});
}

void outbox::append_many(const std::vector<std::pair<std::string, nlohmann::json>>& events) {
  if (events.empty())
    return;
  auto rows = nlohmann::json::array();
  std::map<std::string, nlohmann::json> by_topic;
  for (auto& [team_id, event] : events) {
    auto topic = event.at("topic").get<std::string>();
    nlohmann::json row{{"e_team", team_id}, {"e_id", event.at("eventId")},
                       {"e_topic", topic}, {"e_type", event.at("eventType")},
                       {"e_payload", event}};
    auto& ids = by_topic[topic];
    if (ids.is_null())
      ids = nlohmann::json::array();
    ids.push_back({{"e_team", team_id}, {"e_id", event.at("eventId")}});
    rows.push_back(std::move(row));
  }
  db_.exec(insert_events_stmt, {param::text(rows.dump())});
  for (auto& hook : webhooks_)
    for (auto& [topic, ids] : by_topic)
      if (std::find(hook.topics.begin(), hook.topics.end(), topic) != hook.topics.end())
        db_.exec(insert_deliveries_stmt, {param::text(ids.dump()), param::text(hook.name)});
}

bool outbox::pending() { return db_.exec(pending_stmt).text(0, 0) == "t"; }

outbox_events outbox::after(const outbox_position& after, const std::string& team_id, int limit) {
  auto res = db_.exec(events_after_stmt,
                      {param::text(std::to_string(after.txid)), param::text(std::to_string(after.seq)),
                       param::text(team_id), param::text(std::to_string(limit))});
  outbox_events out;
  out.reserve(res.rows());
  for (int i = 0; i < res.rows(); ++i) {
    outbox_event e;
    e.at = {res.integer(i, 0), res.integer(i, 1)};
    e.team_id = res.text(i, 2);
    e.event_id = res.text(i, 3);
    e.topic = res.text(i, 4);
    e.event_type = res.text(i, 5);
    e.payload = res.text(i, 6);
    e.created_at_ms = res.integer(i, 7);
    out.push_back(std::move(e));
  }
  return out;
}

outbox_position outbox::head() {
  auto res = db_.exec(head_stmt);
  if (res.rows() == 0)
    return {};
  return {res.integer(0, 0), res.integer(0, 1)};
}

int64_t outbox::waiting_deliveries() {
  return db_.exec(waiting_stmt).integer(0, 0);
}

webhook_jobs outbox::claim_due(int limit, int64_t lease_ms) {
  // Only webhooks this instance knows: during a rolling reload another
  // instance may have one this one does not (names are [A-Za-z0-9_.-]).
  std::string names = "{";
  for (auto& hook : webhooks_)
    names += (names.size() > 1 ? "," : "") + hook.name;
  names += "}";
  auto res = db_.exec(claim_stmt, {param::text(std::to_string(limit)),
                                   param::text(std::to_string(lease_ms)), param::text(names)});
  webhook_jobs out;
  for (int i = 0; i < res.rows(); ++i) {
    webhook_job job;
    job.team_id = res.text(i, 0);
    job.event_id = res.text(i, 1);
    job.webhook = res.text(i, 2);
    job.attempts = static_cast<int32_t>(res.integer(i, 3));
    job.payload = res.text(i, 4);
    out.push_back(std::move(job));
  }
  return out;
}

void outbox::finish(const webhook_job& job, int status, const std::string& error,
                    int64_t retry_in_ms) {
  db_.exec(finish_stmt, {param::text(job.team_id), param::text(job.event_id),
                         param::text(job.webhook), param::text(std::to_string(status)),
                         param::text(error), param::text(std::to_string(retry_in_ms)),
                         param::text(std::to_string(job.attempts))});
}

} // namespace cm::storage

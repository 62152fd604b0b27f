// The transactional outbox: lifecycle events are appended in the same
// transaction as the change they describe, together with one delivery row
// per webhook subscribed to the event's topic, and read back in sequence
// order by the event hub (SSE) and the webhook dispatcher. Called only by
// the storage actor.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/database.hpp"
#include "storage/records.hpp"

namespace cm::storage {

class outbox {
public:
  explicit outbox(database& db) : db_(db) {}

  /// Webhooks that get a delivery row for each new event of their topics.
  void set_webhooks(webhook_targets targets) { webhooks_ = std::move(targets); }
  const webhook_targets& webhooks() const { return webhooks_; }

  /// Appends `event` (built by storage/events.hpp; it carries eventId,
  /// eventType and topic) for `team_id`. Runs in the caller's transaction.
  void append(const std::string& team_id, const nlohmann::json& event);
  /// Appends many events (team_id, event) in one statement per table.
  void append_many(const std::vector<std::pair<std::string, nlohmann::json>>& events);

  /// Events after `after` in delivery order (txid, seq), at most `limit`,
  /// only from transactions older than every running one; only
  /// `team_id`'s unless it is empty.
  outbox_events after(const outbox_position& after, const std::string& team_id, int limit);

  /// Whether rows exist that readers cannot see yet (a transaction at or
  /// before them is still running).
  bool pending();

  /// The last position readers can see now ({0, 0} when empty).
  outbox_position head();

  /// Claims up to `limit` due deliveries: they become invisible to other
  /// claimers for `lease_ms`, so one instance attempts each at a time.
  webhook_jobs claim_due(int limit, int64_t lease_ms);

  /// Deliveries not delivered and not given up, across teams (the
  /// operator's backlog gauge; webhook_deliveries_due indexes them).
  int64_t waiting_deliveries();

  /// Records an attempt: delivered (retry_in_ms = -1), given up (-2; the
  /// row stays for inspection) or due again after retry_in_ms. `status` is
  /// the HTTP status (0: no answer).
  void finish(const webhook_job& job, int status, const std::string& error, int64_t retry_in_ms);

private:
  database& db_;
  webhook_targets webhooks_;
};

} // namespace cm::storage

#include "kafka/relay.hpp"

#include <nlohmann/json.hpp>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "storage/outbox.hpp"

namespace cm::kafka {

namespace {

constexpr const char* component = "kafka";
/// Events read from the outbox per round.
constexpr int read_batch = 1000;
/// How often a leader checks it still holds the lock while it has nothing
/// to advance (a reconnect loses it silently).
constexpr auto lock_check_every = std::chrono::seconds(1);
/// How often the leader counts its backlog for the health route and the
/// metrics (a count over the outbox after the cursor).
constexpr auto backlog_every = std::chrono::seconds(2);

} // namespace

std::string key_of(const outbox_event& e) {
  auto payload = nlohmann::json::parse(e.payload, nullptr, false);
  if (payload.is_object()) {
    if (payload.contains("connectionId") && payload["connectionId"].is_string())
      return payload["connectionId"].get<std::string>();
    if (payload.contains("connectorName") && payload["connectorName"].is_string())
      return e.team_id + "/" + payload["connectorName"].get<std::string>();
  }
  return e.team_id;
}

relay::relay(config::database_config db, config::kafka_config cfg, producer_settings settings,
             std::chrono::milliseconds poll)
    : db_cfg_(std::move(db)), cfg_(std::move(cfg)), settings_(std::move(settings)), poll_(poll) {
  db_ = std::make_unique<storage::database>(db_cfg_);
  thread_ = std::thread([this] { run(); });
}

relay::~relay() {
  {
    std::lock_guard<std::mutex> lock{mutex_};
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void relay::wake() {
  {
    std::lock_guard<std::mutex> lock{mutex_};
    woken_ = true;
  }
  wake_.notify_all();
}

void relay::run() {
  bool failing = false;
  while (true) {
    bool busy = false;
    try {
      busy = step();
      if (failing)
        log::info(component, "relaying again");
      failing = false;
      status_->paused = false;
    } catch (const std::exception& e) {
      // The database or the producer failed: whatever was in flight is
      // produced again from the cursor once both are back.
      if (!failing)
        log::warn(component, "relay paused", {{"reason", e.what()}});
      failing = true;
      status_->paused = true;
      status_->leading = false;
      producer_.reset();
      pending_.clear();
      order_.clear();
      requeued_in_flight_.clear();
    }
    std::unique_lock<std::mutex> lock{mutex_};
    if (stopping_)
      break;
    if (!busy || failing)
      wake_.wait_for(lock, poll_, [this] { return stopping_ || woken_; });
    woken_ = false;
    if (stopping_)
      break;
  }
  if (status_->leading) {
    try {
      storage::kafka_relay_store{*db_}.step_down();
    } catch (const std::exception&) {
      // The session ends with the connection: the lock goes with it.
    }
    status_->leading = false;
  }
}

void relay::restart_from_cursor(const char* why) {
  log::info(component, "producing again from the cursor", {{"reason", why},
                                                           {"unacknowledged", order_.size()}});
  ++status_->restarts;
  metrics::kafka_restart();
  producer_.reset();
  pending_.clear();
  order_.clear();
  requeued_in_flight_.clear();
  produced_ = cursor_;
}

std::string relay::topic_of(const outbox_event& e) const {
  return e.topic == "entity-events" ? cfg_.entity_events_topic : cfg_.token_events_topic;
}

producer::queued relay::produce(const outbox_event& e, const std::string& topic, uint64_t id,
                                std::string& problem) {
  return producer_->produce(topic, key_of(e), e.payload,
                            {{"event_id", e.event_id},
                             {"event_type", e.event_type},
                             {"content-type", "application/json"}},
                            id, problem);
}

void relay::park(storage::kafka_relay_store& store, const in_flight& e, const std::string& reason) {
  store.park(e.team_id, e.event_id, e.topic, reason);
  log::error(component, "event refused for good: parked",
             {{"event_id", e.event_id}, {"topic", e.topic}, {"reason", reason}});
  ++status_->parked;
  metrics::kafka_event("parked");
}

bool relay::produce_requeued(storage::kafka_relay_store& store) {
  bool worked = false;
  for (auto& r : store.requeued(read_batch)) {
    auto key = std::make_pair(r.event.team_id, r.event.event_id);
    if (requeued_in_flight_.count(key) != 0)
      continue;
    auto topic = topic_of(r.event);
    auto id = next_id_++;
    std::string problem;
    auto queued = produce(r.event, topic, id, problem);
    if (queued == producer::queued::busy)
      break;
    in_flight e{r.event.at, r.event.team_id, r.event.event_id, topic, false, true, r.requeued_at};
    worked = true;
    if (queued == producer::queued::refused) {
      park(store, e, problem);
      continue;
    }
    log::info(component, "producing a re-queued event",
              {{"event_id", r.event.event_id}, {"topic", topic}});
    pending_[id] = std::move(e);
    requeued_in_flight_.insert(std::move(key));
  }
  return worked;
}

void relay::measure_backlog(storage::kafka_relay_store& store) {
  auto figures = store.backlog(cursor_);
  status_->backlog = figures.events;
  status_->oldest_waiting_ms = figures.oldest_ms;
  status_->parked_stored = figures.parked_waiting;
}

bool relay::step() {
  db_->ensure_connected();
  storage::kafka_relay_store store{*db_};
  auto now = std::chrono::steady_clock::now();
  if (!status_->leading) {
    if (!store.try_lead()) {
      // The leader reports the lag; a standby reports none.
      status_->backlog = 0;
      status_->oldest_waiting_ms = 0;
      status_->parked_stored = 0;
      return false;
    }
    status_->leading = true;
    lock_checked_ = now;
    backlog_measured_ = {};
    requeue_checked_ = {};
    cursor_ = store.cursor();
    produced_ = cursor_;
    pending_.clear();
    order_.clear();
    requeued_in_flight_.clear();
    log::info(component, "relaying", {{"txid", cursor_.txid}, {"seq", cursor_.seq}});
  } else if (now - lock_checked_ > lock_check_every) {
    lock_checked_ = now;
    if (!store.leading()) {
      status_->leading = false;
      restart_from_cursor("lost the relay lock");
      return false;
    }
  }
  if (!producer_) {
    std::string problem;
    producer_ = producer::create(settings_, problem);
    if (!producer_)
      throw std::runtime_error(problem);
  }
  bool worked = false;
  // Produce what fits, in outbox order.
  auto room = cfg_.max_in_flight - static_cast<int>(order_.size());
  if (room > 0) {
    storage::outbox outbox{*db_};
    auto events = outbox.after(produced_, "", std::min(room, read_batch));
    for (auto& e : events) {
      auto topic = topic_of(e);
      auto id = next_id_++;
      std::string problem;
      auto queued = produce(e, topic, id, problem);
      if (queued == producer::queued::busy)
        break; // produced again next round, from produced_
      pending_[id] = {e.at, e.team_id, e.event_id, topic, false, false, {}};
      order_.push_back(id);
      produced_ = e.at;
      worked = true;
      if (queued == producer::queued::refused) {
        park(store, pending_[id], problem);
        pending_[id].done = true;
      }
    }
  }
  if (now - requeue_checked_ >= poll_) {
    requeue_checked_ = now;
    worked = produce_requeued(store) || worked;
  }
  // What the brokers said.
  for (auto& r : producer_->poll(pending_.empty() ? 0 : 50)) {
    auto it = pending_.find(r.id);
    if (it == pending_.end())
      continue;
    worked = true;
    auto& e = it->second;
    if (e.requeued) {
      // Outside the cursor's order: settled one by one.
      if (r.outcome == delivery_outcome::delivered) {
        storage::kafka_relay_store::requeued_event done;
        done.event.team_id = e.team_id;
        done.event.event_id = e.event_id;
        done.requeued_at = e.requeued_at;
        store.requeue_done(done);
        ++status_->requeued;
        metrics::kafka_event("requeued");
        log::info(component, "re-queued event acknowledged", {{"event_id", e.event_id}});
      } else if (r.outcome == delivery_outcome::refused) {
        park(store, e, r.reason);
      }
      // A retriable one is read again at the next check.
      requeued_in_flight_.erase({e.team_id, e.event_id});
      pending_.erase(it);
      continue;
    }
    if (r.outcome == delivery_outcome::delivered) {
      e.done = true;
      ++status_->relayed;
      metrics::kafka_event("relayed");
    } else if (r.outcome == delivery_outcome::refused) {
      park(store, e, r.reason);
      e.done = true;
    } else {
      // Not acknowledged within delivery.timeout.ms: everything after it
      // may be out of order now, so all of it goes again, in order.
      restart_from_cursor(r.reason.c_str());
      return true;
    }
  }
  status_->brokers_down = producer_->brokers_down();
  if (auto fatal = producer_->fatal_error(); !fatal.empty()) {
    restart_from_cursor("the producer failed");
    return true;
  }
  // The cursor moves over every settled event at the front.
  outbox_position settled = cursor_;
  while (!order_.empty() && pending_[order_.front()].done) {
    settled = pending_[order_.front()].at;
    pending_.erase(order_.front());
    order_.pop_front();
  }
  if (cursor_ < settled) {
    if (!store.advance(settled)) {
      // Another instance leads now (our session lost the lock).
      status_->leading = false;
      restart_from_cursor("lost the relay lock");
      return false;
    }
    cursor_ = settled;
    lock_checked_ = std::chrono::steady_clock::now();
  }
  if (now - backlog_measured_ > backlog_every) {
    backlog_measured_ = now;
    measure_backlog(store);
  }
  return worked || !pending_.empty();
}

} // namespace cm::kafka

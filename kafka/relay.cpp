#include "kafka/relay.hpp"

#include <pthread.h>

#include <nlohmann/json.hpp>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "storage/outbox.hpp"

namespace cm::kafka {

namespace {

constexpr const char* component = "kafka";
/// Events read from the outbox per round.
constexpr int read_batch = 1000;
/// Pages the reader holds ahead of the producer.
constexpr int pages_ahead = 4;
/// How often a leader checks it still holds the lock while it has nothing
/// to advance (a reconnect loses it silently).
constexpr auto lock_check_every = std::chrono::seconds(1);
/// How often the leader counts its backlog for the health route and the
/// metrics (a count over the outbox after the cursor).
constexpr auto backlog_every = std::chrono::seconds(2);
/// How often an idle relay that saw every broker down asks whether they
/// are back.
constexpr auto probe_every = std::chrono::seconds(2);
/// Marks the produce() ids of re-queued events, apart from the outbox's.
constexpr uint64_t requeue_bit = uint64_t{1} << 63;

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
  reader_ = std::make_unique<outbox_reader>(db_cfg_, read_batch, pages_ahead, poll_,
                                            [this] { wake_thread(); });
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "cm-kafka-relay");
}

relay::~relay() {
  {
    std::lock_guard<std::mutex> lock{mutex_};
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  // Its callback wakes this relay: it stops while the relay's members live.
  reader_->stop();
}

void relay::wake() {
  reader_->wake();
  wake_thread();
}

void relay::wake_thread() {
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
      // The reader's connection may fail alone: nothing is produced then.
      status_->paused = reader_->failing();
    } catch (const std::exception& e) {
      // The database or the producer failed: whatever was in flight is
      // produced again from the cursor once both are back.
      if (!failing)
        log::warn(component, "relay paused", {{"reason", e.what()}});
      failing = true;
      status_->paused = true;
      status_->leading = false;
      forget_figures();
      reader_->pause();
      producer_.reset();
      forget_in_flight();
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

void relay::make_producer() {
  std::string problem;
  producer_ = producer::create(settings_, problem);
  if (!producer_)
    throw std::runtime_error(problem);
  if (status_->brokers_down)
    producer_->assume_brokers_down();
}

void relay::forget_in_flight() {
  window_.clear();
  window_base_ = next_id_;
  requeued_pending_.clear();
  requeued_in_flight_.clear();
}

void relay::restart_from_cursor(const char* why) {
  log::info(component, "producing again from the cursor", {{"reason", why},
                                                           {"unacknowledged", window_.size()}});
  ++status_->restarts;
  metrics::kafka_restart();
  producer_.reset();
  forget_in_flight();
  produced_ = cursor_;
  producer_refused_ = false;
  if (status_->leading)
    reader_->restart(cursor_);
}

void relay::lose_lead(const char* why) {
  status_->leading = false;
  forget_figures();
  reader_->pause();
  restart_from_cursor(why);
}

void relay::forget_figures() {
  // Only the leader reports the lag, so a sum or a max over instances is
  // the deployment's figure.
  status_->backlog = 0;
  status_->oldest_waiting_ms = 0;
  status_->parked_stored = 0;
  status_->brokers_down = false;
}

std::string relay::topic_of(const outbox_event& e) const {
  return e.topic == "entity-events" ? cfg_.entity_events_topic : cfg_.token_events_topic;
}

producer::queued relay::produce(const outbox_event& e, const std::string& key,
                                const std::string& topic, uint64_t id, std::string& problem) {
  return producer_->produce(topic, key, e.payload,
                            {{"event_id", e.event_id},
                             {"event_type", e.event_type},
                             {"content-type", "application/json"}},
                            id, problem);
}

void relay::park(storage::kafka_relay_store& store, const in_flight& e, const std::string& reason) {
  producer_refused_ = true;
  store.park(e.team_id, e.event_id, e.topic, reason);
  log::error(component, "event refused for good: parked",
             {{"event_id", e.event_id}, {"topic", e.topic}, {"reason", reason}});
  ++status_->parked;
  metrics::kafka_event("parked");
}

bool relay::produce_requeued(storage::kafka_relay_store& store) {
  bool worked = false;
  auto requeued = store.requeued(read_batch);
  if (requeued.empty() || !same_session())
    return false;
  if (producer_refused_ && requeued_in_flight_.empty()) {
    // A fresh producer, which has not cached the refusal: what is in
    // flight goes again from the cursor (at least once).
    restart_from_cursor("re-queued events after a refusal");
    make_producer();
  }
  for (auto& r : requeued) {
    auto key = std::make_pair(r.event.team_id, r.event.event_id);
    if (requeued_in_flight_.count(key) != 0)
      continue;
    auto topic = topic_of(r.event);
    auto id = requeue_bit | next_requeue_id_++;
    std::string problem;
    auto queued = produce(r.event, r.key, topic, id, problem);
    if (queued == producer::queued::busy)
      break;
    in_flight e{r.event.at, r.event.team_id, r.event.event_id, topic, false, r.requeued_at};
    worked = true;
    if (queued == producer::queued::refused) {
      park(store, e, problem);
      continue;
    }
    log::info(component, "producing a re-queued event",
              {{"event_id", r.event.event_id}, {"topic", topic}});
    requeued_pending_[id] = std::move(e);
    requeued_in_flight_.insert(std::move(key));
  }
  return worked;
}

void relay::measure_backlog(storage::kafka_relay_store& store) {
  try {
    auto figures = store.backlog(cursor_);
    status_->backlog = figures.events;
    status_->oldest_waiting_ms = figures.oldest_ms;
    status_->parked_stored = figures.parked_waiting;
  } catch (const storage::db_error& e) {
    log::warn(component, "cannot count the backlog", {{"reason", e.what()}});
  }
}

bool relay::step() {
  db_->ensure_connected();
  storage::kafka_relay_store store{*db_};
  auto now = std::chrono::steady_clock::now();
  if (!status_->leading) {
    if (!store.try_lead()) {
      forget_figures();
      return false;
    }
    status_->leading = true;
    lead_session_ = db_->sessions();
    lock_checked_ = now;
    backlog_measured_ = {};
    requeue_checked_ = {};
    cursor_ = store.cursor();
    produced_ = cursor_;
    forget_in_flight();
    reader_->restart(cursor_);
    log::info(component, "relaying", {{"txid", cursor_.txid}, {"seq", cursor_.seq}});
  } else if (!same_session()) {
    lose_lead("the database session that held the relay lock ended");
    return false;
  } else if (now - lock_checked_ > lock_check_every) {
    lock_checked_ = now;
    if (!store.leading()) {
      lose_lead("lost the relay lock");
      return false;
    }
  }
  if (!producer_)
    make_producer();
  bool worked = false;
  // Produce what fits, in outbox order.
  auto room = cfg_.max_in_flight - static_cast<int>(window_.size());
  // librdkafka would not take more now (its queue is full, the topic is
  // not known yet): wait for reports instead of trying again at once.
  bool blocked = false;
  if (room > 0) {
    auto events = reader_->take(static_cast<size_t>(room));
    for (size_t i = 0; i < events.size(); ++i) {
      auto& [e, key] = events[i];
      auto topic = topic_of(e);
      std::string problem;
      auto queued = produce(e, key, topic, next_id_, problem);
      if (queued == producer::queued::busy) {
        reader_->unread(std::move(events), i); // produced next round
        blocked = true;
        break;
      }
      ++next_id_;
      // What a report needs to park it; the event is not used again.
      window_.push_back({e.at, std::move(e.team_id), std::move(e.event_id), std::move(topic),
                         false, {}});
      auto& entry = window_.back();
      produced_ = e.at;
      worked = true;
      if (queued == producer::queued::refused) {
        park(store, entry, problem);
        entry.done = true;
      }
    }
  }
  if (now - requeue_checked_ >= poll_) {
    requeue_checked_ = now;
    worked = produce_requeued(store) || worked;
  }
  // What the brokers said.
  // Wait for reports only when there is nothing to produce meanwhile.
  bool more_to_produce = !blocked && reader_->has_ready() &&
                         cfg_.max_in_flight > static_cast<int>(window_.size());
  bool idle = window_.empty() && requeued_pending_.empty();
  for (auto& r : producer_->poll((idle && !blocked) || more_to_produce ? 0 : 50)) {
    if (r.id & requeue_bit) {
      auto it = requeued_pending_.find(r.id);
      if (it == requeued_pending_.end())
        continue;
      worked = true;
      auto& e = it->second;
      // Outside the cursor's order: settled one by one.
      if (r.outcome == delivery_outcome::delivered) {
        ++status_->requeued;
        metrics::kafka_event("requeued");
        storage::kafka_relay_store::requeued_event done;
        done.event.team_id = e.team_id;
        done.event.event_id = e.event_id;
        done.requeued_at = e.requeued_at;
        store.requeue_done(done);
        log::info(component, "re-queued event acknowledged", {{"event_id", e.event_id}});
      } else if (r.outcome == delivery_outcome::refused) {
        park(store, e, r.reason);
      }
      // A retriable one is read again at the next check.
      requeued_in_flight_.erase({e.team_id, e.event_id});
      requeued_pending_.erase(it);
      continue;
    }
    if (r.id < window_base_ || r.id - window_base_ >= window_.size())
      continue; // not this producer's, or settled already
    worked = true;
    auto& e = window_[r.id - window_base_];
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
  idle = window_.empty() && requeued_pending_.empty();
  if (producer_->brokers_down() && idle && now - brokers_probed_ > probe_every) {
    // Nothing produced would clear it: ask the brokers.
    brokers_probed_ = now;
    producer_->probe_brokers(500);
  }
  status_->brokers_down = producer_->brokers_down();
  if (auto fatal = producer_->fatal_error(); !fatal.empty()) {
    restart_from_cursor("the producer failed");
    return true;
  }
  // The cursor moves over every settled event at the front.
  outbox_position settled = cursor_;
  while (!window_.empty() && window_.front().done) {
    settled = window_.front().at;
    window_.pop_front();
    ++window_base_;
  }
  if (cursor_ < settled) {
    if (!store.advance(settled)) {
      // Another instance leads now (our session lost the lock).
      lose_lead("lost the relay lock");
      return false;
    }
    cursor_ = settled;
    lock_checked_ = std::chrono::steady_clock::now();
  }
  if (now - backlog_measured_ > backlog_every) {
    backlog_measured_ = now;
    measure_backlog(store);
  }
  return worked || !window_.empty() || !requeued_pending_.empty() || more_to_produce;
}

} // namespace cm::kafka

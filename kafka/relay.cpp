#include "kafka/relay.hpp"

#include <nlohmann/json.hpp>

#include "common/log.hpp"
#include "storage/kafka_relay_store.hpp"
#include "storage/outbox.hpp"

namespace cm::kafka {

namespace {

constexpr const char* component = "kafka";
/// Events read from the outbox per round.
constexpr int read_batch = 1000;
/// How often a leader checks it still holds the lock while it has nothing
/// to advance (a reconnect loses it silently).
constexpr auto lock_check_every = std::chrono::seconds(1);

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
    } catch (const std::exception& e) {
      // The database or the producer failed: whatever was in flight is
      // produced again from the cursor once both are back.
      if (!failing)
        log::warn(component, "relay paused", {{"reason", e.what()}});
      failing = true;
      leading_ = false;
      producer_.reset();
      pending_.clear();
      order_.clear();
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
  if (leading_) {
    try {
      storage::kafka_relay_store{*db_}.step_down();
    } catch (const std::exception&) {
      // The session ends with the connection: the lock goes with it.
    }
  }
}

void relay::restart_from_cursor(const char* why) {
  log::info(component, "producing again from the cursor", {{"reason", why},
                                                           {"unacknowledged", order_.size()}});
  producer_.reset();
  pending_.clear();
  order_.clear();
  produced_ = cursor_;
}

bool relay::step() {
  db_->ensure_connected();
  storage::kafka_relay_store store{*db_};
  auto now = std::chrono::steady_clock::now();
  if (!leading_) {
    if (!store.try_lead())
      return false;
    leading_ = true;
    lock_checked_ = now;
    cursor_ = store.cursor();
    produced_ = cursor_;
    pending_.clear();
    order_.clear();
    log::info(component, "relaying", {{"txid", cursor_.txid}, {"seq", cursor_.seq}});
  } else if (now - lock_checked_ > lock_check_every) {
    lock_checked_ = now;
    if (!store.leading()) {
      leading_ = false;
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
      auto topic = e.topic == "entity-events" ? cfg_.entity_events_topic : cfg_.token_events_topic;
      auto id = next_id_++;
      std::string problem;
      auto queued = producer_->produce(topic, key_of(e), e.payload,
                                       {{"event_id", e.event_id},
                                        {"event_type", e.event_type},
                                        {"content-type", "application/json"}},
                                       id, problem);
      if (queued == producer::queued::busy)
        break; // produced again next round, from produced_
      pending_[id] = {e.at, e.team_id, e.event_id, topic, false};
      order_.push_back(id);
      produced_ = e.at;
      worked = true;
      if (queued == producer::queued::refused) {
        store.park(e.team_id, e.event_id, topic, problem);
        log::error(component, "event refused for good: parked",
                   {{"event_id", e.event_id}, {"topic", topic}, {"reason", problem}});
        pending_[id].done = true;
        ++parked_;
      }
    }
  }
  // What the brokers said.
  for (auto& r : producer_->poll(order_.empty() ? 0 : 50)) {
    auto it = pending_.find(r.id);
    if (it == pending_.end())
      continue;
    worked = true;
    if (r.outcome == delivery_outcome::delivered) {
      it->second.done = true;
      ++relayed_;
    } else if (r.outcome == delivery_outcome::refused) {
      store.park(it->second.team_id, it->second.event_id, it->second.topic, r.reason);
      log::error(component, "event refused for good: parked",
                 {{"event_id", it->second.event_id}, {"topic", it->second.topic},
                  {"reason", r.reason}});
      it->second.done = true;
      ++parked_;
    } else {
      // Not acknowledged within delivery.timeout.ms: everything after it
      // may be out of order now, so all of it goes again, in order.
      restart_from_cursor(r.reason.c_str());
      return true;
    }
  }
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
      leading_ = false;
      restart_from_cursor("lost the relay lock");
      return false;
    }
    cursor_ = settled;
    lock_checked_ = std::chrono::steady_clock::now();
  }
  return worked || !order_.empty();
}

} // namespace cm::kafka

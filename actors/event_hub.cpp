#include "actors/event_hub.hpp"

#include <algorithm>

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/log.hpp"
#include "common/time.hpp"
#include "http/exchange.hpp"

namespace cm {

namespace {

using self_ptr = event_hub_actor::stateful_pointer<event_hub_state>;

constexpr int32_t page_size = 500;
constexpr auto storage_timeout = std::chrono::seconds(10);

bool wants(const event_subscriber& sub, const outbox_event& e) {
  return (sub.team.empty() || sub.team == e.team_id) && sub.topics.count(e.topic) != 0;
}

/// Sends one event to a subscriber; false when the subscriber is gone.
bool send_event(event_subscriber& sub, const outbox_event& e) {
  if (e.seq <= sub.sent_seq)
    return true;
  sub.sent_seq = e.seq;
  if (!wants(sub, e))
    return true;
  return sub.stream->write(http::sse_message(e.seq, e.topic, e.payload));
}

void fan_out(self_ptr self, const outbox_event& e) {
  auto& subs = self->state.subscribers;
  for (auto it = subs.begin(); it != subs.end();) {
    if (it->second.live && !send_event(it->second, e))
      it = subs.erase(it);
    else
      ++it;
  }
}

/// Lets this instance's connection actors follow changes made anywhere.
void tell_registry(self_ptr self, const outbox_event& e) {
  if (!self->state.registry || e.topic != "token-events" || e.event_type == "TOKEN_REFRESHED")
    return;
  auto payload = nlohmann::json::parse(e.payload, nullptr, false);
  if (!payload.is_object())
    return;
  connection_key key{payload.value("orgId", ""), payload.value("userId", ""),
                     payload.value("provider", "")};
  if (e.event_type == "TOKEN_REVOKED")
    self->send(self->state.registry, remove_atom_v, key);
  else
    self->send(self->state.registry, reload_atom_v, key);
}

void poll(self_ptr self);

/// Delivers the in-order prefix of a page; returns false when it stopped at
/// a gap that may still fill.
bool deliver_page(self_ptr self, const outbox_events& events) {
  auto& st = self->state;
  for (auto& e : events) {
    if (e.seq != st.cursor + 1) {
      auto now = unix_now_ms();
      if (st.gap_seen_ms == 0)
        st.gap_seen_ms = now;
      if (now - st.gap_seen_ms < st.cfg.gap_timeout_ms)
        return false;
      log::info("events", "skipping a gap in the outbox sequence",
                {{"from", st.cursor + 1}, {"to", e.seq - 1}});
    }
    st.gap_seen_ms = 0;
    fan_out(self, e);
    tell_registry(self, e);
    st.cursor = e.seq;
  }
  return true;
}

void poll(self_ptr self) {
  auto& st = self->state;
  if (st.cursor < 0)
    return;
  if (st.polling) {
    st.poll_again = true;
    return;
  }
  st.polling = true;
  st.poll_again = false;
  self->request(st.storage, storage_timeout, outbox_atom_v, st.cursor, std::string{}, page_size)
    .then(
      [self](const outbox_events& events) {
        auto& st = self->state;
        st.polling = false;
        bool complete = deliver_page(self, events);
        if (!complete) {
          // Look again when the gap may have filled or expired.
          self->delayed_send(self, std::chrono::milliseconds(st.cfg.gap_timeout_ms / 4 + 1),
                             tick_atom_v);
        } else if (st.poll_again || events.size() == static_cast<size_t>(page_size)) {
          poll(self);
        }
      },
      [self](const caf::error&) {
        // The database is away; the polling timer tries again.
        self->state.polling = false;
      });
}

/// Replays a resuming subscriber's events from the table until it has
/// caught up with the live cursor, then makes it live.
void replay(self_ptr self, uint64_t id) {
  auto it = self->state.subscribers.find(id);
  if (it == self->state.subscribers.end())
    return;
  auto upto = self->state.cursor;
  self->request(self->state.storage, storage_timeout, outbox_atom_v, it->second.sent_seq,
                it->second.team, page_size)
    .then(
      [self, id, upto](const outbox_events& events) {
        auto& subs = self->state.subscribers;
        auto it = subs.find(id);
        if (it == subs.end())
          return;
        auto& sub = it->second;
        for (auto& e : events) {
          // Beyond what live subscribers got: left to live delivery.
          if (e.seq > upto)
            break;
          if (!send_event(sub, e)) {
            subs.erase(it);
            return;
          }
        }
        // A short page, or one that reached past `upto`, holds every event
        // of the team up to `upto`: they committed before the live cursor
        // passed them, which was before this query ran.
        bool covered = events.size() < static_cast<size_t>(page_size) ||
                       (!events.empty() && events.back().seq > upto);
        if (covered)
          sub.sent_seq = std::max(sub.sent_seq, upto);
        if (covered && self->state.cursor == upto)
          sub.live = true;
        else
          replay(self, id);
      },
      [self, id](const caf::error&) {
        // Cannot replay now: end the stream; the client retries later.
        auto& subs = self->state.subscribers;
        if (auto it = subs.find(id); it != subs.end()) {
          it->second.stream->close();
          subs.erase(it);
        }
      });
}

void subscribe(self_ptr self, const exchange_ptr& ex, const std::string& team,
               const std::vector<std::string>& topics, int64_t last_event_id) {
  auto& st = self->state;
  if (st.cursor < 0) {
    ex->reply_error(ec::unavailable, "event delivery is starting");
    return;
  }
  if (st.subscribers.size() >= static_cast<size_t>(st.cfg.max_subscribers)) {
    ex->reply_error(ec::unavailable, "too many event subscribers");
    return;
  }
  auto stream = ex->start_stream({{"Content-Type", "text/event-stream"},
                                  {"X-Accel-Buffering", "no"}});
  if (!stream) {
    ex->reply_error(ec::internal, "cannot stream events");
    return;
  }
  // Browsers reconnect after `retry` ms and send Last-Event-ID.
  if (!stream->write("retry: 1000\n\n"))
    return;
  event_subscriber sub;
  sub.stream = std::move(stream);
  sub.team = team;
  sub.topics.insert(topics.begin(), topics.end());
  auto id = st.next_id++;
  if (last_event_id >= 0) {
    sub.sent_seq = last_event_id;
    sub.live = false;
    st.subscribers.emplace(id, std::move(sub));
    replay(self, id);
  } else {
    sub.sent_seq = st.cursor;
    sub.live = true;
    st.subscribers.emplace(id, std::move(sub));
  }
  log::info("events", "subscriber joined",
            {{"request_id", ex->req().request_id}, {"team_id", team},
             {"subscribers", st.subscribers.size()}});
}

void start(self_ptr self) {
  self->request(self->state.storage, storage_timeout, head_atom_v)
    .then(
      [self](int64_t head) {
        self->state.cursor = head;
        poll(self);
      },
      [self](const caf::error&) {
        // Try again shortly; subscribers get 503 until then.
        self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.poll_ms), tick_atom_v);
      });
}

} // namespace

event_hub_actor::behavior_type event_hub(event_hub_actor::stateful_pointer<event_hub_state> self,
                                         storage_actor storage, registry_actor registry,
                                         config::events_config cfg) {
  self->state.storage = std::move(storage);
  self->state.registry = std::move(registry);
  self->state.cfg = std::move(cfg);
  self->attach_functor([self] {
    for (auto& [id, sub] : self->state.subscribers)
      sub.stream->close();
  });
  start(self);
  self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.poll_ms), tick_atom_v, true);
  self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.heartbeat_ms), ping_atom_v);
  return {
    [=](subscribe_atom, const exchange_ptr& ex, const std::string& team,
        const std::vector<std::string>& topics, int64_t last_event_id) {
      subscribe(self, ex, team, topics, last_event_id);
    },
    [=](tick_atom) {
      if (self->state.cursor < 0)
        start(self);
      else
        poll(self);
    },
    [=](tick_atom, bool) {
      if (self->state.cursor < 0)
        start(self);
      else
        poll(self);
      self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.poll_ms), tick_atom_v,
                         true);
    },
    [=](ping_atom) {
      auto& subs = self->state.subscribers;
      for (auto it = subs.begin(); it != subs.end();) {
        if (!it->second.stream->write(": keep-alive\n\n"))
          it = subs.erase(it);
        else
          ++it;
      }
      self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.heartbeat_ms),
                         ping_atom_v);
    },
    [=](status_atom) -> int64_t { return static_cast<int64_t>(self->state.subscribers.size()); },
  };
}

} // namespace cm

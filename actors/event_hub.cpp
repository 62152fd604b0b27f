#include "actors/event_hub.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "common/log.hpp"
#include "http/exchange.hpp"

namespace cm {

namespace {

using self_ptr = event_hub_actor::stateful_pointer<event_hub_state>;

constexpr int32_t page_size = 500;
constexpr auto storage_timeout = std::chrono::seconds(10);

bool wants(const event_subscriber& sub, const outbox_event& e) {
  return (sub.team.empty() || sub.team == e.team_id) && sub.topics.count(e.topic) != 0;
}

/// Sends one event to a subscriber; false when the subscriber is gone or
/// cannot keep up. Never waits: the hub serves every subscriber from one
/// thread, and a client whose socket buffer is full resumes later from its
/// Last-Event-ID instead.
bool send_event(event_subscriber& sub, const outbox_event& e) {
  if (e.at <= sub.sent)
    return true;
  sub.sent = e.at;
  if (!wants(sub, e))
    return true;
  return sub.stream->write(http::sse_message(sse_id(e.at), e.topic, e.payload),
                           std::chrono::milliseconds(0));
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
  auto& st = self->state;
  if (!st.registry || e.topic != "token-events")
    return;
  // Another instance's refresh: load it now rather than at this instance's
  // own refresh time. (The version check before serving is what guarantees
  // the newest token; this keeps it from finding a difference.)
  if (e.event_type == "TOKEN_REFRESHED" && !(st.cluster && st.cluster->others_seen()))
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

void start(self_ptr self);

void poll(self_ptr self) {
  auto& st = self->state;
  if (!st.started) {
    start(self);
    return;
  }
  if (st.polling) {
    st.poll_again = true;
    return;
  }
  st.polling = true;
  st.poll_again = false;
  self->request(st.storage, storage_timeout, outbox_atom_v, st.cursor, std::string{}, page_size)
    .then(
      [self](const outbox_page& page) {
        auto& st = self->state;
        st.polling = false;
        for (auto& e : page.events) {
          if (e.at <= st.cursor)
            continue;
          fan_out(self, e);
          tell_registry(self, e);
          st.cursor = e.at;
        }
        if (st.poll_again || page.events.size() == static_cast<size_t>(page_size)) {
          poll(self);
        } else if (page.pending) {
          // Committed rows wait for an older transaction (anywhere in the
          // cluster) to end; nothing notifies us when it does, so look
          // again soon, backing off to the polling interval.
          st.pending_delay_ms = std::min<int64_t>(
            st.pending_delay_ms == 0 ? 10 : st.pending_delay_ms * 2, st.cfg.poll_ms);
          self->delayed_send(self, std::chrono::milliseconds(st.pending_delay_ms), tick_atom_v);
        } else {
          st.pending_delay_ms = 0;
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
  self->request(self->state.storage, storage_timeout, outbox_atom_v, it->second.sent,
                it->second.team, page_size)
    .then(
      [self, id, upto](const outbox_page& page) {
        auto& events = page.events;
        auto& subs = self->state.subscribers;
        auto it = subs.find(id);
        if (it == subs.end())
          return;
        auto& sub = it->second;
        for (auto& e : events) {
          // Beyond what live subscribers got: left to live delivery.
          if (upto < e.at)
            break;
          if (!send_event(sub, e)) {
            subs.erase(it);
            return;
          }
        }
        // A short page, or one that reached past `upto`, holds every event
        // of the team up to `upto` (readers only see settled positions).
        bool covered = events.size() < static_cast<size_t>(page_size) ||
                       (!events.empty() && upto < events.back().at);
        if (covered && sub.sent < upto)
          sub.sent = upto;
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

/// Forgets subscribers whose client has gone, so their slots count no more.
void drop_departed(self_ptr self) {
  auto& subs = self->state.subscribers;
  for (auto it = subs.begin(); it != subs.end();) {
    if (it->second.stream->peer_closed())
      it = subs.erase(it);
    else
      ++it;
  }
}

/// Why a new stream cannot be had now, if it cannot: quota (429) or pool
/// (503). A slot held by a client that left unnoticed frees within a
/// heartbeat, hence the Retry-After.
bool refuse_over_quota(self_ptr self, const exchange_ptr& ex, const std::string& team,
                       const std::string& service) {
  auto& st = self->state;
  drop_departed(self);
  size_t same_owner = 0;
  size_t admins = 0;
  for (auto& [id, sub] : st.subscribers) {
    if (sub.service.empty())
      ++admins;
    if (service.empty() ? sub.service.empty() && sub.team == team : sub.service == service)
      ++same_owner;
  }
  auto retry_after_s = std::max<int64_t>(1, (st.cfg.heartbeat_ms + 999) / 1000);
  auto quota = static_cast<size_t>(service.empty() ? st.cfg.max_subscribers_per_team
                                                   : st.cfg.max_subscribers_per_service);
  if (same_owner >= quota) {
    ex->reply(http::error_response(ec::rate_limited,
                                   service.empty()
                                     ? "the team holds all the event streams it may open"
                                     : "the service holds all the event streams it may open",
                                   retry_after_s));
    return true;
  }
  auto admin_share =
    static_cast<size_t>(st.cfg.max_subscribers - st.cfg.reserved_service_subscribers);
  if (st.subscribers.size() >= static_cast<size_t>(st.cfg.max_subscribers) ||
      (service.empty() && admins >= admin_share)) {
    ex->reply(http::error_response(ec::unavailable, "too many event subscribers", retry_after_s));
    return true;
  }
  return false;
}

void subscribe(self_ptr self, const exchange_ptr& ex, const std::string& team,
               const std::vector<std::string>& topics, const outbox_position& last_seen,
               const std::string& service) {
  auto& st = self->state;
  if (!st.started) {
    ex->reply_error(ec::unavailable, "event delivery is starting");
    return;
  }
  if (refuse_over_quota(self, ex, team, service))
    return;
  auto stream = ex->start_stream({{"Content-Type", "text/event-stream"},
                                  {"X-Accel-Buffering", "no"}});
  if (!stream)
    return;
  // Browsers reconnect after `retry` ms and send Last-Event-ID.
  if (!stream->write("retry: 1000\n\n", std::chrono::milliseconds(0)))
    return;
  event_subscriber sub;
  sub.stream = std::move(stream);
  sub.team = team;
  sub.service = service;
  sub.topics.insert(topics.begin(), topics.end());
  auto id = st.next_id++;
  if (last_seen.txid >= 0) {
    sub.sent = last_seen;
    sub.live = false;
    st.subscribers.emplace(id, std::move(sub));
    replay(self, id);
  } else {
    sub.sent = st.cursor;
    sub.live = true;
    st.subscribers.emplace(id, std::move(sub));
  }
  log::info("events", "subscriber joined",
            {{"request_id", ex->req().request_id}, {"team_id", team}, {"service", service},
             {"subscribers", st.subscribers.size()}});
}

void start(self_ptr self) {
  auto& st = self->state;
  if (st.started || st.starting)
    return;
  st.starting = true;
  self->request(st.storage, storage_timeout, head_atom_v)
    .then(
      [self](const outbox_position& head) {
        auto& st = self->state;
        st.starting = false;
        st.started = true;
        st.cursor = head;
        poll(self);
      },
      [self](const caf::error&) {
        // Tried again by the next tick; subscribers get 503 until then.
        self->state.starting = false;
      });
}

} // namespace

std::string sse_id(const outbox_position& at) {
  return std::to_string(at.txid) + "." + std::to_string(at.seq);
}

bool parse_sse_id(const std::string& text, outbox_position& out) {
  auto dot = text.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 >= text.size() || text.size() > 41)
    return false;
  auto number = [](const std::string& digits, int64_t& value) {
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
      return false;
    errno = 0;
    value = std::strtoll(digits.c_str(), nullptr, 10);
    return errno == 0;
  };
  return number(text.substr(0, dot), out.txid) && number(text.substr(dot + 1), out.seq);
}

event_hub_actor::behavior_type event_hub(event_hub_actor::stateful_pointer<event_hub_state> self,
                                         event_store_actor storage, registry_actor registry,
                                         config::events_config cfg,
                                         storage::cluster_view_ptr cluster) {
  self->state.storage = std::move(storage);
  self->state.registry = std::move(registry);
  self->state.cluster = std::move(cluster);
  self->state.cfg = std::move(cfg);
  // Streams close when the state (and with it every event_stream) goes.
  start(self);
  self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.poll_ms), tick_atom_v, true);
  self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.heartbeat_ms), ping_atom_v);
  return {
    [=](subscribe_atom, const exchange_ptr& ex, const std::string& team,
        const std::vector<std::string>& topics, const outbox_position& last_seen,
        const std::string& service) {
      subscribe(self, ex, team, topics, last_seen, service);
    },
    [=](tick_atom) { poll(self); },
    [=](tick_atom, bool) {
      poll(self);
      self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.poll_ms), tick_atom_v,
                         true);
    },
    [=](ping_atom) {
      auto& subs = self->state.subscribers;
      for (auto it = subs.begin(); it != subs.end();) {
        if (!it->second.stream->write(": keep-alive\n\n", std::chrono::milliseconds(0)))
          it = subs.erase(it);
        else
          ++it;
      }
      self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.heartbeat_ms),
                         ping_atom_v);
    },
    [=](status_atom) -> int64_t {
      drop_departed(self);
      return static_cast<int64_t>(self->state.subscribers.size());
    },
    [=](head_atom) -> bool {
      start(self); // no-op once started or while the read runs
      return self->state.started;
    },
  };
}

} // namespace cm

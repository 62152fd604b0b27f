// Kafka relay (issue 21): outbox events to acknowledged Kafka messages per
// second, through the real relay (kafka/relay: outbox reads of 1,000, the
// idempotent producer, the cursor moved over acknowledged events), against
// librdkafka's own producer sending the very same messages (key, payload,
// headers, read back from the outbox) with the same properties, in the same
// run. Then the backlog drain after every broker was down for a minute
// while events kept coming.
//
//   CONNECTOR_BENCH_DATABASE_URL=… bench_kafka_relay [--events N]
//       [--connections C] [--rounds R] [--outage-seconds S]
//       [--outage-rate E] [--reconnect-backoff-max-ms M] [--verbose]
//
// Throughput: N token events (100,000 by default) over C connections
// (1,000), built once. Then R pairs (3), alternating, each side on a fresh
// mock cluster (librdkafka's rdkafka_mock.h: 3 brokers, token-events with
// 6 partitions). The bare producer sends one message and waits for its
// acknowledgement (warm-up), then is timed from its first produce of the
// N messages to its last delivery report. The relay (the shipped
// events.kafka defaults, from an empty cursor) relays one warm-up event;
// then the N events are appended in one transaction (which also runs
// ANALYZE, as autovacuum keeps a long-lived outbox's statistics: the
// relay's cached plans are made again at the commit, not kept from an
// empty table), the relay is woken (as serve's NOTIFY listener does) and
// timed from the commit until its stored cursor, polled every 10 ms on
// another connection, is at the outbox head. The warm-ups keep out of both timings a librdkafka start-up
// cost: a new producer's first message to a topic it has not looked up
// waits for its once-a-second topic scan, unless produced at once. Printed:
// each pair, the time to the first acknowledgement on each side, the
// medians, and the median of the pairs' ratios (target ≥ 0.5×). Each topic
// is counted afterwards: N + 1 expected on each.
//
// Outage: a relay is caught up on a fresh cluster, every broker goes down,
// E events per second (500) are appended for S seconds (60) with a wake()
// after each append (as serve's NOTIFY listener does), the brokers come
// back. The bare producer sends the same events, as they are appended, to
// a topic of its own through the same outage: librdkafka's own recovery,
// for comparison. Printed for both: the backlog, the time to the first
// acknowledgement after the brokers came back (librdkafka's reconnect
// backoff, reconnect.backoff.max.ms: 1,000 ms as kafka/producer.cpp ships
// it, librdkafka's own default is 10 s; M sets it on both
// sides), the time until all is acknowledged (the relay: its cursor at the
// head), and the drain rate. Then the relay's topic is read back with a
// consumer: every event once (0 duplicates: nothing restarted; 0 missing)
// and in outbox order per key.
//
// Every phase is bounded (180 s, plus the outage itself): past it the bench
// prints "timed out" and exits with 1.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "bench/bench_support.hpp"
#include "common/log.hpp"
#include "config/service_config.hpp"
#include "kafka/relay.hpp"
#include "kafka/settings.hpp"
#include "storage/database.hpp"
#include "storage/events.hpp"
#include "storage/kafka_relay_store.hpp"
#include "storage/migrations.hpp"
#include "storage/outbox.hpp"

using namespace cm;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr int brokers = 3;
constexpr int token_partitions = 6;
constexpr auto phase_limit = std::chrono::seconds(180);
const char* const token_topic = "token-events";

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

[[noreturn]] void timed_out(const char* what) {
  std::printf("timed out: %s\n", what);
  std::fflush(stdout);
  // Threads (relay, librdkafka) may still be waiting on what never came.
  std::_Exit(1);
}

/// librdkafka's mock cluster, on loopback inside this process.
class mock_cluster {
public:
  mock_cluster() {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    // A handle only to own the cluster: it never connects anywhere.
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    handle_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (handle_ == nullptr) {
      std::fprintf(stderr, "rd_kafka_new: %s\n", err);
      std::exit(2);
    }
    cluster_ = rd_kafka_mock_cluster_new(handle_, brokers);
    if (cluster_ == nullptr) {
      std::fprintf(stderr, "rd_kafka_mock_cluster_new failed\n");
      std::exit(2);
    }
    rd_kafka_mock_topic_create(cluster_, token_topic, token_partitions, 1);
    rd_kafka_mock_topic_create(cluster_, storage::topic_entity_events, 2, 1);
  }
  ~mock_cluster() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(handle_);
  }
  mock_cluster(const mock_cluster&) = delete;
  mock_cluster& operator=(const mock_cluster&) = delete;

  std::string bootstraps() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }
  void create_topic(const std::string& topic, int partitions) {
    rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, 1);
  }
  void all_down() {
    for (int id = 1; id <= brokers; ++id)
      rd_kafka_mock_broker_set_down(cluster_, id);
  }
  void all_up() {
    for (int id = 1; id <= brokers; ++id)
      rd_kafka_mock_broker_set_up(cluster_, id);
  }

private:
  rd_kafka_t* handle_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

/// One message as the relay sends it for an outbox event.
struct message {
  std::string topic;
  std::string key;
  std::string payload;
  std::string event_id;
  std::string event_type;
};

/// A producer or consumer handle with quiet logs, or exits.
rd_kafka_t* new_handle(rd_kafka_type_t type,
                       const std::vector<std::pair<std::string, std::string>>& props) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (auto& [name, value] : props)
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), err, sizeof err) !=
        RD_KAFKA_CONF_OK) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), err);
      std::exit(2);
    }
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
  if (rk == nullptr) {
    std::fprintf(stderr, "rd_kafka_new: %s\n", err);
    std::exit(2);
  }
  return rk;
}

/// librdkafka's producer alone, with kafka/producer.cpp's properties and a
/// queue that holds every message, sending what the relay would send.
class bare_producer {
public:
  bare_producer(const std::string& bootstraps, int64_t delivery_timeout_ms,
                const std::string& reconnect_backoff_max_ms) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    std::vector<std::pair<const char*, std::string>> props = {
      {"bootstrap.servers", bootstraps},
      {"client.id", "bench-bare"},
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"delivery.timeout.ms", std::to_string(delivery_timeout_ms)},
      {"queue.buffering.max.messages", "10000000"},
      {"linger.ms", "5"},
      {"log_level", "0"}};
    if (!reconnect_backoff_max_ms.empty())
      props.emplace_back("reconnect.backoff.max.ms", reconnect_backoff_max_ms);
    for (auto& [name, value] : props)
      if (rd_kafka_conf_set(conf, name, value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
        std::fprintf(stderr, "%s: %s\n", name, err);
        std::exit(2);
      }
    rd_kafka_conf_set_opaque(conf, this);
    rd_kafka_conf_set_dr_msg_cb(conf, &on_delivery);
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (rk_ == nullptr) {
      std::fprintf(stderr, "rd_kafka_new: %s\n", err);
      std::exit(2);
    }
  }
  ~bare_producer() { rd_kafka_destroy(rk_); }
  bare_producer(const bare_producer&) = delete;
  bare_producer& operator=(const bare_producer&) = delete;

  /// Queues `m` to `topic` (waiting while the queue is full), with the
  /// relay's headers.
  void produce(const message& m, const std::string& topic, clock_type::time_point deadline) {
    for (;;) {
      rd_kafka_headers_t* hdrs = rd_kafka_headers_new(3);
      rd_kafka_header_add(hdrs, "event_id", -1, m.event_id.data(),
                          static_cast<ssize_t>(m.event_id.size()));
      rd_kafka_header_add(hdrs, "event_type", -1, m.event_type.data(),
                          static_cast<ssize_t>(m.event_type.size()));
      rd_kafka_header_add(hdrs, "content-type", -1, "application/json", -1);
      auto e = rd_kafka_producev(
        rk_, RD_KAFKA_V_TOPIC(topic.c_str()),
        RD_KAFKA_V_KEY(const_cast<char*>(m.key.data()), m.key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(m.payload.data()), m.payload.size()),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
      if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        break;
      rd_kafka_headers_destroy(hdrs); // only taken by librdkafka on success
      if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        std::fprintf(stderr, "produce: %s\n", rd_kafka_err2name(e));
        std::exit(1);
      }
      rd_kafka_poll(rk_, 10);
      if (clock_type::now() > deadline)
        timed_out("the bare producer's queue did not drain");
    }
    if (++produced_ % 1000 == 0)
      rd_kafka_poll(rk_, 0);
  }
  void poll(int timeout_ms) { rd_kafka_poll(rk_, timeout_ms); }
  int64_t produced() const { return produced_; }
  int64_t reported() const { return delivered + failed; }
  /// Forgets the first acknowledgement (to time the next one).
  void mark() { first = {}; }

  int64_t delivered = 0;
  int64_t failed = 0;
  clock_type::time_point first{};
  clock_type::time_point last{};

private:
  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    auto self = static_cast<bare_producer*>(opaque);
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
      ++self->delivered;
    else
      ++self->failed;
    self->last = clock_type::now();
    if (self->first == clock_type::time_point{})
      self->first = self->last;
  }

  rd_kafka_t* rk_ = nullptr;
  int64_t produced_ = 0;
};

/// One side's figures: events per second from the moment the N events
/// were there to take (the bare producer: its first produce; the relay:
/// their commit) until the last was acknowledged (the relay: its stored
/// cursor at the head), and the time until the first acknowledgement.
struct timing {
  double rate = 0;
  double first_ack_s = 0;
};

/// The bare producer on its own cluster: `messages[0]` alone first, until
/// acknowledged (the warm-up), then the timed rest, every report awaited.
timing bare_rate(const std::vector<message>& messages, const std::string& bootstraps,
                 int64_t delivery_timeout_ms, const std::string& backoff, int64_t& delivered) {
  bare_producer p{bootstraps, delivery_timeout_ms, backoff};
  auto deadline = clock_type::now() + phase_limit;
  p.produce(messages[0], messages[0].topic, deadline);
  while (p.reported() < 1) {
    p.poll(10);
    if (clock_type::now() > deadline)
      timed_out("the bare producer's warm-up");
  }
  p.mark();
  auto t0 = clock_type::now();
  for (size_t i = 1; i < messages.size(); ++i)
    p.produce(messages[i], messages[i].topic, deadline);
  auto total = static_cast<int64_t>(messages.size());
  while (p.reported() < total) {
    p.poll(50);
    if (clock_type::now() > deadline)
      timed_out("the bare producer's delivery reports");
  }
  delivered = p.delivered;
  if (p.failed > 0)
    std::printf("bare producer: %lld messages failed\n", static_cast<long long>(p.failed));
  return {static_cast<double>(total - 1) / seconds_between(t0, p.last),
          seconds_between(t0, p.first)};
}

/// Messages ever appended to `topic`: the sum of its partitions' high
/// watermarks (the mock drops a partition's oldest messages past 5 MB, so
/// not what is left, which high - low would count).
int64_t messages_on(const std::string& bootstraps, const std::string& topic, int partitions) {
  rd_kafka_t* rk = new_handle(RD_KAFKA_PRODUCER, {{"bootstrap.servers", bootstraps},
                                                  {"log_level", "0"}});
  int64_t total = 0;
  for (int p = 0; p < partitions; ++p) {
    int64_t low = 0, high = 0;
    if (rd_kafka_query_watermark_offsets(rk, topic.c_str(), p, &low, &high, 10000) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      total = -1;
      break;
    }
    total += high;
  }
  rd_kafka_destroy(rk);
  return total;
}

struct read_back {
  int64_t messages = 0;
  int64_t duplicates = 0;
  int64_t missing = 0;
  int64_t unknown = 0;
  int64_t out_of_order = 0;
  /// Messages the mock dropped before they could be read (none expected).
  int64_t pruned = 0;
};

/// Reads every partition of `topic` from the start up to its high
/// watermark and checks it against `expected` (event ids in outbox order):
/// each once, and per key in outbox order.
read_back read_topic(const std::string& bootstraps, const std::string& topic, int partitions,
                     const std::vector<std::string>& expected) {
  std::unordered_map<std::string, int64_t> index;
  for (size_t i = 0; i < expected.size(); ++i)
    index.emplace(expected[i], static_cast<int64_t>(i));
  std::vector<int> seen(expected.size(), 0);
  std::unordered_map<std::string, int64_t> last_of_key;

  rd_kafka_t* rk = new_handle(RD_KAFKA_CONSUMER, {{"bootstrap.servers", bootstraps},
                                                  {"group.id", "bench-read-back"},
                                                  {"enable.auto.commit", "false"},
                                                  {"log_level", "0"}});
  read_back out;
  int64_t wanted = 0;
  auto list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) {
    int64_t low = 0, high = 0;
    if (rd_kafka_query_watermark_offsets(rk, topic.c_str(), p, &low, &high, 10000) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
      timed_out("watermarks of the topic");
    wanted += high - low;
    out.pruned += low;
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(rk, list);
  rd_kafka_topic_partition_list_destroy(list);

  auto deadline = clock_type::now() + phase_limit;
  while (out.messages < wanted) {
    if (clock_type::now() > deadline)
      timed_out("reading the topic back");
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
    if (m == nullptr)
      continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ++out.messages;
      std::string id;
      rd_kafka_headers_t* hdrs = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          rd_kafka_header_get_last(hdrs, "event_id", &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR)
        id.assign(static_cast<const char*>(value), size);
      auto it = index.find(id);
      if (it == index.end()) {
        ++out.unknown;
      } else if (seen[static_cast<size_t>(it->second)]++ > 0) {
        ++out.duplicates;
      } else {
        std::string key(static_cast<const char*>(m->key), m->key_len);
        auto [at, fresh] = last_of_key.emplace(key, it->second);
        if (!fresh) {
          if (it->second < at->second)
            ++out.out_of_order;
          at->second = it->second;
        }
      }
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  for (int s : seen)
    if (s == 0)
      ++out.missing;
  return out;
}

/// Token events: event i is connection i % connections' refresh, as
/// storage/events.cpp writes it.
std::vector<std::pair<std::string, nlohmann::json>> token_events(int64_t first, int64_t count,
                                                                 int64_t connections) {
  std::vector<std::pair<std::string, nlohmann::json>> out;
  out.reserve(static_cast<size_t>(count));
  for (int64_t i = first; i < first + count; ++i) {
    int64_t c = i % connections;
    connection_key key{"team-" + std::to_string(c % 100), "user-" + std::to_string(c),
                       "google-ads"};
    out.emplace_back(key.team_id,
                     storage::token_event(bench::uuid_of(1 + i), "TOKEN_REFRESHED",
                                          bench::uuid_of(1000000000 + c), key));
  }
  return out;
}

using event_rows = std::vector<std::pair<std::string, nlohmann::json>>;

/// Appends `rows` in statements of 5,000, in one transaction: readers see
/// them all at once, at the commit. The table's statistics are refreshed in
/// it too (as autovacuum keeps a long-lived outbox's): the relay's cached
/// plans are made again at the commit, not kept from an empty table.
void append_at_once(storage::database& db, const event_rows& rows) {
  storage::database::transaction tx{db};
  storage::outbox outbox{db};
  for (size_t at = 0; at < rows.size(); at += 5000)
    outbox.append_many(event_rows(rows.begin() + static_cast<std::ptrdiff_t>(at),
                                  rows.begin() + static_cast<std::ptrdiff_t>(
                                                   std::min(rows.size(), at + 5000))));
  db.exec_script("ANALYZE event_outbox");
  tx.commit();
}

/// Appends events [first, first + count) in statements of 5,000.
void append_events(storage::database& db, int64_t first, int64_t count, int64_t connections) {
  storage::outbox outbox{db};
  for (int64_t at = first; at < first + count; at += 5000)
    outbox.append_many(token_events(at, std::min<int64_t>(5000, first + count - at), connections));
}

/// The events after `at` in the outbox, in order, as the relay sends them;
/// `at` moves to the last.
std::vector<message> outbox_messages(storage::database& db, outbox_position& at) {
  storage::outbox outbox{db};
  std::vector<message> out;
  for (;;) {
    auto events = outbox.after(at, "", 10000);
    if (events.empty())
      break;
    for (auto& e : events)
      out.push_back({e.topic, kafka::key_of(e), e.payload, e.event_id, e.event_type});
    at = events.back().at;
  }
  return out;
}

void reset_relay_tables(storage::database& db, bool outbox_too) {
  db.exec_script(outbox_too ? "TRUNCATE event_outbox, webhook_deliveries, kafka_relay_cursor, "
                              "kafka_parked"
                            : "TRUNCATE kafka_relay_cursor, kafka_parked");
}

std::unique_ptr<kafka::relay> start_relay(const config::database_config& db,
                                          const std::string& bootstraps,
                                          const std::string& backoff) {
  config::kafka_config k; // the shipped defaults but the brokers
  k.brokers = bootstraps;
  auto settings = kafka::settings_for(k);
  if (!backoff.empty())
    settings.properties["reconnect.backoff.max.ms"] = backoff;
  // serve's default events.poll_ms; NOTIFY wakes it sooner (wake() here).
  return std::make_unique<kafka::relay>(db, k, settings, std::chrono::milliseconds(1000));
}

/// When the relay's first acknowledgement (after `relayed_before`) was
/// seen, and when the stored cursor reached `head`. The acknowledgement
/// count is read every millisecond, the cursor every 10 ms on another
/// connection. `also` runs every millisecond and says whether the caller
/// still waits for something else.
template <class Also>
std::pair<clock_type::time_point, clock_type::time_point>
wait_for_relay(const kafka::relay& relay, int64_t relayed_before,
               storage::kafka_relay_store& store, const outbox_position& head,
               clock_type::time_point deadline, const char* what, Also&& also) {
  clock_type::time_point first{}, done{};
  auto cursor_checked = clock_type::now() - std::chrono::seconds(1);
  for (;;) {
    auto now = clock_type::now();
    if (first == clock_type::time_point{} && relay.relayed() > relayed_before)
      first = now;
    if (done == clock_type::time_point{} && now - cursor_checked >= std::chrono::milliseconds(10)) {
      cursor_checked = now;
      if (head <= store.cursor())
        done = now;
    }
    bool more = also();
    if (done != clock_type::time_point{} && !more)
      break;
    if (now > deadline)
      timed_out(what);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (first == clock_type::time_point{})
    first = done;
  return {first, done};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

} // namespace

int main(int argc, char** argv) {
  int64_t events = 100000;
  int64_t connections = 1000;
  int rounds = 3;
  int64_t outage_seconds = 60;
  int64_t outage_rate = 500;
  // reconnect.backoff.max.ms on both sides: kafka/producer.cpp's (librdkafka's
  // own default is 10 s).
  std::string backoff = "1000";
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    const char* value = i + 1 < argc ? argv[i + 1] : "";
    if (!std::strcmp(argv[i], "--verbose")) {
      verbose = true;
      continue;
    }
    if (!std::strcmp(argv[i], "--events"))
      events = std::atoll(value);
    else if (!std::strcmp(argv[i], "--connections"))
      connections = std::atoll(value);
    else if (!std::strcmp(argv[i], "--rounds"))
      rounds = std::atoi(value);
    else if (!std::strcmp(argv[i], "--outage-seconds"))
      outage_seconds = std::atoll(value);
    else if (!std::strcmp(argv[i], "--outage-rate"))
      outage_rate = std::atoll(value);
    else if (!std::strcmp(argv[i], "--reconnect-backoff-max-ms"))
      backoff = std::to_string(std::clamp<int64_t>(std::atoll(value), 10, 60000));
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
    ++i;
  }
  events = std::clamp<int64_t>(events, 2, 1000000);
  connections = std::clamp<int64_t>(connections, 1, 1000000);
  rounds = std::clamp(rounds, 1, 9);
  outage_seconds = std::clamp<int64_t>(outage_seconds, 1, 300);
  outage_rate = std::clamp<int64_t>(outage_rate, 1, 5000);
  // The relay's own warnings (every broker down) are expected here;
  // --verbose shows them, and librdkafka's lines.
  log::set_level(verbose ? log::level::debug : log::level::error);

  config::database_config db_cfg;
  db_cfg.url = bench::database_url();
  storage::database db{db_cfg};
  storage::apply_migrations(db);
  storage::database watch_db{db_cfg};
  storage::kafka_relay_store watch{watch_db};
  storage::outbox outbox{db};

  // The events (built once: every round appends the very same rows), and
  // the messages the relay makes of them. The outbox holds a warm-up event
  // first, then the N events, committed at once.
  auto warm_up = token_events(events, 1, connections);
  auto rows = token_events(0, events, connections);
  reset_relay_tables(db, true);
  append_at_once(db, warm_up);
  auto t_append = clock_type::now();
  append_at_once(db, rows);
  double append_s = seconds_between(t_append, clock_type::now());
  outbox_position read_at{};
  auto messages = outbox_messages(db, read_at);
  if (static_cast<int64_t>(messages.size()) != events + 1) {
    std::printf("outbox holds %zu events, %lld expected\n", messages.size(),
                static_cast<long long>(events + 1));
    return 1;
  }
  size_t payload_bytes = 0;
  for (auto& m : messages)
    payload_bytes += m.payload.size();
  const int64_t delivery_timeout_ms = config::kafka_config{}.delivery_timeout_ms;

  struct pair_result {
    timing bare, relay;
    int64_t bare_on_topic = 0, relay_on_topic = 0, bare_delivered = 0, relayed = 0;
  };
  std::vector<pair_result> pairs;
  for (int r = 0; r < rounds; ++r) {
    pair_result p;
    {
      mock_cluster cluster;
      p.bare = bare_rate(messages, cluster.bootstraps(), delivery_timeout_ms, backoff,
                         p.bare_delivered);
      p.bare_on_topic = messages_on(cluster.bootstraps(), token_topic, token_partitions);
    }
    {
      // The relay relays the warm-up event, the N events are committed,
      // the relay is woken (as NOTIFY does) and timed.
      reset_relay_tables(db, true);
      append_at_once(db, warm_up);
      mock_cluster cluster;
      auto relay = start_relay(db_cfg, cluster.bootstraps(), backoff);
      wait_for_relay(*relay, 0, watch, outbox.head(), clock_type::now() + phase_limit,
                     "the relay's warm-up event", [] { return false; });
      append_at_once(db, rows);
      auto t0 = clock_type::now();
      relay->wake();
      auto head = outbox.head();
      auto [first, done] = wait_for_relay(*relay, 1, watch, head, t0 + phase_limit,
                                          "the relay's cursor", [] { return false; });
      p.relay = {static_cast<double>(events) / seconds_between(t0, done),
                 seconds_between(t0, first)};
      p.relayed = relay->relayed();
      relay.reset();
      p.relay_on_topic = messages_on(cluster.bootstraps(), token_topic, token_partitions);
    }
    pairs.push_back(p);
  }

  std::printf("kafka relay: %lld token events over %lld connections (payload %zu bytes on "
              "average), librdkafka %s mock cluster of %d brokers, %s with %d partitions, "
              "reconnect.backoff.max.ms %s; %lld events appended in one transaction in %.1f s\n",
              static_cast<long long>(events), static_cast<long long>(connections),
              payload_bytes / messages.size(), rd_kafka_version_str(), brokers, token_topic,
              token_partitions, backoff.c_str(),
              static_cast<long long>(events), append_s);
  std::printf("events/s from the first produce (bare producer) or the commit of the events "
              "(relay) to the last acknowledgement (relay: its stored cursor at the head); both "
              "warmed up by one event first\n");
  std::printf("%-6s %14s %12s %14s %12s %8s %15s\n", "pair", "bare producer", "first ack s",
              "relay", "first ack s", "ratio", "on topic");
  std::vector<double> bares, relays, ratios;
  bool counts_ok = true;
  for (size_t i = 0; i < pairs.size(); ++i) {
    auto& p = pairs[i];
    std::printf("%-6zu %14.0f %12.3f %14.0f %12.3f %7.3fx %7lld/%-7lld\n", i + 1, p.bare.rate,
                p.bare.first_ack_s, p.relay.rate, p.relay.first_ack_s,
                p.relay.rate / p.bare.rate, static_cast<long long>(p.bare_on_topic),
                static_cast<long long>(p.relay_on_topic));
    bares.push_back(p.bare.rate);
    relays.push_back(p.relay.rate);
    ratios.push_back(p.relay.rate / p.bare.rate);
    counts_ok = counts_ok && p.bare_delivered == events + 1 && p.bare_on_topic == events + 1 &&
                p.relay_on_topic == events + 1 && p.relayed == events + 1;
  }
  double ratio = median(ratios);
  std::printf("%-6s %14.0f %12s %14.0f %12s %7.3fx   (medians of %zu alternating pairs; the "
              "ratio is the median of the pairs' ratios)\n",
              "median", median(bares), "", median(relays), "", ratio, pairs.size());
  std::printf("every message on its topic once per run (bare/relay, %lld expected with the "
              "warm-up): %s\n",
              static_cast<long long>(events + 1), counts_ok ? "yes" : "NO");
  std::printf("target: relay >= 0.5x the bare producer: %s\n", ratio >= 0.5 ? "met" : "NOT met");
  std::fflush(stdout);

  // Outage: caught up, every broker away while events keep coming, back.
  // The bare producer sends the same events to a topic of its own on the
  // same cluster through the same outage: librdkafka's own recovery.
  reset_relay_tables(db, true);
  mock_cluster cluster;
  const std::string bare_topic = "token-events-bare";
  cluster.create_topic(bare_topic, token_partitions);
  auto relay = start_relay(db_cfg, cluster.bootstraps(), backoff);
  bare_producer bare{cluster.bootstraps(), delivery_timeout_ms, backoff};
  auto outage_deadline = clock_type::now() + phase_limit;
  auto bare_send = [&](outbox_position& at) {
    for (auto& m : outbox_messages(db, at))
      bare.produce(m, bare_topic, outage_deadline);
    bare.poll(0);
  };
  const int64_t warm = 1000;
  int64_t next = 0;
  outbox_position bare_at{};
  append_events(db, next, warm, connections);
  next += warm;
  relay->wake();
  bare_send(bare_at);
  wait_for_relay(*relay, 0, watch, outbox.head(), outage_deadline,
                 "catching up before the outage", [&] {
                   bare.poll(0);
                   return bare.reported() < bare.produced();
                 });
  auto relayed_before = relay->relayed();
  auto bare_before = bare.delivered;
  cluster.all_down();
  auto t_down = clock_type::now();
  outage_deadline = t_down + std::chrono::seconds(outage_seconds) + phase_limit;
  const int64_t backlog_target = outage_rate * outage_seconds;
  int64_t appended = 0;
  for (;;) {
    auto elapsed = seconds_between(t_down, clock_type::now());
    auto due = std::min<int64_t>(backlog_target,
                                 static_cast<int64_t>(elapsed * static_cast<double>(outage_rate)));
    if (elapsed >= static_cast<double>(outage_seconds))
      due = backlog_target;
    if (due > appended) {
      append_events(db, next, due - appended, connections);
      next += due - appended;
      appended = due;
      relay->wake();
      bare_send(bare_at);
    }
    if (elapsed >= static_cast<double>(outage_seconds))
      break;
    bare.poll(100);
  }
  auto relayed_in_outage = relay->relayed() - relayed_before;
  auto bare_in_outage = bare.delivered - bare_before;
  auto outage_head = outbox.head();
  double outage_s = seconds_between(t_down, clock_type::now());
  auto relayed_at_up = relay->relayed();
  bare.mark();
  cluster.all_up();
  auto t_up = clock_type::now();
  auto [t_first, t_drained] =
    wait_for_relay(*relay, relayed_at_up, watch, outage_head, t_up + phase_limit,
                   "draining the backlog after the outage", [&] {
                     bare.poll(0);
                     return bare.reported() < bare.produced();
                   });
  if (bare.first == clock_type::time_point{})
    bare.first = bare.last;
  auto relayed_total = relay->relayed();
  auto parked = relay->parked();
  relay.reset();
  outbox_position all_at{};
  std::vector<std::string> expected;
  for (auto& m : outbox_messages(db, all_at))
    expected.push_back(m.event_id);
  auto back = read_topic(cluster.bootstraps(), token_topic, token_partitions, expected);
  auto bare_on_topic = messages_on(cluster.bootstraps(), bare_topic, token_partitions);

  int64_t backlog = appended - relayed_in_outage;
  double drain_s = seconds_between(t_up, t_drained);
  double bare_drain_s = seconds_between(t_up, bare.last);
  std::printf("outage: every broker down %.1f s while %lld events were appended (%lld/s), the "
              "relay caught up before (%lld events); the bare producer sent the same events to "
              "a topic of its own through the same outage\n",
              outage_s, static_cast<long long>(appended), static_cast<long long>(outage_rate),
              static_cast<long long>(warm));
  std::printf("%-52s %14s %14s\n", "", "relay", "bare producer");
  std::printf("%-52s %14lld %14lld\n", "acknowledged during the outage",
              static_cast<long long>(relayed_in_outage), static_cast<long long>(bare_in_outage));
  std::printf("%-52s %14lld %14lld\n", "backlog when the brokers came back (events)",
              static_cast<long long>(backlog),
              static_cast<long long>(appended - bare_in_outage));
  std::printf("%-52s %14.2f %14.2f\n", "first acknowledgement after the brokers came back (s)",
              seconds_between(t_up, t_first), seconds_between(t_up, bare.first));
  std::printf("%-52s %14.2f %14.2f\n", "backlog drained (s; relay: cursor at the head)", drain_s,
              bare_drain_s);
  std::printf("%-52s %14.0f %14.0f\n", "drain rate from the brokers' return (events/s)",
              static_cast<double>(backlog) / drain_s,
              static_cast<double>(appended - bare_in_outage) / bare_drain_s);
  std::printf("read back (relay's topic): %lld messages for %zu events; duplicates %lld, missing "
              "%lld, unknown %lld, out of order per key %lld, dropped by the mock %lld; relayed() "
              "%lld, parked %lld; bare producer's topic %lld, failed %lld\n",
              static_cast<long long>(back.messages), expected.size(),
              static_cast<long long>(back.duplicates), static_cast<long long>(back.missing),
              static_cast<long long>(back.unknown), static_cast<long long>(back.out_of_order),
              static_cast<long long>(back.pruned), static_cast<long long>(relayed_total),
              static_cast<long long>(parked), static_cast<long long>(bare_on_topic),
              static_cast<long long>(bare.failed));
  bool once = back.duplicates == 0 && back.missing == 0 && back.unknown == 0 &&
              back.out_of_order == 0 && back.pruned == 0 &&
              static_cast<size_t>(back.messages) == expected.size();
  std::printf("every event relayed once and in order per key: %s\n", once ? "yes" : "NO");
  reset_relay_tables(db, true);
  // A missed ratio is a figure; a lost, doubled or reordered event is a
  // failure.
  return counts_ok && once ? 0 : 1;
}

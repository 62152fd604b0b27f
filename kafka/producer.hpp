// The one place that talks to librdkafka's producer (like http/server.cpp
// for Pistache): an idempotent producer whose delivery reports say, for
// each message the relay handed it, whether the broker acknowledged it,
// whether it may be tried again, or whether it was refused for good.
//
// Idempotence (enable.idempotence) gives acks=all, bounded in-flight
// requests and broker-side deduplication of librdkafka's own retries, so
// one key's messages stay in order on their partition. What the relay
// marks delivered is only what a report said the broker acknowledged: at
// least once, never lost.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cm::kafka {

struct producer_settings {
  /// bootstrap.servers.
  std::string brokers;
  /// Other librdkafka properties passed through (security.protocol,
  /// sasl.*, ssl.*): values already read from their files by the caller.
  /// Never logged.
  std::map<std::string, std::string> properties;
  /// How long librdkafka keeps retrying one message before reporting it
  /// retriable (delivery.timeout.ms); the relay then produces it again.
  int64_t delivery_timeout_ms = 30000;
  /// What librdkafka may hold unacknowledged (queue.buffering.max.messages).
  int32_t max_in_flight_messages = 100000;
  /// Topics known from the start: their metadata is fetched when the
  /// producer is made, not on the first message (which would otherwise
  /// wait for librdkafka's once-a-second topic scan).
  std::vector<std::string> topics;
};

enum class delivery_outcome {
  /// The broker acknowledged it (all in-sync replicas).
  delivered,
  /// Not delivered this time (broker down, timed out): produce it again.
  retriable,
  /// Refused for good (too large, not authorized, invalid): alarm and park.
  refused,
};

const char* to_string(delivery_outcome outcome);

struct delivery_report {
  /// The id the relay gave produce().
  uint64_t id = 0;
  delivery_outcome outcome = delivery_outcome::retriable;
  /// librdkafka's error name ("" when delivered); never a payload.
  std::string reason;
  int32_t partition = -1;
  int64_t offset = -1;
};

class producer {
public:
  /// nullptr with `problem` set when librdkafka refuses the settings.
  static std::unique_ptr<producer> create(const producer_settings& settings,
                                          std::string& problem);
  ~producer();
  producer(const producer&) = delete;
  producer& operator=(const producer&) = delete;

  /// Queues one message; its report comes from poll(). Otherwise says
  /// why, with librdkafka's error name in `problem`.
  enum class queued { yes, busy, refused };
  /// `busy`: not now (the queue is full, the producer failed and must be
  /// replaced): poll and try again. `refused`: the topic already refused
  /// this client for good (authorization): no retry can fix it.
  using header = std::pair<std::string_view, std::string_view>;
  queued produce(const std::string& topic, const std::string& key, const std::string& payload,
                 std::initializer_list<header> headers, uint64_t id, std::string& problem);

  /// Serves librdkafka's callbacks for up to `timeout_ms` and returns the
  /// delivery reports they produced.
  std::vector<delivery_report> poll(int timeout_ms);

  /// Messages queued or in flight, not yet reported.
  int in_flight() const;

  /// librdkafka said every broker is down, and no message was
  /// acknowledged (nor a probe answered) since.
  bool brokers_down() const;
  /// Carries what an earlier producer knew over to this one.
  void assume_brokers_down();
  /// Asks the brokers for metadata, waiting up to `timeout_ms`: an answer
  /// clears brokers_down() when nothing is produced to do it.
  void probe_brokers(int timeout_ms);

  /// A fatal error (the idempotent producer's sequence broke): this
  /// producer must be replaced; "" when none.
  std::string fatal_error() const;

private:
  struct impl;
  explicit producer(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace cm::kafka

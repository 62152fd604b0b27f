// librdkafka's mock cluster (rdkafka_mock.h: the Kafka protocol implemented
// inside the library, on loopback) and a consumer that reads back what was
// produced, for the Kafka relay's tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

namespace cm::test {

class kafka_mock_cluster {
public:
  explicit kafka_mock_cluster(int brokers = 3);
  ~kafka_mock_cluster();
  kafka_mock_cluster(const kafka_mock_cluster&) = delete;
  kafka_mock_cluster& operator=(const kafka_mock_cluster&) = delete;

  /// bootstrap.servers for clients.
  std::string bootstraps() const;
  void create_topic(const std::string& topic, int partitions);
  /// Broker ids are 1..brokers.
  void broker_down(int32_t id);
  void broker_up(int32_t id);
  /// The next `errors.size()` requests of kind `api_key` (e.g.
  /// RD_KAFKAP_Produce = 0) fail with these errors.
  void push_request_errors(int16_t api_key, const std::vector<rd_kafka_resp_err_t>& errors);
  /// The next `count` produce requests `broker` receives are handled (the
  /// messages are appended) but answered only after `delay_ms`: a
  /// producer that dies meanwhile never hears of them.
  void delay_produce_answers(int32_t broker, int count, int delay_ms);
  /// Of those, how many `broker` has not received yet.
  size_t delayed_answers_left(int32_t broker);
  void set_leader(const std::string& topic, int32_t partition, int32_t broker);
  rd_kafka_mock_cluster_t* raw() { return cluster_; }

private:
  rd_kafka_t* handle_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

struct consumed_message {
  std::string topic;
  int32_t partition = -1;
  int64_t offset = -1;
  std::string key;
  std::string payload;
  std::map<std::string, std::string> headers;
};

/// Reads `topic` from the beginning until `expected` messages arrived or
/// `timeout` passed, then keeps reading for `settle` to catch duplicates.
std::vector<consumed_message> consume(
  const std::string& bootstraps, const std::string& topic, size_t expected,
  std::chrono::milliseconds timeout,
  std::chrono::milliseconds settle = std::chrono::milliseconds(300));

} // namespace cm::test

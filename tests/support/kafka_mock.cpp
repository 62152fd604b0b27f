#include "tests/support/kafka_mock.hpp"

#include <random>
#include <stdexcept>

namespace cm::test {

kafka_mock_cluster::kafka_mock_cluster(int brokers) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // A handle only to own the cluster: it never connects anywhere.
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  handle_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (handle_ == nullptr)
    throw std::runtime_error(std::string("rd_kafka_new: ") + err);
  cluster_ = rd_kafka_mock_cluster_new(handle_, brokers);
  if (cluster_ == nullptr)
    throw std::runtime_error("rd_kafka_mock_cluster_new failed");
}

kafka_mock_cluster::~kafka_mock_cluster() {
  if (cluster_ != nullptr)
    rd_kafka_mock_cluster_destroy(cluster_);
  if (handle_ != nullptr)
    rd_kafka_destroy(handle_);
}

std::string kafka_mock_cluster::bootstraps() const {
  return rd_kafka_mock_cluster_bootstraps(cluster_);
}

void kafka_mock_cluster::create_topic(const std::string& topic, int partitions) {
  rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, 1);
}

void kafka_mock_cluster::broker_down(int32_t id) { rd_kafka_mock_broker_set_down(cluster_, id); }

void kafka_mock_cluster::broker_up(int32_t id) { rd_kafka_mock_broker_set_up(cluster_, id); }

void kafka_mock_cluster::push_request_errors(int16_t api_key,
                                             const std::vector<rd_kafka_resp_err_t>& errors) {
  rd_kafka_mock_push_request_errors_array(cluster_, api_key, errors.size(), errors.data());
}

void kafka_mock_cluster::delay_produce_answers(int32_t broker, int count, int delay_ms) {
  for (int i = 0; i < count; ++i)
    rd_kafka_mock_broker_push_request_error_rtts(cluster_, broker, 0 /* Produce */, 1,
                                                 RD_KAFKA_RESP_ERR_NO_ERROR, delay_ms);
}

size_t kafka_mock_cluster::delayed_answers_left(int32_t broker) {
  size_t count = 0;
  rd_kafka_mock_broker_error_stack_cnt(cluster_, broker, 0 /* Produce */, &count);
  return count;
}

void kafka_mock_cluster::set_leader(const std::string& topic, int32_t partition, int32_t broker) {
  rd_kafka_mock_partition_set_leader(cluster_, topic.c_str(), partition, broker);
}

std::vector<consumed_message> consume(const std::string& bootstraps, const std::string& topic,
                                      size_t expected, std::chrono::milliseconds timeout,
                                      std::chrono::milliseconds settle) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  std::random_device rd;
  auto group = "cm-test-" + std::to_string(rd());
  for (auto [name, value] : std::vector<std::pair<const char*, std::string>>{
         {"bootstrap.servers", bootstraps},
         {"group.id", group},
         {"auto.offset.reset", "earliest"},
         {"enable.auto.commit", "false"},
         {"log_level", "3"}})
    if (rd_kafka_conf_set(conf, name, value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      throw std::runtime_error(err);
  rd_kafka_t* consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (consumer == nullptr)
    throw std::runtime_error(err);
  rd_kafka_poll_set_consumer(consumer);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(consumer, topics);
  rd_kafka_topic_partition_list_destroy(topics);

  std::vector<consumed_message> out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::chrono::steady_clock::time_point settle_until{};
  while (std::chrono::steady_clock::now() < deadline) {
    if (out.size() >= expected) {
      if (settle_until == std::chrono::steady_clock::time_point{})
        settle_until = std::chrono::steady_clock::now() + settle;
      else if (std::chrono::steady_clock::now() >= settle_until)
        break;
    }
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, 100);
    if (m == nullptr)
      continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      consumed_message c;
      c.topic = rd_kafka_topic_name(m->rkt);
      c.partition = m->partition;
      c.offset = m->offset;
      if (m->key)
        c.key.assign(static_cast<const char*>(m->key), m->key_len);
      if (m->payload)
        c.payload.assign(static_cast<const char*>(m->payload), m->len);
      rd_kafka_headers_t* hdrs = nullptr;
      if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name;
        const void* value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR;
             ++i)
          c.headers[name] = std::string(static_cast<const char*>(value), size);
      }
      out.push_back(std::move(c));
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(consumer);
  rd_kafka_destroy(consumer);
  return out;
}

} // namespace cm::test

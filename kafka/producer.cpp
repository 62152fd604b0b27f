#include "kafka/producer.hpp"

#include <librdkafka/rdkafka.h>

#include "common/log.hpp"

namespace cm::kafka {

namespace {

constexpr const char* component = "kafka";

struct conf_deleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};

/// Errors no retry can fix: the message (or the credentials) must change.
bool refused_for_good(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION:
      return true;
    default:
      return false;
  }
}

} // namespace

const char* to_string(delivery_outcome outcome) {
  switch (outcome) {
    case delivery_outcome::delivered: return "delivered";
    case delivery_outcome::retriable: return "retriable";
    case delivery_outcome::refused: return "refused";
  }
  return "retriable";
}

struct producer::impl {
  rd_kafka_t* rk = nullptr;
  /// Filled by the delivery-report callback during poll() (same thread).
  std::vector<delivery_report> reports;
  /// Set by the error callback, cleared by an acknowledgement (both run
  /// in poll(), on the relay's thread).
  bool brokers_down = false;
  std::vector<rd_kafka_topic_t*> topics;

  ~impl() {
    for (auto* t : topics)
      rd_kafka_topic_destroy(t);
    if (rk != nullptr) {
      // Nothing unreported is marked delivered: the outbox still holds it.
      rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      rd_kafka_poll(rk, 0);
      rd_kafka_destroy(rk);
    }
  }

  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    auto self = static_cast<impl*>(opaque);
    delivery_report r;
    r.id = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(msg->_private));
    r.partition = msg->partition;
    r.offset = msg->offset;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      r.outcome = delivery_outcome::delivered;
      self->brokers_down = false;
    } else {
      r.outcome = refused_for_good(msg->err) ? delivery_outcome::refused
                                             : delivery_outcome::retriable;
      r.reason = rd_kafka_err2name(msg->err);
    }
    self->reports.push_back(std::move(r));
  }

  static void on_error(rd_kafka_t*, int err, const char* reason, void* opaque) {
    // Connection troubles are retried by librdkafka itself; they are
    // worth a line, not an alarm (the backlog gauge is the alarm).
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
      static_cast<impl*>(opaque)->brokers_down = true;
    log::warn(component, "librdkafka error",
              {{"error", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err))},
               {"reason", reason}});
  }

  static void on_log(const rd_kafka_t*, int level, const char* facility, const char* text) {
    // librdkafka logs broker addresses and states, never configuration
    // values; its errors are warnings here (the relay alarms on its own).
    if (level <= 4)
      log::warn(component, "librdkafka", {{"facility", facility}, {"text", text}});
    else
      log::debug(component, "librdkafka", {{"facility", facility}, {"text", text}});
  }
};

std::unique_ptr<producer> producer::create(const producer_settings& settings,
                                           std::string& problem) {
  auto p = std::make_unique<impl>();
  std::unique_ptr<rd_kafka_conf_t, conf_deleter> conf{rd_kafka_conf_new()};
  char err[512];
  std::map<std::string, std::string> props = {
    {"bootstrap.servers", settings.brokers},
    {"client.id", "connector-manager"},
    {"enable.idempotence", "true"},
    {"acks", "all"},
    {"delivery.timeout.ms", std::to_string(settings.delivery_timeout_ms)},
    {"queue.buffering.max.messages", std::to_string(settings.max_in_flight_messages)},
    {"linger.ms", "5"},
    // Brokers back after an outage are found within a second (librdkafka's
    // default backs off up to 10 s), so a backlog starts draining at once.
    {"reconnect.backoff.max.ms", "1000"},
  };
  for (auto& [name, value] : settings.properties)
    props[name] = value;
  for (auto& [name, value] : props) {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), err, sizeof err) !=
        RD_KAFKA_CONF_OK) {
      // librdkafka's message names the property, not its value.
      problem = "events.kafka: " + std::string(err);
      return nullptr;
    }
  }
  rd_kafka_conf_set_opaque(conf.get(), p.get());
  rd_kafka_conf_set_dr_msg_cb(conf.get(), &impl::on_delivery);
  rd_kafka_conf_set_log_cb(conf.get(), &impl::on_log);
  rd_kafka_conf_set_error_cb(conf.get(), &impl::on_error);
  p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
  if (p->rk == nullptr) {
    problem = "events.kafka: " + std::string(err);
    return nullptr;
  }
  conf.release(); // rd_kafka_new took it
  for (auto& topic : settings.topics)
    if (auto* t = rd_kafka_topic_new(p->rk, topic.c_str(), nullptr))
      p->topics.push_back(t);
  return std::unique_ptr<producer>(new producer(std::move(p)));
}

producer::producer(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

producer::~producer() = default;

producer::queued producer::produce(const std::string& topic, const std::string& key,
                                   const std::string& payload,
                                   std::initializer_list<header> headers, uint64_t id,
                                   std::string& problem) {
  rd_kafka_headers_t* hdrs = rd_kafka_headers_new(headers.size());
  for (auto& [name, value] : headers)
    rd_kafka_header_add(hdrs, name.data(), static_cast<ssize_t>(name.size()), value.data(),
                        static_cast<ssize_t>(value.size()));
  auto err = rd_kafka_producev(
    impl_->rk, RD_KAFKA_V_TOPIC(topic.c_str()),
    RD_KAFKA_V_KEY(const_cast<char*>(key.data()), key.size()),
    RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
    RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(id))), RD_KAFKA_V_END);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_headers_destroy(hdrs); // only freed by librdkafka on success
    problem = rd_kafka_err2name(err);
    return refused_for_good(err) ? queued::refused : queued::busy;
  }
  return queued::yes;
}

std::vector<delivery_report> producer::poll(int timeout_ms) {
  rd_kafka_poll(impl_->rk, timeout_ms);
  std::vector<delivery_report> out;
  out.swap(impl_->reports);
  return out;
}

int producer::in_flight() const { return rd_kafka_outq_len(impl_->rk); }

bool producer::brokers_down() const { return impl_->brokers_down; }

void producer::assume_brokers_down() { impl_->brokers_down = true; }

void producer::probe_brokers(int timeout_ms) {
  const struct rd_kafka_metadata* md = nullptr;
  if (rd_kafka_metadata(impl_->rk, 0, nullptr, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_metadata_destroy(md);
    impl_->brokers_down = false;
  }
}

std::string producer::fatal_error() const {
  char err[512];
  if (rd_kafka_fatal_error(impl_->rk, err, sizeof err) == RD_KAFKA_RESP_ERR_NO_ERROR)
    return {};
  return err;
}

} // namespace cm::kafka

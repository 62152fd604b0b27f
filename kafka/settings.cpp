#include "kafka/settings.hpp"

#include "common/private_file.hpp"

namespace cm::kafka {

namespace {

/// A secret file's content without the line break editors add.
std::string secret_from(const std::string& path, const std::string& what) {
  auto value = read_private_file(path, what, 64 * 1024);
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r'))
    value.pop_back();
  return value;
}

} // namespace

producer_settings settings_for(const config::kafka_config& cfg) {
  producer_settings s;
  s.brokers = cfg.brokers;
  s.delivery_timeout_ms = cfg.delivery_timeout_ms;
  s.max_in_flight_messages = std::max(cfg.max_in_flight, 1000);
  s.topics = {cfg.token_events_topic, cfg.entity_events_topic};
  auto& p = s.properties;
  p["security.protocol"] = cfg.security_protocol;
  if (cfg.security_protocol.rfind("sasl_", 0) == 0) {
    p["sasl.mechanisms"] = cfg.sasl_mechanism;
    p["sasl.username"] = cfg.sasl_username;
    p["sasl.password"] = secret_from(cfg.sasl_password_file, "events.kafka.sasl.password_file");
  }
  if (!cfg.tls_ca_file.empty())
    p["ssl.ca.location"] = cfg.tls_ca_file;
  if (!cfg.tls_cert_file.empty()) {
    p["ssl.certificate.location"] = cfg.tls_cert_file;
    p["ssl.key.location"] = cfg.tls_key_file;
  }
  if (!cfg.tls_key_password_file.empty())
    p["ssl.key.password"] =
      secret_from(cfg.tls_key_password_file, "events.kafka.tls.key_password_file");
  return s;
}

} // namespace cm::kafka

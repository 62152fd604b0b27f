// events.kafka as librdkafka properties: the security options passed
// through, the secrets (SASL password, TLS key password) read from their
// files here, once, at start. The values go only to librdkafka.
#pragma once

#include <string>

#include "config/service_config.hpp"
#include "kafka/producer.hpp"

namespace cm::kafka {

/// The producer's settings for `cfg`. Throws private_file_error (naming
/// the file, never its content) when a secret file cannot be read or lets
/// the group or others read it.
producer_settings settings_for(const config::kafka_config& cfg);

} // namespace cm::kafka

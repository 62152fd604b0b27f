// The operator's commands: `connections list|show|refresh|disconnect` and
// `service-tokens create|list|revoke`, `kafka parked|requeue`
// (app/help.cpp says what each does).
#pragma once

#include "app/arguments.hpp"
#include "config/service_config.hpp"

namespace cm::app {

int cmd_connections(const arguments& args, const config::service_config& cfg);
int cmd_service_tokens(const arguments& args, const config::service_config& cfg);
int cmd_kafka(const arguments& args, const config::service_config& cfg);

} // namespace cm::app

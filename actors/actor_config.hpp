// The one CAF configuration class of the project: registers the message
// types and the error category, and applies the scheduler settings from the
// service file.
#pragma once

#include <caf/actor_system_config.hpp>

#include "config/service_config.hpp"

namespace cm {

class actor_config : public caf::actor_system_config {
public:
  actor_config();

  /// Applies scheduler policy and thread count from the service file.
  void apply(const config::scheduler_config& sched);
};

} // namespace cm

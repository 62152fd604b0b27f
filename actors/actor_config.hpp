// The one CAF configuration class of the project: registers the message
// types and the error category, and applies the scheduler settings from the
// service file.
#pragma once

#include <caf/actor_system_config.hpp>

#include "config/service_config.hpp"

namespace cm {

class actor_config : public caf::actor_system_config {
public:
  /// `with_middleman`: load CAF's network layer (the token service needs it;
  /// deterministic tests do without).
  explicit actor_config(bool with_middleman = true);

  /// Applies scheduler policy and thread count from the service file.
  void apply(const config::scheduler_config& sched);
};

} // namespace cm

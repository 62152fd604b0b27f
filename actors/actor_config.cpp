#include "actors/actor_config.hpp"

#include <caf/io/middleman.hpp>

#include "actors/fwd.hpp"
#include "common/error.hpp"

namespace cm {

actor_config::actor_config(bool with_middleman) {
  add_message_types<caf::id_block::connector_manager>();
  add_error_category(error_category(), render_error);
  // The token service is published to other CAF programs.
  if (with_middleman)
    load<caf::io::middleman>();
  // Clients send a heartbeat now and then, so the token port does not take
  // a quiet but live connection for an idle one (token_service.idle_timeout_ms,
  // default 5 minutes).
  set("middleman.heartbeat-interval", caf::timespan{std::chrono::seconds(60)});
  // No console noise from CAF itself; the project logs JSON lines.
  set("logger.console", caf::atom("none"));
}

void actor_config::apply(const config::scheduler_config& sched) {
  if (sched.policy == "stealing")
    set("scheduler.policy", caf::atom("stealing"));
  else
    set("scheduler.policy", caf::atom("sharing"));
  set("scheduler.max-threads", static_cast<size_t>(sched.max_threads));
}

} // namespace cm

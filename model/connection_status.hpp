// A connection actor's view of itself (tests, diagnostics).
#pragma once

#include <cstdint>
#include <string>

#include <caf/meta/type_name.hpp>

#include "model/connection_phase.hpp"
#include "model/grant_status.hpp"

namespace cm {

struct connection_status {
  connection_phase phase = connection_phase::loading;
  /// The stored grant's status; meaningless while loading.
  grant_status status = grant_status::connected;
  std::string reason;
  int64_t expires_at_ms = 0;
  /// When the refresh timer fires (unix ms); 0 when none is armed.
  int64_t next_refresh_at_ms = 0;
  int32_t failures = 0;
  bool refreshing = false;
  int64_t version = 0;

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, connection_status& x) {
    return f(caf::meta::type_name("connection_status"), x.phase, x.status, x.reason,
             x.expires_at_ms, x.next_refresh_at_ms, x.failures, x.refreshing, x.version);
  }
};

} // namespace cm

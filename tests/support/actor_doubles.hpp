// In-memory stand-ins for the two actors a connection actor talks to, for
// deterministic tests under CAF's test coordinator:
//  - memory_repository: the token_repository_actor interface with the same
//    lease and fencing rules as the SQL in storage/token_store.cpp;
//  - scripted_provider: the provider_client_actor interface answering from a
//    script and recording every request.
// Tests share their data through a shared_ptr and may change it between
// steps (e.g. a concurrent writer bumping the version).
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/typed_event_based_actor.hpp>

#include "actors/connection_actor.hpp"

namespace cm::test {

struct repo_data {
  struct row {
    token_record record;
    std::string lease_owner;
    std::chrono::steady_clock::time_point lease_until{};
    int failures = 0;
  };
  std::map<connection_key, row> rows;
  /// (event type, reason) in write order.
  std::vector<std::pair<std::string, std::string>> events;
  int leases_granted = 0;
  /// Rows read (`find`).
  int finds = 0;
  /// Version checks answered (a token served from memory while other
  /// instances are live).
  int version_checks = 0;
  /// While positive, `complete` answers unavailable (a database outage).
  int fail_completes = 0;
  /// When set, `find` answers this error (a row failing its integrity
  /// check, a database outage).
  ec fail_finds = ec::none;
  /// Wall clock (unix ms) = actor clock + this, as in connection_deps;
  /// `complete` stamps `updated_at_ms` and `refreshed_at_ms` with it, as the
  /// database does.
  int64_t wall_offset_ms = 0;
  /// Team connector configurations by (team, connector).
  std::map<std::pair<std::string, std::string>, connector_config_record> configs;
};

struct repo_state {
  std::shared_ptr<repo_data> data;
  static inline const char* name = "memory-repository";
};

token_repository_actor::behavior_type
memory_repository(token_repository_actor::stateful_pointer<repo_state> self,
                  std::shared_ptr<repo_data> data);

struct provider_script {
  /// Answers in order; when empty, `fallback` answers.
  std::deque<outbound_response> answers;
  outbound_response fallback;
  /// Every request received.
  std::vector<outbound_request> requests;
  /// Runs when a request arrives, before answering (e.g. to mutate the repo).
  std::function<void()> on_request;
};

struct provider_state {
  std::shared_ptr<provider_script> script;
  static inline const char* name = "scripted-provider";
};

provider_client_actor::behavior_type
scripted_provider(provider_client_actor::stateful_pointer<provider_state> self,
                  std::shared_ptr<provider_script> script);

/// A token endpoint answer: 200 with the given tokens.
outbound_response token_ok(const std::string& access, const std::string& refresh,
                           int64_t expires_in = 3600);
/// An OAuth error answer.
outbound_response token_error(int status, const std::string& code,
                              const std::string& retry_after = "");
/// A transport failure.
outbound_response transport_failure(transport_error e);

} // namespace cm::test

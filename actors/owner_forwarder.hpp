// The owner forwarder: sends a request for a connection whose shard another
// instance owns to that instance's token service, through CAF's middleman
// (issue 17, "every instance answers every route"). The owner answers from
// the connection actor that holds the token and its refresh timer; the
// asking instance neither loads the row nor takes a lease.
//
// Where the owner is comes from the owner directory
// (storage/owner_directory.hpp); the request carries the deployment's peer
// token (storage/peer_token.hpp). One connection per peer, opened on first
// use (requests for it wait, up to the timeout) and dropped when the peer
// goes down.
//
// Whatever the owner answers about the connection (not found, needs
// re-authorization, provider failed, bad request, a tampered row) is passed
// on. Everything else (no owner known, the owner is this instance, no
// answer within `cluster.forward_timeout_ms`, a refused peer token, an
// instance that no longer owns the shard, or one whose own dependencies are
// unavailable) answers `unavailable`, and the registry then serves the
// request itself from the database under the lease: a slow or unreachable
// owner delays a request by at most the timeout and fails none.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor_addr.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/fwd.hpp"
#include "actors/token_service_interface.hpp"
#include "storage/owner_directory.hpp"

namespace cm {

using owner_forwarder_actor = caf::typed_actor<
  // A token from the owner of the connection's shard (force: refresh
  // first); `unavailable` when no owner answered and the caller is to
  // serve it itself.
  caf::replies_to<get_token_atom, connection_key, bool>::with<token_grant>,
  // Internal: requests waiting for a connection past their time are
  // served by the caller.
  caf::reacts_to<tick_atom>>;

/// Counts for the health route.
struct forwarding_stats {
  /// Requests the owner answered (a token or its error about the
  /// connection).
  std::atomic<int64_t> forwarded{0};
  /// Requests sent to an owner that did not answer usefully, served here.
  std::atomic<int64_t> fallbacks{0};
};

struct owner_forwarder_deps {
  storage::owner_directory_ptr directory;
  /// This instance: never forwarded to.
  std::string instance_id;
  std::string peer_token;
  /// For connecting to a peer and for its answer.
  std::chrono::milliseconds timeout{1000};
  std::shared_ptr<forwarding_stats> stats;
};

/// Whether an error of a forwarded request is the owner's answer about the
/// connection (passed on), rather than a reason to serve it here.
bool owner_answered(const caf::error& err);

struct owner_forwarder_state {
  using clock = std::chrono::steady_clock;
  struct waiting {
    connection_key key;
    bool force = false;
    caf::typed_response_promise<token_grant> promise;
    /// The request's whole budget ends here, connecting included.
    clock::time_point deadline;
  };
  owner_forwarder_deps deps;
  /// Connected peers, by token address.
  std::map<std::string, token_service_actor> peers;
  /// Requests waiting for a connection to a peer, by token address.
  std::map<std::string, std::vector<waiting>> connecting;
  /// Addresses with a connect outstanding at the middleman. Never a second
  /// one: a connect to a host that drops packets can block the middleman
  /// for the kernel's SYN timeout, and each one more would queue behind it.
  std::set<std::string> connect_in_flight;
  /// After a failed connect, requests for that owner are served here
  /// without trying again until then.
  std::map<std::string, clock::time_point> unreachable_until;
  /// Peers that refused our peer token (warned about once each).
  std::set<caf::actor_addr> refused_by;
  static inline const char* name = "owner-forwarder";
};

owner_forwarder_actor::behavior_type
owner_forwarder(owner_forwarder_actor::stateful_pointer<owner_forwarder_state> self,
                owner_forwarder_deps deps);

} // namespace cm

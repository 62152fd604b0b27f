// For other CAF programs: fetch a valid token from a running
// connector-manager by actor message.
//
//   cm::actor_config cfg;                 // registers the message types
//   cfg.load<caf::io::middleman>();
//   caf::actor_system sys{cfg};
//   auto service = cm::client::connect(sys, "127.0.0.1", 8081);
//   auto grant = cm::client::fetch_token(sys, *service, token,
//                                        {"acme", "alice", "github"});
//   if (grant) use(grant->access_token.reveal());
//
// The service token is checked exactly as the X-Services-Token header is,
// and needs scope FETCH_CONFIG.
#pragma once

#include <chrono>
#include <string>

#include <caf/actor_system.hpp>
#include <caf/expected.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/token_service_actor.hpp"

namespace cm::client {

/// Connects to the published token service.
inline caf::expected<token_service_actor> connect(caf::actor_system& sys, const std::string& host,
                                                  uint16_t port) {
  return sys.middleman().remote_actor<token_service_actor>(host, port);
}

/// Requests a token; blocks the calling thread for at most `timeout`.
inline caf::expected<token_grant> fetch_token(caf::actor_system& sys,
                                              const token_service_actor& service,
                                              const std::string& service_token,
                                              const connection_key& key,
                                              std::chrono::milliseconds timeout =
                                                std::chrono::seconds(10)) {
  caf::scoped_actor self{sys};
  caf::expected<token_grant> result = caf::sec::request_timeout;
  self->request(service, timeout, get_token_atom_v, service_token, key)
    .receive([&](token_grant& grant) { result = std::move(grant); },
             [&](caf::error& err) { result = std::move(err); });
  return result;
}

} // namespace cm::client

// A separate CAF program that asks a running connector-manager for a token
// by actor message, as an internal service would, using client/token_client.hpp.
//
//   token_client_example HOST PORT TEAM USER PROVIDER   (service token on stdin)
//
// Prints the token's JSON on success (exit 0), or the error (exit 1).
#include <iostream>
#include <iterator>

#include "actors/actor_config.hpp"
#include "client/token_client.hpp"
#include "common/error.hpp"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: token_client_example HOST PORT TEAM USER PROVIDER\n";
    return 2;
  }
  std::string service_token{std::istreambuf_iterator<char>(std::cin),
                            std::istreambuf_iterator<char>()};
  while (!service_token.empty() && (service_token.back() == '\n' || service_token.back() == '\r'))
    service_token.pop_back();
  cm::actor_config cfg;
  caf::actor_system sys{cfg};
  auto service = cm::client::connect(sys, argv[1], static_cast<uint16_t>(std::stoi(argv[2])));
  if (!service) {
    std::cout << "{\"error\":\"cannot connect\"}\n";
    return 1;
  }
  auto grant = cm::client::fetch_token(sys, *service, service_token, {argv[3], argv[4], argv[5]});
  if (!grant) {
    nlohmann::json out = {{"error", cm::to_string(cm::code_of(grant.error()))},
                          {"message", cm::message_of(grant.error())}};
    std::cout << out.dump() << "\n";
    return 1;
  }
  nlohmann::json out = {{"access_token", grant->access_token.reveal()},
                        {"token_type", grant->token_type},
                        {"expires_at_ms", grant->expires_at_ms}};
  std::cout << out.dump() << "\n";
  return 0;
}

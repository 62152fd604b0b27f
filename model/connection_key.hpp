// The key that names one connection: a user's grant for one provider in one
// team. Every layer uses it (routes, actors, storage, the token client).
#pragma once

#include <string>
#include <tuple>

#include <caf/meta/type_name.hpp>

namespace cm {

struct connection_key {
  std::string team_id;
  std::string user_id;
  std::string provider;

  friend bool operator<(const connection_key& a, const connection_key& b) {
    return std::tie(a.team_id, a.user_id, a.provider) <
           std::tie(b.team_id, b.user_id, b.provider);
  }
  friend bool operator==(const connection_key& a, const connection_key& b) {
    return a.team_id == b.team_id && a.user_id == b.user_id && a.provider == b.provider;
  }
  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, connection_key& x) {
    return f(caf::meta::type_name("connection_key"), x.team_id, x.user_id, x.provider);
  }
};

} // namespace cm

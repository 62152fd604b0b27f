#include "api/audit_trail.hpp"

namespace cm::api {

audit_entry audit_row(const call& c, const std::string& action, const std::string& target,
                      const nlohmann::json& details) {
  return storage::audit_row(c.who.team.empty() ? std::string("_service") : c.who.team,
                            {c.who.is_service() ? "service" : "user", c.who.subject}, action,
                            target, c.ex->req().remote_address, c.ex->req().request_id, details);
}

} // namespace cm::api

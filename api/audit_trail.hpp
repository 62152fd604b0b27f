// The audit row of what the caller of a request did (storage/audit_rows.hpp
// builds every row): the caller's team (services act for no team:
// "_service"), its kind and name, the address and request id.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "api/route_call.hpp"
#include "storage/audit_rows.hpp"

namespace cm::api {

audit_entry audit_row(const call& c, const std::string& action, const std::string& target,
                      const nlohmann::json& details = nlohmann::json::object());

} // namespace cm::api

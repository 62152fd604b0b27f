#include "storage/audit_rows.hpp"

namespace cm::storage {

audit_entry audit_row(std::string team_id, audit_actor actor, std::string action,
                      std::string target, std::string remote_addr, std::string request_id,
                      const nlohmann::json& details) {
  audit_entry e;
  e.team_id = std::move(team_id);
  e.actor_type = std::move(actor.type);
  e.actor_id = std::move(actor.id);
  e.action = std::move(action);
  e.target = std::move(target);
  e.remote_addr = std::move(remote_addr);
  e.request_id = std::move(request_id);
  e.details = details.is_object() ? details.dump() : std::string("{}");
  return e;
}

audit_entry token_read_row(const std::string& service, const connection_key& key,
                           std::string remote_addr, std::string request_id, std::string_view via) {
  // Written for every token served: the details are spelled out rather
  // than built as a JSON document.
  audit_entry e;
  e.team_id = key.team_id;
  e.actor_type = "service";
  e.actor_id = service;
  e.action = "token.read";
  e.target = key.provider + "/" + key.user_id;
  e.remote_addr = std::move(remote_addr);
  e.request_id = std::move(request_id);
  e.details = std::string(R"({"via":")").append(via).append("\"}");
  return e;
}

audit_entry proxy_call_row(const std::string& service, const connection_key& key,
                           std::string remote_addr, std::string request_id,
                           const std::string& method, const std::string& path, int status,
                           int64_t duration_ms, const std::string& cut) {
  nlohmann::json details = {
    {"method", method}, {"path", path}, {"status", status}, {"duration_ms", duration_ms}};
  if (!cut.empty())
    details["cut"] = cut;
  return audit_row(key.team_id, {"service", service}, "proxy.call",
                   key.provider + "/" + key.user_id, std::move(remote_addr), std::move(request_id),
                   std::move(details));
}

} // namespace cm::storage

#include "http/json_body.hpp"

namespace cm::http {

bool parse_json_object(std::string_view body, nlohmann::json& out, std::string& problem) {
  int depth = 0;
  bool too_deep = false;
  // The callback sees every opening bracket before the parser recurses, so
  // a hostile body cannot exhaust the stack.
  auto limit = [&](int, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if (event == nlohmann::json::parse_event_t::object_start ||
        event == nlohmann::json::parse_event_t::array_start) {
      if (++depth > max_json_depth)
        too_deep = true;
    } else if (event == nlohmann::json::parse_event_t::object_end ||
               event == nlohmann::json::parse_event_t::array_end) {
      --depth;
    }
    return !too_deep;
  };
  try {
    out = nlohmann::json::parse(body.begin(), body.end(), limit, true, false);
  } catch (const nlohmann::json::exception&) {
    problem = too_deep ? "request body is nested too deeply" : "request body is not valid JSON";
    return false;
  }
  if (too_deep) {
    problem = "request body is nested too deeply";
    return false;
  }
  if (!out.is_object()) {
    problem = "request body must be a JSON object";
    return false;
  }
  return true;
}

} // namespace cm::http

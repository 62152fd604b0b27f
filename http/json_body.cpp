#include "http/json_body.hpp"

namespace cm::http {

namespace {

/// True when brackets outside strings nest deeper than `limit`. One pass,
/// no recursion, no allocation: a body of a million '[' costs a scan, not
/// the parser's stacks. The parser cannot go deeper than this count on any
/// prefix it accepts (it sees the same strings and brackets), so a body
/// that passes here stays within the limit however it is malformed.
bool nesting_exceeds(std::string_view body, int limit) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit)
        return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

} // namespace

bool parse_json_object(std::string_view body, nlohmann::json& out, std::string& problem) {
  if (nesting_exceeds(body, max_json_depth)) {
    problem = "request body is nested too deeply";
    return false;
  }
  // nlohmann's parser checks UTF-8 inside strings (and lone surrogates in
  // \u escapes); the exception text stays out of the answer.
  out = nlohmann::json::parse(body.begin(), body.end(), nullptr, false, false);
  if (out.is_discarded()) {
    problem = "request body is not valid JSON";
    return false;
  }
  if (!out.is_object()) {
    problem = "request body must be a JSON object";
    return false;
  }
  return true;
}

} // namespace cm::http

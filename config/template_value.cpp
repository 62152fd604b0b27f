#include "config/template_value.hpp"

#include <regex>

namespace cm::config {

namespace {

/// RFC 3986 §2.3: the characters that mean the same encoded or not, and
/// none of which delimits anything in a URL.
bool unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}

} // namespace

std::string template_value_shape_problem(std::string_view value) {
  // The length first: the pattern's matcher is what a long value breaks.
  if (value.empty() || value.size() > max_template_value_bytes)
    return "must be 1 to " + std::to_string(max_template_value_bytes) + " characters";
  if (value == "." || value == "..")
    return "must not be '.' or '..'";
  for (unsigned char c : value)
    if (!unreserved(c))
      return "may only contain letters, digits, '-', '.', '_' and '~'";
  return "";
}

std::string template_value_problem(const std::string& value, const std::string& pattern) {
  if (auto problem = template_value_shape_problem(value); !problem.empty())
    return problem;
  if (!pattern.empty() && !std::regex_match(value, std::regex{pattern}))
    return "does not match the expected format";
  return "";
}

} // namespace cm::config

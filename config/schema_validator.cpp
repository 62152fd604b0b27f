#include "config/schema_validator.hpp"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <regex>
#include <set>
#include <stdexcept>
#include <string_view>

namespace cm::config {

using nlohmann::json;

namespace {

/// A schema this validator cannot apply: an unsupported keyword or a keyword
/// of the wrong type. A fault of the schema, never of the value.
class schema_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

constexpr std::string_view annotation_keywords[] = {"$schema", "$id",    "title",
                                                   "description", "format", "writeOnly"};
constexpr std::string_view assertion_keywords[] = {
  "type",      "properties", "required", "additionalProperties", "enum",     "minLength",
  "maxLength", "pattern",    "minimum",  "maximum",              "items",    "maxItems",
  "uniqueItems"};

template <size_t N>
bool one_of(const std::string_view (&list)[N], std::string_view word) {
  return std::find(std::begin(list), std::end(list), word) != std::end(list);
}

/// The root has no field name; the routes validate request bodies.
std::string shown(const std::string& path) {
  return path.empty() ? "body" : path;
}

std::string child(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string element(const std::string& path, size_t index) {
  return shown(path) + "[" + std::to_string(index) + "]";
}

/// An unknown key is the only caller-chosen text an error repeats; a
/// megabyte-long key should not make a megabyte-long message. Cuts on a
/// UTF-8 boundary so the message stays valid JSON text.
std::string clipped_key(const std::string& key) {
  constexpr size_t limit = 64;
  if (key.size() <= limit)
    return key;
  size_t end = limit;
  while (end > 0 && (static_cast<unsigned char>(key[end]) & 0xC0) == 0x80)
    --end;
  return key.substr(0, end) + "...";
}

/// JSON Schema lengths count characters (code points); nlohmann holds UTF-8,
/// so count every byte that does not continue a sequence.
size_t code_points(const std::string& text) {
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

/// <0, 0 or >0 as `a` is below, equal to or above `b`. Integers compare
/// exactly (as doubles, values beyond 2^53 would round); anything with a
/// fraction compares as double.
int compare_numbers(const json& a, const json& b) {
  if (a.is_number_integer() && b.is_number_integer()) {
    auto negative = [](const json& n) {
      return !n.is_number_unsigned() && n.get<std::int64_t>() < 0;
    };
    bool a_negative = negative(a);
    bool b_negative = negative(b);
    if (a_negative != b_negative)
      return a_negative ? -1 : 1;
    if (a_negative) {
      auto x = a.get<std::int64_t>(), y = b.get<std::int64_t>();
      return (x > y) - (x < y);
    }
    auto x = a.get<std::uint64_t>(), y = b.get<std::uint64_t>();
    return (x > y) - (x < y);
  }
  auto x = a.get<double>(), y = b.get<double>();
  return (x > y) - (x < y);
}

bool has_type(const json& value, const std::string& type) {
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  if (type == "string") return value.is_string();
  // nlohmann keeps 5 and 5.0 apart; a boolean is never a number.
  if (type == "integer") return value.is_number_integer();
  if (type == "number") return value.is_number();
  if (type == "boolean") return value.is_boolean();
  if (type == "null") return value.is_null();
  throw schema_error("unknown type '" + type + "'");
}

std::string type_phrase(const std::string& type) {
  if (type == "object" || type == "array" || type == "integer")
    return "an " + type;
  if (type == "null")
    return "null";
  return "a " + type;
}

/// "a string", "a string or an integer", "a string, an integer or null".
std::string type_list_phrase(const std::vector<std::string>& types) {
  std::string text;
  for (size_t i = 0; i < types.size(); ++i) {
    if (i > 0)
      text += i + 1 == types.size() ? " or " : ", ";
    text += type_phrase(types[i]);
  }
  return text;
}

/// A non-negative integer keyword such as maxLength.
std::uint64_t count_keyword(const json& schema, const char* keyword, const std::string& path) {
  const auto& limit = schema.at(keyword);
  if (!limit.is_number_unsigned() && !(limit.is_number_integer() && limit.get<std::int64_t>() >= 0))
    throw schema_error(std::string(keyword) + " at " + shown(path) +
                       " must be a non-negative integer");
  return limit.get<std::uint64_t>();
}

class validator {
public:
  explicit validator(std::string& error) : error_(error) {}

  bool check(const json& schema, const json& value, const std::string& path) {
    if (!schema.is_object())
      throw schema_error("the schema at " + shown(path) + " is not an object");
    for (auto& [keyword, argument] : schema.items()) {
      (void)argument;
      if (!one_of(annotation_keywords, keyword) && !one_of(assertion_keywords, keyword))
        throw schema_error("unsupported keyword '" + keyword + "' at " + shown(path));
    }
    if (schema.contains("type") && !check_type(schema["type"], value, path))
      return false;
    if (schema.contains("enum") && !check_enum(schema["enum"], value, path))
      return false;
    // The remaining keywords each apply to one kind of value only.
    if (value.is_object())
      return check_object(schema, value, path);
    if (value.is_array())
      return check_array(schema, value, path);
    if (value.is_string())
      return check_string(schema, value.get_ref<const std::string&>(), path);
    if (value.is_number())
      return check_number(schema, value, path);
    return true;
  }

private:
  bool fail(std::string message) {
    error_ = std::move(message);
    return false;
  }

  bool check_type(const json& type, const json& value, const std::string& path) {
    std::vector<std::string> types;
    if (type.is_string()) {
      types.push_back(type.get<std::string>());
    } else if (type.is_array() && !type.empty()) {
      for (auto& t : type) {
        if (!t.is_string())
          throw schema_error("type at " + shown(path) + " must name types");
        types.push_back(t.get<std::string>());
      }
    } else {
      throw schema_error("type at " + shown(path) + " must be a string or a list of strings");
    }
    for (auto& t : types)
      if (has_type(value, t))
        return true;
    return fail(shown(path) + " must be " + type_list_phrase(types));
  }

  bool check_enum(const json& allowed, const json& value, const std::string& path) {
    if (!allowed.is_array() || allowed.empty())
      throw schema_error("enum at " + shown(path) + " must be a non-empty list");
    for (auto& option : allowed)
      if (option == value)
        return true;
    // The allowed values come from the schema, so naming them is safe.
    std::string listed;
    for (auto& option : allowed)
      listed += (listed.empty() ? "" : ", ") +
                (option.is_string() ? option.get<std::string>() : option.dump());
    return fail(shown(path) + " must be one of: " + listed);
  }

  bool check_object(const json& schema, const json& value, const std::string& path) {
    static const json no_properties = json::object();
    const json& properties = schema.contains("properties") ? schema["properties"] : no_properties;
    if (!properties.is_object())
      throw schema_error("properties at " + shown(path) + " must be an object");

    // Unknown fields first: a misspelt key (baseURL) also explains why a
    // required one (baseUrl) is missing, and is the more useful report.
    if (schema.contains("additionalProperties")) {
      const auto& additional = schema["additionalProperties"];
      if (!additional.is_boolean())
        throw schema_error("additionalProperties at " + shown(path) + " must be true or false");
      if (!additional.get<bool>())
        for (auto& [key, item] : value.items()) {
          (void)item;
          if (!properties.contains(key))
            return fail("unknown field " + child(path, clipped_key(key)));
        }
    }

    if (schema.contains("required")) {
      const auto& required = schema["required"];
      if (!required.is_array())
        throw schema_error("required at " + shown(path) + " must be a list");
      for (auto& name : required) {
        if (!name.is_string())
          throw schema_error("required at " + shown(path) + " must name fields");
        if (!value.contains(name.get<std::string>()))
          return fail(child(path, name.get<std::string>()) + " is required");
      }
    }

    for (auto& [name, subschema] : properties.items()) {
      auto it = value.find(name);
      if (it != value.end() && !check(subschema, *it, child(path, name)))
        return false;
    }
    return true;
  }

  bool check_array(const json& schema, const json& value, const std::string& path) {
    // The count first: it bounds the work the other checks do.
    if (schema.contains("maxItems")) {
      auto limit = count_keyword(schema, "maxItems", path);
      if (value.size() > limit)
        return fail(shown(path) + " must have at most " + std::to_string(limit) + " items");
    }
    if (schema.contains("items"))
      for (size_t i = 0; i < value.size(); ++i)
        if (!check(schema["items"], value[i], element(path, i)))
          return false;
    if (schema.contains("uniqueItems")) {
      const auto& unique = schema["uniqueItems"];
      if (!unique.is_boolean())
        throw schema_error("uniqueItems at " + shown(path) + " must be true or false");
      if (unique.get<bool>()) {
        // nlohmann orders 1 and 1.0 as equal, as JSON Schema wants.
        std::set<json> seen;
        for (size_t i = 0; i < value.size(); ++i)
          if (!seen.insert(value[i]).second)
            return fail(element(path, i) + " repeats an earlier item");
      }
    }
    return true;
  }

  bool check_string(const json& schema, const std::string& value, const std::string& path) {
    // Lengths before the pattern: libstdc++'s regex matcher recurses per
    // character, and the length bound keeps what it sees short.
    if (schema.contains("minLength")) {
      auto limit = count_keyword(schema, "minLength", path);
      if (code_points(value) < limit)
        return fail(shown(path) + " must be at least " + std::to_string(limit) +
                    (limit == 1 ? " character long" : " characters long"));
    }
    if (schema.contains("maxLength")) {
      auto limit = count_keyword(schema, "maxLength", path);
      if (code_points(value) > limit)
        return fail(shown(path) + " must be at most " + std::to_string(limit) +
                    (limit == 1 ? " character long" : " characters long"));
    }
    if (schema.contains("pattern")) {
      const auto& pattern = schema["pattern"];
      if (!pattern.is_string())
        throw schema_error("pattern at " + shown(path) + " must be a string");
      std::regex re;
      try {
        re.assign(pattern.get<std::string>(), std::regex::ECMAScript);
      } catch (const std::regex_error&) {
        throw schema_error("pattern at " + shown(path) + " is not a valid regular expression");
      }
      // JSON Schema patterns are unanchored: search, and let the pattern
      // carry ^ and $ where it means them.
      if (!std::regex_search(value, re))
        return fail(shown(path) + " must match the pattern " + pattern.get<std::string>());
    }
    return true;
  }

  bool check_number(const json& schema, const json& value, const std::string& path) {
    for (auto keyword : {"minimum", "maximum"})
      if (schema.contains(keyword) && !schema[keyword].is_number())
        throw schema_error(std::string(keyword) + " at " + shown(path) + " must be a number");
    if (schema.contains("minimum") && compare_numbers(value, schema["minimum"]) < 0)
      return fail(shown(path) + " must be at least " + schema["minimum"].dump());
    if (schema.contains("maximum") && compare_numbers(value, schema["maximum"]) > 0)
      return fail(shown(path) + " must be at most " + schema["maximum"].dump());
    return true;
  }

  std::string& error_;
};

} // namespace

bool validate_against_schema(const json& schema, const json& value, std::string& error) noexcept {
  try {
    std::string found;
    if (validator{found}.check(schema, value, "")) {
      error.clear();
      return true;
    }
    error = std::move(found);
  } catch (const schema_error& e) {
    error = std::string("invalid schema: ") + e.what();
  } catch (...) {
    // Whatever else went wrong is not the caller's fault either; its text
    // might quote the value, so it is not passed on.
    error = "invalid schema";
  }
  return false;
}

} // namespace cm::config

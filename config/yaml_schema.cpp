#include "config/yaml_schema.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>

namespace cm::config {

std::string join_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

std::string yaml_reader::where(const YAML::Node& node, const std::string& path) const {
  // A path set from the environment, or a child of one, has no position.
  for (auto& [prefix, env] : overrides_)
    if (path == prefix || path.rfind(prefix + ".", 0) == 0)
      return "environment variable " + env;
  auto mark = node.Mark();
  if (mark.is_null())
    return file_;
  return file_ + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

void yaml_reader::fail(const YAML::Node& node, const std::string& path,
                       const std::string& problem) const {
  throw config_error(where(node, path) + ": " + (path.empty() ? "" : "'" + path + "': ") + problem);
}

void yaml_reader::expect_map(const YAML::Node& map, const std::string& path) const {
  if (map && !map.IsNull() && !map.IsMap())
    fail(map, path, "expected a mapping");
}

void yaml_reader::expect_keys(const YAML::Node& map, const std::string& path,
                              std::initializer_list<std::string_view> allowed) const {
  expect_map(map, path);
  if (!map || map.IsNull())
    return;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->first.IsScalar())
      fail(it->first, path, "keys must be plain strings");
    auto key = it->first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string known;
      for (auto k : allowed)
        known += (known.empty() ? "" : ", ") + std::string(k);
      fail(it->first, join_path(path, key), "unknown key (known keys: " + known + ")");
    }
  }
}

std::string yaml_reader::get_string(const YAML::Node& map, const std::string& path,
                                    const std::string& key,
                                    const std::string& fallback) const {
  if (!map || !map.IsMap())
    return fallback;
  auto node = map[key];
  auto full = join_path(path, key);
  if (!node || node.IsNull())
    return fallback;
  if (!node.IsScalar())
    fail(node, full, "expected a string");
  return node.Scalar();
}

std::string yaml_reader::require_string(const YAML::Node& map, const std::string& path,
                                        const std::string& key) const {
  auto value = get_string(map, path, key, "");
  if (value.empty())
    fail(map ? map : YAML::Node{}, join_path(path, key), "required key is missing or empty");
  return value;
}

int64_t yaml_reader::get_int(const YAML::Node& map, const std::string& path,
                             const std::string& key, int64_t fallback, int64_t min,
                             int64_t max) const {
  if (!map || !map.IsMap())
    return fallback;
  auto node = map[key];
  auto full = join_path(path, key);
  if (!node || node.IsNull())
    return fallback;
  if (!node.IsScalar())
    fail(node, full, "expected an integer");
  const auto& text = node.Scalar();
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used, 10);
  } catch (const std::exception&) {
    fail(node, full, "expected an integer, got '" + text + "'");
  }
  if (used != text.size())
    fail(node, full, "expected an integer, got '" + text + "'");
  if (value < min || value > max)
    fail(node, full, "must be between " + std::to_string(min) + " and " + std::to_string(max));
  return value;
}

bool yaml_reader::get_bool(const YAML::Node& map, const std::string& path,
                           const std::string& key, bool fallback) const {
  if (!map || !map.IsMap())
    return fallback;
  auto node = map[key];
  if (!node || node.IsNull())
    return fallback;
  const auto& text = node.IsScalar() ? node.Scalar() : std::string{};
  if (text == "true") return true;
  if (text == "false") return false;
  fail(node, join_path(path, key), "expected true or false");
}

std::vector<std::string> yaml_reader::get_string_list(const YAML::Node& map,
                                                      const std::string& path,
                                                      const std::string& key) const {
  std::vector<std::string> result;
  if (!map || !map.IsMap())
    return result;
  auto node = map[key];
  auto full = join_path(path, key);
  if (!node || node.IsNull())
    return result;
  if (!node.IsSequence())
    fail(node, full, "expected a list of strings");
  for (size_t i = 0; i < node.size(); ++i) {
    if (!node[i].IsScalar())
      fail(node[i], full + "[" + std::to_string(i) + "]", "expected a string");
    result.push_back(node[i].Scalar());
  }
  return result;
}

std::map<std::string, std::string> yaml_reader::get_string_map(const YAML::Node& map,
                                                               const std::string& path,
                                                               const std::string& key) const {
  std::map<std::string, std::string> result;
  if (!map || !map.IsMap())
    return result;
  auto node = map[key];
  auto full = join_path(path, key);
  if (!node || node.IsNull())
    return result;
  if (!node.IsMap())
    fail(node, full, "expected a mapping of strings");
  for (auto it = node.begin(); it != node.end(); ++it) {
    auto k = it->first.Scalar();
    if (!it->second.IsScalar())
      fail(it->second, join_path(full, k), "expected a string");
    result[k] = it->second.Scalar();
  }
  return result;
}

YAML::Node parse_yaml(const std::string& text, const std::string& name) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    std::string where = name;
    if (!e.mark.is_null())
      where += ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1);
    throw config_error(where + ": " + e.msg);
  }
}

YAML::Node load_yaml_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw config_error(path + ": cannot open file");
  std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return parse_yaml(text, path);
}

} // namespace cm::config

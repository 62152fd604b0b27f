// Strict reading of YAML configuration: every key is known, every value has
// the expected type, and every complaint names file, line, column and key.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace cm::config {

/// A configuration problem; `what()` names where and what.
class config_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Reads typed values out of one parsed document and reports errors with
/// positions. Nodes set from environment variables have no position; the
/// reader names the variable instead.
class yaml_reader {
public:
  explicit yaml_reader(std::string file) : file_(std::move(file)) {}

  /// Records that `path` (e.g. "database.url") was set by variable `env`.
  void note_override(std::string path, std::string env) {
    overrides_[std::move(path)] = std::move(env);
  }

  /// "file:line:col" of a node, or "environment variable X".
  std::string where(const YAML::Node& node, const std::string& path) const;

  [[noreturn]] void fail(const YAML::Node& node, const std::string& path,
                         const std::string& problem) const;

  /// Requires a map (or an absent node) and rejects keys outside `allowed`.
  void expect_keys(const YAML::Node& map, const std::string& path,
                   std::initializer_list<std::string_view> allowed) const;
  void expect_map(const YAML::Node& map, const std::string& path) const;

  std::string get_string(const YAML::Node& map, const std::string& path,
                         const std::string& key, const std::string& fallback) const;
  std::string require_string(const YAML::Node& map, const std::string& path,
                             const std::string& key) const;
  int64_t get_int(const YAML::Node& map, const std::string& path,
                  const std::string& key, int64_t fallback, int64_t min,
                  int64_t max) const;
  bool get_bool(const YAML::Node& map, const std::string& path,
                const std::string& key, bool fallback) const;
  std::vector<std::string> get_string_list(const YAML::Node& map,
                                           const std::string& path,
                                           const std::string& key) const;
  std::map<std::string, std::string> get_string_map(const YAML::Node& map,
                                                    const std::string& path,
                                                    const std::string& key) const;

  const std::string& file() const { return file_; }

private:
  std::string file_;
  std::map<std::string, std::string> overrides_;
};

/// Parses text; syntax errors become config_error naming `name`, line and
/// column.
YAML::Node parse_yaml(const std::string& text, const std::string& name);

/// Parses a file, turning yaml-cpp's exceptions into config_error with the
/// position of the syntax error.
YAML::Node load_yaml_file(const std::string& path);

/// Joins a parent path and a key: ("", "a") -> "a", ("a", "b") -> "a.b".
std::string join_path(const std::string& parent, const std::string& key);

} // namespace cm::config

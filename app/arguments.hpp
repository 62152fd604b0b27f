// The parsed command line: a command (serve, connections, …), for the
// commands that have them a subcommand (connections list), then options.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace cm::app {

struct arguments {
  std::string command = "serve";
  /// "list" in `connections list`; empty for commands without one.
  std::string subcommand;
  /// `help connections list`: "list".
  std::string help_topic;
  std::map<std::string, std::string> options;
  std::vector<std::string> flags;
  bool has_flag(const std::string& f) const {
    return std::find(flags.begin(), flags.end(), f) != flags.end();
  }
  std::string option(const std::string& name, const std::string& fallback = "") const {
    auto it = options.find(name);
    return it == options.end() ? fallback : it->second;
  }
};

/// Commands whose second word is a subcommand ("help" takes the command
/// it explains there, and that command's subcommand in `help_topic`).
inline bool has_subcommands(const std::string& command) {
  return command == "connections" || command == "service-tokens" || command == "kafka" ||
         command == "help";
}

/// Fills `out`; false with `problem` set on an unknown or incomplete option.
bool parse_arguments(int argc, char** argv, arguments& out, std::string& problem);

} // namespace cm::app

// What `connector-manager --help` and `connector-manager COMMAND [SUB]
// --help` print.
#pragma once

#include <string>

namespace cm::app {

/// The help of `command` (and `subcommand`), or the program's overview for
/// an empty command; "" for a command that does not exist.
std::string help_for(const std::string& command, const std::string& subcommand);

} // namespace cm::app

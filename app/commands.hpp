// The command-line interface of the connector-manager executable.
#pragma once

namespace cm::app {

/// Runs a subcommand (serve, migrate, keygen, mint-token, hash-token,
/// check-config); returns the process exit code.
int run(int argc, char** argv, char** env);

} // namespace cm::app

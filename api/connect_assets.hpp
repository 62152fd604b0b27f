// The Connect page's files (web/connect), compiled into the binary by
// api/embed_connect_assets.cmake: the service serves them wherever it runs, and
// they always match the routes they call.
#pragma once

#include <string_view>
#include <vector>

namespace cm::api {

struct embedded_file {
  /// The file's name in web/connect, e.g. "sdk.js".
  std::string_view name;
  std::string_view content;
};

const std::vector<embedded_file>& connect_assets();

} // namespace cm::api

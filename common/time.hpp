// Wall-clock helpers: unix milliseconds and their RFC 3339 rendering.
#pragma once

#include <cstdint>
#include <string>

namespace cm {

int64_t unix_now_ms();

/// "2026-11-21T22:10:00.123Z".
std::string rfc3339(int64_t unix_ms);

/// Unix milliseconds of what rfc3339() writes ("…T…Z", with or without
/// milliseconds); -1 for anything else.
int64_t parse_rfc3339(const std::string& text);

} // namespace cm

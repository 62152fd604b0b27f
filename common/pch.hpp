// Precompiled header: the heavy third-party headers every translation unit of
// the project pulls in. Project headers do not belong here.
#pragma once
#include <caf/all.hpp>
#include <nlohmann/json.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

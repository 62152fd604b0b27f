// Routes about the service itself: health and the OpenAPI document.
#pragma once

#include <vector>

#include "api/route.hpp"
#include "http/server.hpp"

namespace cm {

std::vector<api::route> system_routes();

/// GET /metrics without a token, on the metrics-only listener
/// (metrics.port), which serves nothing else.
class metrics_lane : public http::fast_lane {
public:
  explicit metrics_lane(front_context_ptr ctx) : ctx_(std::move(ctx)) {}
  bool answer(const http::request& req, http::response& out, const char*& caller) override;
  const char* route() const override { return "/metrics"; }

private:
  front_context_ptr ctx_;
};

} // namespace cm

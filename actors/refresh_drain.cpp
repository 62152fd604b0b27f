#include "actors/refresh_drain.hpp"

#include <atomic>
#include <thread>

namespace cm {

namespace {

std::atomic<int64_t> in_progress{0};
std::atomic<bool> stopped{false};

} // namespace

counted_refresh_flag::~counted_refresh_flag() {
  *this = false;
}

counted_refresh_flag& counted_refresh_flag::operator=(bool on) {
  if (on != on_)
    in_progress.fetch_add(on ? 1 : -1, std::memory_order_acq_rel);
  on_ = on;
  return *this;
}

int64_t refreshes_in_progress() {
  return in_progress.load(std::memory_order_acquire);
}

void stop_starting_refreshes() {
  stopped.store(true, std::memory_order_release);
}

bool refreshes_stopped() {
  return stopped.load(std::memory_order_acquire);
}

drain_result drain_refreshes(std::chrono::milliseconds grace) {
  stop_starting_refreshes();
  drain_result out;
  out.in_progress_at_start = refreshes_in_progress();
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + grace;
  // Polled: the count changes on actor threads, and shutdown is rare
  // enough that 5 ms of latency costs nothing.
  while (refreshes_in_progress() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  out.left = refreshes_in_progress();
  out.waited = std::chrono::duration_cast<std::chrono::milliseconds>(
    std::chrono::steady_clock::now() - start);
  return out;
}

} // namespace cm

// stripe-stateful-mock, a third-party Stripe emulator (npm, pinned in
// tests/e2e), on a free loopback port, for the tests that talk to "Stripe".
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "tests/support/child_process.hpp"
#include "tests/support/test_env.hpp"

namespace cm::test {

class stripe_mock {
public:
  /// Starts it and waits until it serves; throws std::runtime_error (with
  /// its output) when it does not, or when `npm ci` never ran in tests/e2e.
  stripe_mock();
  uint16_t port() const { return port_; }
  /// "http://127.0.0.1:<port>".
  std::string url() const;

private:
  temp_dir dir_;
  std::unique_ptr<child_process> child_;
  uint16_t port_ = 0;
};

} // namespace cm::test

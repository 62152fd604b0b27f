#include "tests/support/stripe_mock.hpp"

#include <stdexcept>

namespace cm::test {

stripe_mock::stripe_mock() {
  auto cli = source_dir() + "/tests/e2e/node_modules/stripe-stateful-mock/dist/cli.js";
  if (run_command("test -f " + cli) != 0)
    throw std::runtime_error("stripe-stateful-mock is missing: run `npm ci` in tests/e2e first");
  // A free port: bind, read it, release.
  port_ = static_cast<uint16_t>(std::stoi(command_output(
    std::string(CM_NODE_BINARY) +
    " -e \"const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log("
    "s.address().port);s.close()})\"")));
  child_ = std::make_unique<child_process>(std::vector<std::string>{CM_NODE_BINARY, cli},
                                           dir_.file("mock.log"),
                                           std::map<std::string, std::string>{
                                             {"PORT", std::to_string(port_)}});
  if (!child_->wait_for_line(
        [](const std::string& l) { return l.find("Server started") != std::string::npos; },
        std::chrono::seconds(20)))
    throw std::runtime_error("stripe-stateful-mock did not start: " + child_->output());
}

std::string stripe_mock::url() const { return "http://127.0.0.1:" + std::to_string(port_); }

} // namespace cm::test

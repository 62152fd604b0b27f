// The token service's port (issue 16): what a peer sends before it has
// proved a service token allocates next to nothing, and the port holds a
// bounded number of peers, dropping silent and slow ones
// (actors/token_port_gate.hpp). The service keeps serving by message and
// over HTTP meanwhile.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "actors/token_port_gate.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/server_process.hpp"
#include "tests/support/token_world.hpp"

using namespace cm;
using namespace cm::test;
using namespace std::chrono_literals;

namespace {

/// A 32-byte BASP header as CAF writes it (network byte order).
std::string basp_header(uint8_t operation, uint32_t payload_len) {
  std::string h(32, '\0');
  h[0] = static_cast<char>(operation);
  for (int i = 0; i < 4; ++i)
    h[4 + i] = static_cast<char>((payload_len >> (24 - 8 * i)) & 0xff);
  return h;
}

constexpr uint8_t client_handshake = 1;
constexpr uint8_t heartbeat = 6;

// -- the header check ---------------------------------------------------------

TEST(TokenPort, TheHeaderCheckFollowsMessagesAcrossChunksAndRefusesLongOnes) {
  basp_stream_check check{1024};
  auto first = basp_header(client_handshake, 10) + std::string(10, 'x');
  // Fed a byte at a time: the header is judged once its 32 bytes are in.
  for (char c : first)
    ASSERT_EQ(check.feed(std::string_view(&c, 1)), basp_stream_check::verdict::ok);
  EXPECT_EQ(check.messages(), 1u);
  EXPECT_FALSE(check.mid_message());
  // A heartbeat (no payload) and half of the next header.
  auto next = basp_header(heartbeat, 0) + basp_header(2, 1024).substr(0, 16);
  EXPECT_EQ(check.feed(next), basp_stream_check::verdict::ok);
  EXPECT_EQ(check.messages(), 2u);
  EXPECT_TRUE(check.mid_message());
  EXPECT_EQ(check.feed(basp_header(2, 1024).substr(16) + std::string(1024, 'y')),
            basp_stream_check::verdict::ok);
  EXPECT_EQ(check.messages(), 3u);
  EXPECT_EQ(check.feed(basp_header(2, 1025)), basp_stream_check::verdict::oversized);

  basp_stream_check giant{65536};
  EXPECT_EQ(giant.feed(basp_header(client_handshake, 1u << 30)),
            basp_stream_check::verdict::oversized);
  basp_stream_check unknown{65536};
  EXPECT_EQ(unknown.feed(basp_header(7, 0)), basp_stream_check::verdict::malformed);
}

// -- against the server ---------------------------------------------------------

/// A raw TCP connection to the token port.
class raw_peer {
public:
  explicit raw_peer(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("cannot connect to the token port");
  }
  ~raw_peer() { ::close(fd_); }
  raw_peer(const raw_peer&) = delete;
  raw_peer& operator=(const raw_peer&) = delete;

  void send(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }

  /// Reads until the server closes the connection or `within` passes;
  /// true when it closed. Counts what it read.
  bool closed_within(std::chrono::milliseconds within) {
    auto deadline = std::chrono::steady_clock::now() + within;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        continue;
      char buf[4096];
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0)
        return true;
      received_ += static_cast<size_t>(n);
    }
  }

  /// Waits until the server's handshake (at least a header) has arrived.
  bool greeted(std::chrono::milliseconds within) {
    auto deadline = std::chrono::steady_clock::now() + within;
    while (received_ < 32 && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0)
        continue;
      char buf[4096];
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0)
        return false;
      received_ += static_cast<size_t>(n);
    }
    return received_ >= 32;
  }

  size_t received() const { return received_; }

private:
  int fd_ = -1;
  size_t received_ = 0;
};

/// The resident set of a process, in MiB (VmRSS in /proc/<pid>/status).
int64_t rss_mib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stoll(line.substr(6)) / 1024;
  return -1;
}

std::string fetch_by_message(const server_process& server, const std::string& token) {
  return command_output("echo '" + token + "' | " + std::string(CM_TOKEN_CLIENT_BINARY) +
                        " 127.0.0.1 " + std::to_string(server.token_service_port()) +
                        " acme alice github 2>/dev/null");
}

void expect_still_serving(const server_process& server) {
  auto by_message = nlohmann::json::parse(fetch_by_message(server, world_service_token), nullptr,
                                          false);
  EXPECT_EQ(by_message.value("access_token", ""), "at-seed-alice") << by_message.dump();
  auto over_http = http_call(server.port(), "GET",
                             "/api/internal/tokens/github?user_id=alice&team_id=acme",
                             {{"X-Services-Token", world_service_token}});
  EXPECT_EQ(over_http.status, 200) << over_http.body;
}

} // namespace

// Three peers announce 1 GiB payloads before proving anything: CAF alone
// allocated and zeroed 1 GiB for each (RSS 24 MiB -> 2.7 GiB). The gate
// closes them at the header.
TEST(TokenPort, HugeMessageHeadersAllocateNothingAndTheServiceKeepsServing) {
  token_world w;
  w.seed("alice", 3600'000);
  server_process server{w.options()};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  expect_still_serving(server);
  auto before = rss_mib(server.pid());
  ASSERT_GT(before, 0);
  std::vector<std::unique_ptr<raw_peer>> peers;
  for (int i = 0; i < 3; ++i) {
    peers.push_back(std::make_unique<raw_peer>(server.token_service_port()));
    peers.back()->send(basp_header(client_handshake, 1u << 30));
  }
  int closed = 0;
  for (auto& p : peers)
    closed += p->closed_within(3s) ? 1 : 0;
  // Whatever was allocated is resident by now (CAF zeroes its buffer).
  auto after = rss_mib(server.pid());
  report_figure("token port: RSS after three 1 GiB BASP headers",
                std::to_string(before) + " MiB -> " + std::to_string(after) + " MiB");
  EXPECT_LT(after - before, 100) << "MiB of growth";
  EXPECT_EQ(closed, 3) << "each peer is closed at its header";
  expect_still_serving(server);
  EXPECT_NE(server.log().find("announced a message larger than max_message_bytes"),
            std::string::npos);
}

TEST(TokenPort, PeersBeyondTheLimitAndSilentSlowOrIdlePeersAreDropped) {
  token_world w;
  w.seed("alice", 3600'000);
  auto o = w.options();
  o.token_service_yaml = "  max_peers: 3\n  handshake_timeout_ms: 4000\n"
                         "  stall_timeout_ms: 500\n  idle_timeout_ms: 1000\n";
  server_process server{o};
  ASSERT_TRUE(server.wait_ready()) << server.log();
  auto port = server.token_service_port();

  // Three silent peers fill the port: a fourth is closed at once, before
  // the server says anything.
  std::vector<std::unique_ptr<raw_peer>> silent;
  for (int i = 0; i < 3; ++i) {
    silent.push_back(std::make_unique<raw_peer>(port));
    ASSERT_TRUE(silent.back()->greeted(3s)) << "accepted peers get the server's handshake";
  }
  raw_peer fourth{port};
  EXPECT_TRUE(fourth.closed_within(2s));
  EXPECT_EQ(fourth.received(), 0u);
  // Silent peers are dropped once the handshake time is over, which frees
  // their places.
  for (auto& p : silent)
    EXPECT_TRUE(p->closed_within(8s)) << "a peer that never sent its handshake";
  silent.clear();

  // Half a header, then nothing: dropped after stall_timeout_ms, well
  // before the handshake time.
  raw_peer slow{port};
  ASSERT_TRUE(slow.greeted(3s));
  slow.send(basp_header(heartbeat, 0).substr(0, 10));
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(slow.closed_within(3500ms)) << "a peer that stalls mid-message";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3500ms);

  // A complete message, then silence: dropped after idle_timeout_ms; a peer
  // that keeps sending heartbeats stays.
  raw_peer idle{port}, lively{port};
  ASSERT_TRUE(idle.greeted(3s));
  ASSERT_TRUE(lively.greeted(3s));
  idle.send(basp_header(heartbeat, 0));
  lively.send(basp_header(heartbeat, 0));
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(400ms);
    lively.send(basp_header(heartbeat, 0));
  }
  EXPECT_TRUE(idle.closed_within(2s)) << "a peer silent past idle_timeout_ms";
  EXPECT_FALSE(lively.closed_within(100ms)) << "a peer that keeps talking";

  expect_still_serving(server);
  auto log = server.log();
  for (auto reason : {"max_peers connected", "did not send its handshake in time",
                      "did not finish a message in time", "sent nothing for idle_timeout_ms"})
    EXPECT_NE(log.find(reason), std::string::npos) << reason;
}

// The parts the token route is served from (issue 18), each on its own:
// the token board's fences, the team lookup cache's generations, the audit
// queue's bound and hand-over, and the access line's shape.
#include <cstdio>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/token_board.hpp"
#include "common/log.hpp"
#include "storage/audit_queue.hpp"
#include "storage/team_lookup_cache.hpp"

using namespace cm;
using namespace std::chrono_literals;

namespace {

served_token_ptr snapshot(const std::string& token, int64_t until_ms) {
  auto s = std::make_shared<served_token>();
  s->grant.access_token = secret{token};
  s->serve_until_ms = until_ms;
  return s;
}

audit_entry row(const std::string& id) {
  audit_entry e;
  e.team_id = "acme";
  e.actor_type = "service";
  e.actor_id = "reporting";
  e.action = "token.read";
  e.request_id = id;
  return e;
}

} // namespace

TEST(TokenBoard, APublicationReadBeforeAHoldIsRefusedAndTheHeldSnapshotIsMarked) {
  token_board board;
  connection_key key{"acme", "alice", "github"};
  auto fence = board.fence(key);
  auto old = snapshot("at-old", 2000);
  ASSERT_TRUE(board.publish(key, old, fence));
  EXPECT_EQ(board.serve(key, 1999), old);
  EXPECT_EQ(board.serve(key, 2000), nullptr) << "served up to, not at, its end";
  // A writer holds the key: the snapshot goes, whoever kept it sees so,
  // and a view read under the old fence cannot come back.
  board.hold(key);
  EXPECT_TRUE(old->withdrawn.load());
  EXPECT_EQ(board.serve(key, 1000), nullptr);
  EXPECT_FALSE(board.publish(key, snapshot("at-old-again", 2000), fence));
  EXPECT_EQ(board.serve(key, 1000), nullptr);
  // Read again under the new fence: accepted.
  auto fresh = snapshot("at-new", 5000);
  EXPECT_TRUE(board.publish(key, fresh, board.fence(key)));
  EXPECT_EQ(board.serve(key, 1000), fresh);
  EXPECT_EQ(board.size(), 1u);
  board.withdraw(key);
  EXPECT_TRUE(fresh->withdrawn.load());
  EXPECT_EQ(board.size(), 0u);
}

TEST(TokenBoard, KeysThatShareTextsDoNotShareSnapshots) {
  token_board board;
  // Plain concatenation would make these one key.
  connection_key a{"ab", "c", "github"};
  connection_key b{"a", "bc", "github"};
  ASSERT_TRUE(board.publish(a, snapshot("at-a", 9000), board.fence(a)));
  EXPECT_EQ(board.serve(b, 1), nullptr);
  EXPECT_NE(board.serve(a, 1), nullptr);
}

TEST(TokenBoard, RendersTheBodyOnceForAllReaders) {
  auto s = snapshot("at-1", 9000);
  int renders = 0;
  auto render = [&](const token_grant& g) {
    ++renders;
    return "{\"access_token\":\"" + g.access_token.reveal() + "\"}";
  };
  std::thread other([&] { EXPECT_EQ(s->body(render), "{\"access_token\":\"at-1\"}"); });
  EXPECT_EQ(s->body(render), "{\"access_token\":\"at-1\"}");
  other.join();
  EXPECT_EQ(s->body(render), "{\"access_token\":\"at-1\"}");
  EXPECT_EQ(renders, 1);
}

TEST(TeamLookupCache, AnAnswerReadBeforeAForgetIsNotKept) {
  storage::team_lookup_cache cache{60s, 10};
  auto now = storage::team_lookup_cache::clock::now();
  auto seen = cache.generation();
  // A connect in another team commits while the lookup is in flight.
  cache.forget("alice", "github");
  cache.store("alice", "github", {"acme"}, seen, now);
  EXPECT_FALSE(cache.find("alice", "github", now)) << "the stale answer was kept";
  cache.store("alice", "github", {"acme", "globex"}, cache.generation(), now);
  ASSERT_TRUE(cache.find("alice", "github", now));
  EXPECT_EQ(cache.find("alice", "github", now)->size(), 2u);
  EXPECT_FALSE(cache.find("alice", "github", now + 60s)) << "aged out";
  EXPECT_FALSE(cache.find("alice", "stripe", now));
  cache.forget("alice", "github");
  EXPECT_FALSE(cache.find("alice", "github", now));
}

TEST(TeamLookupCache, StaysWithinItsCapacity) {
  storage::team_lookup_cache cache{60s, 3};
  auto now = storage::team_lookup_cache::clock::now();
  for (int i = 0; i < 4; ++i)
    cache.store("user-" + std::to_string(i), "github", {"acme"}, cache.generation(), now);
  int kept = 0;
  for (int i = 0; i < 4; ++i)
    kept += cache.find("user-" + std::to_string(i), "github", now) ? 1 : 0;
  EXPECT_LE(kept, 3);
  EXPECT_TRUE(cache.find("user-3", "github", now)) << "the newest is kept";
}

TEST(AuditQueue, RefusesTokenReadsWhenFullButNeverDropsWhatItTook) {
  storage::audit_queue queue{3};
  EXPECT_EQ(queue.try_push(row("r1")), storage::audit_queue::pushed::queued_wake);
  EXPECT_EQ(queue.try_push(row("r2")), storage::audit_queue::pushed::queued);
  EXPECT_EQ(queue.try_push(row("r3")), storage::audit_queue::pushed::queued);
  EXPECT_EQ(queue.try_push(row("r4")), storage::audit_queue::pushed::full);
  EXPECT_EQ(queue.refused(), 1);
  // A change already made is recorded whatever the queue holds.
  EXPECT_EQ(queue.push(row("change")), storage::audit_queue::pushed::queued);
  // Taken rows still count until written: the database is away.
  auto batch = queue.take(10);
  ASSERT_EQ(batch.size(), 4u);
  EXPECT_EQ(queue.size(), 4u);
  EXPECT_EQ(queue.try_push(row("r5")), storage::audit_queue::pushed::full);
  queue.put_back(std::move(batch));
  batch = queue.take(2);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].request_id, "r1") << "put back first in line, in order";
  EXPECT_EQ(batch[1].request_id, "r2");
  queue.written(batch.size());
  EXPECT_EQ(queue.size(), 2u);
  EXPECT_EQ(queue.written_total(), 2);
  EXPECT_TRUE(queue.keep_writing()) << "rows wait: the writer stays awake";
  batch = queue.take(10);
  queue.written(batch.size());
  EXPECT_FALSE(queue.keep_writing()) << "empty: the writer sleeps";
  EXPECT_EQ(queue.try_push(row("r6")), storage::audit_queue::pushed::queued_wake)
    << "the first row after that wakes it";
}

TEST(Log, TheAccessLineIsOneJsonObjectWithTheDurationAndNoQuery) {
  std::FILE* capture = std::tmpfile();
  log::set_sink(capture);
  log::request_done({"0123456789abcdef", "GET", "/api/internal/tokens/\"github\"\n", 200, 1.2345,
                     "service", "", ""});
  log::request_done({"req-2", "POST", "/x", 409, 0.5, "user", "needs_reauth",
                     "4bf92f3577b34da6a3ce929d0e0e4736"});
  log::set_sink(nullptr);
  std::rewind(capture);
  char buf[4096];
  std::string text(buf, std::fread(buf, 1, sizeof buf, capture));
  std::fclose(capture);
  ASSERT_FALSE(text.empty());
  ASSERT_EQ(text.back(), '\n');
  auto newline = text.find('\n');
  auto second = nlohmann::json::parse(text.substr(newline + 1));
  text.resize(newline + 1);
  auto line = nlohmann::json::parse(text);
  EXPECT_FALSE(line.contains("error")) << "a success names no error";
  EXPECT_FALSE(line.contains("trace_id"));
  EXPECT_EQ(second["error"], "needs_reauth");
  EXPECT_EQ(second["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(second["status"], 409);
  EXPECT_EQ(second["caller"], "user");
  EXPECT_EQ(line["msg"], "request done");
  EXPECT_EQ(line["path"], "/api/internal/tokens/\"github\"\n");
  EXPECT_EQ(line["status"], 200);
  EXPECT_EQ(line["caller"], "service");
  EXPECT_DOUBLE_EQ(line["duration_ms"].get<double>(), 1.235);
  EXPECT_EQ(line["time"].get<std::string>().size(), 24u) << line["time"];
}

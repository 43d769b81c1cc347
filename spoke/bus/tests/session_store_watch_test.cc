// SessionStoreWatch on nats-server's own lines: the faulty ones below are
// copied from the site bus of a CI run (nats-server 2.9.10, `logtime:
// false`), the others are lines nats-server writes with text a client chose.
#include "spoke/bus/session_store_watch.h"

#include <gtest/gtest.h>

#include <string>

namespace canopy::spoke::bus {
namespace {

using namespace std::chrono_literals;
using Verdict = SessionStoreWatch::Verdict;

const std::string kPersist =
    R"([25417] [ERR] 127.0.0.1:46138 - mid:78 - "c-11" - unable to persist session "c-11" )"
    R"((seq=25): wrong last sequence: 0 (10071))";
const std::string kDelete =
    R"([25417] [ERR] 127.0.0.1:46112 - mid:75 - "c-40" - unable to delete session "c-40" )"
    R"(record at sequence 22)";

TEST(SessionStoreWatchTest, TheServersFaultLinesAreRecognised) {
  EXPECT_TRUE(SessionStoreWatch::is_session_store_fault(kPersist));
  EXPECT_TRUE(SessionStoreWatch::is_session_store_fault(kDelete));
  // A client id with spaces and quotes in it is still one id, twice
  // (nats-server 2.9 quotes ids Go's way, so its quote shows as \").
  EXPECT_TRUE(SessionStoreWatch::is_session_store_fault(
      R"([7] [ERR] 127.0.0.1:1 - mid:2 - "a\" b" - unable to delete session "a\" b" record at )"
      R"(sequence 3)"));
}

TEST(SessionStoreWatchTest, OtherLinesAreNot) {
  for (const std::string& line : {
           // Other errors of the same server, from the same run.
           std::string(R"([25417] [ERR] 127.0.0.1:50558 - mid:124 - "c-82" - authentication )"
                       R"(error - User "pump-1@acme")"),
           std::string(R"([25417] [ERR] 127.0.0.1:50558 - mid:124 - "c-82" - unable to )"
                       R"(connect: authentication error)"),
           std::string("[25417] [INF] Reloaded server configuration"),
           // The fault's text at another level, or cut short.
           std::string(R"([25417] [WRN] 127.0.0.1:46112 - mid:75 - "c-40" - unable to delete )"
                       R"(session "c-40" record at sequence 22)"),
           kDelete.substr(0, kDelete.size() - 3),
           kPersist.substr(0, kPersist.size() - 1),
           // Two different ids.
           std::string(R"([1] [ERR] 127.0.0.1:1 - mid:1 - "c-1" - unable to delete session )"
                       R"("c-2" record at sequence 22)"),
           std::string(""),
           std::string("["),
           std::string("[1] [ERR] "),
       }) {
    EXPECT_FALSE(SessionStoreWatch::is_session_store_fault(line)) << line;
  }
}

// A client that cannot log in still has its client id and user name in the
// log: neither can make a line look like the fault, because each is quoted
// and the fault's line ends in the server's own digits.
TEST(SessionStoreWatchTest, ClientChosenTextCannotForgeTheFault) {
  const std::string id = R"(x" - unable to delete session "x" record at sequence 1)";
  const std::string user = R"(u" (seq=1): wrong last sequence: 0 (10071))";
  for (const std::string& line : {
           R"([9] [ERR] 127.0.0.1:5 - mid:6 - ")" + id + R"(" - authentication error - User ")" +
               user + R"(")",
           R"([9] [ERR] 127.0.0.1:5 - mid:6 - ")" + id +
               R"(" - unable to connect: )"
               R"(authentication error)",
           R"([9] [ERR] 127.0.0.1:5 - mid:6 - "c" - authentication error - User ")" + id + "\"",
           // As nats-server 2.9.10 wrote it for such a client in
           // BusSupervisorTest.ClientChosenLogTextDoesNotRestartTheBus.
           std::string(R"([829] [ERR] 127.0.0.1:35006 - mid:7 - "x\" - unable to delete )"
                       R"(session \"x\" record at sequence 1" - authentication error - User )"
                       R"("u\" - unable to persist session \"u\" (seq=1): wrong last )"
                       R"x(sequence: 0 (10071)")x"),
       }) {
    EXPECT_FALSE(SessionStoreWatch::is_session_store_fault(line)) << line;
  }
  // And a long id costs time in proportion to its length, no more.
  const std::string long_id(16 * 1024, '"');
  EXPECT_FALSE(SessionStoreWatch::is_session_store_fault(
      "[9] [ERR] 127.0.0.1:5 - mid:6 - \"" + long_id + "\" - unable to delete session \"" +
      long_id + "\" record at sequence 1x"));
}

TEST(SessionStoreWatchTest, RestartsAfterTheThresholdWithinTheWindowOnly) {
  SessionStoreWatch w({.threshold = 3, .window = 30s, .cooldown = 300s});
  auto t = SessionStoreWatch::Clock::time_point{} + 1000s;
  EXPECT_EQ(w.note("[1] [INF] Server is ready", t), Verdict::kNone);
  EXPECT_EQ(w.note(kDelete, t), Verdict::kCounted);
  EXPECT_EQ(w.note(kDelete, t + 20s), Verdict::kCounted);
  // The first fault has left the window: two in it.
  EXPECT_EQ(w.note(kPersist, t + 31s), Verdict::kCounted);
  EXPECT_EQ(w.note(kPersist, t + 32s), Verdict::kRestart);
  EXPECT_EQ(w.faults(), 4u);
}

TEST(SessionStoreWatchTest, ARestartThatDidNotHelpIsNotRepeatedWithinTheCooldown) {
  SessionStoreWatch w({.threshold = 2, .window = 30s, .cooldown = 300s});
  auto t = SessionStoreWatch::Clock::time_point{} + 1000s;
  EXPECT_EQ(w.note(kDelete, t), Verdict::kCounted);
  EXPECT_EQ(w.note(kDelete, t + 1s), Verdict::kRestart);
  // Still failing after the restart: said once, then only counted.
  EXPECT_EQ(w.note(kDelete, t + 10s), Verdict::kCounted);
  EXPECT_EQ(w.note(kDelete, t + 11s), Verdict::kHeldBack);
  EXPECT_EQ(w.note(kDelete, t + 12s), Verdict::kCounted);
  EXPECT_EQ(w.suppressed(), 2u);
  // After the cooldown, a restart again once the threshold is reached.
  EXPECT_EQ(w.note(kDelete, t + 302s), Verdict::kCounted);
  EXPECT_EQ(w.note(kDelete, t + 303s), Verdict::kRestart);
  EXPECT_EQ(w.note(kDelete, t + 304s), Verdict::kCounted);
  EXPECT_EQ(w.note(kDelete, t + 305s), Verdict::kHeldBack);
}

}  // namespace
}  // namespace canopy::spoke::bus

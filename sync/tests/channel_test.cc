// SendChannel and RecvChannel (go-back-N) on their own: what is kept until
// acked, what an ack frees, and when messages are resent.
#include "sync/engine/channel.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace canopy::sync {
namespace {

TEST(SendChannelTest, AnAckFreesWhatItCoversAndKeepsTheRestInOrder) {
  SendChannel ch(/*window=*/4, /*rto_ms=*/1000);
  for (uint64_t seq = 1; seq <= 4; ++seq) {
    ASSERT_TRUE(ch.can_send());
    ch.sent(seq, std::string(seq, 'x'), 0);
  }
  EXPECT_FALSE(ch.can_send()) << "the window bounds what is kept";
  EXPECT_EQ(ch.in_flight(), 4u);
  EXPECT_EQ(ch.in_flight_bytes(), 1u + 2 + 3 + 4);

  std::vector<std::string> resend;
  ch.on_ack(2, false, 10, &resend);
  EXPECT_TRUE(resend.empty());
  EXPECT_EQ(ch.in_flight(), 2u);
  EXPECT_EQ(ch.in_flight_bytes(), 3u + 4);
  EXPECT_EQ(ch.acked(), 2u);
  EXPECT_TRUE(ch.can_send());

  // A timeout resends what is left, oldest first.
  ch.on_tick(10 + 1000, &resend);
  EXPECT_EQ(resend, (std::vector<std::string>{"xxx", "xxxx"}));

  resend.clear();
  ch.on_ack(4, false, 2000, &resend);
  EXPECT_TRUE(resend.empty());
  EXPECT_EQ(ch.in_flight(), 0u);
  EXPECT_EQ(ch.in_flight_bytes(), 0u);
  EXPECT_EQ(ch.next_timeout_ms(), UINT64_MAX) << "nothing awaits an ack";

  // Used again after everything was acked (its memory given back).
  ch.sent(5, "y", 3000);
  EXPECT_EQ(ch.in_flight(), 1u);
  EXPECT_EQ(ch.next_timeout_ms(), 3000u + 1000);
}

TEST(SendChannelTest, AGapOrAStaleAckResendsAtOnceButAtMostEvery100Ms) {
  SendChannel ch(16, 1000);
  ch.sent(1, "a", 0);
  ch.sent(2, "b", 0);
  ch.sent(3, "c", 0);
  std::vector<std::string> resend;
  ch.on_ack(1, /*gap=*/true, 200, &resend);
  EXPECT_TRUE(resend.empty()) << "progress: the ack itself restarts the clock";
  ch.on_ack(1, /*gap=*/true, 250, &resend);
  EXPECT_TRUE(resend.empty()) << "within 100 ms of the last send";
  ch.on_ack(1, /*gap=*/true, 300, &resend);
  EXPECT_EQ(resend, (std::vector<std::string>{"b", "c"}));
  resend.clear();
  // An old, duplicate ack frees nothing.
  ch.on_ack(0, false, 450, &resend);
  EXPECT_EQ(ch.in_flight(), 2u);
  EXPECT_EQ(resend, (std::vector<std::string>{"b", "c"})) << "behind what was sent: resend";
}

TEST(SendChannelTest, TheTimeoutDoublesUpToItsBoundAndResetsOnProgress) {
  SendChannel ch(16, 1000, /*max_rto_ms=*/3000);
  ch.sent(1, "a", 0);
  std::vector<std::string> resend;
  ch.on_tick(999, &resend);
  EXPECT_TRUE(resend.empty());
  ch.on_tick(1000, &resend);  // rto 1000 -> 2000
  EXPECT_EQ(resend.size(), 1u);
  EXPECT_EQ(ch.next_timeout_ms(), 1000u + 2000);
  ch.on_tick(3000, &resend);  // -> 3000 (the bound)
  EXPECT_EQ(ch.next_timeout_ms(), 3000u + 3000);
  ch.on_tick(6000, &resend);  // stays 3000
  EXPECT_EQ(ch.next_timeout_ms(), 6000u + 3000);
  ch.sent(2, "b", 6100);
  ch.on_ack(1, false, 6200, &resend);
  EXPECT_EQ(ch.next_timeout_ms(), 6200u + 1000) << "progress resets the timeout";
}

TEST(RecvChannelTest, AppliesOnlyTheNextSeq) {
  RecvChannel ch;
  EXPECT_EQ(ch.check(1), RecvChannel::Verdict::kApply);
  EXPECT_EQ(ch.check(2), RecvChannel::Verdict::kGap);
  ch.applied(1);
  EXPECT_EQ(ch.check(1), RecvChannel::Verdict::kDuplicate);
  EXPECT_EQ(ch.check(2), RecvChannel::Verdict::kApply);
  EXPECT_EQ(ch.last_applied(), 1u);
}

}  // namespace
}  // namespace canopy::sync

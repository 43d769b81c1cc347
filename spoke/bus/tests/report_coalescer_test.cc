// The leading-edge coalescer of reported twins, on its own (no I/O).
#include "spoke/bus/report_coalescer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace canopy::spoke::bus {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using Clock = ReportCoalescer::Clock;

const ReportCoalescer::Device kPump{"acme", "pump-1"};
const ReportCoalescer::Device kFan{"acme", "fan-1"};

TEST(ReportCoalescerTest, AReportAfterAQuietPeriodIsDueAtOnce) {
  ReportCoalescer c(1000ms);
  const auto t0 = Clock::now();
  EXPECT_FALSE(c.next_due().has_value());
  EXPECT_TRUE(c.add(kPump, json{{"temp", 21.5}}, 100));
  ASSERT_TRUE(c.next_due().has_value());
  EXPECT_LE(*c.next_due(), t0);  // due now, not at the end of an interval
  auto due = c.take_due(t0);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].device, kPump);
  ASSERT_EQ(due[0].fields.size(), 1u);
  EXPECT_EQ(due[0].fields.at("temp").first, json(21.5));
  EXPECT_EQ(due[0].fields.at("temp").second, 100u);
  EXPECT_EQ(c.pending(), 0u);
  EXPECT_FALSE(c.next_due().has_value());
}

TEST(ReportCoalescerTest, ABurstIsCoalescedToTheLatestValueAtTheIntervalsEnd) {
  ReportCoalescer c(1000ms);
  const auto t0 = Clock::now();
  ASSERT_TRUE(c.add(kPump, json{{"temp", 1}, {"door", "open"}}, 1));
  ASSERT_EQ(c.take_due(t0).size(), 1u);
  // 300 reports within the interval: the first makes the writer look again
  // (its due time is new), the others change nothing of it.
  EXPECT_TRUE(c.add(kPump, json{{"temp", 2}}, 2));
  for (int i = 3; i <= 300; ++i) {
    EXPECT_FALSE(c.add(kPump, json{{"temp", i}}, static_cast<uint64_t>(i)));
  }
  EXPECT_FALSE(c.add(kPump, json{{"door", "shut"}}, 301));
  ASSERT_TRUE(c.next_due().has_value());
  EXPECT_EQ(*c.next_due(), t0 + 1000ms);
  EXPECT_TRUE(c.take_due(t0 + 999ms).empty());
  auto due = c.take_due(t0 + 1000ms);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].fields.at("temp").first, json(300));
  EXPECT_EQ(due[0].fields.at("temp").second, 300u);
  EXPECT_EQ(due[0].fields.at("door").first, json("shut"));
  EXPECT_EQ(due[0].fields.at("door").second, 301u);
  EXPECT_EQ(c.pending(), 0u);
}

TEST(ReportCoalescerTest, AChattyDeviceIsWrittenAtMostOnceAnInterval) {
  ReportCoalescer c(100ms);
  const auto t0 = Clock::now();
  std::vector<Clock::time_point> writes;
  uint64_t last_written = 0;
  // A report every millisecond for 2 s, the writer taking what is due after each.
  for (int ms = 0; ms < 2000; ++ms) {
    const auto now = t0 + std::chrono::milliseconds(ms);
    c.add(kPump, json{{"n", ms}}, static_cast<uint64_t>(ms));
    for (auto& d : c.take_due(now)) {
      writes.push_back(now);
      last_written = d.fields.at("n").second;
    }
  }
  // The leading write, then one at the end of each interval: 20 in 2 s.
  EXPECT_LE(writes.size(), 21u);
  EXPECT_GE(writes.size(), 19u);
  for (size_t i = 1; i < writes.size(); ++i) {
    EXPECT_GE(writes[i] - writes[i - 1], 100ms) << "writes " << i - 1 << " and " << i;
  }
  // Nothing is lost: what is still pending is the latest.
  auto rest = c.take_all();
  if (!rest.empty()) last_written = rest[0].fields.at("n").second;
  EXPECT_EQ(last_written, 1999u);
}

TEST(ReportCoalescerTest, DevicesAreCoalescedApartAndQuietOnesForgotten) {
  ReportCoalescer c(1000ms);
  const auto t0 = Clock::now();
  ASSERT_TRUE(c.add(kPump, json{{"a", 1}}, 1));
  ASSERT_EQ(c.take_due(t0).size(), 1u);
  // The pump is inside its interval, the fan is not: the fan goes at once.
  EXPECT_TRUE(c.add(kPump, json{{"a", 2}}, 2));
  EXPECT_TRUE(c.add(kFan, json{{"b", 1}}, 3));
  auto due = c.take_due(t0 + 10ms);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].device, kFan);
  EXPECT_EQ(c.tracked(), 2u);
  due = c.take_due(t0 + 1000ms);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].device, kPump);
  // Both quiet for a whole interval after their last write: forgotten, and
  // the next report of either is due at once again.
  EXPECT_TRUE(c.take_due(t0 + 2000ms).empty());
  EXPECT_EQ(c.tracked(), 0u);
  EXPECT_TRUE(c.add(kPump, json{{"a", 3}}, 4));
  EXPECT_EQ(c.take_due(t0 + 2001ms).size(), 1u);
}

TEST(ReportCoalescerTest, TakeAllTakesWhatIsNotDueYet) {
  ReportCoalescer c(1000ms);
  const auto t0 = Clock::now();
  c.add(kPump, json{{"a", 1}}, 1);
  ASSERT_EQ(c.take_due(t0).size(), 1u);
  c.add(kPump, json{{"a", 2}}, 2);
  EXPECT_TRUE(c.take_due(t0 + 1ms).empty());
  auto all = c.take_all();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].fields.at("a").first, json(2));
  EXPECT_EQ(c.pending(), 0u);
}

TEST(ReportCoalescerTest, ManyDevicesAreTakenWhenEachIsDue) {
  ReportCoalescer c(1000ms);
  const auto t0 = Clock::now();
  constexpr int kDevices = 10'000;
  auto device = [](int i) { return ReportCoalescer::Device{"acme", "d-" + std::to_string(i)}; };
  for (int i = 0; i < kDevices; ++i) EXPECT_TRUE(c.add(device(i), json{{"n", i}}, 1));
  EXPECT_EQ(c.pending(), static_cast<size_t>(kDevices));
  EXPECT_EQ(c.take_due(t0).size(), static_cast<size_t>(kDevices));
  // Half report again 10 ms later: due at the end of their interval, not now.
  for (int i = 0; i < kDevices; i += 2) c.add(device(i), json{{"n", -i}}, 2);
  EXPECT_TRUE(c.take_due(t0 + 10ms).empty());
  EXPECT_EQ(*c.next_due(), t0 + 1000ms);
  auto due = c.take_due(t0 + 1000ms);
  ASSERT_EQ(due.size(), static_cast<size_t>(kDevices / 2));
  for (const auto& d : due) EXPECT_LE(d.fields.at("n").first.get<int>(), 0);
  // The other half, quiet since t0, are forgotten; the first half at t0 + 2 s.
  EXPECT_EQ(c.tracked(), static_cast<size_t>(kDevices / 2));
  EXPECT_TRUE(c.take_due(t0 + 2000ms).empty());
  EXPECT_EQ(c.tracked(), 0u);
}

}  // namespace
}  // namespace canopy::spoke::bus

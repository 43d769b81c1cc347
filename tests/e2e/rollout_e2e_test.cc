// A placement's rollout (docs/rollouts.md) with real nats-server, canopy-hub
// and canopy-spoke processes: with maxUnavailable 1, a new template revision
// reaches the sites one at a time, in site order, each only after the one
// before reported it applied; the hub's status shows the sites behind as
// progressing meanwhile; with waves [1], the first site alone, then the rest.
// (Failures pausing a rollout: rollout_controller_test.)
#include <algorithm>

#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

using RolloutE2ETest = E2ETest;

json rolling_placement(int max_unavailable) {
  json p = placement_by_region({"web"}, "eu");
  p["rollout"] = {{"maxUnavailable", max_unavailable}, {"maxFailures", 0}};
  return p;
}

TEST_F(RolloutE2ETest, ANewRevisionReachesTheSitesOneAtATime) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  std::vector<Spoke*> sites;
  for (const char* name : {"eu-1", "eu-2", "eu-3"}) {
    Spoke& s = create_spoke(name, {{"region", "eu"}});
    ASSERT_NO_FATAL_FAILURE(launch_spoke(s));
    sites.push_back(&s);
  }
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.25")).ok());
  ASSERT_TRUE(put("placement", "web-eu", rolling_placement(1)).ok());
  auto image_at = [&](Spoke* s) -> std::string {
    auto m = s->read();
    auto it = m.find(template_key("web"));
    if (it == m.end()) return "";
    return it->second.object["spec"]["template"]["spec"]["containers"][0].value("image", "");
  };
  // The first revision rolls out too: each site in turn.
  ASSERT_TRUE(wait_until(
      [&] {
        return std::all_of(sites.begin(), sites.end(),
                           [&](Spoke* s) { return image_at(s) == "nginx:1.25"; });
      },
      60s, kPoll))
      << "the first revision did not reach every site";

  // A new revision: note when each site switches.
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.27")).ok());
  std::map<std::string, std::chrono::steady_clock::time_point> switched;
  bool saw_progressing = false;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (switched.size() < sites.size() && std::chrono::steady_clock::now() < deadline) {
    for (Spoke* s : sites) {
      if (!switched.contains(s->site) && image_at(s) == "nginx:1.27") {
        switched[s->site] = std::chrono::steady_clock::now();
      }
    }
    // While the first site has it, the others are behind.
    if (switched.size() == 1) {
      auto st = get_status("web-eu");
      if (st && st->progressing() >= 1) saw_progressing = true;
    }
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(switched.size(), sites.size()) << "the rollout did not finish";
  EXPECT_LT(switched["eu-1"], switched["eu-2"]);
  EXPECT_LT(switched["eu-2"], switched["eu-3"]);
  // One at a time: the next release waits for the previous site's report and
  // the hub's next step (about a second), never two at once.
  EXPECT_GT(switched["eu-2"] - switched["eu-1"], 300ms);
  EXPECT_GT(switched["eu-3"] - switched["eu-2"], 300ms);
  EXPECT_TRUE(saw_progressing) << "status never showed the sites behind as progressing";
  ASSERT_TRUE(wait_until(
      [&] {
        auto st = get_status("web-eu");
        return st && st->applied() == 3 && st->progressing() == 0;
      },
      kTimeout, kPoll));
}

// Waves [1]: the first site (in name order) gets a new revision alone; the
// last wave, the other two, only once it reported the revision applied.
TEST_F(RolloutE2ETest, AWaveStartsWhenTheWaveBeforeItApplied) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  std::vector<Spoke*> sites;
  for (const char* name : {"eu-1", "eu-2", "eu-3"}) {
    Spoke& s = create_spoke(name, {{"region", "eu"}});
    ASSERT_NO_FATAL_FAILURE(launch_spoke(s));
    sites.push_back(&s);
  }
  json p = placement_by_region({"web"}, "eu");
  p["rollout"] = {{"waves", {1}}};
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.25")).ok());
  ASSERT_TRUE(put("placement", "web-eu", p).ok());
  auto image_at = [&](Spoke* s) -> std::string {
    auto m = s->read();
    auto it = m.find(template_key("web"));
    if (it == m.end()) return "";
    return it->second.object["spec"]["template"]["spec"]["containers"][0].value("image", "");
  };
  std::map<std::string, std::chrono::steady_clock::time_point> switched;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (switched.size() < sites.size() && std::chrono::steady_clock::now() < deadline) {
    for (Spoke* s : sites) {
      if (!switched.contains(s->site) && image_at(s) == "nginx:1.25") {
        switched[s->site] = std::chrono::steady_clock::now();
      }
    }
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(switched.size(), sites.size()) << "the rollout did not finish";
  EXPECT_GT(switched["eu-2"] - switched["eu-1"], 300ms) << "eu-2 did not wait for wave 1";
  EXPECT_GT(switched["eu-3"] - switched["eu-1"], 300ms) << "eu-3 did not wait for wave 1";
}

}  // namespace
}  // namespace canopy::e2e

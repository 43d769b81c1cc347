// A placement's rollout (docs/rollouts.md) with real nats-server, canopy-hub
// and canopy-spoke processes: with maxUnavailable 1, a new template revision
// reaches the sites one at a time, in site order, each only after the one
// before reported it applied; the hub's status shows the sites behind as
// progressing meanwhile; with waves [1], the first site alone, then the rest;
// a hold set with curl on a spoke's local API keeps new revisions from that
// site until it is removed, and a hold that runs out lets it through; a
// changed hub override rolls out only to the sites it applies to. (Failures pausing a rollout:
// rollout_controller_test.)
#include <algorithm>
#include <fstream>
#include <iterator>

#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

json rolling_placement(int max_unavailable) {
  json p = placement_by_region({"web"}, "eu");
  p["rollout"] = {{"maxUnavailable", max_unavailable}, {"maxFailures", 0}};
  return p;
}

class RolloutE2ETest : public E2ETest {
 protected:
  // A hub and three spokes labelled region=eu.
  std::vector<Spoke*> hub_and_three_eu_sites() {
    create_hub();
    launch_hub();
    std::vector<Spoke*> sites;
    for (const char* name : {"eu-1", "eu-2", "eu-3"}) {
      Spoke& s = create_spoke(name, {{"region", "eu"}});
      launch_spoke(s);
      sites.push_back(&s);
    }
    return sites;
  }
  // Template web at nginx:1.25 placed on `sites` under a rollout with
  // maxUnavailable `max_unavailable`, and applied by each of them.
  void web_applied_everywhere(const std::vector<Spoke*>& sites, int max_unavailable) {
    ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.25")).ok());
    ASSERT_TRUE(put("placement", "web-eu", rolling_placement(max_unavailable)).ok());
    ASSERT_TRUE(wait_until([&] { return all_at(sites, "nginx:1.25"); }, 60s, kPoll));
  }
  bool all_at(const std::vector<Spoke*>& sites, const char* image) {
    return std::all_of(sites.begin(), sites.end(), [&](Spoke* s) { return image_at(s) == image; });
  }
  // Waits until what the site wrote (a hold) reached the hub.
  void wait_in_sync(Spoke& s) { ASSERT_TRUE(wait_spoke_health(s, "in_sync", true)); }
  // The image of template web in the site's manifests directory ("" if none).
  std::string image_at(Spoke* s) {
    auto m = s->read();
    auto it = m.find(template_key("web"));
    if (it == m.end()) return "";
    return it->second.object["spec"]["template"]["spec"]["containers"][0].value("image", "");
  }
};

TEST_F(RolloutE2ETest, ANewRevisionReachesTheSitesOneAtATime) {
  const std::vector<Spoke*> sites = hub_and_three_eu_sites();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.25")).ok());
  ASSERT_TRUE(put("placement", "web-eu", rolling_placement(1)).ok());
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
  // One at a time: the next release waits for the previous site's report to
  // reach the hub, a rollout step, and the release's way down (about 250 ms
  // here); sites released together switch within a poll (50 ms) or two.
  EXPECT_GT(switched["eu-2"] - switched["eu-1"], 120ms);
  EXPECT_GT(switched["eu-3"] - switched["eu-2"], 120ms);
  EXPECT_TRUE(saw_progressing) << "status never showed the sites behind as progressing";
  ASSERT_TRUE(wait_until(
      [&] {
        auto st = get_status("web-eu");
        return st && st->applied() == 3 && st->progressing() == 0;
      },
      kTimeout, kPoll));
}

// A hub override is part of the revision at the sites it applies to: a new
// override on eu-2 and eu-3 reaches them one at a time, as a new template
// revision would, eu-1 keeps what it has, and the hub's status (which
// computes each site's revision as its spoke does) ends with all three
// applied and none progressing.
TEST_F(RolloutE2ETest, AChangedOverrideRollsOutOnlyWhereItApplies) {
  const std::vector<Spoke*> sites = hub_and_three_eu_sites();
  if (HasFatalFailure()) return;
  web_applied_everywhere(sites, 1);
  if (HasFatalFailure()) return;
  const json patch = {
      {"spec",
       {{"template",
         {{"spec",
           {{"containers", json::array({{{"name", "web"}, {"image", "nginx:1.27"}}})}}}}}}}};
  ASSERT_TRUE(
      put("override", "newer", {{"template", "web"}, {"sites", {"eu-2", "eu-3"}}, {"patch", patch}})
          .ok());
  std::map<std::string, std::chrono::steady_clock::time_point> switched;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (switched.size() < 2 && std::chrono::steady_clock::now() < deadline) {
    for (Spoke* s : sites) {
      if (!switched.contains(s->site) && image_at(s) == "nginx:1.27") {
        switched[s->site] = std::chrono::steady_clock::now();
      }
    }
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(switched.size(), 2u) << "the override did not reach eu-2 and eu-3";
  EXPECT_FALSE(switched.contains("eu-1"));
  EXPECT_EQ(image_at(sites[0]), "nginx:1.25");
  // One at a time: eu-3's release waited for eu-2's report.
  EXPECT_GT(switched["eu-3"] - switched["eu-2"], 120ms);
  ASSERT_TRUE(wait_until(
      [&] {
        auto st = get_status("web-eu");
        return st && st->applied() == 3 && st->progressing() == 0;
      },
      kTimeout, kPoll))
      << "the hub's revision of a site with the override differs from its spoke's";
}

// Waves [1]: the first site (in name order) gets a new revision alone; the
// last wave, the other two, only once it reported the revision applied.
TEST_F(RolloutE2ETest, AWaveStartsWhenTheWaveBeforeItApplied) {
  const std::vector<Spoke*> sites = hub_and_three_eu_sites();
  if (HasFatalFailure()) return;
  json p = placement_by_region({"web"}, "eu");
  p["rollout"] = {{"waves", {1}}};
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.25")).ok());
  ASSERT_TRUE(put("placement", "web-eu", p).ok());
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
  EXPECT_GT(switched["eu-2"] - switched["eu-1"], 120ms) << "eu-2 did not wait for wave 1";
  EXPECT_GT(switched["eu-3"] - switched["eu-1"], 120ms) << "eu-3 did not wait for wave 1";
  // The placement's status carries the rollout controller's record: the last
  // of two waves, every site applied.
  ASSERT_TRUE(wait_until(
      [&] {
        auto st = get_status("web-eu");
        if (!st || st->rollout().templates_size() != 1) return false;
        const auto& t = st->rollout().templates(0);
        return t.wave() == 2 && t.waves() == 2 && t.applied() == 3 && t.released() == 3;
      },
      kTimeout, kPoll))
      << "the status never showed the rollout in its last wave with every site applied";
}

// curl against a spoke's local API; returns the HTTP status (0: curl failed).
int curl_status(const std::string& dir, const std::string& method, const std::string& url,
                const std::string& body) {
  static int runs = 0;
  const std::string out = dir + "/curl-" + std::to_string(++runs) + ".log";
  std::vector<std::string> argv = {"curl",         "-s", "-o",   "/dev/null", "-w",
                                   "%{http_code}", "-X", method, "-m",        "10"};
  if (!body.empty()) {
    argv.insert(argv.end(), {"-H", "Content-Type: application/json", "--data-binary", body});
  }
  argv.push_back(url);
  Process p;
  ProcessOptions po;
  po.log_path = out;
  std::string err;
  if (!p.start(argv, po, &err)) return 0;
  p.wait_exit(std::chrono::seconds(15));
  std::ifstream in(out);
  std::string printed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return printed.size() >= 3 ? std::atoi(printed.substr(printed.size() - 3).c_str()) : 0;
}

TEST_F(RolloutE2ETest, AHoldAtASiteKeepsNewRevisionsFromItUntilRemoved) {
  const std::vector<Spoke*> sites = hub_and_three_eu_sites();
  if (HasFatalFailure()) return;
  web_applied_everywhere(sites, 1);
  if (HasFatalFailure()) return;

  // eu-1's operator holds rollouts there (bad requests first: nothing stored).
  const std::string holds =
      "http://127.0.0.1:" + std::to_string(sites[0]->health_port) + "/v1/holds/maintenance";
  const std::string dir = sites[0]->dir.path().string();
  EXPECT_EQ(curl_status(dir, "PUT", holds, R"({"durationSeconds":0})"), 400);
  EXPECT_EQ(curl_status(dir, "PUT", holds, "not json"), 400);
  EXPECT_EQ(curl_status(dir, "PUT", holds + "X", R"({"durationSeconds":60})"), 400);
  ASSERT_EQ(curl_status(dir, "PUT", holds, R"({"durationSeconds":600,"reason":"switch"})"), 200);
  // The hold reaches the hub with the site's next acknowledged write.
  wait_in_sync(*sites[0]);
  if (HasFatalFailure()) return;

  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.27")).ok());
  ASSERT_TRUE(wait_until(
      [&] {
        return all_at({sites[1], sites[2]}, "nginx:1.27");
      },
      60s, kPoll))
      << "the sites without a hold did not get the new revision";
  std::this_thread::sleep_for(3s);  // three more rollout steps at the hub
  EXPECT_EQ(image_at(sites[0]), "nginx:1.25") << "the held site got the new revision";

  ASSERT_EQ(curl_status(dir, "DELETE", holds, ""), 200);
  EXPECT_EQ(curl_status(dir, "DELETE", holds, ""), 404);
  EXPECT_TRUE(wait_until([&] { return image_at(sites[0]) == "nginx:1.27"; }, 60s, kPoll))
      << "the site did not get the revision once its hold was removed";
}

// A hold that runs out: the hub wakes when it ends (nothing else changes
// then) and releases the revision to the site; meanwhile the placement's
// status names the held site.
TEST_F(RolloutE2ETest, AHoldThatEndsLetsTheRevisionThroughWithoutOtherChanges) {
  const std::vector<Spoke*> sites = hub_and_three_eu_sites();
  if (HasFatalFailure()) return;
  web_applied_everywhere(sites, 3);
  if (HasFatalFailure()) return;
  const std::string holds =
      "http://127.0.0.1:" + std::to_string(sites[1]->health_port) + "/v1/holds/window";
  ASSERT_EQ(curl_status(sites[1]->dir.path().string(), "PUT", holds,
                        R"({"durationSeconds":8,"reason":"window"})"),
            200);
  const auto hold_ends = std::chrono::steady_clock::now() + 8s;
  wait_in_sync(*sites[1]);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.27")).ok());
  ASSERT_TRUE(wait_until([&] { return all_at({sites[0], sites[2]}, "nginx:1.27"); }, 60s, kPoll));
  auto st = get_status("web-eu");
  ASSERT_TRUE(st && st->rollout().templates_size() == 1);
  ASSERT_EQ(st->rollout().templates(0).held_size(), 1);
  EXPECT_NE(st->rollout().templates(0).held(0).find("eu-2: held until"), std::string::npos)
      << st->rollout().templates(0).held(0);
  EXPECT_EQ(image_at(sites[1]), "nginx:1.25") << "the held site got the new revision";
  ASSERT_TRUE(wait_until([&] { return image_at(sites[1]) == "nginx:1.27"; }, 40s, kPoll))
      << "the revision did not reach the site after its hold ended";
  EXPECT_GE(std::chrono::steady_clock::now(), hold_ends - 1s) << "released before the hold ended";
}

}  // namespace
}  // namespace canopy::e2e

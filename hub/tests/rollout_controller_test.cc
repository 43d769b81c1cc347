// RolloutController over a real store and index: a new template revision is
// released to at most maxUnavailable sites at a time, in site order, as the
// released sites report it applied; failures past maxFailures and `paused`
// stop it.
#include "hub/rollout_controller.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <nlohmann/json.hpp>

#include "model/documents.h"
#include "model/keys.h"
#include "model/render.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_store.h"

namespace canopy::hub {
namespace {

using json = nlohmann::json;
using Names = std::vector<std::string>;

class RolloutControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = open_test_store(dir_, "hub");
    ASSERT_NE(store_, nullptr);
    auto index = PlacementIndex::attach(store_.get());
    ASSERT_TRUE(index.ok());
    index_ = std::move(index).value();
    controller_ = std::make_unique<RolloutController>(store_.get(), index_.get());
    put(model::grant_key("acme", "all"), {{"allSites", true}});
    for (const char* s : {"a", "b", "c", "d"}) {
      put(model::site_key(s), {{"name", s}, {"labels", {{"region", "eu"}}}});
    }
    put(model::template_key("acme", "web"), manifest(1));
  }

  static json manifest(int replicas) {
    return {{"apiVersion", "apps/v1"},
            {"kind", "Deployment"},
            {"metadata", {{"name", "web"}, {"namespace", "shop"}}},
            {"spec", {{"replicas", replicas}}}};
  }
  void put(const std::string& key, const json& doc) {
    auto r = store_->put_value(key, doc);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }
  void placement(const json& rollout) {
    put(model::placement_key("acme", "web-eu"),
        {{"templates", {"web"}},
         {"selector", {{"matchLabels", {{"region", "eu"}}}}},
         {"rollout", rollout}});
  }
  std::string revision() {
    return model::template_revision(*store_->get(model::template_key("acme", "web")));
  }
  // Sites released the current revision.
  Names released() {
    Names out;
    for (const char* s : {"a", "b", "c", "d"}) {
      auto text = store_->get(model::release_key(s, "acme", "web"));
      if (text.ok() && json::parse(*text)["revision"] == revision()) out.push_back(s);
    }
    return out;
  }
  // What a kube-applier spoke writes once it applied the revision and read
  // the objects' health back.
  void report_health(const std::string& site, const char* health) {
    model::StatusReport r;
    r.template_key = model::template_key("acme", "web");
    r.hash = "h";
    r.outcome = model::Outcome::kApplied;
    r.file = "f";
    r.revision = revision();
    r.health = health;
    put(model::status_key(site, "acme", "web"), model::status_document(r));
  }
  // What a spoke writes once it applied (or failed) the released revision,
  // or `rev` when given.
  void report(const std::string& site, const char* outcome, const std::string& rev = "") {
    put(model::status_key(site, "acme", "web"),
        model::status_document(
            {model::template_key("acme", "web"),
             "h",
             std::string(outcome) == "applied" ? model::Outcome::kApplied : model::Outcome::kFailed,
             "",
             "f",
             rev.empty() ? revision() : rev,
             {},
             {},
             {}}));
  }
  RolloutStep step() {
    auto s = controller_->step();
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    return s.ok() ? *s : RolloutStep{};
  }

  canopy::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<PlacementIndex> index_;
  std::unique_ptr<RolloutController> controller_;
};

// Waves [1, "50%"] over a, b, c, d: a alone, then b (half of four), then the
// rest; each wave starts only when the sites before it applied the revision.
TEST_F(RolloutControllerTest, ReleasesWaveByWaveAsTheSitesBeforeApplyIt) {
  placement({{"waves", {1, "50%"}}});
  EXPECT_EQ(step().released, 1u);
  EXPECT_EQ(released(), (Names{"a"}));
  EXPECT_EQ(step().released, 0u) << "a has not applied it yet";
  report("a", "applied");
  EXPECT_EQ(step().released, 1u);
  EXPECT_EQ(released(), (Names{"a", "b"}));
  report("b", "applied");
  EXPECT_EQ(step().released, 2u) << "the last wave, whole: no maxUnavailable";
  EXPECT_EQ(released(), (Names{"a", "b", "c", "d"}));
}

// Applied but still progressing (or degraded) is not done: the next wave
// waits until the site's objects are healthy.
TEST_F(RolloutControllerTest, AWaveAdvancesOnlyOverHealthySites) {
  placement({{"waves", {1}}});
  step();
  EXPECT_EQ(released(), (Names{"a"}));
  report_health("a", "progressing");
  EXPECT_EQ(step().released, 0u);
  report_health("a", "degraded");
  EXPECT_EQ(step().released, 0u);
  report_health("a", "healthy");
  EXPECT_EQ(step().released, 3u);
}

TEST_F(RolloutControllerTest, MaxUnavailableHoldsWithinAWave) {
  placement({{"waves", {"75%"}}, {"maxUnavailable", 2}});
  step();
  EXPECT_EQ(released(), (Names{"a", "b"}));
  report("a", "applied");
  step();
  EXPECT_EQ(released(), (Names{"a", "b", "c"})) << "the first wave is a, b, c";
  report("b", "applied");
  step();
  EXPECT_EQ(released(), (Names{"a", "b", "c"})) << "d waits for c";
  report("c", "failed");
  EXPECT_EQ(step().paused.size(), 1u) << "a failure in a wave pauses it (maxFailures 0)";
  EXPECT_EQ(released(), (Names{"a", "b", "c"}));
}

// A site's hold (written at the site) keeps new revisions from it while it
// lasts: the others go on; an expired hold holds nothing.
TEST_F(RolloutControllerTest, AHeldSiteWaitsAndTheOthersGoOn) {
  const uint64_t now = SystemClock::instance()->now_ms();
  put(model::hold_key("a", "maintenance"),
      model::hold_document({now + 3'600'000, "replacing the switch"}));
  put(model::hold_key("b", "old"), model::hold_document({now - 1, "ended"}));
  placement({{"maxUnavailable", 2}});
  RolloutStep s = step();
  EXPECT_EQ(released(), (Names{"b", "c"}));
  ASSERT_EQ(s.held.size(), 1u);
  EXPECT_NE(s.held[0].find("a: held until"), std::string::npos) << s.held[0];
  EXPECT_NE(s.held[0].find("replacing the switch"), std::string::npos) << s.held[0];
  ASSERT_TRUE(store_->remove(model::hold_key("a", "maintenance")).ok());
  report("b", "applied");
  step();
  EXPECT_EQ(released(), (Names{"a", "b", "c"})) << "a, no longer held, is first in line";
}

// With waves, a held site in the first wave keeps the next wave waiting.
TEST_F(RolloutControllerTest, AHoldStopsTheWaveAtThatSite) {
  const uint64_t now = SystemClock::instance()->now_ms();
  put(model::hold_key("b", "window"), model::hold_document({now + 3'600'000, ""}));
  placement({{"waves", {"50%"}}});
  step();
  EXPECT_EQ(released(), (Names{"a"}));
  report("a", "applied");
  EXPECT_EQ(step().released, 0u) << "the first wave (a, b) waits for b";
  ASSERT_TRUE(store_->remove(model::hold_key("b", "window")).ok());
  step();
  EXPECT_EQ(released(), (Names{"a", "b"}));
  report("b", "applied");
  step();
  EXPECT_EQ(released(), (Names{"a", "b", "c", "d"}));
}

// The rollout state document says where the rollout is, after each step:
// the wave, the counts, the held sites, why it is paused; it is rewritten
// only when that changes, and removed with the placement's policy.
TEST_F(RolloutControllerTest, TheStateDocumentFollowsTheRollout) {
  const std::string key = model::rollout_key("acme", "web-eu");
  auto state = [&] {
    auto text = store_->get(key);
    EXPECT_TRUE(text.ok()) << text.status().to_string();
    auto parsed = model::parse_rollout_state(json::parse(text.ok() ? *text : "{}"));
    EXPECT_TRUE(parsed.ok()) << parsed.status().to_string();
    return parsed.ok() ? *parsed : model::RolloutState{};
  };
  const uint64_t now = SystemClock::instance()->now_ms();
  put(model::hold_key("c", "window"), model::hold_document({now + 3'600'000, "switch"}));
  placement({{"waves", {1, "50%"}}});
  RolloutStep s = step();
  EXPECT_EQ(s.next_hold_end_ms, UINT64_MAX) << "c is not in the first wave: not asked about";
  model::RolloutState st = state();
  EXPECT_EQ(st.paused, "");
  ASSERT_EQ(st.templates.size(), 1u);
  EXPECT_EQ(st.templates[0].template_name, "web");
  EXPECT_EQ(st.templates[0].revision, revision());
  EXPECT_EQ(st.templates[0].wave, 1u);
  EXPECT_EQ(st.templates[0].waves, 3u);
  EXPECT_EQ(st.templates[0].targeted, 4u);
  EXPECT_EQ(st.templates[0].released, 1u);
  EXPECT_EQ(st.templates[0].applied, 0u);

  // Nothing changed: the document is not written again.
  const uint64_t index = store_->last_log_index();
  step();
  EXPECT_EQ(store_->last_log_index(), index) << "an unchanged state was rewritten";

  report("a", "applied");
  step();
  report("b", "applied");
  s = step();  // the last wave: c is held
  st = state();
  EXPECT_EQ(st.templates[0].wave, 3u);
  EXPECT_EQ(st.templates[0].applied, 2u);
  EXPECT_EQ(st.templates[0].released, 3u) << "a, b and d";
  ASSERT_EQ(st.templates[0].held.size(), 1u);
  EXPECT_NE(st.templates[0].held[0].find("c: held until"), std::string::npos);
  EXPECT_EQ(s.next_hold_end_ms, now + 3'600'000) << "the hub wakes when the hold ends";

  report("d", "failed");
  placement({{"waves", {1, "50%"}}, {"maxFailures", 0}});
  step();
  EXPECT_NE(state().paused.find("1 sites failed"), std::string::npos) << state().paused;
  EXPECT_EQ(state().templates[0].failed, 1u);

  // Without a policy, no rollout and no state document.
  put(model::placement_key("acme", "web-eu"),
      {{"templates", {"web"}}, {"selector", {{"matchLabels", {{"region", "eu"}}}}}});
  step();
  EXPECT_EQ(store_->get(key).status().code(), StatusCode::kNotFound);
}

TEST_F(RolloutControllerTest, ReleasesAtMostMaxUnavailableSitesAtATime) {
  placement({{"maxUnavailable", 2}});
  EXPECT_EQ(step().released, 2u);
  EXPECT_EQ(released(), (Names{"a", "b"}));
  EXPECT_EQ(step().released, 0u) << "no site reported yet";
  report("a", "applied");
  EXPECT_EQ(step().released, 1u);
  EXPECT_EQ(released(), (Names{"a", "b", "c"}));
  report("b", "applied");
  report("c", "applied");
  step();
  EXPECT_EQ(released(), (Names{"a", "b", "c", "d"}));
  report("d", "applied");
  EXPECT_EQ(step().released, 0u);

  // A new revision starts over, in the same order.
  put(model::template_key("acme", "web"), manifest(3));
  EXPECT_EQ(released(), Names{});
  step();
  EXPECT_EQ(released(), (Names{"a", "b"}));
  // A report of the older revision does not count as done.
  report("c", "applied", "0000000000000000");
  EXPECT_EQ(step().released, 0u);
}

TEST_F(RolloutControllerTest, FailuresPastTheLimitPauseAndPausedWaits) {
  placement({{"maxUnavailable", 1}, {"maxFailures", 0}});
  step();
  EXPECT_EQ(released(), Names{"a"});
  report("a", "failed");
  RolloutStep s = step();
  EXPECT_EQ(s.released, 0u);
  ASSERT_EQ(s.paused.size(), 1u);
  EXPECT_NE(s.paused[0].find("1 sites failed the new revision (maxFailures 0)"), std::string::npos)
      << s.paused[0];
  // Tolerating one failure lets it go on (a counts as unavailable still).
  placement({{"maxUnavailable", 2}, {"maxFailures", 1}});
  step();
  EXPECT_EQ(released(), (Names{"a", "b"}));
  // Paused by the policy: nothing more, whatever the sites report.
  placement({{"maxUnavailable", 4}, {"maxFailures", 1}, {"paused", true}});
  report("b", "applied");
  s = step();
  EXPECT_EQ(s.released, 0u);
  ASSERT_EQ(s.paused.size(), 1u);
  EXPECT_NE(s.paused[0].find("paused by its policy"), std::string::npos);
  placement({{"maxUnavailable", 4}, {"maxFailures", 1}});
  step();
  EXPECT_EQ(released(), (Names{"a", "b", "c", "d"}));
}

TEST_F(RolloutControllerTest, PlacementsWithoutAPolicyAndUngrantedSitesGetNoRelease) {
  put(model::placement_key("acme", "plain"),
      {{"templates", {"web"}}, {"selector", {{"matchLabels", {{"region", "eu"}}}}}});
  EXPECT_EQ(step().placements, 0u);
  EXPECT_EQ(released(), Names{});
  put(model::grant_key("acme", "all"), {{"sites", {"b", "d"}}});
  placement({{"maxUnavailable", 10}});
  step();
  EXPECT_EQ(released(), (Names{"b", "d"}));
}

// A hub override is part of the revision at the sites it applies to
// (hub/template_revisions.h): changing it rolls out as a template change
// does, to those sites only, within maxUnavailable; the others stay done.
TEST_F(RolloutControllerTest, AChangedOverrideRollsOutToTheSitesItAppliesTo) {
  placement({{"maxUnavailable", 1}});
  for (const char* s : {"a", "b", "c", "d"}) {
    EXPECT_EQ(step().released, 1u);
    report(s, "applied");
  }
  EXPECT_EQ(step().released, 0u);
  put(model::override_key("acme", "big"),
      {{"template", "web"}, {"sites", {"c", "d"}}, {"patch", {{"spec", {{"replicas", 2}}}}}});
  auto hash = [&](const std::string& key) {
    auto text = store_->get(key);
    EXPECT_TRUE(text.ok());
    return text.ok() ? XXH3_64bits(text->data(), text->size()) : 0;
  };
  const std::string with_override = model::template_revision(
      hash(model::template_key("acme", "web")), {hash(model::override_key("acme", "big"))});
  auto released_at = [&](const char* site) {
    auto text = store_->get(model::release_key(site, "acme", "web"));
    return text.ok() ? json::parse(*text)["revision"].get<std::string>() : std::string();
  };
  auto state = [&] {
    auto text = store_->get(model::rollout_key("acme", "web-eu"));
    EXPECT_TRUE(text.ok());
    auto st = model::parse_rollout_state(json::parse(*text));
    EXPECT_TRUE(st.ok());
    return st.ok() ? *st : model::RolloutState{};
  };
  EXPECT_EQ(step().released, 1u);
  EXPECT_EQ(released_at("a"), revision());
  EXPECT_EQ(released_at("b"), revision());
  EXPECT_EQ(released_at("c"), with_override);
  EXPECT_EQ(released_at("d"), revision()) << "one site at a time";
  EXPECT_EQ(state().templates.at(0).applied, 2u);
  EXPECT_EQ(step().released, 0u) << "c has not applied it yet";
  report("c", "applied", with_override);
  EXPECT_EQ(step().released, 1u);
  EXPECT_EQ(released_at("d"), with_override);
  EXPECT_EQ(state().templates.at(0).applied, 3u);
}

}  // namespace
}  // namespace canopy::hub

// End-to-end tests of the catalogue's one model (model/): the hub's index and
// every spoke's renderer read placements, selectors and site records the same
// way, with real nats-server, canopy-hub and canopy-spoke processes.
#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

using ModelE2ETest = E2ETest;

// What a site runs must settle: a grace period for anything misrouted.
constexpr auto kGrace = std::chrono::milliseconds(1500);

const v1::TemplateStatus* find_template(const v1::GetStatusResponse& st, const std::string& site,
                                        const std::string& tmpl) {
  for (const auto& row : st.sites()) {
    if (row.site() != site) continue;
    for (const auto& t : row.templates()) {
      if (t.template_() == tmpl) return &t;
    }
  }
  return nullptr;
}

// matchLabels with matchExpressions (In, DoesNotExist) reaches exactly the
// sites that satisfy all of them, and status reads applied.
TEST_F(ModelE2ETest, MatchExpressionsReachExactlyTheRightSpokes) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& shop = create_spoke("shop-1", {{"region", "eu-west"}, {"tier", "shop"}});
  Spoke& tower = create_spoke("tower-1", {{"region", "eu-west"}, {"tier", "cell-tower"}});
  Spoke& legacy =
      create_spoke("legacy-1", {{"region", "eu-west"}, {"tier", "shop"}, {"legacy", "yes"}});
  Spoke& us = create_spoke("us-1", {{"region", "us-east"}, {"tier", "shop"}});
  for (Spoke* s : {&shop, &tower, &legacy, &us}) ASSERT_NO_FATAL_FAILURE(launch_spoke(*s));

  ASSERT_TRUE(put("template", "web", deployment("web", 2, "nginx:1.27")).ok());
  const json selector = {
      {"matchLabels", {{"region", "eu-west"}}},
      {"matchExpressions",
       {{{"key", "tier"}, {"operator", "In"}, {"values", {"shop", "cell-tower"}}},
        {{"key", "legacy"}, {"operator", "DoesNotExist"}}}}};
  grpc::Status st = put("placement", "web-eu", {{"templates", {"web"}}, {"selector", selector}});
  ASSERT_TRUE(st.ok()) << st.error_message();

  for (Spoke* s : {&shop, &tower}) {
    ASSERT_TRUE(
        wait_until([&] { return s->read().count(template_key("web")) == 1; }, kTimeout, kPoll))
        << s->site << " never got the manifest";
  }
  std::this_thread::sleep_for(kGrace);
  EXPECT_TRUE(legacy.read().empty()) << "DoesNotExist ignored";
  EXPECT_TRUE(us.read().empty()) << "matchLabels ignored";

  ASSERT_TRUE(wait_until(
      [&] {
        auto s = get_status("web-eu");
        return s && s->targeted() == 2 && s->applied() == 2;
      },
      kTimeout, kPoll))
      << "status never read applied on both sites";
  auto status = get_status("web-eu");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->failed(), 0u);
  EXPECT_EQ(status->pending(), 0u);
  ASSERT_EQ(status->sites_size(), 2);
  EXPECT_EQ(status->sites(0).site(), "shop-1");
  EXPECT_EQ(status->sites(1).site(), "tower-1");

  // An expression alone (no matchLabels) is a selector too: NotIn picks us-1.
  st = put("placement", "web-not-eu",
           {{"templates", {"web"}},
            {"selector",
             {{"matchExpressions",
               {{{"key", "region"}, {"operator", "NotIn"}, {"values", {"eu-west"}}}}}}}});
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(
      wait_until([&] { return us.read().count(template_key("web")) == 1; }, kTimeout, kPoll));
  std::this_thread::sleep_for(kGrace);
  EXPECT_TRUE(legacy.read().empty());
}

// A spoke configured with labels that differ from the hub's record of its
// site renders by the record: the hub decides, the spoke only asks.
TEST_F(ModelE2ETest, SpokeRendersByTheHubsSiteRecordNotItsOwnLabels) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  grpc::Status st = put("site", "lyon", {{"labels", {{"region", "eu"}}}});
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.27")).ok());
  ASSERT_TRUE(put("template", "db", deployment("db", 1, "postgres:16")).ok());
  ASSERT_TRUE(put("placement", "eu", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(put("placement", "us", placement_by_region({"db"}, "us")).ok());

  Spoke& lyon = create_spoke("lyon", {{"region", "us"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(lyon));

  ASSERT_TRUE(
      wait_until([&] { return lyon.read().count(template_key("web")) == 1; }, kTimeout, kPoll))
      << "the spoke did not render by its record (region eu)";
  std::this_thread::sleep_for(kGrace);
  EXPECT_EQ(lyon.read().count(template_key("db")), 0u)
      << "the spoke rendered by its configured labels (region us)";
  // The hello did not overwrite the record.
  auto record = get("site", "lyon");
  ASSERT_TRUE(record);
  EXPECT_EQ((*record)["labels"], (json{{"region", "eu"}}));

  // An edit of the record moves the site.
  ASSERT_TRUE(put("site", "lyon", {{"labels", {{"region", "us"}}}}).ok());
  ASSERT_TRUE(wait_until(
      [&] {
        auto files = lyon.read();
        auto web = files.find(template_key("web"));
        // web goes: its file is removed or left as a tombstone (an empty List).
        const bool web_gone = web == files.end() || web->second.object.value("kind", "") == "List";
        return files.count(template_key("db")) == 1 && web_gone;
      },
      kTimeout, kPoll))
      << "the site did not follow its record";
}

// A template the site cannot render shows `failed` with the reason in the
// placement's status — never a silent "pending".
TEST_F(ModelE2ETest, UnrenderableTemplateShowsFailedWithTheReason) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));

  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.27")).ok());
  // Accepted by the API (a valid merge patch) but the result is not a valid
  // manifest at the site.
  grpc::Status st = put(
      "override", "rename",
      {{"template", "web"}, {"sites", {"eu-1"}}, {"patch", {{"metadata", {{"name", "Web_1"}}}}}});
  ASSERT_TRUE(st.ok()) << st.error_message();
  // And a template that does not exist.
  ASSERT_TRUE(put("placement", "eu", placement_by_region({"web", "ghost"}, "eu")).ok());

  ASSERT_TRUE(wait_until(
      [&] {
        auto s = get_status("eu");
        return s && s->failed() == 1 && find_template(*s, "eu-1", "web") != nullptr &&
               find_template(*s, "eu-1", "web")->outcome() == "failed" &&
               find_template(*s, "eu-1", "ghost") != nullptr &&
               find_template(*s, "eu-1", "ghost")->outcome() == "failed";
      },
      kTimeout, kPoll))
      << "the placement's status never said failed";
  auto s = get_status("eu");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->pending(), 0u);
  EXPECT_NE(find_template(*s, "eu-1", "web")->message().find("metadata.name \"Web_1\""),
            std::string::npos)
      << find_template(*s, "eu-1", "web")->message();
  EXPECT_NE(find_template(*s, "eu-1", "ghost")->message().find("does not exist"), std::string::npos)
      << find_template(*s, "eu-1", "ghost")->message();
  EXPECT_TRUE(eu.read().empty());
}

}  // namespace
}  // namespace canopy::e2e

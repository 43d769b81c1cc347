#include "spoke/desired_state.h"

#include <gtest/gtest.h>

#include <string>

#include "model/render.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"

namespace canopy::spoke {
namespace {

using model::RenderedObject;
using model::SiteRecord;
using nlohmann::json;

json deployment(const std::string& name) {
  return json{{"apiVersion", "apps/v1"},
              {"kind", "Deployment"},
              {"metadata", {{"name", name}, {"namespace", "shop"}}},
              {"spec", {{"replicas", 1}, {"image", "web:1"}}}};
}

SiteRecord site() {
  return SiteRecord{"tower-1", {{"region", "eu-west"}, {"tier", "cell-tower"}}, {}};
}

TEST(LoadDesiredState, FromARealStore) {
  canopy::testing::TempDir dir;
  StoreOptions opts;
  opts.path = dir.file("store");
  opts.durability = Durability::kNone;
  auto store = Store::open(opts);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  Store& s = **store;

  // More templates than one scan page.
  constexpr int kTemplates = 600;
  json names = json::array();
  for (int i = 0; i < kTemplates; ++i) {
    std::string n = "app-" + std::to_string(i);
    ASSERT_TRUE(s.put_value("t/acme/templates/" + n, deployment(n)).ok());
    names.push_back(n);
  }
  ASSERT_TRUE(s.put_value("t/acme/placements/all",
                          json{{"templates", names},
                               {"selector", {{"matchLabels", {{"region", "eu-west"}}}}}})
                  .ok());
  ASSERT_TRUE(s.put_value("t/acme/overrides/more", json{{"template", "app-7"},
                                                        {"sites", {"tower-1"}},
                                                        {"patch", {{"spec", {{"replicas", 4}}}}}})
                  .ok());
  ASSERT_TRUE(s.put_value("sites/tower-1/overrides/acme/app-7",
                          json{{"patch", {{"spec", {{"replicas", 6}}}}}})
                  .ok());
  ASSERT_TRUE(s.put_value("sites/tower-2/overrides/acme/app-7",
                          json{{"patch", {{"spec", {{"replicas", 99}}}}}})
                  .ok());
  ASSERT_TRUE(s.put_value("sites/tower-1", json{{"name", "tower-1"}}).ok());
  ASSERT_TRUE(s.put_value("t/acme/grants/x", json{{"a", 1}}).ok());
  ASSERT_TRUE(s.put_value("t/acme/templates/gone", deployment("gone")).ok());
  ASSERT_TRUE(s.remove("t/acme/templates/gone").ok());

  auto d = load_desired_state(s, "tower-1");
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_EQ(d->templates.size(), static_cast<size_t>(kTemplates));
  EXPECT_EQ(d->placements.size(), 1u);
  EXPECT_EQ(d->overrides.size(), 1u);
  ASSERT_EQ(d->local_overrides.size(), 1u);
  EXPECT_TRUE(d->local_overrides.count("sites/tower-1/overrides/acme/app-7"));

  auto r = model::render_site(site(), *d);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->objects.size(), static_cast<size_t>(kTemplates));
  EXPECT_TRUE(r->failures.empty());
  const RenderedObject* o = nullptr;
  for (const auto& obj : r->objects) {
    if (obj.template_key == "t/acme/templates/app-7") o = &obj;
  }
  ASSERT_NE(o, nullptr);
  EXPECT_EQ(o->object["spec"]["replicas"], 6);
}

}  // namespace
}  // namespace canopy::spoke

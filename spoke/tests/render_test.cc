#include "spoke/render.h"

#include <gtest/gtest.h>

#include <string>

#include "store/store.h"
#include "tests/support/temp_dir.h"

namespace canopy::spoke {
namespace {

using nlohmann::json;

json deployment(const std::string& name, int replicas = 1) {
  return json{{"apiVersion", "apps/v1"},
              {"kind", "Deployment"},
              {"metadata", {{"name", name}, {"namespace", "shop"}}},
              {"spec", {{"replicas", replicas}, {"image", "web:1"}}}};
}

SiteInfo site(std::string name = "tower-1") {
  return SiteInfo{std::move(name), {{"region", "eu-west"}, {"tier", "cell-tower"}}};
}

const RenderedObject* find(const RenderResult& r, const std::string& tk) {
  for (const auto& o : r.objects) {
    if (o.template_key == tk) return &o;
  }
  return nullptr;
}

const RenderFailure* find_failure(const RenderResult& r, const std::string& key) {
  for (const auto& f : r.failures) {
    if (f.template_key == key) return &f;
  }
  return nullptr;
}

TEST(Names, Dns1123) {
  EXPECT_TRUE(is_dns1123_label("web-1"));
  EXPECT_TRUE(is_dns1123_label(std::string(63, 'a')));
  EXPECT_FALSE(is_dns1123_label(std::string(64, 'a')));
  EXPECT_FALSE(is_dns1123_label("Web"));
  EXPECT_FALSE(is_dns1123_label("-web"));
  EXPECT_FALSE(is_dns1123_label("web-"));
  EXPECT_FALSE(is_dns1123_label(""));
  EXPECT_FALSE(is_dns1123_label("a.b"));
  EXPECT_TRUE(is_dns1123_subdomain("a.b-c.d"));
  EXPECT_FALSE(is_dns1123_subdomain("a..b"));
  EXPECT_FALSE(is_dns1123_subdomain(".a"));
  EXPECT_FALSE(is_dns1123_subdomain("Web_1"));
  EXPECT_FALSE(is_dns1123_subdomain(std::string(254, 'a')));
}

TEST(Names, ManifestFileNameIsInjectiveAndParses) {
  EXPECT_EQ(manifest_file_name("acme", "web"), "canopy-4-acme-web.json");
  // Both names may contain '-': the length prefix keeps them apart.
  EXPECT_NE(manifest_file_name("a-b", "c"), manifest_file_name("a", "b-c"));
  std::string t, n;
  ASSERT_TRUE(parse_manifest_file_name(manifest_file_name("a-b", "c"), &t, &n));
  EXPECT_EQ(t, "a-b");
  EXPECT_EQ(n, "c");
  ASSERT_TRUE(parse_manifest_file_name(manifest_file_name("a", "b-c"), &t, &n));
  EXPECT_EQ(t, "a");
  EXPECT_EQ(n, "b-c");
  std::string long_tenant(63, 't');
  ASSERT_TRUE(parse_manifest_file_name(manifest_file_name(long_tenant, "x"), &t, &n));
  EXPECT_EQ(t, long_tenant);
  for (const char* bad :
       {"canopy-04-acme-web.json", "canopy-4-acme-web.yaml", "canopy-4-acmeweb.json",
        "canopy-9-acme-web.json", "other.json", ".canopy-tmp-1-canopy-4-acme-web.json",
        "canopy-4-acme-.json", "canopy-x-acme-web.json"}) {
    EXPECT_FALSE(parse_manifest_file_name(bad, nullptr, nullptr)) << bad;
  }
}

TEST(Match, SitesListAndSelector) {
  SiteInfo s = site();
  EXPECT_TRUE(placement_matches(json{{"sites", {"tower-2", "tower-1"}}}, s));
  EXPECT_FALSE(placement_matches(json{{"sites", {"tower-2"}}}, s));
  EXPECT_TRUE(placement_matches(json{{"selector", {{"matchLabels", {{"region", "eu-west"}}}}}}, s));
  EXPECT_TRUE(placement_matches(
      json{{"selector", {{"matchLabels", {{"region", "eu-west"}, {"tier", "cell-tower"}}}}}}, s));
  // Every pair must hold.
  EXPECT_FALSE(placement_matches(
      json{{"selector", {{"matchLabels", {{"region", "eu-west"}, {"tier", "shop"}}}}}}, s));
  EXPECT_FALSE(placement_matches(json{{"selector", {{"matchLabels", {{"zone", "a"}}}}}}, s));
  // A missing or empty selector matches no site by labels.
  EXPECT_FALSE(placement_matches(json::object(), s));
  EXPECT_FALSE(placement_matches(json{{"selector", json::object()}}, s));
  EXPECT_FALSE(placement_matches(json{{"selector", {{"matchLabels", json::object()}}}}, s));
  // Either rule is enough.
  EXPECT_TRUE(placement_matches(
      json{{"sites", {"elsewhere"}}, {"selector", {{"matchLabels", {{"tier", "cell-tower"}}}}}},
      s));
  // Overrides follow the same rules.
  EXPECT_TRUE(override_matches(json{{"sites", {"tower-1"}}, {"template", "web"}}, s));
  EXPECT_FALSE(override_matches(json{{"template", "web"}}, s));
}

TEST(Match, MalformedSelectorsAreErrors) {
  SiteInfo s = site();
  auto m = match_site(json{{"sites", "tower-1"}}, s);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("sites must be an array"), std::string::npos);
  m = match_site(json{{"selector", {{"matchLabels", {{"region", 1}}}}}}, s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("selector.matchLabels.region must be a string"),
            std::string::npos);
  m = match_site(json{{"selector", {{"matchExpressions", {{{"key", "region"}}}}}}}, s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("matchExpressions is not supported"), std::string::npos);
  EXPECT_FALSE(placement_matches(json{{"sites", "tower-1"}}, s));
}

TEST(Render, LabelsAnnotationsHashAndFileName) {
  DesiredState d;
  d.templates["t/acme/templates/web"] = deployment("web");
  d.placements["t/acme/placements/eu"] = {{"templates", {"web"}},
                                          {"selector", {{"matchLabels", {{"region", "eu-west"}}}}}};
  auto r = render_site(site(), d);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->objects.size(), 1u);
  EXPECT_TRUE(r->failures.empty());
  const RenderedObject& o = r->objects[0];
  EXPECT_EQ(o.template_key, "t/acme/templates/web");
  EXPECT_EQ(o.tenant, "acme");
  EXPECT_EQ(o.template_name, "web");
  EXPECT_EQ(o.file_name, "canopy-4-acme-web.json");
  EXPECT_EQ(o.object["metadata"]["labels"]["app.kubernetes.io/managed-by"], "canopy");
  EXPECT_EQ(o.object["metadata"]["annotations"]["canopy.io/template"], "t/acme/templates/web");
  EXPECT_EQ(o.object["metadata"]["annotations"]["canopy.io/hash"], o.hash);
  EXPECT_EQ(o.hash.size(), 16u);
  EXPECT_EQ(o.hash, content_hash(o.object));
  EXPECT_EQ(o.object["spec"], deployment("web")["spec"]);

  // Same input, same bytes; another input, another hash.
  auto again = render_site(site(), d);
  EXPECT_EQ(again->objects[0].object, o.object);
  d.templates["t/acme/templates/web"] = deployment("web", 3);
  auto changed = render_site(site(), d);
  EXPECT_NE(changed->objects[0].hash, o.hash);
}

TEST(Render, PlacementSelectsTemplatesOnce) {
  DesiredState d;
  d.templates["t/acme/templates/web"] = deployment("web");
  d.templates["t/acme/templates/db"] = deployment("db");
  d.templates["t/acme/templates/other"] = deployment("other");
  d.templates["t/beta/templates/web"] = deployment("web");
  d.placements["t/acme/placements/a"] = {{"templates", {"web", "db"}}, {"sites", {"tower-1"}}};
  d.placements["t/acme/placements/b"] = {{"templates", {"web"}},
                                         {"selector", {{"matchLabels", {{"tier", "cell-tower"}}}}}};
  d.placements["t/acme/placements/c"] = {{"templates", {"other"}}, {"sites", {"tower-9"}}};
  auto r = render_site(site(), d);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->objects.size(), 2u);
  EXPECT_EQ(r->objects[0].template_key, "t/acme/templates/db");
  EXPECT_EQ(r->objects[1].template_key, "t/acme/templates/web");
  EXPECT_TRUE(r->failures.empty());
}

TEST(Render, OverridesInKeyOrderThenLocalOverride) {
  DesiredState d;
  d.templates["t/acme/templates/web"] = deployment("web");
  d.placements["t/acme/placements/p"] = {{"templates", {"web"}}, {"sites", {"tower-1"}}};
  // Inserted out of order on purpose: key order decides, b after a.
  d.overrides["t/acme/overrides/b"] = {
      {"template", "web"}, {"sites", {"tower-1"}}, {"patch", {{"spec", {{"replicas", 2}}}}}};
  d.overrides["t/acme/overrides/a"] = {
      {"template", "web"},
      {"selector", {{"matchLabels", {{"region", "eu-west"}}}}},
      {"patch", {{"spec", {{"replicas", 5}, {"image", "web:2"}, {"debug", true}}}}}};
  // Not for this site, another template, another tenant: not applied.
  d.overrides["t/acme/overrides/c"] = {
      {"template", "web"}, {"sites", {"tower-2"}}, {"patch", {{"spec", {{"replicas", 9}}}}}};
  d.overrides["t/acme/overrides/d"] = {
      {"template", "db"}, {"sites", {"tower-1"}}, {"patch", {{"spec", {{"replicas", 8}}}}}};
  d.overrides["t/beta/overrides/e"] = {
      {"template", "web"}, {"sites", {"tower-1"}}, {"patch", {{"spec", {{"replicas", 7}}}}}};

  auto r = render_site(site(), d);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->objects.size(), 1u);
  EXPECT_EQ(r->objects[0].object["spec"]["replicas"], 2);  // b wins over a
  EXPECT_EQ(r->objects[0].object["spec"]["image"], "web:2");

  // The local override comes last and wins; null removes a field.
  d.local_overrides["sites/tower-1/overrides/acme/web"] = {
      {"patch", {{"spec", {{"replicas", 1}, {"debug", nullptr}}}}}};
  // Another site's local override is not read.
  d.local_overrides["sites/tower-2/overrides/acme/web"] = {
      {"patch", {{"spec", {{"replicas", 42}}}}}};
  r = render_site(site(), d);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->objects[0].object["spec"]["replicas"], 1);
  EXPECT_EQ(r->objects[0].object["spec"]["image"], "web:2");
  EXPECT_FALSE(r->objects[0].object["spec"].contains("debug"));

  SitePlan plan = plan_site(site(), d);
  ASSERT_EQ(plan.objects.size(), 1u);
  EXPECT_EQ(plan.objects[0].override_keys,
            (std::vector<std::string>{"t/acme/overrides/a", "t/acme/overrides/b"}));
  EXPECT_EQ(plan.objects[0].local_override_key, "sites/tower-1/overrides/acme/web");
}

TEST(Render, BadTemplatesFailPerObjectOthersRender) {
  DesiredState d;
  json no_kind = deployment("nokind");
  no_kind.erase("kind");
  d.templates["t/acme/templates/nokind"] = no_kind;
  d.templates["t/acme/templates/badname"] = deployment("Web_1");
  json bad_ns = deployment("badns");
  bad_ns["metadata"]["namespace"] = "Shop.Floor";
  d.templates["t/acme/templates/badns"] = bad_ns;
  d.templates["t/acme/templates/notobj"] = json::array({1, 2});
  d.templates["t/acme/templates/good"] = deployment("good");
  d.templates["t/acme/templates/patched"] = deployment("patched");
  d.templates["t/acme/templates/broken"] = deployment("broken");
  d.placements["t/acme/placements/p"] = {
      {"templates",
       {"nokind", "badname", "badns", "notobj", "good", "patched", "missing", "broken"}},
      {"sites", {"tower-1"}}};
  d.overrides["t/acme/overrides/o"] = {
      {"template", "patched"}, {"sites", {"tower-1"}}, {"patch", "replace-everything"}};
  d.overrides["t/acme/overrides/p"] = {
      {"template", "broken"}, {"sites", {"tower-1"}}, {"patch", {{"kind", nullptr}}}};

  auto r = render_site(site(), d);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->objects.size(), 1u);
  EXPECT_EQ(r->objects[0].template_key, "t/acme/templates/good");
  ASSERT_EQ(r->failures.size(), 7u);

  auto expect_failure = [&](const std::string& tk, const std::string& needle) {
    const RenderFailure* f = find_failure(*r, tk);
    ASSERT_NE(f, nullptr) << tk;
    EXPECT_NE(f->error.find(needle), std::string::npos) << f->error;
    EXPECT_FALSE(f->template_name.empty());
    EXPECT_EQ(f->tenant, "acme");
  };
  expect_failure("t/acme/templates/nokind", "template t/acme/templates/nokind: kind is missing");
  expect_failure("t/acme/templates/badname",
                 "template t/acme/templates/badname: metadata.name \"Web_1\" is not a DNS-1123 "
                 "subdomain");
  expect_failure("t/acme/templates/badns",
                 "metadata.namespace \"Shop.Floor\" is not a DNS-1123 label");
  expect_failure("t/acme/templates/notobj", "manifest must be a JSON object, not array");
  expect_failure("t/acme/templates/patched",
                 "override t/acme/overrides/o: patch must be a JSON object, not string");
  expect_failure("t/acme/templates/missing",
                 "placement t/acme/placements/p lists template \"missing\", which does not exist");
  expect_failure("t/acme/templates/broken",
                 "template t/acme/templates/broken after overrides: kind is missing");
}

TEST(Render, BadLocalOverrideFailsThatObject) {
  DesiredState d;
  d.templates["t/acme/templates/web"] = deployment("web");
  d.templates["t/acme/templates/db"] = deployment("db");
  d.placements["t/acme/placements/p"] = {{"templates", {"web", "db"}}, {"sites", {"tower-1"}}};
  d.local_overrides["sites/tower-1/overrides/acme/web"] = {{"patch", 3}};
  auto r = render_site(site(), d);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->objects.size(), 1u);
  const RenderFailure* f = find_failure(*r, "t/acme/templates/web");
  ASSERT_NE(f, nullptr);
  EXPECT_NE(f->error.find("local override sites/tower-1/overrides/acme/web: patch must be a JSON "
                          "object, not number"),
            std::string::npos)
      << f->error;
}

TEST(Render, MalformedPlacementIsAGlobalFailure) {
  DesiredState d;
  d.templates["t/acme/templates/web"] = deployment("web");
  d.placements["t/acme/placements/bad"] = {{"templates", {"web"}}, {"sites", "tower-1"}};
  d.placements["t/acme/placements/bad-list"] = {{"templates", {"web", 7}}, {"sites", {"tower-1"}}};
  auto r = render_site(site(), d);
  ASSERT_TRUE(r.ok());
  // bad-list still places "web"; its bad entry is reported.
  ASSERT_EQ(r->objects.size(), 1u);
  const RenderFailure* f = find_failure(*r, "t/acme/placements/bad");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->template_name.empty());
  EXPECT_NE(f->error.find("placement t/acme/placements/bad: sites must be an array"),
            std::string::npos);
  f = find_failure(*r, "t/acme/placements/bad-list");
  ASSERT_NE(f, nullptr);
  EXPECT_NE(f->error.find("templates[1] of type number is not a DNS-1123 label"), std::string::npos)
      << f->error;
}

TEST(Render, OverrideWithBadSelectorFailsItsTemplate) {
  DesiredState d;
  d.templates["t/acme/templates/web"] = deployment("web");
  d.placements["t/acme/placements/p"] = {{"templates", {"web"}}, {"sites", {"tower-1"}}};
  d.overrides["t/acme/overrides/o"] = {
      {"template", "web"}, {"selector", "region=eu"}, {"patch", json::object()}};
  auto r = render_site(site(), d);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->objects.empty());
  const RenderFailure* f = find_failure(*r, "t/acme/templates/web");
  ASSERT_NE(f, nullptr);
  EXPECT_NE(f->error.find("override t/acme/overrides/o: selector must be an object"),
            std::string::npos);
}

TEST(Render, Limits) {
  DesiredState d;
  for (const char* n : {"a", "b", "c"}) {
    d.templates[std::string("t/acme/templates/") + n] = deployment(n);
  }
  d.placements["t/acme/placements/p"] = {{"templates", {"a", "b", "c"}}, {"sites", {"tower-1"}}};
  RenderLimits limits;
  limits.max_objects = 2;
  auto r = render_site(site(), d, limits);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->objects.size(), 2u);
  ASSERT_EQ(r->failures.size(), 1u);
  EXPECT_EQ(r->failures[0].template_key, "t/acme/templates/c");
  EXPECT_NE(r->failures[0].error.find("more than 2 objects"), std::string::npos);

  limits = RenderLimits{};
  limits.max_object_bytes = 1000;
  d.templates["t/acme/templates/c"]["spec"]["blob"] = std::string(1000, 'x');
  r = render_site(site(), d, limits);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->objects.size(), 2u);
  ASSERT_EQ(r->failures.size(), 1u);
  EXPECT_NE(r->failures[0].error.find("exceeds the limit of 1000"), std::string::npos);
}

TEST(Render, InvalidSiteName) {
  auto r = render_site(SiteInfo{"Tower 1", {}}, DesiredState{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("\"Tower 1\""), std::string::npos);
}

TEST(Render, CanopyMetadataCannotBeForged) {
  DesiredState d;
  json t = deployment("web");
  t["metadata"]["labels"] = {{"app.kubernetes.io/managed-by", "helm"}, {"app", "web"}};
  t["metadata"]["annotations"] = {{"canopy.io/hash", "0000000000000000"}};
  d.templates["t/acme/templates/web"] = t;
  d.placements["t/acme/placements/p"] = {{"templates", {"web"}}, {"sites", {"tower-1"}}};
  auto r = render_site(site(), d);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->objects.size(), 1u);
  const json& o = r->objects[0].object;
  EXPECT_EQ(o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "canopy");
  EXPECT_EQ(o["metadata"]["labels"]["app"], "web");
  EXPECT_EQ(o["metadata"]["annotations"]["canopy.io/hash"], r->objects[0].hash);
  EXPECT_NE(r->objects[0].hash, "0000000000000000");
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

  auto r = render_site(site(), *d);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->objects.size(), static_cast<size_t>(kTemplates));
  EXPECT_TRUE(r->failures.empty());
  const RenderedObject* o = find(*r, "t/acme/templates/app-7");
  ASSERT_NE(o, nullptr);
  EXPECT_EQ(o->object["spec"]["replicas"], 6);
}

}  // namespace
}  // namespace canopy::spoke

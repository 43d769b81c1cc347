#include "model/render.h"

#include <gtest/gtest.h>

#include <string>

namespace canopy::model {
namespace {

using nlohmann::json;

json deployment(const std::string& name, int replicas = 1) {
  return json{{"apiVersion", "apps/v1"},
              {"kind", "Deployment"},
              {"metadata", {{"name", name}, {"namespace", "shop"}}},
              {"spec", {{"replicas", replicas}, {"image", "web:1"}}}};
}

SiteRecord site(std::string name = "tower-1") {
  return SiteRecord{std::move(name), {{"region", "eu-west"}, {"tier", "cell-tower"}}, {}};
}

const RenderFailure* find_failure(const RenderResult& r, const std::string& key) {
  for (const auto& f : r.failures) {
    if (f.template_key == key) return &f;
  }
  return nullptr;
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

bool chooses(const json& doc, const SiteRecord& s) {
  auto p = parse_placement(doc);
  return p.ok() && p->choice.matches(s);
}

TEST(Match, SitesListAndSelector) {
  SiteRecord s = site();
  const json t = {"web"};
  EXPECT_TRUE(chooses(json{{"templates", t}, {"sites", {"tower-2", "tower-1"}}}, s));
  EXPECT_FALSE(chooses(json{{"templates", t}, {"sites", {"tower-2"}}}, s));
  EXPECT_TRUE(
      chooses(json{{"templates", t}, {"selector", {{"matchLabels", {{"region", "eu-west"}}}}}}, s));
  EXPECT_TRUE(chooses(
      json{{"templates", t},
           {"selector", {{"matchLabels", {{"region", "eu-west"}, {"tier", "cell-tower"}}}}}},
      s));
  // Every pair must hold.
  EXPECT_FALSE(
      chooses(json{{"templates", t},
                   {"selector", {{"matchLabels", {{"region", "eu-west"}, {"tier", "shop"}}}}}},
              s));
  EXPECT_FALSE(
      chooses(json{{"templates", t}, {"selector", {{"matchLabels", {{"zone", "a"}}}}}}, s));
  // Either rule is enough.
  EXPECT_TRUE(chooses(json{{"templates", t},
                           {"sites", {"elsewhere"}},
                           {"selector", {{"matchLabels", {{"tier", "cell-tower"}}}}}},
                      s));
  // matchLabels and matchExpressions together: all must hold.
  const json both = {{"templates", t},
                     {"selector",
                      {{"matchLabels", {{"region", "eu-west"}}},
                       {"matchExpressions",
                        {{{"key", "tier"}, {"operator", "In"}, {"values", {"shop", "cell-tower"}}},
                         {{"key", "legacy"}, {"operator", "DoesNotExist"}}}}}}};
  EXPECT_TRUE(chooses(both, s));
  SiteRecord legacy = s;
  legacy.labels["legacy"] = "yes";
  EXPECT_FALSE(chooses(both, legacy));
  // Overrides follow the same rules.
  auto o =
      parse_override(json{{"sites", {"tower-1"}}, {"template", "web"}, {"patch", json::object()}});
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_TRUE(o->choice.matches(s));
  o = parse_override(json{{"template", "web"}, {"patch", json::object()}});
  ASSERT_TRUE(o.ok());
  EXPECT_FALSE(o->choice.matches(s));
}

TEST(Match, PlacementWithoutChoiceIsRefused) {
  for (const json& doc :
       {json{{"templates", {"web"}}}, json{{"templates", {"web"}}, {"selector", json::object()}},
        json{{"templates", {"web"}}, {"selector", {{"matchLabels", json::object()}}}}}) {
    auto p = parse_placement(doc);
    ASSERT_FALSE(p.ok()) << doc.dump();
    EXPECT_NE(p.status().message().find("sites or selector is missing"), std::string::npos)
        << p.status().message();
  }
}

TEST(Match, MalformedSelectorsAreErrors) {
  auto p = parse_placement(json{{"templates", {"web"}}, {"sites", "tower-1"}});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("sites must be an array"), std::string::npos);
  p = parse_placement(
      json{{"templates", {"web"}}, {"selector", {{"matchLabels", {{"region", 1}}}}}});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("selector.matchLabels.region must be a string"),
            std::string::npos)
      << p.status().message();
  p = parse_placement(
      json{{"templates", {"web"}}, {"selector", {{"matchExpressions", {{{"key", "region"}}}}}}});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("selector.matchExpressions[0].operator is missing"),
            std::string::npos)
      << p.status().message();
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
  // "patched" renders unpatched: its only override is one the model refuses,
  // which applies to no site (reported as a global failure).
  ASSERT_EQ(r->objects.size(), 2u);
  EXPECT_EQ(r->objects[0].template_key, "t/acme/templates/good");
  EXPECT_EQ(r->objects[1].template_key, "t/acme/templates/patched");
  ASSERT_EQ(r->failures.size(), 7u);
  const RenderFailure* global = find_failure(*r, "t/acme/overrides/o");
  ASSERT_NE(global, nullptr);
  EXPECT_NE(global->error.find("patch must be an object (a JSON merge patch), not string"),
            std::string::npos);

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
  EXPECT_NE(f->error.find("local override sites/tower-1/overrides/acme/web: patch must be an "
                          "object (a JSON merge patch), not number"),
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
  // A placement is read whole or not at all (as the hub's index reads it):
  // bad-list places nothing, and says why.
  EXPECT_TRUE(r->objects.empty());
  const RenderFailure* f = find_failure(*r, "t/acme/placements/bad");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->template_name.empty());
  EXPECT_NE(f->error.find("placement t/acme/placements/bad: sites must be an array"),
            std::string::npos);
  f = find_failure(*r, "t/acme/placements/bad-list");
  ASSERT_NE(f, nullptr);
  EXPECT_NE(f->error.find("templates[1] must be a string, not number"), std::string::npos)
      << f->error;
}

TEST(Render, UnreadableOverrideAppliesNowhereAndIsReported) {
  DesiredState d;
  d.templates["t/acme/templates/web"] = deployment("web");
  d.placements["t/acme/placements/p"] = {{"templates", {"web"}}, {"sites", {"tower-1"}}};
  d.overrides["t/acme/overrides/o"] = {
      {"template", "web"}, {"selector", "region=eu"}, {"patch", {{"spec", {{"replicas", 9}}}}}};
  auto r = render_site(site(), d);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->objects.size(), 1u);
  EXPECT_EQ(r->objects[0].object["spec"]["replicas"], 1);
  const RenderFailure* f = find_failure(*r, "t/acme/overrides/o");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->template_name.empty());
  EXPECT_NE(f->error.find("override t/acme/overrides/o: selector must be an object"),
            std::string::npos)
      << f->error;
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
  auto r = render_site(SiteRecord{"Tower 1", {}, {}}, DesiredState{});
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

}  // namespace
}  // namespace canopy::model

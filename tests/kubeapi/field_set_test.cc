// Unit tests of the test API server's pure parts: field sets, server-side
// apply and selectors. No sockets.
#include "tests/kubeapi/field_set.h"

#include <gtest/gtest.h>

#include "tests/kubeapi/label_selector.h"
#include "tests/kubeapi/server_side_apply.h"

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

json deployment_spec() {
  return json::parse(R"({
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "template": {"spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}
  })");
}

TEST(FieldSet, DeploymentFieldsLookLikeTheRealServers) {
  FieldSet set = fields_of(deployment_spec());
  json want = json::parse(R"({
    "f:spec": {"f:replicas": {}, "f:selector": {},
               "f:template": {"f:spec": {"f:containers": {
                 "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}, "f:ports": {}}}}}}
  })");
  EXPECT_EQ(set.fields_v1(), want);
  EXPECT_TRUE(set.contains({"f:spec", "f:replicas"}));
  EXPECT_TRUE(
      set.contains({"f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"web\"}"}));
  EXPECT_FALSE(set.contains({"f:spec", "f:template"}));
  EXPECT_TRUE(set.covers({"f:spec", "f:template"}));
  EXPECT_EQ(set.members().size(), 6u);
}

TEST(FieldSet, EraseKeepsTheCanonicalForm) {
  FieldSet set;
  FieldPath item{"f:list", "k:{\"name\":\"a\"}"};
  set.insert(item);
  set.insert({"f:list", "k:{\"name\":\"a\"}", "f:name"});
  EXPECT_EQ(set.fields_v1()["f:list"]["k:{\"name\":\"a\"}"],
            json::parse(R"({".": {}, "f:name": {}})"));
  set.erase({"f:list", "k:{\"name\":\"a\"}", "f:name"});
  EXPECT_EQ(set.fields_v1(), json::parse(R"({"f:list": {"k:{\"name\":\"a\"}": {}}})"));
  set.erase(item);
  EXPECT_TRUE(set.empty());
}

TEST(FieldSet, PathStringAndValueAt) {
  FieldPath p{"f:spec", "f:containers", "k:{\"name\":\"web\"}", "f:image"};
  EXPECT_EQ(path_string(p), ".spec.containers[name=\"web\"].image");
  json object =
      json::parse(R"({"spec": {"containers": [{"name": "x"}, {"name": "web", "image": "i"}]}})");
  ASSERT_NE(value_at(object, p), nullptr);
  EXPECT_EQ(*value_at(object, p), "i");
  EXPECT_TRUE(erase_at(object, {"f:spec", "f:containers", "k:{\"name\":\"x\"}"}));
  EXPECT_EQ(object["spec"]["containers"].size(), 1u);
}

ApplyOutput apply(const json& live, const json& config, const std::string& manager,
                  bool force = false) {
  return server_side_apply(
      ApplyInput{live, config, manager, "v1", "2026-01-01T00:00:00Z", force, ""});
}

TEST(ServerSideApply, ConflictWithoutForceAndTransferWithForce) {
  ApplyOutput a = apply(nullptr, json::parse(R"({"data": {"owner": "a", "x": "1"}})"), "a");
  ASSERT_TRUE(a.conflicts.empty());
  ApplyOutput b = apply(a.object, json::parse(R"({"data": {"owner": "b"}})"), "b");
  ASSERT_EQ(b.conflicts.size(), 1u);
  EXPECT_EQ(conflict_message(b.conflicts),
            "Apply failed with 1 conflict: conflict with \"a\": .data.owner");
  ApplyOutput forced = apply(a.object, json::parse(R"({"data": {"owner": "b"}})"), "b", true);
  ASSERT_TRUE(forced.conflicts.empty());
  EXPECT_EQ(forced.object["data"], json::parse(R"({"owner": "b", "x": "1"})"));
  auto entries = read_managed_fields(forced.object);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].fields.fields_v1(), json::parse(R"({"f:data": {"f:x": {}}})"));
  EXPECT_EQ(entries[1].manager, "b");
  EXPECT_EQ(entries[1].fields.fields_v1(), json::parse(R"({"f:data": {"f:owner": {}}})"));
}

TEST(ServerSideApply, SameValueIsSharedNotAConflict) {
  ApplyOutput a = apply(nullptr, json::parse(R"({"data": {"k": "v"}})"), "a");
  ApplyOutput b = apply(a.object, json::parse(R"({"data": {"k": "v"}})"), "b");
  ASSERT_TRUE(b.conflicts.empty());
  // a stops applying k: b still owns it, so it stays.
  ApplyOutput a2 = apply(b.object, json::parse(R"({"data": {"other": "1"}})"), "a");
  EXPECT_EQ(a2.object["data"], json::parse(R"({"k": "v", "other": "1"})"));
}

TEST(ServerSideApply, FieldsNoLongerAppliedAreRemoved) {
  ApplyOutput a = apply(nullptr, json::parse(R"({"data": {"k": "v", "gone": "x"},
      "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}})"),
                        "a");
  ApplyOutput a2 = apply(a.object, json::parse(R"({"data": {"k": "v"},
      "spec": {"containers": [{"name": "b", "image": "3"}]}})"),
                         "a");
  ASSERT_TRUE(a2.conflicts.empty());
  EXPECT_EQ(a2.object["data"], json::parse(R"({"k": "v"})"));
  EXPECT_EQ(a2.object["spec"]["containers"], json::parse(R"([{"name": "b", "image": "3"}])"));
}

TEST(ServerSideApply, MultipleConflictsAreGroupedByManager) {
  ApplyOutput a = apply(nullptr, json::parse(R"({"data": {"p": "1", "q": "1"}})"), "a");
  ApplyOutput b = apply(a.object, json::parse(R"({"data": {"p": "2", "q": "2"}})"), "b");
  EXPECT_EQ(conflict_message(b.conflicts),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .data.p\n- .data.q");
}

TEST(ServerSideApply, UpdateTakesChangedFields) {
  ApplyOutput a = apply(nullptr, json::parse(R"({"data": {"k": "v"}})"), "a");
  json edited = a.object;
  edited["data"]["k"] = "edited";
  json updated =
      record_update(a.object, edited, "kubectl-edit", "v1", "2026-01-01T00:00:00Z", false);
  auto entries = read_managed_fields(updated);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].manager, "kubectl-edit");
  ApplyOutput again = apply(updated, json::parse(R"({"data": {"k": "v"}})"), "a");
  ASSERT_EQ(again.conflicts.size(), 1u);
  EXPECT_EQ(again.conflicts[0].manager, "\"kubectl-edit\" using v1 at 2026-01-01T00:00:00Z");
}

TEST(ServerSideApply, StatusApplyKeepsItsOwnEntry) {
  ApplyOutput a = apply(nullptr, json::parse(R"({"spec": {"replicas": 1}})"), "canopy");
  ApplyInput status{a.object,
                    json::parse(R"({"status": {"ready": 1}})"),
                    "canopy",
                    "v1",
                    "2026-01-01T00:00:00Z",
                    false,
                    "status"};
  ApplyOutput s = server_side_apply(status);
  ASSERT_TRUE(s.conflicts.empty());
  EXPECT_EQ(s.object["spec"]["replicas"], 1);
  auto entries = read_managed_fields(s.object);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].subresource, "status");
  EXPECT_EQ(s.object["metadata"]["managedFields"][1]["subresource"], "status");
}

TEST(LabelSelector, ParsesAndMatches) {
  json labels{{"app", "web"}, {"tier", "front"}};
  auto match = [&](const std::string& text) {
    auto s = parse_label_selector(text);
    EXPECT_TRUE(s.ok()) << text;
    return s.ok() && matches(*s, labels);
  };
  EXPECT_TRUE(match(""));
  EXPECT_TRUE(match("app=web"));
  EXPECT_TRUE(match("app==web,tier!=back"));
  EXPECT_TRUE(match("app in (web, api),!missing"));
  EXPECT_TRUE(match("tier notin (back),app"));
  EXPECT_FALSE(match("app=api"));
  EXPECT_FALSE(match("missing"));
  EXPECT_FALSE(parse_label_selector("app in web").ok());
  EXPECT_FALSE(parse_field_selector("status.phase=Running").ok());
  EXPECT_TRUE(parse_field_selector("metadata.name=x").ok());
}

}  // namespace
}  // namespace canopy::kubeapi

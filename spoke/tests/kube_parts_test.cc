// The kube applier's parts that need no API server: object ids, the
// projection of live fields onto applied ones (drift), and health read from
// an object's status the way kubectl rollout status reads it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "spoke/kube/health.h"
#include "spoke/kube/kube_applier.h"

namespace canopy::spoke::kube {
namespace {

using nlohmann::json;

TEST(ObjectIdTest, RoundTripsAndRejectsMalformed) {
  for (const std::string id :
       {"apps/v1/Deployment/shop/web", "v1/Namespace//shop", "example.com/v1/Widget/ns/w"}) {
    auto r = parse_object_id(id);
    ASSERT_TRUE(r) << id;
    EXPECT_EQ(object_id(*r), id);
  }
  EXPECT_EQ(parse_object_id("apps/v1/Deployment/shop/web")->api_version, "apps/v1");
  EXPECT_FALSE(parse_object_id("Deployment/web"));
  EXPECT_FALSE(parse_object_id("a/b/c/Kind/ns/name"));
  EXPECT_FALSE(parse_object_id("v1/ConfigMap/ns/"));
}

TEST(ProjectFieldsTest, MatchesNamedListsByName) {
  json applied = {{"spec", {{"containers", json::array({{{"name", "web"}, {"image", "a"}}})}}}};
  json live = {{"spec",
                {{"containers", json::array({{{"name", "side"}, {"image", "x"}},
                                             {{"name", "web"}, {"image", "b"}, {"extra", 1}}})}}}};
  json p = project_fields(applied, live);
  EXPECT_EQ(p,
            json({{"spec", {{"containers", json::array({{{"name", "web"}, {"image", "b"}}})}}}}));
  auto paths = differing_paths(applied, p);
  ASSERT_EQ(paths.size(), 1u);
  EXPECT_EQ(paths[0], ".spec.containers[web].image");
}

json with(const char* api, const char* kind, json spec, json status, int64_t generation = 1) {
  return {{"apiVersion", api},
          {"kind", kind},
          {"metadata", {{"name", "x"}, {"generation", generation}}},
          {"spec", std::move(spec)},
          {"status", std::move(status)}};
}

TEST(HealthTest, ObservedGenerationComesFirst) {
  auto h = health_of(with("apps/v1", "Deployment", {{"replicas", 1}},
                          {{"observedGeneration", 1},
                           {"replicas", 1},
                           {"updatedReplicas", 1},
                           {"availableReplicas", 1}},
                          2));
  EXPECT_EQ(h.state, kProgressing);
  EXPECT_EQ(h.message, "waiting for the controller to observe generation 2");
}

TEST(HealthTest, StatefulSetDaemonSetAndJob) {
  json sts_status = {{"observedGeneration", 1},
                     {"readyReplicas", 3},
                     {"updatedReplicas", 3},
                     {"currentRevision", "a"},
                     {"updateRevision", "b"}};
  EXPECT_EQ(health_of(with("apps/v1", "StatefulSet", {{"replicas", 3}}, sts_status)).message,
            "revision b rolling out");
  sts_status["currentRevision"] = "b";
  EXPECT_EQ(health_of(with("apps/v1", "StatefulSet", {{"replicas", 3}}, sts_status)).state,
            kHealthy);
  sts_status["readyReplicas"] = 2;
  EXPECT_EQ(health_of(with("apps/v1", "StatefulSet", {{"replicas", 3}}, sts_status)).message,
            "2 of 3 replicas ready");

  json ds = {{"observedGeneration", 1},
             {"desiredNumberScheduled", 4},
             {"updatedNumberScheduled", 4},
             {"numberAvailable", 3}};
  EXPECT_EQ(health_of(with("apps/v1", "DaemonSet", json::object(), ds)).message,
            "3 of 4 pods available");
  ds["numberAvailable"] = 4;
  EXPECT_EQ(health_of(with("apps/v1", "DaemonSet", json::object(), ds)).state, kHealthy);

  EXPECT_EQ(health_of(with("batch/v1", "Job", json::object(), {{"active", 1}})).state,
            kProgressing);
  json failed = {{"conditions", json::array({{{"type", "Failed"},
                                              {"status", "True"},
                                              {"reason", "BackoffLimitExceeded"}}})}};
  auto h = health_of(with("batch/v1", "Job", json::object(), failed));
  EXPECT_EQ(h.state, kDegraded);
  EXPECT_EQ(h.message, "Failed=True (BackoffLimitExceeded)");
  json complete = {{"conditions", json::array({{{"type", "Complete"}, {"status", "True"}}})}};
  EXPECT_EQ(health_of(with("batch/v1", "Job", json::object(), complete)).state, kHealthy);
}

TEST(HealthTest, AnyKindByItsReadyConditionAndKindsWithoutStatus) {
  auto cond = [](const char* type, const char* status) {
    return json{
        {"conditions",
         json::array({{{"type", type}, {"status", status}, {"reason", "R"}, {"message", "m"}}})}};
  };
  EXPECT_EQ(
      health_of(with("example.com/v1", "Widget", json::object(), cond("Ready", "True"))).state,
      kHealthy);
  auto h = health_of(with("example.com/v1", "Widget", json::object(), cond("Ready", "False")));
  EXPECT_EQ(h.state, kDegraded);
  EXPECT_EQ(h.message, "Ready=False (R): m");
  EXPECT_EQ(
      health_of(with("example.com/v1", "Widget", json::object(), cond("Available", "Unknown")))
          .state,
      kProgressing);
  json cm = {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "c"}}}};
  EXPECT_EQ(health_of(cm).state, kHealthy);
  EXPECT_EQ(health_of(json()).state, kProgressing);
}

}  // namespace
}  // namespace canopy::spoke::kube

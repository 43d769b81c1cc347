// The kube applier against the test API server (tests/kubeapi, a stand-in
// for kube-apiserver checked with the real kubectl): kubeconfig variants, TLS
// failures, apply and update by server-side apply, conflicts with and without
// force, ordering with a CRD and its objects, inventory and prune (and what
// is never pruned), restart, health read back, drift detected and repaired,
// a cluster that answers 429 or is down.
#include "spoke/kube/kube_applier.h"

#include <gtest/gtest.h>

#include <fstream>

#include "model/render.h"
#include "spoke/kube/kubeconfig.h"
#include "spoke/reconciler.h"
#include "store/store.h"
#include "tests/kubeapi/test_cluster.h"
#include "tests/support/temp_dir.h"

namespace canopy::spoke::kube {
namespace {

using kubeapi::TestCluster;
using nlohmann::json;

model::RenderedObject rendered(json object) {
  object["metadata"]["labels"][std::string(model::kManagedByLabel)] = model::kManagedByValue;
  model::RenderedObject o;
  o.tenant = "acme";
  o.template_name = object["metadata"]["name"];
  o.template_key = "t/acme/templates/" + o.template_name;
  o.hash = std::to_string(std::hash<std::string>{}(object.dump()));
  object["metadata"]["annotations"]["canopy.io/hash"] = o.hash;
  o.object = std::move(object);
  return o;
}

json config_map(const std::string& ns, const std::string& name, const std::string& value) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"data", {{"key", value}}}};
}

json deployment(const std::string& ns, const std::string& name, int replicas) {
  return {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", {{"name", name}, {"namespace", ns}}},
      {"spec",
       {{"replicas", replicas},
        {"selector", {{"matchLabels", {{"app", name}}}}},
        {"template",
         {{"metadata", {{"labels", {{"app", name}}}}},
          {"spec", {{"containers", json::array({{{"name", "web"}, {"image", "nginx:1"}}})}}}}}}}};
}

json namespace_object(const std::string& name) {
  return {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}}}};
}

json widget_crd() {
  return json::parse(R"({
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": true, "storage": true,
                           "schema": {"openAPIV3Schema": {"type": "object",
                             "x-kubernetes-preserve-unknown-fields": true}}}]}})");
}

class KubeApplierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kubeapi::TestClusterOptions options;
    options.api.crd_establish_delay = std::chrono::milliseconds(300);
    auto cluster = TestCluster::start(dir_.path().string(), options);
    ASSERT_TRUE(cluster.ok()) << cluster.status().to_string();
    cluster_ = std::move(*cluster);
    open_applier();
  }

  KubeApplierOptions options() {
    KubeApplierOptions o;
    auto e = load_kubeconfig(cluster_->kubeconfig_token());
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    o.endpoint = *e;
    o.inventory_path = dir_.file("inventory.json");
    o.audit_interval = std::chrono::milliseconds(0);  // audit at every pass
    o.progress_interval = std::chrono::milliseconds(0);
    o.client.sleep = [](std::chrono::milliseconds) {};
    return o;
  }

  void open_applier() {
    applier_.reset();
    auto a = KubeApplier::open(options());
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    applier_ = std::move(*a);
  }

  std::optional<json> live(const std::string& group, const std::string& resource,
                           const std::string& ns, const std::string& name) {
    return cluster_->server().api().object(group, resource, ns, name);
  }

  // A request as another client would send it, in process.
  kubeapi::ApiResponse request(const std::string& method, const std::string& path, const json& body,
                               const std::string& content_type) {
    kubeapi::ApiRequest r;
    r.method = method;
    auto q = path.find('?');
    r.path = path.substr(0, q);
    if (q != std::string::npos) {
      std::string query = path.substr(q + 1);
      size_t start = 0;
      while (start < query.size()) {
        size_t amp = query.find('&', start);
        std::string kv =
            query.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
        auto eq = kv.find('=');
        r.query.emplace(kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1));
        if (amp == std::string::npos) break;
        start = amp + 1;
      }
    }
    r.content_type = content_type;
    r.user_agent = "kubectl/v1.32";
    r.body = body.dump();
    return cluster_->server().api().handle(r);
  }

  // Field manager "ops" takes ConfigMap default/settings' data.key with force
  // (kubectl apply --server-side --force-conflicts), or edits it by merge
  // patch (kubectl edit): either way the field is no longer canopy's.
  void ops_takes_settings(const std::string& value) {
    auto r = request("PATCH",
                     "/api/v1/namespaces/default/configmaps/settings?fieldManager=ops&force=true",
                     config_map("default", "settings", value), "application/apply-patch+yaml");
    ASSERT_EQ(r.code, 200) << r.body;
  }
  void ops_edits_settings(const std::string& value) {
    auto r = request("PATCH", "/api/v1/namespaces/default/configmaps/settings?fieldManager=ops",
                     {{"data", {{"key", value}}}}, "application/merge-patch+json");
    ASSERT_EQ(r.code, 200) << r.body;
  }

  size_t patches() {
    size_t n = 0;
    for (const auto& r : cluster_->server().served_requests()) n += r.method == "PATCH";
    return n;
  }

  testing::TempDir dir_{"canopy-kube-applier-"};
  std::unique_ptr<TestCluster> cluster_;
  std::unique_ptr<KubeApplier> applier_;
};

TEST_F(KubeApplierTest, AppliesByServerSideApplyAndUpdatesOnlyWhatChanged) {
  auto cm = rendered(config_map("default", "settings", "one"));
  auto dep = rendered(deployment("default", "web", 2));
  auto r = applier_->apply_all({&cm, &dep});
  ASSERT_TRUE(r[0].ok()) << r[0].status().to_string();
  ASSERT_TRUE(r[1].ok()) << r[1].status().to_string();
  EXPECT_TRUE(r[0]->changed);
  EXPECT_EQ(r[0]->message, "server-side applied ConfigMap default/settings");
  EXPECT_EQ(r[0]->health, "healthy");
  EXPECT_EQ(r[1]->health, "progressing");  // no controller has observed it yet

  auto obj = live("", "configmaps", "default", "settings");
  ASSERT_TRUE(obj);
  EXPECT_EQ((*obj)["data"]["key"], "one");
  bool canopy_applies = false;
  for (const auto& m : (*obj)["metadata"]["managedFields"]) {
    canopy_applies |= m["manager"] == "canopy" && m["operation"] == "Apply";
  }
  EXPECT_TRUE(canopy_applies) << obj->dump();
  for (const auto& req : cluster_->server().served_requests()) {
    if (req.method == "PATCH") {
      EXPECT_EQ(req.content_type, "application/apply-patch+yaml");
    }
  }

  // Unchanged: no write.
  const size_t before = patches();
  r = applier_->apply_all({&cm, &dep});
  ASSERT_TRUE(r[0].ok());
  EXPECT_FALSE(r[0]->changed);
  EXPECT_EQ(patches(), before);

  // Changed: one write, the new value live.
  auto cm2 = rendered(config_map("default", "settings", "two"));
  r = applier_->apply_all({&cm2, &dep});
  ASSERT_TRUE(r[0].ok());
  EXPECT_TRUE(r[0]->changed);
  EXPECT_FALSE(r[1]->changed);
  EXPECT_EQ(patches(), before + 1);
  EXPECT_EQ((*live("", "configmaps", "default", "settings"))["data"]["key"], "two");
}

TEST_F(KubeApplierTest, NamespacesAndCrdsFirstAndObjectsOfANewKindAfterEstablished) {
  auto widget = rendered(json::parse(R"({"apiVersion": "example.com/v1", "kind": "Widget",
      "metadata": {"name": "w1", "namespace": "shop"}, "spec": {"size": 3}})"));
  auto cm = rendered(config_map("shop", "settings", "x"));
  auto crd = rendered(widget_crd());
  auto ns = rendered(namespace_object("shop"));
  // Given in the worst order: objects first, their namespace and CRD last.
  auto r = applier_->apply_all({&widget, &cm, &crd, &ns});
  for (const auto& x : r) ASSERT_TRUE(x.ok()) << x.status().to_string();
  EXPECT_TRUE(live("example.com", "widgets", "shop", "w1"));
  EXPECT_TRUE(live("", "configmaps", "shop", "settings"));

  // Prune order: the rest, then CRDs, then Namespaces.
  auto inv = applier_->inventory();
  ASSERT_TRUE(inv.ok());
  ASSERT_EQ(inv->size(), 4u);
  EXPECT_EQ((*inv)[2], "apiextensions.k8s.io/v1/CustomResourceDefinition//widgets.example.com");
  EXPECT_EQ((*inv)[3], "v1/Namespace//shop");
  for (const auto& id : *inv) ASSERT_TRUE(applier_->remove(id).ok()) << id;
  EXPECT_FALSE(live("", "configmaps", "shop", "settings"));
  EXPECT_FALSE(
      live("apiextensions.k8s.io", "customresourcedefinitions", "", "widgets.example.com"));
}

TEST_F(KubeApplierTest, AClusterScopedObjectWithANamespaceIsNotTakenForDrift) {
  json ns = namespace_object("shop");
  ns["metadata"]["namespace"] = "ignored";  // the server ignores it for a Namespace
  auto o = rendered(ns);
  ASSERT_TRUE(applier_->apply(o).ok());
  const size_t before = patches();
  auto r = applier_->apply_all({&o});  // an audit: the object is found, no repair
  ASSERT_TRUE(r[0].ok()) << r[0].status().to_string();
  EXPECT_EQ(r[0]->drift, "");
  EXPECT_EQ(patches(), before);
  EXPECT_TRUE(live("", "namespaces", "", "shop"));
}

TEST_F(KubeApplierTest, ObjectsOfACrdAppliedAfterAFailedPassFindTheirKindAtOnce) {
  auto widget = rendered(json::parse(R"({"apiVersion": "example.com/v1", "kind": "Widget",
      "metadata": {"name": "w1", "namespace": "default"}, "spec": {"size": 3}})"));
  // Without its CRD the kind is not served: discovery has read example.com/v1.
  auto r = applier_->apply_all({&widget});
  ASSERT_FALSE(r[0].ok());
  EXPECT_EQ(r[0].status().code(), StatusCode::kNotFound);
  EXPECT_NE(r[0].status().message().find("example.com/v1"), std::string::npos)
      << r[0].status().message();
  // The next pass brings the CRD: its objects go in the same pass.
  auto crd = rendered(widget_crd());
  r = applier_->apply_all({&widget, &crd});
  ASSERT_TRUE(r[0].ok()) << r[0].status().to_string();
  EXPECT_TRUE(live("example.com", "widgets", "default", "w1"));
}

// object_json() leaves out the server's managedFields of an object and of a
// list's items, and nothing else: not a key of that name in the object's
// data, not one outside metadata; a body that is not JSON is still discarded.
TEST(KubeResponseTest, ObjectJsonLeavesOutOnlyManagedFieldsOfMetadata) {
  const json managed = json::array({{{"manager", "canopy"}, {"operation", "Apply"}}});
  const json cm = {{"apiVersion", "v1"},
                   {"kind", "ConfigMap"},
                   {"metadata", {{"name", "a"}, {"uid", "u1"}, {"managedFields", managed}}},
                   {"data", {{"managedFields", "kept"}}},
                   {"spec", {{"metadata", {{"x", 1}}}, {"items", {1, 2}}}}};
  KubeResponse one{200, cm.dump(), 1};
  json want = cm;
  want["metadata"].erase("managedFields");
  EXPECT_EQ(one.object_json(), want);
  EXPECT_EQ(one.json(), cm);  // json() keeps everything

  json nested = cm;
  nested["spec"]["template"] = {{"metadata", {{"managedFields", managed}}}};
  json list = {
      {"kind", "ConfigMapList"}, {"metadata", {{"resourceVersion", "7"}}}, {"items", {cm, nested}}};
  KubeResponse many{200, list.dump(), 1};
  json got = many.object_json();
  ASSERT_EQ(got["items"].size(), 2u);
  for (const json& item : got["items"]) {
    EXPECT_FALSE(item["metadata"].contains("managedFields")) << item.dump();
    EXPECT_EQ(item["metadata"]["uid"], "u1");
    EXPECT_EQ(item["data"]["managedFields"], "kept");
  }
  // Only the items' own metadata: a pod template's is the object's content.
  EXPECT_EQ(got["items"][1]["spec"]["template"], nested["spec"]["template"]);

  KubeResponse bad{200, "{\"metadata\": {\"managedFields\": [", 1};
  EXPECT_TRUE(bad.object_json().is_discarded());
  KubeResponse text{200, "Internal Server Error", 1};
  EXPECT_TRUE(text.object_json().is_discarded());
}

TEST(DiscoveryTest, WalksApiAndApisAsKubectlApiResourcesDoes) {
  canopy::testing::TempDir dir("canopy-discovery-");
  auto cluster = TestCluster::start(dir.path().string());
  ASSERT_TRUE(cluster.ok());
  auto e = load_kubeconfig((*cluster)->kubeconfig_token());
  ASSERT_TRUE(e.ok());
  auto client = KubeClient::create(*e);
  ASSERT_TRUE(client.ok());
  Discovery d(client->get());
  auto all = d.refresh_all();
  ASSERT_TRUE(all.ok()) << all.status().to_string();
  std::map<std::string, ResourceType> by_kind;
  for (const auto& t : *all) by_kind[t.api_version() + "/" + t.kind] = t;
  ASSERT_TRUE(by_kind.count("apps/v1/Deployment"));
  EXPECT_EQ(by_kind["apps/v1/Deployment"].resource, "deployments");
  EXPECT_TRUE(by_kind["apps/v1/Deployment"].namespaced);
  ASSERT_TRUE(by_kind.count("v1/Namespace"));
  EXPECT_FALSE(by_kind["v1/Namespace"].namespaced);
  EXPECT_EQ(by_kind["v1/Namespace"].object_path("", "shop"), "/api/v1/namespaces/shop");
  EXPECT_EQ(by_kind["apps/v1/Deployment"].object_path("shop", "web"),
            "/apis/apps/v1/namespaces/shop/deployments/web");
  // Resolving from the cache sends nothing more.
  const uint64_t reads = d.documents_read();
  ASSERT_TRUE(d.resolve("apps/v1", "Deployment").ok());
  EXPECT_EQ(d.documents_read(), reads);
  EXPECT_EQ(d.resolve("apps/v1", "NoSuchKind").status().code(), StatusCode::kNotFound);
}

TEST_F(KubeApplierTest, ConflictIsReportedAndForcedOnlyWhenAnnotated) {
  auto cm = rendered(config_map("default", "settings", "one"));
  ASSERT_TRUE(applier_->apply(cm).ok());
  // Another manager takes the field with force.
  ASSERT_NO_FATAL_FAILURE(ops_takes_settings("ops"));

  auto cm2 = rendered(config_map("default", "settings", "two"));
  auto r = applier_->apply(cm2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAborted);
  EXPECT_NE(r.status().message().find("409 Conflict"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("forceConflicts"), std::string::npos);
  EXPECT_EQ((*live("", "configmaps", "default", "settings"))["data"]["key"], "ops");
  EXPECT_EQ(applier_->stats().conflicts, 1u);

  json forced = config_map("default", "settings", "two");
  forced["metadata"]["annotations"][kForceAnnotation] = "true";
  auto cm3 = rendered(forced);
  r = applier_->apply(cm3);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*live("", "configmaps", "default", "settings"))["data"]["key"], "two");
}

TEST_F(KubeApplierTest, ThePlacementsPolicyForcesAndReportsDrift) {
  auto cm = rendered(config_map("default", "settings", "one"));
  ASSERT_TRUE(applier_->apply(cm).ok());
  ASSERT_NO_FATAL_FAILURE(ops_takes_settings("ops"));
  auto cm2 = rendered(config_map("default", "settings", "two"));
  ASSERT_FALSE(applier_->apply(cm2).ok());  // no policy: a conflict
  applier_->set_policies({{cm2.template_key, {.force_conflicts = true, .report_drift = true}}});
  ASSERT_TRUE(applier_->apply(cm2).ok());
  EXPECT_EQ((*live("", "configmaps", "default", "settings"))["data"]["key"], "two");
  // Drift under the placement's report policy: reported, not repaired.
  ASSERT_NO_FATAL_FAILURE(ops_edits_settings("hand"));
  auto r = applier_->apply_all({&cm2});
  ASSERT_TRUE(r[0].ok());
  EXPECT_EQ(r[0]->drift, "drifted: .data.key (policy report: not repaired)");
  EXPECT_EQ((*live("", "configmaps", "default", "settings"))["data"]["key"], "hand");
}

// The reconciler hands the applier its placements' policies: a placement
// with apply.forceConflicts takes a field another manager owns.
TEST_F(KubeApplierTest, TheReconcilerPassesThePlacementsPolicy) {
  StoreOptions so;
  so.path = dir_.file("store");
  so.durability = Durability::kNone;
  auto store = Store::open(so);
  ASSERT_TRUE(store.ok());
  Reconciler reconciler(store->get(), "s1", applier_.get());
  auto put = [&](const std::string& key, const json& doc) {
    ASSERT_TRUE((*store)->put_value(key, doc).ok()) << key;
  };
  put("sites/s1", {{"name", "s1"}, {"labels", json::object()}});
  put("t/acme/templates/settings", config_map("default", "settings", "one"));
  put("t/acme/placements/p", {{"templates", {"settings"}}, {"sites", {"s1"}}});
  ASSERT_TRUE(reconciler.reconcile_once().ok());
  ASSERT_EQ((*live("", "configmaps", "default", "settings"))["data"]["key"], "one");
  ASSERT_NO_FATAL_FAILURE(ops_takes_settings("ops"));

  put("t/acme/templates/settings", config_map("default", "settings", "two"));
  EXPECT_FALSE(reconciler.reconcile_once().ok());  // the conflict, reported
  auto st = (*store)->get(model::status_key("s1", "acme", "settings"));
  ASSERT_TRUE(st.ok());
  EXPECT_NE(st->find("forceConflicts"), std::string::npos) << *st;

  put("t/acme/placements/p",
      {{"templates", {"settings"}}, {"sites", {"s1"}}, {"apply", {{"forceConflicts", true}}}});
  ASSERT_TRUE(reconciler.reconcile_once().ok());
  EXPECT_EQ((*live("", "configmaps", "default", "settings"))["data"]["key"], "two");
}

TEST_F(KubeApplierTest, PrunesOnlyItsOwnLabelledObjects) {
  auto a = rendered(config_map("default", "a", "1"));
  auto b = rendered(config_map("default", "b", "1"));
  ASSERT_TRUE(applier_->apply(a).ok());
  ASSERT_TRUE(applier_->apply(b).ok());
  // Someone else's object, even with our label, is not in the inventory.
  auto foreign = request("POST", "/api/v1/namespaces/default/configmaps",
                         {{"apiVersion", "v1"},
                          {"kind", "ConfigMap"},
                          {"metadata",
                           {{"name", "foreign"},
                            {"namespace", "default"},
                            {"labels", {{"app.kubernetes.io/managed-by", "canopy"}}}}}},
                         "application/json");
  ASSERT_EQ(foreign.code, 201) << foreign.body;
  ASSERT_TRUE(applier_->remove("v1/ConfigMap/default/foreign").ok());
  EXPECT_TRUE(live("", "configmaps", "default", "foreign"));

  // b's label taken off by hand: b is released, not deleted.
  auto unlabel = request("PATCH", "/api/v1/namespaces/default/configmaps/b?fieldManager=ops",
                         {{"metadata", {{"labels", {{"app.kubernetes.io/managed-by", nullptr}}}}}},
                         "application/merge-patch+json");
  ASSERT_EQ(unlabel.code, 200) << unlabel.body;
  ASSERT_TRUE(applier_->remove("v1/ConfigMap/default/b").ok());
  EXPECT_TRUE(live("", "configmaps", "default", "b"));
  EXPECT_EQ(applier_->stats().left_unlabelled, 1u);

  ASSERT_TRUE(applier_->remove("v1/ConfigMap/default/a").ok());
  EXPECT_FALSE(live("", "configmaps", "default", "a"));
  auto inv = applier_->inventory();
  ASSERT_TRUE(inv.ok());
  EXPECT_TRUE(inv->empty());
  // Removing again (already gone) is fine.
  EXPECT_TRUE(applier_->remove("v1/ConfigMap/default/a").ok());
}

TEST_F(KubeApplierTest, InventorySurvivesARestartAndNothingIsSentAgain) {
  auto a = rendered(config_map("default", "a", "1"));
  auto b = rendered(config_map("default", "b", "1"));
  ASSERT_TRUE(applier_->apply(a).ok());
  ASSERT_TRUE(applier_->apply(b).ok());
  open_applier();  // a restarted spoke
  auto inv = applier_->inventory();
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(inv->size(), 2u);
  const size_t before = patches();
  auto r = applier_->apply_all({&a});
  ASSERT_TRUE(r[0].ok());
  EXPECT_FALSE(r[0]->changed);
  EXPECT_EQ(patches(), before);
  // A restart deletes nothing; only an explicit prune of b does.
  EXPECT_TRUE(live("", "configmaps", "default", "b"));
  ASSERT_TRUE(applier_->remove("v1/ConfigMap/default/b").ok());
  EXPECT_FALSE(live("", "configmaps", "default", "b"));
  EXPECT_TRUE(live("", "configmaps", "default", "a"));
}

TEST_F(KubeApplierTest, ACorruptInventoryIsRefusedNotGuessed) {
  applier_.reset();
  std::ofstream(dir_.file("inventory.json")) << "{not json";
  auto a = KubeApplier::open(options());
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(a.status().message().find("inventory"), std::string::npos);
}

TEST_F(KubeApplierTest, HealthIsReadBackAsTheControllerReports) {
  auto dep = rendered(deployment("default", "web", 2));
  auto r = applier_->apply_all({&dep});
  ASSERT_TRUE(r[0].ok());
  EXPECT_EQ(r[0]->health, "progressing");
  EXPECT_TRUE(applier_->next_check().has_value());
  auto obj = live("apps", "deployments", "default", "web");
  ASSERT_TRUE(obj);
  const int64_t gen = (*obj)["metadata"]["generation"];
  ASSERT_TRUE(cluster_->server().api().set_status("apps", "deployments", "default", "web",
                                                  {{"observedGeneration", gen},
                                                   {"replicas", 2},
                                                   {"updatedReplicas", 2},
                                                   {"availableReplicas", 1}}));
  r = applier_->apply_all({&dep});
  ASSERT_TRUE(r[0].ok());
  EXPECT_EQ(r[0]->health, "progressing");
  EXPECT_EQ(r[0]->health_message, "1 of 2 replicas available");
  ASSERT_TRUE(cluster_->server().api().set_status("apps", "deployments", "default", "web",
                                                  {{"observedGeneration", gen},
                                                   {"replicas", 2},
                                                   {"updatedReplicas", 2},
                                                   {"availableReplicas", 2}}));
  r = applier_->apply_all({&dep});
  ASSERT_TRUE(r[0].ok());
  EXPECT_EQ(r[0]->health, "healthy");
  EXPECT_EQ(r[0]->health_message, "2 of 2 replicas available");
  ASSERT_TRUE(cluster_->server().api().set_status(
      "apps", "deployments", "default", "web",
      {{"observedGeneration", gen},
       {"replicas", 2},
       {"updatedReplicas", 1},
       {"conditions", json::array({{{"type", "Progressing"},
                                    {"status", "False"},
                                    {"reason", "ProgressDeadlineExceeded"}}})}}));
  r = applier_->apply_all({&dep});
  EXPECT_EQ(r[0]->health, "degraded");
}

TEST_F(KubeApplierTest, DriftIsDetectedAndRepaired) {
  auto dep = rendered(deployment("default", "web", 2));
  ASSERT_TRUE(applier_->apply(dep).ok());
  auto r = applier_->apply_all({&dep});
  ASSERT_TRUE(r[0].ok());
  EXPECT_EQ(r[0]->drift, "");
  // kubectl edit: the field changes hands.
  auto edit =
      request("PATCH", "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=kubectl-edit",
              {{"spec", {{"replicas", 5}}}}, "application/merge-patch+json");
  ASSERT_EQ(edit.code, 200) << edit.body;
  r = applier_->apply_all({&dep});
  ASSERT_TRUE(r[0].ok()) << r[0].status().to_string();
  // kubectl-edit now owns replicas, so a repair without force conflicts.
  EXPECT_NE(r[0]->drift.find(".spec.replicas"), std::string::npos) << r[0]->drift;
  EXPECT_NE(r[0]->drift.find("repair failed"), std::string::npos) << r[0]->drift;
  EXPECT_EQ((*live("apps", "deployments", "default", "web"))["spec"]["replicas"], 5);

  // With force the repair takes the field back.
  json forced = deployment("default", "web", 2);
  forced["metadata"]["annotations"][kForceAnnotation] = "true";
  auto dep2 = rendered(forced);
  ASSERT_TRUE(applier_->apply(dep2).ok());
  EXPECT_EQ((*live("apps", "deployments", "default", "web"))["spec"]["replicas"], 2);
  edit =
      request("PATCH", "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=kubectl-edit",
              {{"spec", {{"replicas", 7}}}}, "application/merge-patch+json");
  ASSERT_EQ(edit.code, 200);
  r = applier_->apply_all({&dep2});
  ASSERT_TRUE(r[0].ok());
  EXPECT_EQ(r[0]->drift, "repaired: .spec.replicas");
  EXPECT_EQ((*live("apps", "deployments", "default", "web"))["spec"]["replicas"], 2);
  EXPECT_EQ(applier_->stats().drift_repaired, 1u);

  // Deleted by hand: applied again.
  auto del = request("DELETE", "/apis/apps/v1/namespaces/default/deployments/web", json::object(),
                     "application/json");
  ASSERT_EQ(del.code, 200) << del.body;
  r = applier_->apply_all({&dep2});
  ASSERT_TRUE(r[0].ok());
  EXPECT_EQ(r[0]->drift, "repaired: the object was deleted");
  EXPECT_TRUE(live("apps", "deployments", "default", "web"));
}

TEST_F(KubeApplierTest, TheAuditReadsTheClusterPageByPage) {
  KubeApplierOptions o = options();
  o.audit_page_size = 2;
  applier_.reset();
  auto a = KubeApplier::open(o);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  applier_ = std::move(*a);
  std::vector<model::RenderedObject> objects;
  for (int i = 0; i < 6; ++i) {
    objects.push_back(rendered(config_map("default", "cm-" + std::to_string(i), "v")));
  }
  std::vector<const model::RenderedObject*> all;
  for (const auto& o2 : objects) all.push_back(&o2);
  auto r = applier_->apply_all(all);
  for (const auto& x : r) ASSERT_TRUE(x.ok()) << x.status().to_string();

  // Changed by hand on the first page and deleted on the second: both seen.
  ASSERT_EQ(request("PATCH", "/api/v1/namespaces/default/configmaps/cm-0?fieldManager=ops",
                    {{"data", {{"key", "edited"}}}}, "application/merge-patch+json")
                .code,
            200);
  ASSERT_EQ(request("DELETE", "/api/v1/namespaces/default/configmaps/cm-3", json::object(),
                    "application/json")
                .code,
            200);
  const size_t seen_before = cluster_->server().served_requests().size();
  r = applier_->apply_all(all);
  for (const auto& x : r) ASSERT_TRUE(x.ok()) << x.status().to_string();
  EXPECT_NE(r[0]->drift.find(".data.key"), std::string::npos) << r[0]->drift;
  EXPECT_EQ(r[2]->drift, "");
  EXPECT_EQ(r[3]->drift, "repaired: the object was deleted");
  EXPECT_EQ(r[5]->drift, "");
  EXPECT_TRUE(live("", "configmaps", "default", "cm-3"));

  // Five left, so three pages, each after the first continuing the one before.
  std::vector<std::string> lists;
  const auto served = cluster_->server().served_requests();
  for (size_t i = seen_before; i < served.size(); ++i) {
    if (served[i].method == "GET" && served[i].target.find("/configmaps?") != std::string::npos) {
      lists.push_back(served[i].target);
    }
  }
  ASSERT_EQ(lists.size(), 3u);
  EXPECT_NE(lists[0].find("limit=2"), std::string::npos) << lists[0];
  EXPECT_EQ(lists[0].find("continue="), std::string::npos) << lists[0];
  EXPECT_NE(lists[1].find("continue="), std::string::npos) << lists[1];
  EXPECT_NE(lists[2].find("continue="), std::string::npos) << lists[2];
}

TEST_F(KubeApplierTest, DriftUnderPolicyReportIsOnlyReported) {
  json d = config_map("default", "settings", "one");
  d["metadata"]["annotations"][kDriftAnnotation] = "report";
  auto cm = rendered(d);
  ASSERT_TRUE(applier_->apply(cm).ok());
  ASSERT_NO_FATAL_FAILURE(ops_edits_settings("hand"));
  auto r = applier_->apply_all({&cm});
  ASSERT_TRUE(r[0].ok());
  EXPECT_EQ(r[0]->drift, "drifted: .data.key (policy report: not repaired)");
  EXPECT_EQ((*live("", "configmaps", "default", "settings"))["data"]["key"], "hand");
}

TEST_F(KubeApplierTest, RetriesA429HonouringRetryAfter) {
  std::vector<std::chrono::milliseconds> waits;
  KubeApplierOptions o = options();
  o.client.sleep = [&](std::chrono::milliseconds d) { waits.push_back(d); };
  applier_.reset();
  auto a = KubeApplier::open(o);
  ASSERT_TRUE(a.ok());
  cluster_->server().arm_fault({429, 2, 3, "/api/v1/namespaces/default/configmaps"});
  auto cm = rendered(config_map("default", "settings", "one"));
  auto r = (*a)->apply(cm);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(waits.size(), 2u);
  for (auto w : waits) {
    EXPECT_GE(w.count(), 3000);
    EXPECT_LT(w.count(), 3000 + 750 + 1);
  }
  // 503 for ever: an error after max_attempts, naming the attempts.
  cluster_->server().arm_fault({503, -1, 0, "/api/v1/namespaces/default/configmaps"});
  auto cm2 = rendered(config_map("default", "settings", "two"));
  r = (*a)->apply(cm2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("after 4 attempts"), std::string::npos)
      << r.status().message();
}

TEST_F(KubeApplierTest, AClusterDownFailsTheBatchFastAndForgetsNothing) {
  auto a = rendered(config_map("default", "a", "1"));
  ASSERT_TRUE(applier_->apply(a).ok());
  cluster_->server().stop();
  auto b = rendered(config_map("default", "b", "1"));
  auto c = rendered(config_map("default", "c", "1"));
  const auto start = std::chrono::steady_clock::now();
  auto r = applier_->apply_all({&b, &c});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  ASSERT_FALSE(r[0].ok());
  ASSERT_FALSE(r[1].ok());
  EXPECT_NE(r[0].status().message().find("cannot reach"), std::string::npos)
      << r[0].status().message();
  EXPECT_EQ(r[1].status().message(), r[0].status().message());
  auto inv = applier_->inventory();
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(inv->size(), 3u);  // a, and b and c written ahead
  EXPECT_FALSE(applier_->remove("v1/ConfigMap/default/a").ok());
  EXPECT_EQ(applier_->inventory()->size(), 3u);
}

// --- kubeconfig and TLS --------------------------------------------------

class KubeconfigTest : public KubeApplierTest {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_.file(name)) << text;
    return dir_.file(name);
  }
  // Lists namespaces through a client for `endpoint`.
  Status reach(const KubeEndpoint& endpoint) {
    auto c = KubeClient::create(endpoint);
    if (!c.ok()) return c.status();
    auto r = (*c)->request("GET", "/api/v1/namespaces");
    if (!r.ok()) return r.status();
    if (r->code != 200) return status_of(*r, "list namespaces");
    return ok_status();
  }
};

TEST_F(KubeconfigTest, TokenTokenFileAndClientCertificateAsFilesOrData) {
  auto token = load_kubeconfig(cluster_->kubeconfig_token());
  ASSERT_TRUE(token.ok());
  EXPECT_TRUE(reach(*token).ok());
  auto cert = load_kubeconfig(cluster_->kubeconfig_cert());
  ASSERT_TRUE(cert.ok()) << cert.status().to_string();
  EXPECT_FALSE(cert->client_cert_pem.empty());
  EXPECT_TRUE(reach(*cert).ok()) << reach(*cert).to_string();

  write("token-file", cluster_->token() + "\n");
  auto tf = load_kubeconfig(write(
      "kc-tf", kubeapi::kubeconfig_yaml(cluster_->server().url(), cluster_->server_ca().cert_pem,
                                        "tokenFile: token-file")));
  ASSERT_TRUE(tf.ok()) << tf.status().to_string();
  EXPECT_EQ(tf->token_file, dir_.file("token-file"));
  EXPECT_TRUE(reach(*tf).ok()) << reach(*tf).to_string();

  // Certificate and key as data, the CA as a file, insecure-skip-tls-verify.
  std::string client_pem, key_pem;
  {
    std::ifstream c(dir_.file("client.crt")), k(dir_.file("client.key"));
    std::ostringstream cs, ks;
    cs << c.rdbuf();
    ks << k.rdbuf();
    client_pem = cs.str();
    key_pem = ks.str();
  }
  auto data = load_kubeconfig(
      write("kc-data",
            "apiVersion: v1\nkind: Config\ncurrent-context: b\n"
            "clusters:\n- name: c\n  cluster:\n    server: " +
                cluster_->server().url() +
                "\n    certificate-authority: ca.crt\n"
                "- name: insecure\n  cluster:\n    server: " +
                cluster_->server().url() +
                "\n    insecure-skip-tls-verify: true\n"
                "users:\n- name: u\n  user:\n    client-certificate-data: " +
                kubeapi::base64(client_pem) + "\n    client-key-data: " + kubeapi::base64(key_pem) +
                "\n- name: t\n  user:\n    token: " + cluster_->token() +
                "\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n"
                "- name: b\n  context: {cluster: insecure, user: t}\n"));
  ASSERT_TRUE(data.ok()) << data.status().to_string();
  EXPECT_TRUE(data->insecure_skip_tls_verify);  // the current context
  EXPECT_TRUE(reach(*data).ok());
  auto a = load_kubeconfig(dir_.file("kc-data"), "a");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_FALSE(a->insecure_skip_tls_verify);
  EXPECT_EQ(a->client_cert_pem, client_pem);
  EXPECT_TRUE(reach(*a).ok()) << reach(*a).to_string();
}

TEST_F(KubeconfigTest, BadKubeconfigsAreClearErrors) {
  auto missing = load_kubeconfig(dir_.file("nope"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("cannot read"), std::string::npos);
  auto ctx = load_kubeconfig(cluster_->kubeconfig_token(), "elsewhere");
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.status().message().find("no context named 'elsewhere'"), std::string::npos)
      << ctx.status().message();
  auto exec = load_kubeconfig(write(
      "kc-exec", kubeapi::kubeconfig_yaml(cluster_->server().url(), cluster_->server_ca().cert_pem,
                                          "exec: {command: aws}")));
  ASSERT_FALSE(exec.ok());
  EXPECT_NE(exec.status().message().find("exec is not supported"), std::string::npos);
  auto yaml = load_kubeconfig(write("kc-bad", "clusters: [\n"));
  ASSERT_FALSE(yaml.ok());
  EXPECT_NE(yaml.status().message().find("not YAML"), std::string::npos);
}

TEST_F(KubeconfigTest, WrongCaAndExpiredClientCertificateAreClearErrors) {
  auto other_ca = kubeapi::make_certificate_authority("someone-else");
  ASSERT_TRUE(other_ca.ok());
  auto e = load_kubeconfig(cluster_->kubeconfig_token());
  ASSERT_TRUE(e.ok());
  e->ca_pem = other_ca->cert_pem;
  Status s = reach(*e);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("does not verify"), std::string::npos) << s.message();

  kubeapi::CertificateRequest req;
  req.common_name = "canopy-admin";
  req.not_before = std::chrono::seconds(-7200);
  req.not_after = std::chrono::seconds(-3600);
  auto expired = kubeapi::make_certificate(cluster_->client_ca(), req);
  ASSERT_TRUE(expired.ok());
  auto c = load_kubeconfig(cluster_->kubeconfig_cert());
  ASSERT_TRUE(c.ok());
  c->client_cert_pem = expired->cert_pem;
  c->client_key_pem = expired->key_pem;
  s = reach(*c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("client certificate (CN=canopy-admin) expired at"), std::string::npos)
      << s.message();

  // A client certificate from a CA the server does not trust: 401.
  kubeapi::CertificateRequest intruder;
  intruder.common_name = "intruder";
  auto foreign = kubeapi::make_certificate(*other_ca, intruder);
  ASSERT_TRUE(foreign.ok());
  c->client_cert_pem = foreign->cert_pem;
  c->client_key_pem = foreign->key_pem;
  s = reach(*c);
  EXPECT_EQ(s.code(), StatusCode::kUnauthenticated) << s.to_string();
}

}  // namespace
}  // namespace canopy::spoke::kube

// The test API server's faithfulness, checked by a client nobody here wrote:
// the real kubectl (1.32 on the base image) runs against it with kubeconfigs
// written by the test, one with a bearer token and one with a client
// certificate, and every command a user would type is checked by its output
// and by the objects it left in the server.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/kubeapi/test_cluster.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

std::string find_kubectl() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = dir + "/kubectl";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

struct KubectlRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

constexpr const char* kApp = R"(apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
  labels: {app: web}
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
)";

class KubectlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kubectl_ = find_kubectl();
    if (kubectl_.empty()) GTEST_SKIP() << "kubectl is not on PATH: these tests need the real one";
    TestClusterOptions options;
    // Longer than kubectl takes to start, so `kubectl wait` finds the CRD not
    // yet Established and must see the condition arrive over its watch.
    options.api.crd_establish_delay = std::chrono::milliseconds(2000);
    auto cluster = TestCluster::start(dir_.path().string(), options);
    ASSERT_TRUE(cluster.ok()) << cluster.status().to_string();
    cluster_ = std::move(*cluster);
  }

  std::string write(const std::string& name, const std::string& content) {
    std::string path = dir_.file(name);
    std::ofstream(path) << content;
    return path;
  }

  KubectlRun kubectl(const std::string& kubeconfig, std::vector<std::string> args) {
    std::string log = dir_.file("kubectl-" + std::to_string(++runs_) + ".log");
    std::vector<std::string> argv{kubectl_, "--kubeconfig", kubeconfig, "--cache-dir",
                                  dir_.file("cache")};
    argv.insert(argv.end(), args.begin(), args.end());
    testing::ProcessOptions po;
    po.log_path = log;
    po.env = {{"HOME", dir_.path().string()}, {"KUBECONFIG", ""}};
    testing::Process p;
    std::string error;
    KubectlRun run;
    if (!p.start(argv, po, &error)) {
      run.output = "cannot start kubectl: " + error;
      return run;
    }
    auto status = p.wait_exit(std::chrono::seconds(60));
    std::ifstream in(log);
    run.output.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (status && WIFEXITED(*status)) run.exit_code = WEXITSTATUS(*status);
    return run;
  }

  KubectlRun token(std::vector<std::string> args) {
    return kubectl(cluster_->kubeconfig_token(), args);
  }
  KubectlRun cert(std::vector<std::string> args) {
    return kubectl(cluster_->kubeconfig_cert(), args);
  }

  std::optional<json> object(const std::string& group, const std::string& resource,
                             const std::string& ns, const std::string& name) {
    return cluster_->server().api().object(group, resource, ns, name);
  }

  testing::TempDir dir_{"canopy-kubectl-"};
  std::string kubectl_;
  std::unique_ptr<TestCluster> cluster_;
  int runs_ = 0;
};

TEST_F(KubectlTest, ApiResourcesFromPlainDiscovery) {
  KubectlRun run = token({"api-resources"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (const char* line : {"configmaps  ", "deployments  ", "customresourcedefinitions  "}) {
    EXPECT_NE(run.output.find(line), std::string::npos) << line << "\n" << run.output;
  }
  EXPECT_NE(run.output.find("deploy       apps/v1                   true         Deployment"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("crd,crds     apiextensions.k8s.io/v1   false        "
                            "CustomResourceDefinition"),
            std::string::npos)
      << run.output;
  // kubectl asked for aggregated discovery, got the plain form, and fell back
  // to one document per group version.
  bool asked_aggregated = false;
  bool fetched_group_version = false;
  for (const auto& r : cluster_->server().served_requests()) {
    EXPECT_EQ(r.user, "canopy-token") << r.target;
    if (r.target.rfind("/apis", 0) == 0 &&
        r.accept.find("apidiscovery.k8s.io") != std::string::npos) {
      asked_aggregated = true;
    }
    if (r.target.rfind("/apis/apps/v1", 0) == 0) fetched_group_version = true;
  }
  EXPECT_TRUE(asked_aggregated);
  EXPECT_TRUE(fetched_group_version);
}

TEST_F(KubectlTest, ServerSideApplyWithClientCertificate) {
  KubectlRun run = cert({"apply", "--server-side", "-f", write("app.yaml", kApp)});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("namespace/shop serverside-applied"), std::string::npos);
  EXPECT_NE(run.output.find("configmap/settings serverside-applied"), std::string::npos);
  EXPECT_NE(run.output.find("deployment.apps/web serverside-applied"), std::string::npos);
  auto deployment = object("apps", "deployments", "shop", "web");
  ASSERT_TRUE(deployment);
  EXPECT_EQ((*deployment)["spec"]["replicas"], 2);
  const json& entry = (*deployment)["metadata"]["managedFields"][0];
  EXPECT_EQ(entry["manager"], "kubectl");
  EXPECT_EQ(entry["operation"], "Apply");
  EXPECT_EQ((*object("", "configmaps", "shop", "settings"))["data"]["color"], "blue");
  for (const auto& r : cluster_->server().served_requests()) {
    EXPECT_EQ(r.user, "canopy-admin") << r.target;
    if (r.method == "PATCH") {
      EXPECT_EQ(r.content_type, "application/apply-patch+yaml");
      EXPECT_NE(r.target.find("fieldManager=kubectl"), std::string::npos) << r.target;
    }
  }
  // Applying again changes nothing, so the resourceVersion stays.
  int64_t rv = cluster_->server().api().resource_version();
  run = cert({"apply", "--server-side", "-f", dir_.file("app.yaml")});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(cluster_->server().api().resource_version(), rv);
}

TEST_F(KubectlTest, GetYamlShowsManagedFields) {
  ASSERT_EQ(token({"apply", "--server-side", "-f", write("app.yaml", kApp)}).exit_code, 0);
  KubectlRun run =
      token({"-n", "shop", "get", "deployment", "web", "-o", "yaml", "--show-managed-fields"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (const char* want : {"managedFields:", "manager: kubectl", "operation: Apply",
                           "fieldsType: FieldsV1", "f:replicas: {}", "f:selector: {}",
                           "k:{\"name\":\"web\"}:", "resourceVersion:", "generation: 1", "uid:"}) {
    EXPECT_NE(run.output.find(want), std::string::npos) << want << "\n" << run.output;
  }
  run = token({"-n", "shop", "get", "deployment", "web", "-o", "yaml"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(run.output.find("managedFields"), std::string::npos) << run.output;
  run = token({"-n", "shop", "get", "configmaps", "-l", "app=web", "-o", "name"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(run.output, "configmap/settings\n");
  run = token({"-n", "shop", "get", "configmaps", "-l", "app=other", "-o", "name"});
  EXPECT_EQ(run.output.find("settings"), std::string::npos) << run.output;
}

TEST_F(KubectlTest, DeleteRemovesObjectsAndNamespaces) {
  ASSERT_EQ(token({"apply", "--server-side", "-f", write("app.yaml", kApp)}).exit_code, 0);
  KubectlRun run = token({"-n", "shop", "delete", "configmap", "settings"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("configmap \"settings\" deleted"), std::string::npos) << run.output;
  EXPECT_FALSE(object("", "configmaps", "shop", "settings"));
  run = token({"-n", "shop", "get", "configmap", "settings"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.output.find("Error from server (NotFound): configmaps \"settings\" not found"),
            std::string::npos)
      << run.output;
  run = token({"delete", "namespace", "shop"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("namespace \"shop\" deleted"), std::string::npos) << run.output;
  EXPECT_FALSE(object("apps", "deployments", "shop", "web"));
}

TEST_F(KubectlTest, GetPagesWithLimitAndContinue) {
  std::string yaml;
  for (int i = 0; i < 5; ++i) {
    yaml += "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: page-" + std::to_string(i) +
            ", namespace: default}\ndata: {k: v}\n";
  }
  ASSERT_EQ(token({"apply", "--server-side", "-f", write("pages.yaml", yaml)}).exit_code, 0);
  KubectlRun run = token({"get", "configmaps", "--chunk-size=2", "-o", "name"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (int i = 0; i < 5; ++i) {
    EXPECT_NE(run.output.find("configmap/page-" + std::to_string(i) + "\n"), std::string::npos)
        << run.output;
  }
  int continued = 0;
  for (const auto& r : cluster_->server().served_requests()) {
    continued += r.method == "GET" && r.target.find("/configmaps?") != std::string::npos &&
                 r.target.find("continue=") != std::string::npos;
  }
  EXPECT_EQ(continued, 2);  // pages of 2, 2 and 1
  run =
      token({"get", "--raw", "/api/v1/namespaces/default/configmaps?limit=2&continue=not-a-token"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.output.find("continue key is not valid"), std::string::npos) << run.output;
}

TEST_F(KubectlTest, ConflictBetweenFieldManagers) {
  std::string a = write("a.yaml", R"(apiVersion: v1
kind: ConfigMap
metadata: {name: shared, namespace: default}
data: {owner: a, only-a: "1"}
)");
  std::string b = write("b.yaml", R"(apiVersion: v1
kind: ConfigMap
metadata: {name: shared, namespace: default}
data: {owner: b}
)");
  ASSERT_EQ(token({"apply", "--server-side", "--field-manager", "a", "-f", a}).exit_code, 0);
  KubectlRun run = token({"apply", "--server-side", "--field-manager", "b", "-f", b});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.output.find("Apply failed with 1 conflict: conflict with \"a\": .data.owner"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("--force-conflicts"), std::string::npos) << run.output;
  EXPECT_EQ((*object("", "configmaps", "default", "shared"))["data"]["owner"], "a");

  run = token({"apply", "--server-side", "--field-manager", "b", "--force-conflicts", "-f", b});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  run = token({"get", "configmap", "shared", "-o", "yaml", "--show-managed-fields"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto cm = object("", "configmaps", "default", "shared");
  EXPECT_EQ((*cm)["data"], json({{"owner", "b"}, {"only-a", "1"}}));
  const json& entries = (*cm)["metadata"]["managedFields"];
  ASSERT_EQ(entries.size(), 2u) << entries.dump();
  EXPECT_EQ(entries[0]["manager"], "a");
  EXPECT_EQ(entries[0]["fieldsV1"], json::parse(R"({"f:data": {"f:only-a": {}}})"));
  EXPECT_EQ(entries[1]["manager"], "b");
  EXPECT_EQ(entries[1]["fieldsV1"], json::parse(R"({"f:data": {"f:owner": {}}})"));
}

TEST_F(KubectlTest, CustomResourceServedOnceEstablished) {
  std::string crd = write("crd.yaml", R"(apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
)");
  std::string widget = write("widget.yaml", R"(apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: 3}
)");
  ASSERT_EQ(token({"apply", "--server-side", "-f", crd}).exit_code, 0);
  KubectlRun run =
      token({"wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=20s"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("condition met"), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find("Failed to watch"), std::string::npos) << run.output;
  run = token({"apply", "--server-side", "-f", widget});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("widget.example.com/w1 serverside-applied"), std::string::npos);
  run = token({"get", "wd", "w1", "-o", "jsonpath={.spec.size}"});
  EXPECT_EQ(run.output, "3");
}

TEST_F(KubectlTest, WatchDeliversChangesAsTheyHappen) {
  // Go's client asks for gzip; a compressed watch would hold every event until
  // the stream ends, so this watch would print nothing.
  std::string log = dir_.file("watch.log");
  testing::ProcessOptions po;
  po.log_path = log;
  po.env = {{"HOME", dir_.path().string()}, {"KUBECONFIG", ""}};
  testing::Process watch;
  std::string error;
  ASSERT_TRUE(watch.start({kubectl_, "--kubeconfig", cluster_->kubeconfig_token(), "--cache-dir",
                           dir_.file("cache"), "get", "namespaces", "--watch-only", "-o", "name"},
                          po, &error))
      << error;
  auto read_log = [&] {
    std::ifstream in(log);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  std::string ns = write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
  // The watch starts after kubectl's discovery; apply until it reports the
  // namespace, each apply a change (new label) it must deliver.
  bool seen = false;
  for (int i = 0; i < 40 && !seen; ++i) {
    std::ofstream(ns) << "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {n: \""
                      << i << "\"}}\n";
    ASSERT_EQ(token({"apply", "--server-side", "-f", ns}).exit_code, 0);
    for (int j = 0; j < 5 && !seen; ++j) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      seen = read_log().find("namespace/shop") != std::string::npos;
    }
  }
  watch.kill(SIGTERM);
  watch.wait_exit(std::chrono::seconds(10));
  EXPECT_TRUE(seen) << read_log();
}

TEST_F(KubectlTest, UnknownTokenIsUnauthorized) {
  std::string kubeconfig =
      write("bad-token", kubeconfig_yaml(cluster_->server().url(), cluster_->server_ca().cert_pem,
                                         "token: not-a-known-token"));
  KubectlRun run = kubectl(kubeconfig, {"get", "namespaces"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.output.find("You must be logged in to the server"), std::string::npos)
      << run.output;
}

}  // namespace
}  // namespace canopy::kubeapi

// canopy_spoke_apply_bench (spoke.apply): how fast the kube applier puts
// objects into a cluster, against the real kubectl doing the same.
//
// The cluster is canopy-test-apiserver (tests/kubeapi: a stand-in for
// kube-apiserver, since none can run here) as its own process on loopback,
// over HTTPS with a bearer token. In one run:
//   1. canopy: the spoke's KubeApplier (spoke/kube) applies `--objects`
//      Deployments (the site catalogue's shape) into namespace bench-canopy,
//      from a cold start (discovery included), by server-side apply;
//   2. kubectl: `kubectl apply --server-side --validate=false -f` of the same
//      objects (one List file) into namespace bench-kubectl (client-side
//      schema validation off: the spoke does none either, and the test API
//      server serves no schemas to validate against).
// Both write into empty namespaces of the same server, so each pays for
// creating every object. A second canopy pass over the unchanged objects
// shows what an idle reconcile costs (requests sent).
//
// Output (JSON lines on stdout): canopy_objects_per_s, kubectl_objects_per_s,
// ratio_vs_kubectl (canopy / kubectl, target >= 1), unchanged_pass_requests.
//
//   canopy_spoke_apply_bench [--objects N]
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "bench/report.h"
#include "model/render.h"
#include "spoke/kube/kube_applier.h"
#include "spoke/kube/kubeconfig.h"
#include "tests/support/free_port.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

#ifndef CANOPY_TEST_APISERVER_BINARY
#define CANOPY_TEST_APISERVER_BINARY "canopy-test-apiserver"
#endif

namespace canopy::bench {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
constexpr char kBench[] = "spoke.apply";

void emit(const std::string& metric, double value, const std::string& target = "") {
  emit_figure(kBench, metric, value, target);
}

[[noreturn]] void die(const std::string& what) { fail_bench(kBench, what); }

json object(const std::string& ns, size_t i) {
  const std::string name = "app-" + std::to_string(i);
  json container = {{"name", "main"},
                    {"image", "registry.local/edge/" + name + ":1.0"},
                    {"env", json::array({{{"name", "SITE"}, {"value", "s1"}}})},
                    {"resources", {{"limits", {{"cpu", "250m"}, {"memory", "128Mi"}}}}}};
  json o = {{"apiVersion", "apps/v1"}, {"kind", "Deployment"}};
  o["metadata"] = {{"name", name},
                   {"namespace", ns},
                   {"labels",
                    {{"app", name},
                     {"tier", "edge"},
                     {std::string(model::kManagedByLabel), std::string(model::kManagedByValue)}}}};
  o["spec"]["replicas"] = 1 + i % 3;
  o["spec"]["selector"]["matchLabels"]["app"] = name;
  o["spec"]["template"]["metadata"]["labels"]["app"] = name;
  o["spec"]["template"]["spec"]["containers"] = json::array({container});
  return o;
}

int kubectl(const std::string& kubeconfig, const std::vector<std::string>& args,
            const std::string& log) {
  std::vector<std::string> argv = {"kubectl", "--kubeconfig", kubeconfig};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::Process p;
  testing::ProcessOptions po;
  po.log_path = log;
  std::string err;
  if (!p.start(argv, po, &err)) die("cannot run kubectl: " + err);
  auto st = p.wait_exit(600s);
  if (!st || !WIFEXITED(*st)) die("kubectl did not finish");
  return WEXITSTATUS(*st);
}

int run(int argc, char** argv) {
  size_t n = 1000;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--objects" && i + 1 < argc) {
      n = std::stoul(argv[++i]);
    } else {
      die("usage: canopy_spoke_apply_bench [--objects N]");
    }
  }
  testing::TempDir dir("canopy-apply-bench-");
  const std::string d = dir.path().string();
  testing::Process server;
  testing::ProcessOptions po;
  po.log_path = d + "/apiserver.log";
  std::string err;
  const int port = testing::pick_free_port();
  if (!server.start({CANOPY_TEST_APISERVER_BINARY, "--dir", d, "--port", std::to_string(port)}, po,
                    &err)) {
    die("canopy-test-apiserver: " + err);
  }
  const std::string kubeconfig = d + "/kubeconfig-token";
  const auto up_deadline = std::chrono::steady_clock::now() + 30s;
  while (kubectl(kubeconfig, {"get", "namespaces"}, d + "/probe.log") != 0) {
    if (std::chrono::steady_clock::now() > up_deadline) die("the test API server did not come up");
    std::this_thread::sleep_for(200ms);
  }
  // (kubectl create sends protobuf, which the test API server leaves out.)
  for (const char* ns : {"bench-canopy", "bench-kubectl"}) {
    const std::string file = d + "/" + ns + ".json";
    std::ofstream(file)
        << json{{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}}.dump();
    if (kubectl(kubeconfig, {"apply", "--server-side", "-f", file}, d + "/ns.log") != 0) {
      die("cannot create namespace " + std::string(ns));
    }
  }

  // canopy.
  std::vector<model::RenderedObject> objects(n);
  std::vector<const model::RenderedObject*> ptrs;
  for (size_t i = 0; i < n; ++i) {
    objects[i].object = object("bench-canopy", i);
    objects[i].hash = std::to_string(i);
    ptrs.push_back(&objects[i]);
  }
  spoke::kube::KubeApplierOptions ko;
  auto endpoint = spoke::kube::load_kubeconfig(kubeconfig);
  if (!endpoint.ok()) die(endpoint.status().to_string());
  ko.endpoint = *endpoint;
  ko.inventory_path = d + "/inventory.json";
  auto applier = spoke::kube::KubeApplier::open(ko);
  if (!applier.ok()) die(applier.status().to_string());
  auto t0 = std::chrono::steady_clock::now();
  auto results = (*applier)->apply_all(ptrs);
  const double canopy_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& r : results) {
    if (!r.ok()) die("canopy apply: " + r.status().to_string());
  }
  std::fprintf(stderr, "%s: canopy applied %zu objects in %.2f s\n", kBench, n, canopy_s);
  const uint64_t before = (*applier)->client().requests_sent();
  results = (*applier)->apply_all(ptrs);
  const uint64_t unchanged_requests = (*applier)->client().requests_sent() - before;

  // kubectl, the same objects in another namespace.
  json list = {{"apiVersion", "v1"}, {"kind", "List"}, {"items", json::array()}};
  for (size_t i = 0; i < n; ++i) list["items"].push_back(object("bench-kubectl", i));
  const std::string file = d + "/objects.json";
  std::ofstream(file) << list.dump();
  t0 = std::chrono::steady_clock::now();
  const int rc = kubectl(kubeconfig, {"apply", "--server-side", "--validate=false", "-f", file},
                         d + "/kubectl.log");
  const double kubectl_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rc != 0) die("kubectl apply failed; see " + d + "/kubectl.log");

  const double canopy_rate = static_cast<double>(n) / canopy_s;
  const double kubectl_rate = static_cast<double>(n) / kubectl_s;
  std::fprintf(stderr, "%s: %zu objects: canopy %.2f s, kubectl %.2f s\n", kBench, n, canopy_s,
               kubectl_s);
  emit("canopy_objects_per_s", canopy_rate);
  emit("kubectl_objects_per_s", kubectl_rate);
  emit("ratio_vs_kubectl", canopy_rate / kubectl_rate, ">=1");
  emit("unchanged_pass_requests", static_cast<double>(unchanged_requests));
  server.kill(SIGTERM);
  server.wait_exit(10s);
  return 0;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) { return canopy::bench::run(argc, argv); }

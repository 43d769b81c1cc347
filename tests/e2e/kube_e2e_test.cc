// The kube applier end to end (issue 12): real nats-server, canopy-hub,
// canopy-spoke and canopy-test-apiserver processes (the test API server
// stands for the site's k3s; tests/kubeapi/fake_apiserver.h says what of
// kube-apiserver each part stands for), checked with the real kubectl.
//   - a placement written at the hub becomes objects in the cluster, applied
//     by canopy's field manager; their health, read back by the spoke, shows
//     in the hub's status; an object deleted by hand comes back as repaired
//     drift; removing the placement prunes the objects.
//   - a spoke restarted while its cluster is down keeps its desired state,
//     retries, and converges once the cluster is back (a fresh one: every
//     object is applied again); a spoke restart deletes nothing.
#include <sys/wait.h>

#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

struct KubectlRun {
  int exit_code = -1;
  std::string out;
};

class KubeE2ETest : public E2ETest {
 protected:
  void start_cluster() {
    if (cluster_port_ == 0) cluster_port_ = port();
    ProcessOptions po;
    po.log_path = cluster_dir_.file("apiserver.log");
    std::string err;
    ASSERT_TRUE(
        cluster_.start({CANOPY_TEST_APISERVER_BIN, "--dir", cluster_dir_.path().string(), "--port",
                        std::to_string(cluster_port_), "--keep-pki", "--crd-establish-ms", "200"},
                       po, &err))
        << err;
    ASSERT_TRUE(wait_until(
        [&] {
          return kubectl({"get", "namespaces"}).exit_code == 0;
        },
        kTimeout, 200ms))
        << read_file(po.log_path);
  }

  void stop_cluster() {
    ASSERT_TRUE(cluster_.kill(SIGTERM));
    ASSERT_TRUE(cluster_.wait_exit(10s).has_value());
  }

  std::string kubeconfig() const { return cluster_dir_.file("kubeconfig-token"); }

  KubectlRun kubectl(std::vector<std::string> args) {
    const std::string log = cluster_dir_.file("kubectl-" + std::to_string(++runs_) + ".out");
    std::vector<std::string> argv = {"kubectl", "--kubeconfig", kubeconfig(), "--request-timeout",
                                     "10s"};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessOptions po;
    po.log_path = log;
    Process p;
    std::string err;
    KubectlRun run;
    if (!p.start(argv, po, &err)) {
      run.out = err;
      return run;
    }
    auto status = p.wait_exit(30s);
    if (status && WIFEXITED(*status)) run.exit_code = WEXITSTATUS(*status);
    run.out = read_file(log);
    return run;
  }

  std::optional<json> live(const std::string& kind, const std::string& name) {
    KubectlRun r = kubectl({"get", kind, name, "-n", "shop", "-o", "json"});
    if (r.exit_code != 0) return std::nullopt;
    // kubectl's log holds only stdout and stderr; the object is the JSON in it.
    const auto brace = r.out.find('{');
    if (brace == std::string::npos) return std::nullopt;
    json j = json::parse(r.out.substr(brace), nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return j;
  }

  Spoke& kube_spoke(const std::string& site) {
    Spoke& s = create_spoke(site, {{"region", "eu-west"}});
    s.extra_args = {"--applier", "kube", "--kubeconfig", kubeconfig(), "--kube-audit-seconds", "2"};
    return s;
  }

  // The hub's view of template `tmpl` at `site` under placement `placement`.
  std::optional<v1::TemplateStatus> hub_template(const std::string& placement,
                                                 const std::string& site, const std::string& tmpl) {
    auto st = get_status(placement);
    if (!st) return std::nullopt;
    for (const auto& s : st->sites()) {
      if (s.site() != site) continue;
      for (const auto& t : s.templates()) {
        if (t.template_() == tmpl) return t;
      }
    }
    return std::nullopt;
  }

  json namespace_template() {
    return {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "shop"}}}};
  }

  // The cluster, the hub and site shop-1 (kube applier), and the placement
  // shop of a Namespace and the Deployment web, applied.
  void start_site_with_web(Spoke** site) {
    ASSERT_NO_FATAL_FAILURE(start_cluster());
    create_hub();
    ASSERT_NO_FATAL_FAILURE(launch_hub());
    Spoke& shop = kube_spoke("shop-1");
    ASSERT_NO_FATAL_FAILURE(launch_spoke(shop));
    *site = &shop;
    ASSERT_TRUE(put("template", "ns", namespace_template()).ok());
    ASSERT_TRUE(put("template", "web", deployment("web", 2, "nginx:1.27")).ok());
    ASSERT_TRUE(put("placement", "shop", placement_by_region({"ns", "web"}, "eu-west")).ok());
    ASSERT_TRUE(wait_until([&] { return live("deployment", "web").has_value(); }, kTimeout, kPoll));
  }

  TempDir cluster_dir_{"canopy-e2e-cluster-"};
  int cluster_port_ = 0;
  Process cluster_;
  int runs_ = 0;
};

TEST_F(KubeE2ETest, PlacementAppliedHealthShownAtTheHubDriftRepairedAndPrunedOnRemoval) {
  Spoke* site = nullptr;
  ASSERT_NO_FATAL_FAILURE(start_site_with_web(&site));
  KubectlRun yaml =
      kubectl({"get", "deployment", "web", "-n", "shop", "-o", "yaml", "--show-managed-fields"});
  EXPECT_NE(yaml.out.find("manager: canopy"), std::string::npos) << yaml.out;
  EXPECT_NE(yaml.out.find("operation: Apply"), std::string::npos) << yaml.out;

  // No controller runs here: the deployment waits for one, and the hub says so.
  ASSERT_TRUE(wait_until(
      [&] {
        auto t = hub_template("shop", "shop-1", "web");
        return t && t->outcome() == "applied" && t->health() == "progressing";
      },
      kTimeout, kPoll));
  // The deployment controller's report, written as it would write it.
  KubectlRun patched = kubectl(
      {"patch", "deployment", "web", "-n", "shop", "--subresource=status", "--type=merge", "-p",
       R"({"status":{"observedGeneration":1,"replicas":2,)"
       R"("updatedReplicas":2,"readyReplicas":2,"availableReplicas":2}})"});
  ASSERT_EQ(patched.exit_code, 0) << patched.out;
  ASSERT_TRUE(wait_until(
      [&] {
        auto t = hub_template("shop", "shop-1", "web");
        return t && t->health() == "healthy";
      },
      kTimeout, kPoll))
      << hub_template("shop", "shop-1", "web")->DebugString();
  EXPECT_EQ(hub_template("shop", "shop-1", "web")->health_message(), "2 of 2 replicas available");

  // Deleted by hand: applied again, reported as repaired drift.
  const std::string uid = (*live("deployment", "web"))["metadata"]["uid"];
  KubectlRun del = kubectl({"delete", "deployment", "web", "-n", "shop"});
  ASSERT_EQ(del.exit_code, 0) << del.out;
  ASSERT_TRUE(wait_until(
      [&] {
        auto l = live("deployment", "web");
        return l && (*l)["metadata"]["uid"] != uid;
      },
      kTimeout, 200ms));
  ASSERT_TRUE(wait_until(
      [&] {
        auto t = hub_template("shop", "shop-1", "web");
        return t && t->drift() == "repaired: the object was deleted";
      },
      kTimeout, kPoll));

  // The placement goes: its objects go from the cluster.
  ASSERT_TRUE(remove("placement", "shop").ok());
  ASSERT_TRUE(wait_until(
      [&] {
        return kubectl({"get", "namespace", "shop"}).exit_code != 0 &&
               !live("deployment", "web").has_value();
      },
      kTimeout, 200ms));
  EXPECT_EQ(kubectl({"get", "namespace", "default"}).exit_code, 0);
}

TEST_F(KubeE2ETest, SpokeRestartedWhileTheClusterIsDownConvergesWhenItReturns) {
  Spoke* site = nullptr;
  ASSERT_NO_FATAL_FAILURE(start_site_with_web(&site));
  Spoke& shop = *site;
  const std::string uid = (*live("deployment", "web"))["metadata"]["uid"];

  // A spoke restart deletes nothing (Karmada 5406) and re-creates nothing.
  ASSERT_NO_FATAL_FAILURE(kill_spoke(shop));
  ASSERT_NO_FATAL_FAILURE(launch_spoke(shop));
  std::this_thread::sleep_for(3s);  // past an audit
  auto after = live("deployment", "web");
  ASSERT_TRUE(after);
  EXPECT_EQ((*after)["metadata"]["uid"], uid);

  // The cluster goes down; the spoke restarts meanwhile, and a new template
  // arrives while it cannot apply.
  ASSERT_NO_FATAL_FAILURE(stop_cluster());
  ASSERT_NO_FATAL_FAILURE(kill_spoke(shop));
  ASSERT_NO_FATAL_FAILURE(launch_spoke(shop));
  ASSERT_TRUE(put("template", "db", deployment("db", 1, "postgres:16")).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"ns", "web", "db"}, "eu-west")).ok());
  ASSERT_TRUE(wait_until(
      [&] {
        auto t = hub_template("shop", "shop-1", "db");
        return t && t->outcome() == "failed" &&
               t->message().find("cannot reach") != std::string::npos;
      },
      kTimeout, kPoll));
  EXPECT_TRUE(shop.proc.running());
  std::this_thread::sleep_for(3s);  // a few retries, with backoff

  // Back, empty (a reinstalled k3s): everything desired is applied again.
  ASSERT_NO_FATAL_FAILURE(start_cluster());
  ASSERT_TRUE(wait_until(
      [&] { return live("deployment", "web").has_value() && live("deployment", "db").has_value(); },
      std::chrono::milliseconds(60'000), 500ms))
      << read_file(shop.log_path());
  ASSERT_TRUE(wait_until(
      [&] {
        auto t = hub_template("shop", "shop-1", "db");
        return t && t->outcome() == "applied";
      },
      kTimeout, kPoll));
  const std::string log = read_file(shop.log_path());
  EXPECT_NE(log.find("cannot reach"), std::string::npos);
}

}  // namespace
}  // namespace canopy::e2e

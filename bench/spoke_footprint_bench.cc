// canopy_spoke_footprint_bench (spoke.footprint): what a spoke costs a small
// site machine (a cell tower's gateway) with 1,000 objects in scope.
//
// Real processes: Debian's nats-server on loopback, the real canopy-hub and
// canopy-spoke binaries (built beside this benchmark). The hub's store holds
// the site's catalogue (bench/site_catalog.h: `--objects` Deployments and a
// placement for site s1); the spoke's store holds the same documents as a
// synced spoke does, so the spoke starts, reconciles with the hub (nothing to
// transfer) and applies every object: with `--applier kube` (the default,
// the issue's figure) by server-side apply to canopy-test-apiserver (the
// stand-in for the site's k3s, its own process), with `--applier
// manifests-dir` by writing the k3s manifests directory. The test API server
// stands in for a cluster at rest (--deployment-controller: every Deployment
// is reported rolled out once written), so the idle figure holds the kube
// applier's audit (a LIST per kind a minute) and the re-reads right after the
// applies, not a cluster that never becomes ready.
//
// Measured, once the spoke is in sync and has written every manifest and
// settled (5 s):
//   rss_mb                VmRSS of canopy-spoke (target < 20);
//   rss_anon_mb           of which anonymous (heap, stacks: the spoke's own);
//   rss_file_mb           of which file-backed (the executable's and shared
//                         libraries' pages mapped in, clean and shared with
//                         the page cache; the kernel maps them 64 KiB around
//                         each page touched, so code size counts);
//   idle_cpu_percent      its user+system CPU over `--idle-seconds` (default
//                         60) of idleness, in percent of one core (target < 0.5);
//   binary_mb             the size of the canopy-spoke executable;
//   rss_after_garbage_mb  VmRSS again, 10 s after `--garbage` (default 10,000)
//                         messages of random bytes (1 B to 16 KiB, seeded) on
//                         its sync subject (target < 20). The spoke must still
//                         be in sync after them.
// Output: JSON lines on stdout; progress on stderr.
//
//   canopy_spoke_footprint_bench [--applier kube|manifests-dir] [--objects N]
//       [--idle-seconds N] [--garbage N] [--dir DIR] [--keep]
#include <httplib.h>
#include <nats/nats.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/report.h"
#include "bench/site_catalog.h"
#include "store/store.h"
#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

#ifndef CANOPY_SPOKE_BINARY
#define CANOPY_SPOKE_BINARY "canopy-spoke"
#endif
#ifndef CANOPY_TEST_APISERVER_BINARY
#define CANOPY_TEST_APISERVER_BINARY "canopy-test-apiserver"
#endif
#ifndef CANOPY_HUB_BINARY
#define CANOPY_HUB_BINARY "canopy-hub"
#endif

namespace canopy::bench {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr char kBench[] = "spoke.footprint";
constexpr char kSite[] = "s1";
constexpr char kHub[] = "hub";

void emit(const std::string& metric, double value, const std::string& target = "") {
  emit_figure(kBench, metric, value, target);
}

[[noreturn]] void die(const std::string& what) { fail_bench(kBench, what); }

// A field of /proc/<pid>/status in kB ("VmRSS", "RssAnon", "RssFile"), in MiB.
double status_mb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  const std::string key = field + ":";
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(key)) return std::stod(line.substr(key.size())) / 1024.0;
  }
  die("no " + field + " for pid " + std::to_string(pid));
}
double rss_mb(pid_t pid) { return status_mb(pid, "VmRSS"); }

// User + system CPU time of `pid`, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start after ')'.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::vector<std::string> f;
  for (std::string x; rest >> x;) f.push_back(x);
  if (f.size() < 13) die("cannot read /proc/" + std::to_string(pid) + "/stat");
  // utime and stime are fields 14 and 15 of stat(5), 12 and 13 here.
  return (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::optional<json> get_json(int port, const std::string& path) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(1, 0);
  cli.set_read_timeout(3, 0);
  auto res = cli.Get(path);
  if (!res || res->status != 200) return std::nullopt;
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

bool in_sync(int health_port) {
  auto h = get_json(health_port, "/healthz");
  return h && h->value("in_sync", false) && h->value("session_open", false);
}

void wait_for(const std::function<bool()>& ok, std::chrono::seconds limit, const std::string& what,
              testing::Process& spoke) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!ok()) {
    if (!spoke.running()) die("the spoke exited while waiting for " + what);
    if (std::chrono::steady_clock::now() > deadline) die("timed out waiting for " + what);
    std::this_thread::sleep_for(50ms);
  }
}

struct Options {
  std::string applier = "kube";
  size_t objects = 1000;
  int idle_seconds = 60;
  size_t garbage = 10'000;
  std::string dir;
  bool keep = false;
};

// The site's catalogue in the hub's store, and the same documents in the
// spoke's store as sync applies them (the hub's writes).
void prepare(const std::string& hub_data, const std::string& spoke_data, size_t objects) {
  StoreOptions ho;
  ho.path = hub_data;
  ho.durability = Durability::kSync;
  auto hub = Store::open(ho);
  if (!hub.ok()) die("opening the hub's store: " + hub.status().to_string());
  auto batch = write_site_catalog(hub->get(), kSite, objects);
  if (!batch.ok()) die(batch.status().to_string());
  StoreOptions so;
  so.path = spoke_data;
  so.durability = Durability::kSync;
  auto spoke = Store::open(so);
  if (!spoke.ok()) die("opening the spoke's store: " + spoke.status().to_string());
  auto r = (*spoke)->apply_remote(*batch, (*hub)->replica_id());
  if (!r.ok()) die("applying the hub's documents: " + r.status().to_string());
}

// Objects the kube applier applied, from its inventory file.
size_t count_inventory(const std::string& path) {
  std::ifstream in(path);
  if (!in) return 0;
  std::stringstream text;
  text << in.rdbuf();
  json doc = json::parse(text.str(), nullptr, false);
  if (!doc.is_object() || !doc.contains("objects")) return 0;
  size_t n = 0;
  for (const auto& [id, e] : doc["objects"].items()) n += !e.value("hash", "").empty();
  return n;
}

// Publishes `n` messages of random bytes on `subject`.
void flood(const std::string& url, const std::string& subject, size_t n) {
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK) die("cannot connect to " + url);
  std::mt19937_64 rng(20261202);
  std::string buf;
  for (size_t i = 0; i < n; ++i) {
    buf.resize(1 + rng() % (16 * 1024));
    for (char& c : buf) c = static_cast<char>(rng());
    if (natsConnection_Publish(nc, subject.c_str(), buf.data(), static_cast<int>(buf.size())) !=
        NATS_OK) {
      die("publishing garbage failed");
    }
    if (i % 1000 == 999) natsConnection_FlushTimeout(nc, 10'000);
  }
  natsConnection_FlushTimeout(nc, 10'000);
  natsConnection_Destroy(nc);
}

int run(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--applier") {
      o.applier = value();
    } else if (a == "--objects") {
      o.objects = std::stoul(value());
    } else if (a == "--idle-seconds") {
      o.idle_seconds = std::stoi(value());
    } else if (a == "--garbage") {
      o.garbage = std::stoul(value());
    } else if (a == "--dir") {
      o.dir = value();
    } else if (a == "--keep") {
      o.keep = true;
    } else {
      die("unknown argument " + a);
    }
  }
  if (o.objects == 0 || o.idle_seconds <= 0) die("--objects and --idle-seconds must be positive");
  if (o.applier != "kube" && o.applier != "manifests-dir") die("--applier: kube or manifests-dir");
  const bool kube = o.applier == "kube";
  if (o.dir.empty()) o.dir = fs::temp_directory_path().string();
  const std::string root = o.dir + "/canopy-footprint-" + std::to_string(getpid());
  fs::create_directories(root);
  const std::string hub_data = root + "/hub", spoke_data = root + "/spoke",
                    manifests = root + "/manifests";
  prepare(hub_data, spoke_data, o.objects);

  testing::NatsServerOptions no;
  no.max_payload = 8 << 20;
  testing::NatsServer nats(no);
  std::string err;
  if (!nats.start(&err)) die("nats-server: " + err);

  const int hub_health = testing::pick_free_port(), grpc = testing::pick_free_port(),
            spoke_health = testing::pick_free_port();
  testing::Process hub, spoke;
  testing::ProcessOptions hpo;
  hpo.log_path = root + "/hub.log";
  if (!hub.start({CANOPY_HUB_BINARY, "--name", kHub, "--data", hub_data, "--nats", nats.url(),
                  "--grpc", "127.0.0.1:" + std::to_string(grpc), "--health",
                  "127.0.0.1:" + std::to_string(hub_health)},
                 hpo, &err)) {
    die("starting canopy-hub: " + err);
  }
  // The site's cluster, for the kube applier.
  testing::Process cluster;
  const std::string cluster_dir = root + "/cluster";
  const std::string kubeconfig = cluster_dir + "/kubeconfig-token";
  if (kube) {
    fs::create_directories(cluster_dir);
    testing::ProcessOptions cpo;
    cpo.log_path = cluster_dir + "/apiserver.log";
    if (!cluster.start({CANOPY_TEST_APISERVER_BINARY, "--dir", cluster_dir, "--port",
                        std::to_string(testing::pick_free_port()), "--deployment-controller"},
                       cpo, &err)) {
      die("starting canopy-test-apiserver: " + err);
    }
    // (kubectl create sends protobuf, which the test API server leaves out.)
    std::ofstream(cluster_dir + "/edge.json")
        << R"({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge"}})";
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!fs::exists(kubeconfig) ||
           std::system(("kubectl --kubeconfig " + kubeconfig + " apply --server-side -f " +
                        cluster_dir + "/edge.json > /dev/null 2>&1")
                           .c_str()) != 0) {
      if (std::chrono::steady_clock::now() > deadline) die("the test API server did not come up");
      std::this_thread::sleep_for(200ms);
    }
  }
  std::vector<std::string> spoke_argv = {CANOPY_SPOKE_BINARY,
                                         "--site",
                                         kSite,
                                         "--label",
                                         "region=eu-west",
                                         "--parent",
                                         kHub,
                                         "--data",
                                         spoke_data,
                                         "--nats",
                                         nats.url(),
                                         "--health",
                                         "127.0.0.1:" + std::to_string(spoke_health)};
  if (kube) {
    for (const char* a : {"--applier", "kube", "--kubeconfig"}) spoke_argv.push_back(a);
    spoke_argv.push_back(kubeconfig);
  } else {
    spoke_argv.push_back("--manifests");
    spoke_argv.push_back(manifests);
  }
  testing::ProcessOptions spo;
  spo.log_path = root + "/spoke.log";
  if (!spoke.start(spoke_argv, spo, &err)) die("starting canopy-spoke: " + err);
  auto applied = [&] {
    return kube ? count_inventory(spoke_data + "/kube-inventory.json") : count_manifests(manifests);
  };
  wait_for([&] { return applied() == o.objects; }, 300s, "every object applied", spoke);
  wait_for([&] { return in_sync(spoke_health); }, 120s, "the spoke in sync", spoke);
  std::this_thread::sleep_for(5s);

  const pid_t pid = spoke.pid();
  const double rss = rss_mb(pid);
  const double rss_anon = status_mb(pid, "RssAnon");
  const double rss_file = status_mb(pid, "RssFile");
  std::fprintf(stderr, "%s: %zu objects applied and in sync; idle for %d s\n", kBench, o.objects,
               o.idle_seconds);
  const double cpu0 = cpu_seconds(pid);
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(o.idle_seconds));
  const double cpu = cpu_seconds(pid) - cpu0;
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::fprintf(stderr, "%s: %zu garbage messages on the spoke's sync subject\n", kBench, o.garbage);
  flood(nats.url(), std::string("canopy.v1.") + kHub + "." + kSite + ".down", o.garbage);
  std::this_thread::sleep_for(10s);
  if (!spoke.running()) die("the spoke exited after the garbage; see " + spo.log_path);
  wait_for([&] { return in_sync(spoke_health); }, 60s, "the spoke in sync after the garbage",
           spoke);
  const double rss_after = rss_mb(pid);
  if (applied() != o.objects) {
    die("applied objects changed after the garbage: " + std::to_string(applied()) + " of " +
        std::to_string(o.objects));
  }

  emit("rss_mb", rss, "<20");
  emit("rss_anon_mb", rss_anon);
  emit("rss_file_mb", rss_file);
  emit("idle_cpu_percent", 100.0 * cpu / wall, "<0.5");
  emit("binary_mb", static_cast<double>(fs::file_size(CANOPY_SPOKE_BINARY)) / (1024.0 * 1024.0));
  emit("rss_after_garbage_mb", rss_after, "<20");

  spoke.kill(SIGTERM);
  spoke.wait_exit(20s);
  hub.kill(SIGTERM);
  hub.wait_exit(20s);
  if (kube) {
    cluster.kill(SIGTERM);
    cluster.wait_exit(20s);
  }
  if (!o.keep) {
    fs::remove_all(root);
  } else {
    std::fprintf(stderr, "%s: kept %s\n", kBench, root.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) { return canopy::bench::run(argc, argv); }

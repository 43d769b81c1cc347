// canopy_offline_restart_bench (spoke.offline_restart): how long a site cut
// off from its hub takes, after a reboot, to have every desired object back
// in its manifests directory.
//
// The real `canopy-spoke` binary (built beside this benchmark) runs with
// `--nats` pointing at a loopback port where nothing listens. Its store is
// prepared beforehand with the Store API as a synced spoke holds it
// (docs/keys.md): `sites/s1`, `--objects` templates `t/acme/templates/app-<i>`
// (small Deployments) and one placement `t/acme/placements/edge` listing them
// all for site s1. The documents are a hub replica's writes, applied to the
// spoke's store with apply_remote as sync applies them.
//
// The spoke is started once and left until it has written every manifest and
// its status documents, then stopped with SIGTERM. Each of `--runs` rounds
// then deletes every file of the manifests directory (a rebooted site whose
// manifests directory is a tmpfs), starts the spoke (the clock starts just
// before fork/exec), polls the directory every 1 ms, counting the files the
// applier writes (`canopy-*.json`, renamed into place atomically, so a file
// that is there is whole), stops when all are there, checks that the names
// are exactly the expected ones, and stops the spoke with SIGTERM.
//
// The data directory (the store: persistent storage) lives under `--dir`
// (default $TMPDIR or /tmp); the manifests directory under
// `--manifests-dir-root` (default /dev/shm when it is a tmpfs, as on a site
// whose manifests directory is a tmpfs, else `--dir`; pass a disk directory
// to pay the applier's fsyncs on a disk). Each run's log is
// scanned for "[error]" and "[critical]" lines (reported on stderr, and the
// benchmark fails on them), and for the spoke's own figure ("N objects applied
// from the local store M ms after start").
//
// Output: JSON lines on stdout ({"bench","metric","value"[,"target"]}):
// restart_to_all_manifests_ms (median, target "<1000") and
// restart_to_all_manifests_max_ms, plus the spoke's own median figure.
//
//   canopy_offline_restart_bench [--objects N] [--runs N] [--dir DIR]
//       [--manifests-dir-root DIR] [--spoke PATH] [--keep]
#include <dirent.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/statfs.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench/report.h"
#include "bench/site_catalog.h"
#include "store/store.h"
#include "tests/support/free_port.h"
#include "tests/support/process.h"

#ifndef CANOPY_SPOKE_BINARY
#define CANOPY_SPOKE_BINARY "canopy-spoke"
#endif

namespace canopy::bench {
namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr char kBench[] = "spoke.offline_restart";
constexpr char kSite[] = "s1";

void emit(const std::string& metric, double value, const std::string& target = "") {
  emit_figure(kBench, metric, value, target);
}

[[noreturn]] void die(const std::string& what) { fail_bench(kBench, what); }

double ms_since(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

bool is_tmpfs(const std::string& path) {
  struct statfs s;
  return statfs(path.c_str(), &s) == 0 && s.f_type == 0x01021994;  // TMPFS_MAGIC
}

// Writes what a synced spoke holds: the hub's documents, applied as the hub's
// deltas.
void prepare_store(const std::string& data_dir, const std::string& scratch, size_t objects) {
  StoreOptions ho;
  ho.path = scratch;
  ho.durability = Durability::kNone;
  auto hub = Store::open(ho);
  if (!hub.ok()) die("opening a scratch hub store: " + hub.status().to_string());
  auto batch = write_site_catalog(hub->get(), kSite, objects);
  if (!batch.ok()) die(batch.status().to_string());

  StoreOptions so;
  so.path = data_dir;
  so.durability = Durability::kSync;
  auto spoke = Store::open(so);
  if (!spoke.ok()) die("opening the spoke's store: " + spoke.status().to_string());
  auto r = (*spoke)->apply_remote(*batch, (*hub)->replica_id());
  if (!r.ok()) die("applying the hub's documents: " + r.status().to_string());
  if (r->applied != objects + 2) die("the spoke's store did not take every document");
}

void clear_dir(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir)) fs::remove_all(e.path());
}

struct LogScan {
  std::vector<std::string> errors;  // [error] / [critical] lines
  std::vector<std::string> warnings;
  double own_ms = -1;  // the spoke's "applied from the local store M ms after start"
  size_t own_objects = 0;
};

LogScan scan_log(const std::string& path) {
  LogScan s;
  std::ifstream in(path);
  static const std::regex own(R"((\d+) objects applied from the local store (\d+) ms after start)");
  for (std::string line; std::getline(in, line);) {
    if (line.find("[error]") != std::string::npos || line.find("[critical]") != std::string::npos)
      s.errors.push_back(line);
    if (line.find("[warning]") != std::string::npos || line.find("[warn]") != std::string::npos)
      s.warnings.push_back(line);
    std::smatch m;
    if (std::regex_search(line, m, own)) {
      s.own_objects = std::stoul(m[1]);
      s.own_ms = std::stod(m[2]);
    }
  }
  return s;
}

struct Options {
  size_t objects = 1000;
  size_t runs = 5;
  std::string dir;
  std::string manifests_root;
  std::string spoke = CANOPY_SPOKE_BINARY;
  bool keep = false;
};

class Spoke {
 public:
  Spoke(const Options& o, std::string data, std::string manifests, std::string logs)
      : o_(o), data_(std::move(data)), manifests_(std::move(manifests)), logs_(std::move(logs)) {
    nats_port_ = testing::pick_free_port();
    health_port_ = testing::pick_free_port();
    if (nats_port_ <= 0 || health_port_ <= 0) die("no free port");
  }

  // Starts the daemon with its output in `log`.
  void start(const std::string& log) {
    testing::ProcessOptions po;
    po.log_path = log;
    std::string err;
    const std::vector<std::string> argv = {o_.spoke,
                                           "--site",
                                           kSite,
                                           "--label",
                                           "region=eu-west",
                                           "--parent",
                                           "hub",
                                           "--data",
                                           data_,
                                           "--manifests",
                                           manifests_,
                                           "--nats",
                                           "nats://127.0.0.1:" + std::to_string(nats_port_),
                                           "--health",
                                           "127.0.0.1:" + std::to_string(health_port_)};
    if (!proc_.start(argv, po, &err)) die("starting " + o_.spoke + ": " + err);
  }

  void stop() {
    proc_.kill(SIGTERM);
    auto st = proc_.wait_exit(std::chrono::seconds(20));
    if (!st) die("the spoke did not stop within 20 s of SIGTERM");
    if (!WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
      die("the spoke " + testing::describe_wait_status(*st) + " (see its log)");
    }
  }

  bool running() { return proc_.running(); }

  int nats_port() const { return nats_port_; }

 private:
  const Options& o_;
  std::string data_, manifests_, logs_;
  int nats_port_ = 0, health_port_ = 0;
  testing::Process proc_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int run(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--objects") {
      o.objects = std::stoul(value());
    } else if (a == "--runs") {
      o.runs = std::stoul(value());
    } else if (a == "--dir") {
      o.dir = value();
    } else if (a == "--manifests-dir-root") {
      o.manifests_root = value();
    } else if (a == "--spoke") {
      o.spoke = value();
    } else if (a == "--keep") {
      o.keep = true;
    } else {
      die("unknown argument " + a +
          " (--objects N --runs N --dir DIR --manifests-dir-root DIR --spoke PATH --keep)");
    }
  }
  if (o.objects == 0 || o.runs == 0) die("--objects and --runs must be at least 1");
  if (!fs::exists(o.spoke)) die("no canopy-spoke binary at " + o.spoke + " (build canopy-spoke)");
  spdlog::set_level(spdlog::level::warn);
  if (o.dir.empty()) o.dir = getenv("TMPDIR") != nullptr ? getenv("TMPDIR") : "/tmp";
  if (o.manifests_root.empty() && is_tmpfs("/dev/shm")) o.manifests_root = "/dev/shm";
  std::string root = o.dir + "/canopy-offline-restart-XXXXXX";
  if (mkdtemp(root.data()) == nullptr) die("cannot create a directory under " + o.dir);
  std::string mroot = root;
  if (!o.manifests_root.empty()) {
    mroot = o.manifests_root + "/canopy-offline-manifests-XXXXXX";
    if (mkdtemp(mroot.data()) == nullptr) die("cannot create a directory under " + mroot);
  }
  const std::string data = root + "/data", manifests = mroot + "/manifests", logs = root + "/logs";
  fs::create_directories(manifests);
  fs::create_directories(logs);
  std::fprintf(stderr, "%s: spoke %s\n%s: data %s (%s), manifests %s (%s)\n", kBench,
               o.spoke.c_str(), kBench, data.c_str(), is_tmpfs(root) ? "tmpfs" : "not tmpfs",
               manifests.c_str(), is_tmpfs(mroot) ? "tmpfs" : "not tmpfs");

  auto t = SteadyClock::now();
  prepare_store(data, root + "/scratch-hub", o.objects);
  fs::remove_all(root + "/scratch-hub");
  std::fprintf(stderr, "%s: store prepared with %zu templates in %.0f ms\n", kBench, o.objects,
               ms_since(t));

  std::set<std::string> expected;
  for (size_t i = 0; i < o.objects; ++i) expected.insert(manifest_file(template_name(i)));

  Spoke spoke(o, data, manifests, logs);
  std::fprintf(stderr, "%s: --nats nats://127.0.0.1:%d (nothing listens there)\n", kBench,
               spoke.nats_port());
  bool failed = false;
  auto check_log = [&](const std::string& log, const char* what) {
    LogScan s = scan_log(log);
    for (const auto& l : s.errors)
      std::fprintf(stderr, "%s: %s: ERROR in log: %s\n", kBench, what, l.c_str());
    for (const auto& l : s.warnings)
      std::fprintf(stderr, "%s: %s: warning in log: %s\n", kBench, what, l.c_str());
    if (!s.errors.empty()) failed = true;
    return s;
  };

  // First start: writes the manifests and the status documents.
  {
    const std::string log = logs + "/first.log";
    t = SteadyClock::now();
    spoke.start(log);
    while (count_manifests(manifests) < o.objects) {
      if (!spoke.running()) die("the spoke exited during its first start; see " + log);
      if (ms_since(t) > 120'000) die("the first start did not write every manifest in 120 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const double first_ms = ms_since(t);
    // Let it finish its status documents (they flow up later) before stopping.
    std::this_thread::sleep_for(std::chrono::seconds(3));
    spoke.stop();
    check_log(log, "first start");
    std::fprintf(stderr, "%s: first start: %zu manifests after %.0f ms\n", kBench, o.objects,
                 first_ms);
  }

  std::vector<double> times, own;
  for (size_t r = 0; r < o.runs; ++r) {
    clear_dir(manifests);
    if (count_manifests(manifests) != 0) die("the manifests directory is not empty");
    const std::string log = logs + "/run-" + std::to_string(r) + ".log";
    const auto t0 = SteadyClock::now();
    spoke.start(log);
    size_t n = 0;
    while ((n = count_manifests(manifests)) < o.objects) {
      if (ms_since(t0) > 60'000) die("not every manifest after 60 s (" + std::to_string(n) + ")");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const double ms = ms_since(t0);
    times.push_back(ms);
    std::set<std::string> names;
    count_manifests(manifests, &names);
    if (names != expected) {
      std::fprintf(stderr, "%s: run %zu: the manifests are not the expected files\n", kBench, r);
      failed = true;
    }
    // Leave it a moment (a spoke must settle, not exit), then stop it.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (!spoke.running()) die("the spoke exited on its own; see " + log);
    spoke.stop();
    LogScan s = check_log(log, ("run " + std::to_string(r)).c_str());
    own.push_back(s.own_ms);
    std::fprintf(stderr,
                 "%s: run %zu: %zu manifests %.1f ms after fork/exec (the spoke logs %zu objects "
                 "applied %.0f ms after its start)\n",
                 kBench, r, o.objects, ms, s.own_objects, s.own_ms);
  }

  emit("restart_to_all_manifests_ms", median(times), "<1000");
  emit("restart_to_all_manifests_max_ms", *std::max_element(times.begin(), times.end()));
  emit("spoke_reported_apply_ms", median(own));
  if (!o.keep) {
    fs::remove_all(root);
    if (mroot != root) fs::remove_all(mroot);
  } else {
    std::fprintf(stderr, "%s: kept %s\n", kBench, root.c_str());
  }
  if (failed) die("errors (see above)");
  return 0;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) { return canopy::bench::run(argc, argv); }

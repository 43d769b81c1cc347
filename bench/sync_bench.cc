// canopy_sync_bench: the sync engine at fleet scale, over a real nats-server.
//
//   canopy_sync_bench --case fanout|session_memory|storm [options]
//
// Results: one JSON line per figure on stdout,
//   {"bench":"sync.fanout","metric":"p99_ms_s10000","value":812,"target":"<2000"}
// everything else (progress, breakdowns, which kind of child a figure used) on
// stderr.
//
// Set-up (every case):
//   - a real nats-server on a free 127.0.0.1 port (tests/support NatsServer,
//     max_payload 8 MiB);
//   - the HUB runs in its own process (this executable re-executed with
//     --hub-role, talking to the bench over two pipes), so that its memory
//     (VmRSS, VmHWM, malloc heap) is the hub's alone. It is the real thing: a
//     Store on RocksDB in a temp dir (Durability::kGroupCommit), the real
//     hub::PlacementIndex as ScopeProvider (S `sites/<site>` records with
//     labels, a ~2 KB Deployment template `t/acme/templates/web`, and a
//     placement `t/acme/placements/web` selecting every site by label), and a
//     real ParentSync in a SyncNode driven by a SyncRuntime, over a
//     NatsTransport. The hello hook is the one of hub/hub.cc (it re-writes
//     `sites/<child>` from the hello's labels: a no-op write here, since the
//     labels are the same). The hub's transport is wrapped in a pass-through
//     that only timestamps publishes (to split the fan-out time into "engine
//     until the first publish" and "publishing S messages").
//   - the SPOKES are simulated in the bench process: S children spread over G
//     NatsTransports (default 8 connections), each child on its own subjects
//     (canopy.v1.hub.<site>.up/down), driven by W worker threads (default 4):
//     a child is processed when its NATS handler queued something, and every
//     child is ticked every 100 ms. A child receives through a wildcard
//     subscription shared by all (the fair fan-out run) or through one
//     subscription of its own (NATS.c runs one delivery thread per
//     subscription, so S subscriptions are S threads in this process: on a
//     2-CPU box that, not the hub, dominates the 10,000-child fan-out).
//   - LIGHT children start WARM by default (--join warm): before their hello
//     they hold what a spoke that was in sync holds (the hub's states of their
//     3 scope documents and a position at the hub's log end with their scope
//     version, exported by the hub), as after a hub restart; their sessions
//     then open by catch-up. --join cold starts them empty: every session
//     opens by reconciliation (an empty child asks for its whole scope at
//     the first sketch message). With range fingerprints, which cost
//     O(all hub documents) per child, that took 46 s to 188 s for 10,000
//     children; not measured since the sketch and PlacementIndex::list_scope
//     made it O(scope). REAL children always start cold (empty stores).
//
// Two kinds of child (stderr says which one each figure used):
//   - REAL: a ChildSync engine in a SyncNode with its own Store (RocksDB,
//     kGroupCommit) in a temp dir: exactly what canopy-spoke runs. Used up to
//     --real-limit children (default 1,000).
//   - LIGHT: a protocol-faithful child written here (LightChild below), used
//     above --real-limit. 10,000 real stores do not fit in one process here:
//     every RocksDB instance holds several file descriptors open (LOCK, WAL,
//     MANIFEST, info LOG, SST files; the fanout case measures the count) and
//     RLIMIT_NOFILE's hard limit on this box is 20,000, and StoreOptions has
//     no knob for RocksDB's memtables, caches or max_open_files (store/ is not
//     ours to change). The light child speaks the same protocol as ChildSync:
//     hello with its position (kept in memory, as if persisted), jittered
//     exponential hello backoff, welcome, reset, the same go-back-N channels
//     (sync/engine/channel.h) in both directions, Changes applied in order by
//     merging deltas and whole states into an in-memory canopy::Document per
//     key (deltas validated with validate_delta), `drop`, `covered` and
//     `reconciled` honoured, sketches answered by the same SketchReceiver as
//     ChildSync's (ids as Store::doc_hashes computes them), acks riding on its
//     replies or sent once per round, heartbeat acks every 2 s, and on
//     reconnection an ack (or, after an outage longer than the hub's session
//     timeout, a hello at once). It never writes anything of its own, so it
//     sends nothing up but acks and sketch replies. It persists nothing (no
//     fsync), which makes it cheaper than a spoke; a real spoke fsyncs on its
//     own disk, in parallel with the others.
//
// Cases:
//   fanout          S = 1,000 (REAL children) and S = 10,000 (LIGHT): with all
//                   sessions live, the template is updated at the hub (one
//                   Store::put of the whole document, changing one annotation);
//                   latency = from the hub's commit (its store listener saw
//                   the entry, i.e. durable; put() returns ~0.05 ms later) until
//                   each child has the change in its store (REAL: the child
//                   store's commit listener) or document (LIGHT: after the
//                   merge). --rounds updates (default 5); p50/p99/max are the
//                   medians over the rounds. Then raw NATS, in the same run
//                   and process: one payload of the size of the hub's Changes
//                   message, published once to each of S subjects from one
//                   connection; time until each subscriber's handler has it;
//                   median p50/p99 over rounds.
//                   The fair comparison, which `p99_vs_raw_nats_s<S>` (target
//                   <= 2 at S = 10,000) uses: on BOTH sides the subscribers are
//                   demultiplexed per connection. Canopy's children receive
//                   through one wildcard subscription (canopy.v1.hub.*.down)
//                   on one extra connection, handed to each child by subject
//                   (Demux); the raw subscribers receive exactly so
//                   (canopy.v1.rawd.*.down, the same Demux). A process that
//                   holds many sessions does this; a spoke holds one.
//                   Diagnostics (--no-diagnostics skips them; no targets):
//                   raw NATS with one wildcard subscription on each of the G
//                   connections (raw_nats_wildcard_per_connection_*), and a
//                   second run per S whose children, and raw subscribers,
//                   hold one NATS subscription each (*_sub_per_child): NATS.c
//                   runs one delivery thread per subscription, so that is S
//                   threads in this process, which on a 2-CPU box dominates
//                   both figures (raw NATS suffers more than Canopy).
//                   hub_first_publish_ms / hub_last_publish_ms: the hub's
//                   share, from its commit to its first and last publish
//                   (medians over the rounds). Every round also prints the
//                   CPU time used by the hub, nats-server and this process.
//                   The update's Changes message is ~160 bytes: put() of the
//                   whole template commits only the changed field.
//   session_memory  S = 10,000 LIGHT children: the hub's heap in use
//                   (mallinfo2 uordblks + hblkhd, read inside the hub process)
//                   before any hello (all site records, the index and the NATS
//                   connection already in place) and after every session went
//                   live and stayed idle for 10 s, divided by S. The RSS delta
//                   per session is printed on stderr too (malloc_trim(0) before
//                   both readings).
//   storm           S = 10,000 LIGHT children, all live; then every child's
//                   connection is closed (the G NatsTransports are destroyed),
//                   10 changes are made at the hub (10 annotations patched into
//                   the template), the hub forgets the sessions (its
//                   session_timeout_ms passes: 30 s here, kBenchSessionTimeoutMs,
//                   instead of the daemon's 10 min, so that the run need not
//                   wait that long; the storm is one of hellos, as after a hub
//                   restart or an outage longer than the timeout), and all
//                   children reconnect at once (new connections, resubscribe,
//                   then each child, cut off for longer than the hub's
//                   session timeout, says hello with its old position, and
//                   catches up from the hub's log under
//                   max_concurrent_catchups). Figures: time from the start
//                   of the reconnection until every child holds all 10 changes,
//                   and the hub's peak RSS during it (VmHWM of the hub process,
//                   reset through /proc/<hub>/clear_refs just before; also
//                   sampled every 10 ms).
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "canopy/v1/sync.pb.h"
#include "hub/placement_index.h"
#include "model/keys.h"
#include "store/document.h"
#include "store/store.h"
#include "sync/engine/channel.h"
#include "sync/engine/child.h"
#include "sync/engine/node.h"
#include "sync/engine/parent.h"
#include "sync/engine/sketch_receiver.h"
#include "sync/nats_transport.h"
#include "sync/protocol.h"
#include "sync/subjects.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"

namespace canopy::bench_sync {
namespace {

using json = nlohmann::json;

constexpr const char* kHubName = "hub";
constexpr const char* kTenant = "acme";
constexpr const char* kTemplate = "web";
constexpr int kStormChanges = 10;
constexpr uint32_t kStormAll = (1u << kStormChanges) - 1;
// The bench hub forgets a silent session after this (the daemon: 10 min), so
// that the storm (a storm of hellos) need not wait longer for it.
constexpr uint64_t kBenchSessionTimeoutMs = 30'000;

// ---------------------------------------------------------------- utilities

// CLOCK_MONOTONIC: one time base for every process on the machine.
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const int64_t g_start_ns = now_ns();
pid_t g_nats_pid = 0;
const char* g_role = "bench";

void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void logf(const char* fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "[%8.3f %s] %s\n", static_cast<double>(now_ns() - g_start_ns) / 1e9, g_role,
               buf);
  std::fflush(stderr);
}

[[noreturn]] void die(const std::string& why) {
  logf("FATAL: %s", why.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

void emit(const std::string& bench, const std::string& metric, double value,
          const std::string& target = "") {
  json j = {{"bench", bench}, {"metric", metric}};
  // Integers print without a fraction; others with three decimals.
  if (value == static_cast<double>(static_cast<int64_t>(value))) {
    j["value"] = static_cast<int64_t>(value);
  } else {
    j["value"] = std::round(value * 1000.0) / 1000.0;
  }
  if (!target.empty()) j["target"] = target;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// /proc/<pid>/status field in kB (VmRSS, VmHWM, Threads...).
int64_t proc_status_kb(const std::string& field, const std::string& pid = "self") {
  std::ifstream in("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      return std::strtoll(line.c_str() + field.size() + 1, nullptr, 10);
    }
  }
  return -1;
}

// CPU time (user + system) of a process, in ms.
double cpu_ms(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = all.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(all.substr(close + 2));
  std::string f;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> f; ++i) {
    if (i == 14) utime = std::atof(f.c_str());
    if (i == 15) stime = std::atof(f.c_str());
  }
  return (utime + stime) * 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

int64_t heap_bytes() {
  struct mallinfo2 mi = mallinfo2();
  return static_cast<int64_t>(mi.uordblks + mi.hblkhd);
}

size_t open_fds() {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

void raise_nofile() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  if (idx == 0) idx = 1;
  return v[std::min(idx, v.size()) - 1];
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string site_name(int i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "site-%05d", i);
  return buf;
}

std::map<std::string, std::string> site_labels(int i) {
  static const char* regions[] = {"eu-west", "eu-central", "us-east", "ap-south"};
  static const char* tiers[] = {"cell-tower", "shop", "factory"};
  return {{"fleet", "bench"}, {"region", regions[i % 4]}, {"tier", tiers[i % 3]}};
}

std::string template_key_str() { return model::template_key(kTenant, kTemplate); }

// A ~2 KB Deployment; `rev` goes into an annotation.
json template_doc(int rev) {
  json env = json::array();
  for (int i = 0; i < 16; ++i) {
    env.push_back({{"name", "SETTING_" + std::to_string(i)},
                   {"value", "value-of-setting-number-" + std::to_string(i) + "-padding"}});
  }
  json container = {
      {"name", "web"},
      {"image", "registry.example.com/acme/web:1.24.3"},
      {"ports", json::array({{{"containerPort", 8080}, {"protocol", "TCP"}}})},
      {"env", env},
      {"resources",
       {{"requests", {{"cpu", "100m"}, {"memory", "128Mi"}}},
        {"limits", {{"cpu", "500m"}, {"memory", "256Mi"}}}}},
      {"readinessProbe",
       {{"httpGet", {{"path", "/healthz"}, {"port", 8080}}}, {"periodSeconds", 10}}},
  };
  return {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata",
       {{"name", "web"},
        {"namespace", "shop"},
        {"labels", {{"app", "web"}, {"team", "storefront"}}},
        {"annotations", {{"bench/rev", std::to_string(rev)}}}}},
      {"spec",
       {{"replicas", 2},
        {"selector", {{"matchLabels", {{"app", "web"}}}}},
        {"template",
         {{"metadata", {{"labels", {{"app", "web"}}}}},
          {"spec", {{"containers", json::array({container})}}}}}}},
  };
}

// What a child has of the template, read from a delta's ops or a whole state.
struct Observation {
  int rev = -1;
  uint32_t storm = 0;
};

void observe_annotation(const std::string& name, const std::string& value, Observation* o) {
  std::string v = value;
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  const int n = std::atoi(v.c_str());
  if (name == "bench/rev") {
    o->rev = std::max(o->rev, n);
  } else if (name.rfind("bench/storm-", 0) == 0) {
    const int k = std::atoi(name.c_str() + std::strlen("bench/storm-"));
    if (k >= 1 && k <= kStormChanges) o->storm |= 1u << (k - 1);
  }
}

bool observe_delta(const v1::Delta& d, Observation* o) {
  bool any = false;
  for (const auto& op : d.ops()) {
    if (op.kind() == v1::FieldOp::SET && op.path_size() == 3 && op.path(0) == "metadata" &&
        op.path(1) == "annotations") {
      observe_annotation(op.path(2), op.value(), o);
      any = true;
    }
  }
  return any;
}

void observe_document(const Document& doc, Observation* o) {
  if (!doc.exists()) return;
  const json v = doc.to_value();
  auto md = v.find("metadata");
  if (md == v.end() || !md->is_object()) return;
  auto an = md->find("annotations");
  if (an == md->end() || !an->is_object()) return;
  for (auto it = an->begin(); it != an->end(); ++it) {
    observe_annotation(it.key(), it.value().is_string() ? it.value().get<std::string>() : "", o);
  }
}

// Per-child arrival record, written by the child's thread, read by the driver.
struct Track {
  std::atomic<int> rev{-1};
  std::atomic<int64_t> rev_ns{0};       // when `rev` was reached (applied)
  std::atomic<int64_t> rev_recv_ns{0};  // when the message that carried it was received
  std::atomic<uint32_t> storm{0};
  std::atomic<int64_t> storm_ns{0};
  std::atomic<int64_t> last_recv_ns{0};
  std::atomic<uint32_t> last_recv_bytes{0};
  std::atomic<uint32_t> rev_msg_bytes{0};

  void note(const Observation& o) {
    const int64_t t = now_ns();
    if (o.rev > rev.load(std::memory_order_relaxed)) {
      rev_ns.store(t, std::memory_order_relaxed);
      rev_recv_ns.store(last_recv_ns.load(std::memory_order_relaxed), std::memory_order_relaxed);
      rev_msg_bytes.store(last_recv_bytes.load(std::memory_order_relaxed),
                          std::memory_order_relaxed);
      rev.store(o.rev, std::memory_order_release);
    }
    if (o.storm != 0) {
      const uint32_t now = storm.fetch_or(o.storm) | o.storm;
      if (now == kStormAll && storm_ns.load() == 0) storm_ns.store(t);
    }
  }
  void received(size_t bytes) {
    last_recv_ns.store(now_ns(), std::memory_order_relaxed);
    last_recv_bytes.store(static_cast<uint32_t>(bytes), std::memory_order_relaxed);
  }
};

// Pass-through transport that timestamps publishes (the hub's).
class TimedTransport final : public sync::Transport {
 public:
  explicit TimedTransport(sync::Transport* inner) : inner_(inner) {}
  Status publish(std::string_view subject, std::string_view data) override {
    const int64_t t = now_ns();
    int64_t zero = 0;
    first_after_mark_.compare_exchange_strong(zero, t);
    last_.store(t, std::memory_order_relaxed);
    published_.fetch_add(1, std::memory_order_relaxed);
    bytes_.fetch_add(data.size(), std::memory_order_relaxed);
    return inner_->publish(subject, data);
  }
  StatusOr<uint64_t> subscribe(std::string_view pattern, Handler handler) override {
    return inner_->subscribe(pattern, std::move(handler));
  }
  void unsubscribe(uint64_t id) override { inner_->unsubscribe(id); }
  size_t max_payload() const override { return inner_->max_payload(); }
  bool connected() const override { return inner_->connected(); }
  void on_state_change(StateHandler handler) override {
    inner_->on_state_change(std::move(handler));
  }
  void mark() {
    first_after_mark_.store(0);
    published_at_mark_ = published_.load();
    bytes_at_mark_ = bytes_.load();
  }
  int64_t first_after_mark() const { return first_after_mark_.load(); }
  int64_t last() const { return last_.load(); }
  uint64_t published_since_mark() const { return published_.load() - published_at_mark_; }
  uint64_t bytes_since_mark() const { return bytes_.load() - bytes_at_mark_; }

 private:
  sync::Transport* inner_;
  std::atomic<int64_t> first_after_mark_{0};
  std::atomic<int64_t> last_{0};
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> bytes_{0};
  uint64_t published_at_mark_ = 0;
  uint64_t bytes_at_mark_ = 0;
};

// "k=v k=v" <-> map.
std::map<std::string, std::string> parse_kv(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream in(line);
  std::string tok;
  while (in >> tok) {
    const size_t eq = tok.find('=');
    if (eq == std::string::npos) {
      out[tok] = "";
    } else {
      out[tok.substr(0, eq)] = tok.substr(eq + 1);
    }
  }
  return out;
}

// ====================================================================== hub

struct HubArgs {
  int in_fd = -1;
  int out_fd = -1;
  int sites = 0;
  std::string nats_url;
  std::string dir;
  size_t max_catchups = 64;
};

int hub_main(const HubArgs& a) {
  g_role = "hub";
  raise_nofile();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  spdlog::set_level(spdlog::level::warn);
  FILE* in = fdopen(a.in_fd, "r");
  FILE* out = fdopen(a.out_fd, "w");
  if (in == nullptr || out == nullptr) die("hub: cannot open the command pipes");
  auto reply = [&](const std::string& s) {
    std::fprintf(out, "%s\n", s.c_str());
    std::fflush(out);
  };

  StoreOptions so;
  so.path = a.dir + "/hub-store";
  so.durability = Durability::kGroupCommit;
  auto store_or = Store::open(so);
  if (!store_or.ok()) die("hub store: " + store_or.status().to_string());
  std::unique_ptr<Store> store = std::move(store_or).value();
  auto index_or = hub::PlacementIndex::attach(store.get());
  if (!index_or.ok()) die("placement index: " + index_or.status().to_string());
  std::unique_ptr<hub::PlacementIndex> index = std::move(index_or).value();

  // Catalogue and site registry.
  const std::string tkey = template_key_str();
  if (auto r = store->put_value(tkey, template_doc(0)); !r.ok()) die(r.status().to_string());
  json placement = {{"templates", json::array({kTemplate})},
                    {"selector", {{"matchLabels", {{"fleet", "bench"}}}}}};
  if (auto r = store->put_value(model::placement_key(kTenant, "web"), placement); !r.ok()) {
    die(r.status().to_string());
  }
  if (auto r = store->put_value(model::grant_key(kTenant, "all"), json{{"allSites", true}});
      !r.ok()) {
    die(r.status().to_string());
  }
  {
    const int64_t t0 = now_ns();
    std::atomic<int> next{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < 16; ++w) {
      writers.emplace_back([&] {
        for (int i = next++; i < a.sites; i = next++) {
          json doc = {{"name", site_name(i)}, {"labels", json::object()}};
          for (const auto& [k, v] : site_labels(i)) doc["labels"][k] = v;
          auto r = store->put_value(model::site_key(site_name(i)), doc);
          if (!r.ok()) die("writing site: " + r.status().to_string());
        }
      });
    }
    for (auto& t : writers) t.join();
    logf("wrote %d site records, the template and the placement in %.1f s (log index %llu)",
         a.sites, static_cast<double>(now_ns() - t0) / 1e9,
         static_cast<unsigned long long>(store->last_log_index()));
  }
  {
    auto keys = index->scope_keys(site_name(0));
    std::string s;
    for (const auto& k : keys) s += k + " ";
    logf("scope of %s: %s+ its own subtree", site_name(0).c_str(), s.c_str());
  }

  sync::NatsOptions no;
  no.urls = {a.nats_url};
  no.name = "canopy-hub-hub";
  auto nats_or = sync::NatsTransport::connect(no);
  if (!nats_or.ok()) die("hub nats: " + nats_or.status().to_string());
  std::unique_ptr<sync::NatsTransport> nats = std::move(nats_or).value();
  TimedTransport timed(nats.get());

  std::mutex rng_mu;
  std::mt19937_64 rng(std::random_device{}());
  sync::Env env{SystemClock::instance(), [&] {
                  std::lock_guard lock(rng_mu);
                  return rng();
                }};
  sync::ParentOptions po;
  po.max_concurrent_catchups = a.max_catchups;
  po.session_timeout_ms = kBenchSessionTimeoutMs;
  auto parent = std::make_unique<sync::ParentSync>(kHubName, store.get(), index.get(), env, po);
  Store* st = store.get();
  // As hub/hub.cc: the site describes itself in its hello; the registry keeps it.
  parent->set_hello_hook([st](const std::string& child, const v1::Hello& hello) {
    hub::register_site(st, child, hello);
  });
  // Timestamps the template's commit: listeners run once the write is
  // durable, just before put() returns (on the writer or the fsync leader).
  std::atomic<int64_t> template_commit_ns{0};
  const uint64_t commit_listener = store->subscribe([&](const v1::LogEntry& e) {
    if (e.has_delta() && e.delta().key() == tkey) template_commit_ns.store(now_ns());
  });
  (void)commit_listener;
  sync::SyncNode node(store.get(), &timed);
  node.set_parent_engine(std::move(parent));
  index->on_scope_change([&node](const sync::ScopeChange& c) { node.enqueue_scope_change(c); });
  if (Status s = node.attach(); !s.ok()) die("hub attach: " + s.to_string());
  sync::SyncRuntime runtime(&node);
  runtime.start();

  // RSS sampler: the peak since the last reset_peak.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> sampled_peak_kb{0};
  std::thread sampler([&] {
    while (!stop.load()) {
      const int64_t rss = proc_status_kb("VmRSS");
      int64_t cur = sampled_peak_kb.load();
      while (rss > cur && !sampled_peak_kb.compare_exchange_weak(cur, rss)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });

  auto mem = [&] {
    std::ostringstream o;
    o << "rss_kb=" << proc_status_kb("VmRSS") << " hwm_kb=" << proc_status_kb("VmHWM")
      << " heap=" << heap_bytes() << " sampled_peak_kb=" << sampled_peak_kb.load()
      << " threads=" << proc_status_kb("Threads");
    return o.str();
  };
  reply("ready log_index=" + std::to_string(store->last_log_index()) +
        " max_payload=" + std::to_string(nats->max_payload()) + " " + mem());

  char* line = nullptr;
  size_t cap = 0;
  int rev = 0;
  while (getline(&line, &cap, in) > 0) {
    std::string cmd(line);
    while (!cmd.empty() && (cmd.back() == '\n' || cmd.back() == '\r')) cmd.pop_back();
    auto kv = parse_kv(cmd);
    if (kv.count("quit")) break;
    if (kv.count("stats")) {
      size_t sessions = 0, live = 0, waiting = 0, catchup = 0, reconcile = 0;
      sync::ParentStats ps;
      runtime.call([&] {
        sync::ParentSync* p = node.parent();
        sessions = p->session_count();
        if (kv.count("modes")) {
          for (const auto& c : p->children()) {
            if (c.mode == "live") ++live;
            if (c.mode == "waiting") ++waiting;
            if (c.mode == "catch-up") ++catchup;
            if (c.mode == "reconcile") ++reconcile;
          }
        }
        ps = p->stats();
      });
      std::ostringstream o;
      o << "sessions=" << sessions << " live=" << live << " waiting=" << waiting
        << " catchup=" << catchup << " reconcile=" << reconcile << " catchups=" << ps.catchups
        << " reconciliations=" << ps.reconciliations << " bytes_sent=" << ps.bytes_sent
        << " documents_sent=" << ps.documents_sent << " refused=" << ps.refused_messages
        << " publish_failures=" << node.publish_failures()
        << " slow_consumer=" << nats->slow_consumer_events()
        << " dropped=" << nats->dropped_messages() << " log_index=" << store->last_log_index()
        << " " << mem();
      reply(o.str());
    } else if (kv.count("put_rev")) {
      rev = std::atoi(kv["put_rev"].c_str());
      timed.mark();
      const int64_t before = now_ns();
      auto r = store->put_value(tkey, template_doc(rev));
      const int64_t after = now_ns();
      if (!r.ok()) die("put: " + r.status().to_string());
      const int64_t committed = template_commit_ns.load();
      reply("t0=" + std::to_string(std::min(after, committed)) +
            " returned=" + std::to_string(after) + " committed=" + std::to_string(committed) +
            " put_ns=" + std::to_string(after - before) + " ops=" + std::to_string(r->ops_size()));
    } else if (kv.count("pubstats")) {
      reply("first=" + std::to_string(timed.first_after_mark()) +
            " last=" + std::to_string(timed.last()) +
            " published=" + std::to_string(timed.published_since_mark()) +
            " bytes=" + std::to_string(timed.bytes_since_mark()));
    } else if (kv.count("storm_patch")) {
      const int k = std::atoi(kv["storm_patch"].c_str());
      json patch = {{"metadata",
                     {{"annotations", {{"bench/storm-" + std::to_string(k), std::to_string(k)}}}}}};
      auto r = store->patch(tkey, patch.dump());
      if (!r.ok()) die("patch: " + r.status().to_string());
      reply("t0=" + std::to_string(now_ns()));
    } else if (kv.count("seed")) {
      // What every site holds when it is in sync at the log's end: the
      // template, the placement and its own record, and its position.
      std::ofstream f(kv["seed"], std::ios::binary);
      auto put64 = [&](uint64_t v) { f.write(reinterpret_cast<const char*>(&v), 8); };
      auto put_bytes = [&](const std::string& b) {
        const uint32_t n = static_cast<uint32_t>(b.size());
        f.write(reinterpret_cast<const char*>(&n), 4);
        f.write(b.data(), n);
      };
      put64(store->log_epoch());
      put64(store->last_log_index());
      for (const std::string& k : {tkey, model::placement_key(kTenant, "web")}) {
        auto d = store->state(k);
        if (!d.ok() || !d->has_value()) die("seed: no state for " + k);
        put_bytes((*d)->SerializeAsString());
      }
      put64(static_cast<uint64_t>(a.sites));
      for (int i = 0; i < a.sites; ++i) {
        auto d = store->state(model::site_key(site_name(i)));
        if (!d.ok() || !d->has_value()) die("seed: no state for a site");
        put64(index->version(site_name(i)));
        put_bytes((*d)->SerializeAsString());
      }
      f.close();
      reply(f ? "ok index=" + std::to_string(store->last_log_index()) : "error writing the seed");
    } else if (kv.count("trim")) {
      malloc_trim(0);
      reply(mem());
    } else if (kv.count("reset_peak")) {
      std::ofstream("/proc/self/clear_refs") << "5";
      sampled_peak_kb.store(proc_status_kb("VmRSS"));
      reply(mem());
    } else {
      reply("error unknown command");
    }
  }
  free(line);
  const int64_t q0 = now_ns();
  stop = true;
  sampler.join();
  runtime.stop();
  logf("runtime stopped in %.1f s", static_cast<double>(now_ns() - q0) / 1e9);
  reply("bye");
  // Leave without tearing down (the bench removes the directory).
  std::fflush(nullptr);
  std::_Exit(0);
}

// The bench's handle on a hub process.
class HubProcess {
 public:
  HubProcess(const std::string& nats_url, int sites, size_t max_catchups) {
    int to_hub[2], from_hub[2];
    if (pipe(to_hub) != 0 || pipe(from_hub) != 0) die("pipe");
    std::vector<std::string> args = {
        "/proc/self/exe", "--hub-role",
        "--in-fd",        std::to_string(to_hub[0]),
        "--out-fd",       std::to_string(from_hub[1]),
        "--sites",        std::to_string(sites),
        "--nats",         nats_url,
        "--dir",          dir_.path().string(),
        "--max-catchups", std::to_string(max_catchups),
    };
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) die("fork");
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec: this process has threads.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(2, 1);  // the hub's stdout must not mix with the JSON lines
      close(to_hub[1]);
      close(from_hub[0]);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    close(to_hub[0]);
    close(from_hub[1]);
    to_ = fdopen(to_hub[1], "w");
    from_ = fdopen(from_hub[0], "r");
    fcntl(to_hub[1], F_SETFD, FD_CLOEXEC);
    fcntl(from_hub[0], F_SETFD, FD_CLOEXEC);
    ready_ = parse_kv(read_line());
    if (!ready_.count("ready")) die("hub did not start");
  }
  ~HubProcess() {
    const int64_t t0 = now_ns();
    if (to_ != nullptr) {
      std::fprintf(to_, "quit\n");
      std::fflush(to_);
      read_line();
      fclose(to_);
      fclose(from_);
    }
    const int64_t t1 = now_ns();
    int status = 0;
    waitpid(pid_, &status, 0);
    logf("hub stopped in %.1f s, exited %.1f s later", static_cast<double>(t1 - t0) / 1e9,
         static_cast<double>(now_ns() - t1) / 1e9);
  }
  std::map<std::string, std::string> call(const std::string& cmd) {
    std::fprintf(to_, "%s\n", cmd.c_str());
    std::fflush(to_);
    return parse_kv(read_line());
  }
  const std::map<std::string, std::string>& ready() const { return ready_; }
  pid_t pid() const { return pid_; }

 private:
  std::string read_line() {
    char* line = nullptr;
    size_t cap = 0;
    if (getline(&line, &cap, from_) <= 0) {
      free(line);
      die("the hub process went away");
    }
    std::string s(line);
    free(line);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }

  testing::TempDir dir_{"canopy-sync-bench-hub-"};
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  std::map<std::string, std::string> ready_;
};

int64_t num(const std::map<std::string, std::string>& kv, const std::string& k) {
  auto it = kv.find(k);
  return it == kv.end() ? -1 : std::strtoll(it->second.c_str(), nullptr, 10);
}

// ================================================================= children

// G shared connections; children are spread over them.
struct Group {
  std::shared_mutex mu;  // exclusive while the connection is replaced
  std::unique_ptr<sync::NatsTransport> nats;
  std::string name;

  Status publish(std::string_view subject, std::string_view data) {
    std::shared_lock lock(mu);
    if (!nats) return unavailable("disconnected");
    return nats->publish(subject, data);
  }
};

std::unique_ptr<sync::NatsTransport> connect_group(const std::string& url,
                                                   const std::string& name) {
  sync::NatsOptions no;
  no.urls = {url};
  no.name = name;
  auto t = sync::NatsTransport::connect(no);
  if (!t.ok()) die("nats connect " + name + ": " + t.status().to_string());
  return std::move(t).value();
}

// Subscribers demultiplexed per connection: ONE wildcard subscription on one
// connection receives every subject of a set, and hands each message to the
// handler registered for its exact subject. NATS.c then runs one delivery
// thread for all of them, as a real process holding many sessions would
// arrange it (a spoke holds one). The fair fan-out comparison uses it on both
// sides: Canopy's children, and raw NATS subscribers.
class Demux {
 public:
  uint64_t add(const std::string& subject, sync::Transport::Handler handler) {
    std::unique_lock lock(mu_);
    const uint64_t id = next_id_++;
    handlers_[subject] = Entry{id, std::move(handler)};
    return id;
  }
  void remove(uint64_t id) {
    std::unique_lock lock(mu_);
    std::erase_if(handlers_, [id](const auto& kv) { return kv.second.id == id; });
  }
  void dispatch(const sync::Message& m) {
    std::shared_lock lock(mu_);
    auto it = handlers_.find(m.subject);
    if (it != handlers_.end()) it->second.handler(m);
  }
  // Subscribes `pattern` on `nats` and dispatches what it receives.
  void listen(sync::NatsTransport* nats, const std::string& pattern) {
    auto id = nats->subscribe(pattern, [this](const sync::Message& m) { dispatch(m); });
    if (!id.ok()) die("demux subscribe: " + id.status().to_string());
    (void)nats->flush(std::chrono::seconds(10));
  }

 private:
  struct Entry {
    uint64_t id = 0;
    sync::Transport::Handler handler;
  };
  std::shared_mutex mu_;
  std::unordered_map<std::string, Entry> handlers_;
  uint64_t next_id_ = 1;
};

class Workers;

std::mutex& cleanup_mu() {
  static std::mutex mu;
  return mu;
}
std::vector<std::thread>& cleanup_threads() {
  static std::vector<std::thread> ts;
  return ts;
}
void cleanup_join() {
  std::lock_guard lock(cleanup_mu());
  for (auto& t : cleanup_threads()) t.join();
  cleanup_threads().clear();
}

class SimChild {
 public:
  virtual ~SimChild() = default;
  // Runs only on the owning worker thread.
  virtual void process(bool tick) = 0;
  virtual bool in_sync() const = 0;

  int id = 0;
  size_t worker = 0;
  std::atomic<bool> queued{false};
  Track track;
};

// W threads; each owns a fixed share of the children, processes the ones whose
// handler queued something, and ticks all of its own every tick_ms.
class Workers {
 public:
  Workers(size_t n, uint64_t tick_ms) : tick_ms_(tick_ms) {
    for (size_t i = 0; i < n; ++i) ws_.push_back(std::make_unique<W>());
  }
  ~Workers() { stop(); }
  void add(SimChild* c) {
    c->worker = static_cast<size_t>(c->id) % ws_.size();
    ws_[c->worker]->owned.push_back(c);
  }
  void notify(SimChild* c) {
    if (c->queued.exchange(true)) return;
    W& w = *ws_[c->worker];
    {
      std::lock_guard lock(w.mu);
      w.ready.push_back(c);
    }
    w.cv.notify_one();
  }
  void start() {
    for (size_t i = 0; i < ws_.size(); ++i) {
      ws_[i]->th = std::thread([this, i] { loop(*ws_[i], i); });
    }
  }
  void stop() {
    stop_ = true;
    for (auto& w : ws_) {
      { std::lock_guard lock(w->mu); }
      w->cv.notify_all();
      if (w->th.joinable()) w->th.join();
    }
  }
  // Ticks can be paused (the children are processed on messages only).
  void set_ticking(bool on) { ticking_ = on; }

 private:
  struct W {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<SimChild*> ready;
    std::vector<SimChild*> owned;
    std::thread th;
  };
  void loop(W& w, size_t index) {
    using clock = std::chrono::steady_clock;
    // Stagger the workers' ticks.
    auto next_tick = clock::now() + std::chrono::milliseconds(tick_ms_ * (index + 1) / ws_.size());
    std::vector<SimChild*> batch;
    while (!stop_) {
      {
        std::unique_lock lock(w.mu);
        w.cv.wait_until(lock, next_tick, [&] { return stop_.load() || !w.ready.empty(); });
        batch.swap(w.ready);
      }
      for (SimChild* c : batch) {
        c->queued = false;
        c->process(false);
      }
      batch.clear();
      if (clock::now() >= next_tick) {
        if (ticking_) {
          for (SimChild* c : w.owned) c->process(true);
        }
        next_tick = clock::now() + std::chrono::milliseconds(tick_ms_);
      }
    }
  }

  uint64_t tick_ms_;
  std::vector<std::unique_ptr<W>> ws_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> ticking_{true};
};

// ----------------------------------------------------------- REAL children

// A child's view of its group's connection: forwards everything, and wakes
// the child's worker when a handler ran.
class NotifyTransport final : public sync::Transport {
 public:
  // With `demux`, subscriptions are registered there instead of on the
  // group's connection.
  NotifyTransport(Group* group, Demux* demux, std::function<void()> notify, Track* track)
      : group_(group), demux_(demux), notify_(std::move(notify)), track_(track) {}
  Status publish(std::string_view subject, std::string_view data) override {
    return group_->publish(subject, data);
  }
  StatusOr<uint64_t> subscribe(std::string_view pattern, Handler handler) override {
    auto wrapped = [h = std::move(handler), this](const sync::Message& m) {
      track_->received(m.data.size());
      h(m);
      notify_();
    };
    if (demux_ != nullptr) return demux_->add(std::string(pattern), std::move(wrapped));
    std::shared_lock lock(group_->mu);
    if (!group_->nats) return unavailable("disconnected");
    return group_->nats->subscribe(pattern, std::move(wrapped));
  }
  void unsubscribe(uint64_t id) override {
    if (demux_ != nullptr) return demux_->remove(id);
    std::shared_lock lock(group_->mu);
    if (group_->nats) group_->nats->unsubscribe(id);
  }
  size_t max_payload() const override {
    std::shared_lock lock(group_->mu);
    return group_->nats ? group_->nats->max_payload() : sync::NatsTransport::kDefaultMaxPayload;
  }
  bool connected() const override {
    std::shared_lock lock(group_->mu);
    return group_->nats && group_->nats->connected();
  }
  void on_state_change(StateHandler handler) override {
    std::shared_lock lock(group_->mu);
    if (!group_->nats) return;
    group_->nats->on_state_change([h = std::move(handler), this](bool c) {
      h(c);
      notify_();
    });
  }

 private:
  Group* group_;
  Demux* demux_;
  std::function<void()> notify_;
  Track* track_;
};

class RealChild final : public SimChild {
 public:
  RealChild(int index, Group* group, Demux* demux, Workers* workers, const std::string& dir) {
    id = index;
    name_ = site_name(index);
    StoreOptions so;
    so.path = dir + "/" + name_;
    so.durability = Durability::kGroupCommit;
    auto s = Store::open(so);
    if (!s.ok()) die("child store " + name_ + ": " + s.status().to_string());
    store_ = std::move(s).value();
    const std::string tkey = template_key_str();
    listener_ = store_->subscribe([this, tkey](const v1::LogEntry& e) {
      // Under the child store's lock: read the entry only.
      const std::string& key = e.has_delta() ? e.delta().key() : e.doc().key();
      if (key != tkey) return;
      Observation o;
      if (e.has_delta()) {
        observe_delta(e.delta(), &o);
      } else {
        auto d = Document::from_proto(e.doc().root());
        if (d.ok()) observe_document(*d, &o);
      }
      track.note(o);
    });
    transport_ = std::make_unique<NotifyTransport>(
        group, demux, [this, workers] { workers->notify(this); }, &track);
    rng_.seed(0x5eed0000u + static_cast<uint64_t>(index));
    sync::Env env{SystemClock::instance(), [this] { return rng_(); }};
    sync::ChildOptions co;
    co.labels = site_labels(index);
    co.software_version = "canopy-sync-bench";
    node_ = std::make_unique<sync::SyncNode>(store_.get(), transport_.get());
    auto engine = std::make_unique<sync::ChildSync>(name_, kHubName, store_.get(), env, co);
    engine_ = engine.get();
    node_->set_child_engine(std::move(engine));
  }
  ~RealChild() override {
    node_.reset();
    store_->unsubscribe(listener_);
  }
  Status attach() { return node_->attach(); }
  void process(bool tick) override {
    node_->run_once(tick);
    in_sync_.store(engine_->in_sync());
  }
  bool in_sync() const override { return in_sync_.load(); }

 private:
  std::string name_;
  std::unique_ptr<Store> store_;
  uint64_t listener_ = 0;
  std::unique_ptr<NotifyTransport> transport_;
  std::mt19937_64 rng_;
  std::unique_ptr<sync::SyncNode> node_;
  sync::ChildSync* engine_ = nullptr;
  std::atomic<bool> in_sync_{false};
};

// ---------------------------------------------------------- LIGHT children

// A protocol-faithful child without a store (see the header comment).
// Mirrors ChildSync (sync/engine/child.cc) message by message.
class LightChild final : public SimChild {
 public:
  LightChild(int index, Group* group, Workers* workers)
      : group_(group),
        workers_(workers),
        name_(site_name(index)),
        parent_(kHubName),
        up_subject_(sync::up_subject(kHubName, name_)),
        down_subject_(sync::down_subject(kHubName, name_)),
        labels_(site_labels(index)),
        rng_(0x11e47000u + static_cast<uint64_t>(index)),
        up_(kWindow, kRtoMs) {
    id = index;
    do {
      replica_id_ = rng_();
    } while (replica_id_ == 0);
  }

  // Subscribes on the group's current connection (call with the group's lock
  // held exclusively, or before anyone else uses it).
  Status subscribe_locked() {
    auto sid =
        group_->nats->subscribe(down_subject_, [this](const sync::Message& m) { deliver(m); });
    return sid.ok() ? ok_status() : sid.status();
  }
  // Receives through `demux` instead of a subscription of its own.
  void subscribe_demux(Demux* demux) {
    demux->add(down_subject_, [this](const sync::Message& m) { deliver(m); });
  }
  // A message for us (from our subscription, or the demultiplexer).
  void deliver(const sync::Message& m) {
    track.received(m.data.size());
    {
      std::lock_guard lock(mu_);
      inbox_.push_back(m);
    }
    workers_->notify(this);
  }
  void post_connection(bool connected) {
    {
      std::lock_guard lock(mu_);
      conn_events_.push_back(connected);
    }
    workers_->notify(this);
  }
  void start() {
    state_ = State::kHello;
    session_ = 0;
    backoff_ms_ = kHelloBackoffMinMs;
    next_hello_ms_ = now_ms();
  }

  // Installs what a child that was in sync with the hub holds (a "warm"
  // child: documents and position as persisted before, e.g., a hub restart).
  // Call before start().
  void seed(const std::vector<const v1::DocState*>& docs, const v1::LogPosition& position) {
    for (const v1::DocState* d : docs) docs_[d->key()].merge(d->root());
    down_ = position;
    auto it = docs_.find(template_key_str());
    if (it != docs_.end()) {
      Observation o;
      observe_document(it->second, &o);
      track.note(o);
    }
  }

  void process(bool tick) override {
    std::vector<sync::Message> inbox;
    std::vector<bool> conns;
    {
      std::lock_guard lock(mu_);
      inbox.swap(inbox_);
      conns.swap(conn_events_);
    }
    for (bool c : conns) on_connection(c);
    for (const auto& m : inbox) on_message(m);
    if (tick) this->tick();
    if (ack_due_ && state_ == State::kActive) send_ack(false);
    if (connected_ && !outbox_.empty()) last_sent_ms_ = now_ms();
    for (auto& m : outbox_) {
      if (!group_->publish(m.subject, m.data).ok()) ++publish_failures_;
    }
    outbox_.clear();
    in_sync_.store(state_ == State::kActive && !reconciling_ && up_.in_flight() == 0 &&
                   down_.epoch() != 0);
  }
  bool in_sync() const override { return in_sync_.load(); }
  uint64_t publish_failures() const { return publish_failures_; }
  uint64_t hellos() const { return hellos_; }
  uint64_t resets() const { return resets_; }
  uint64_t refused() const { return refused_; }
  size_t doc_count() const { return docs_.size(); }

 private:
  enum class State { kIdle, kHello, kActive };
  static constexpr size_t kWindow = 16;
  static constexpr uint64_t kRtoMs = 1000;
  static constexpr uint64_t kHelloBackoffMinMs = 200;
  static constexpr uint64_t kHelloBackoffMaxMs = 30'000;
  static constexpr uint64_t kHeartbeatMs = 2000;
  static constexpr size_t kMaxMessageBytes = size_t{64} << 20;  // ChildOptions default

  static uint64_t now_ms() { return SystemClock::instance()->now_ms(); }

  void refuse(const char* why) {
    ++refused_;
    spdlog::warn("light child {}: refused message: {}", name_, why);
  }

  void send_control(v1::SyncEnvelope env) {
    env.set_protocol(sync::kProtocolVersion);
    env.set_from(name_);
    env.set_to(parent_);
    env.set_session(session_);
    outbox_.push_back(sync::Message{up_subject_, env.SerializeAsString()});
  }

  void send_sequenced(v1::SyncEnvelope env) {
    const uint64_t seq = up_.next_seq();
    env.set_protocol(sync::kProtocolVersion);
    env.set_from(name_);
    env.set_to(parent_);
    env.set_session(session_);
    env.set_seq(seq);
    if (down_recv_.last_applied() != 0) env.set_acked(down_recv_.last_applied());
    ack_due_ = false;
    std::string bytes = env.SerializeAsString();
    outbox_.push_back(sync::Message{up_subject_, bytes});
    up_.sent(seq, std::move(bytes), now_ms());
  }

  void send_hello() {
    while (session_ == 0) session_ = rng_();  // a retry keeps its session (ChildSync)
    up_ = sync::SendChannel(kWindow, kRtoMs);
    down_recv_ = sync::RecvChannel();
    ack_due_ = false;
    reconciling_ = false;
    sketch_.reset();
    ++hellos_;
    v1::SyncEnvelope env;
    v1::Hello* h = env.mutable_hello();
    h->set_replica_id(replica_id_);
    *h->mutable_down() = down_;
    for (const auto& [k, v] : labels_) (*h->mutable_labels())[k] = v;
    h->set_version("canopy-sync-bench-light");
    send_control(std::move(env));
    const uint64_t now = now_ms();
    const uint64_t jitter = backoff_ms_ / 2 == 0 ? 0 : rng_() % (backoff_ms_ / 2);
    next_hello_ms_ = now + backoff_ms_ / 2 + jitter;
    backoff_ms_ = std::min(backoff_ms_ * 2, kHelloBackoffMaxMs);
  }

  void send_ack(bool gap) {
    v1::SyncEnvelope env;
    env.mutable_ack()->set_seq(down_recv_.last_applied());
    env.mutable_ack()->set_gap(gap);
    send_control(std::move(env));
    ack_due_ = false;
    last_heartbeat_ms_ = now_ms();
  }

  void on_connection(bool connected) {
    const bool was = connected_;
    connected_ = connected;
    if (connected && !was && state_ == State::kActive) {
      // As ChildSync: after an outage the hub outlived the session of, hello.
      if (now_ms() >= last_sent_ms_ + parent_session_timeout_ms_) {
        start();
      } else {
        send_ack(false);
      }
    }
  }

  void tick() {
    const uint64_t now = now_ms();
    if (state_ == State::kHello) {
      if (now >= next_hello_ms_) send_hello();
      return;
    }
    if (state_ != State::kActive) return;
    std::vector<std::string> resend;
    up_.on_tick(now, &resend);
    for (auto& bytes : resend) outbox_.push_back(sync::Message{up_subject_, std::move(bytes)});
    if (connected_ && now >= last_heartbeat_ms_ + kHeartbeatMs) send_ack(false);
  }

  void on_message(const sync::Message& m) {
    if (m.data.size() > kMaxMessageBytes) return refuse("larger than the limit");
    v1::SyncEnvelope env;
    if (!env.ParseFromString(m.data)) return refuse("not a sync envelope");
    if (m.subject != down_subject_ || env.from() != parent_ || env.to() != name_) {
      return refuse("not addressed to us");
    }
    if (env.protocol() != sync::kProtocolVersion) return refuse("protocol version");
    if (env.session() != session_ || session_ == 0) return;  // an older session's message
    if (env.has_welcome()) {
      if (state_ == State::kHello) handle_welcome(env.welcome());
      return;
    }
    if (env.has_reset()) {
      ++resets_;
      start();
      return;
    }
    if (state_ != State::kActive) return;
    if (env.acked() != 0 && !env.has_ack()) {
      std::vector<std::string> resend;
      up_.on_ack(env.acked(), false, now_ms(), &resend);
      for (auto& bytes : resend) outbox_.push_back(sync::Message{up_subject_, std::move(bytes)});
    }
    if (env.has_ack()) {
      std::vector<std::string> resend;
      up_.on_ack(env.ack().seq(), env.ack().gap(), now_ms(), &resend);
      for (auto& bytes : resend) outbox_.push_back(sync::Message{up_subject_, std::move(bytes)});
      return;
    }
    if (!env.has_changes() && !env.has_sketch()) return refuse("unexpected message kind");
    switch (down_recv_.check(env.seq())) {
      case sync::RecvChannel::Verdict::kDuplicate:
        ack_due_ = true;
        return;
      case sync::RecvChannel::Verdict::kGap:
        send_ack(true);
        return;
      case sync::RecvChannel::Verdict::kApply:
        break;
    }
    if (env.has_changes() && !apply_changes(env.changes())) return;  // not acked: resent
    down_recv_.applied(env.seq());
    ack_due_ = true;  // acked when the outbox is taken, or on the reply
    if (env.has_sketch()) answer_sketch(env.sketch());
  }

  void handle_welcome(const v1::Welcome& w) {
    state_ = State::kActive;
    parent_replica_ = w.replica_id();
    reconciling_ = w.reconcile();
    writable_.assign(w.writable_prefixes().begin(), w.writable_prefixes().end());
    if (w.session_timeout_ms() != 0) parent_session_timeout_ms_ = w.session_timeout_ms();
    backoff_ms_ = kHelloBackoffMinMs;
    last_heartbeat_ms_ = now_ms();
    // No writes of our own: nothing flows up, no restore to detect.
  }

  bool keep(const std::string& key) const {
    for (const auto& p : writable_) {
      if (key.rfind(p, 0) == 0) return true;
    }
    return false;
  }

  bool apply_changes(const v1::Changes& c) {
    // Validate everything first: one bad delta refuses the message whole.
    for (const v1::LogEntry& e : c.entries()) {
      if (e.has_delta() && !validate_delta(e.delta(), limits_).ok()) {
        refuse("invalid delta");
        return false;
      }
    }
    std::set<std::string> doc_keys;
    const std::string tkey = template_key_str();
    Observation o;
    bool touched_template = false;
    for (const v1::LogEntry& e : c.entries()) {
      if (e.has_delta()) {
        Document& d = docs_[e.delta().key()];
        overwrites_.clear();
        d.apply(e.delta(), &overwrites_);
        if (e.delta().key() == tkey) {
          if (!observe_delta(e.delta(), &o)) touched_template = true;
        }
      } else if (e.has_doc()) {
        doc_keys.insert(e.doc().key());
        docs_[e.doc().key()].merge(e.doc().root());
        if (e.doc().key() == tkey) touched_template = true;
      }
      if (sketch_) sketch_->on_parent_sent(e.has_delta() ? e.delta().key() : e.doc().key());
    }
    std::vector<std::string> drop;
    for (const std::string& k : c.drop()) {
      if (docs_.count(k) && !keep(k)) drop.push_back(k);
    }
    if (c.reconciled() && sketch_ && sketch_->decoded()) {
      for (const std::string& k : sketch_->only_here()) {
        if (docs_.count(k) && !keep(k)) drop.push_back(k);
      }
      sketch_.reset();
    }
    for (const v1::RangeFingerprint& r : c.covered()) {
      for (auto it = docs_.lower_bound(r.first()); it != docs_.end() && it->first <= r.last();
           ++it) {
        if (doc_keys.count(it->first) == 0 && !keep(it->first)) drop.push_back(it->first);
      }
    }
    for (const auto& k : drop) docs_.erase(k);
    if (down_.epoch() != 0 && sync::unpositions(c)) down_ = v1::LogPosition();
    if (c.has_position() || (c.index() != 0 && down_.epoch() != 0)) {
      if (c.has_position()) {
        down_ = c.position();
      } else {
        down_.set_index(c.index());  // the short form
      }
      reconciling_ = false;
    }
    if (touched_template) {
      auto it = docs_.find(tkey);
      if (it != docs_.end()) observe_document(it->second, &o);
    }
    if (o.rev >= 0 || o.storm != 0) track.note(o);
    return true;
  }

  // ChildSync::answer_sketch, over the in-memory documents; ids as
  // Store::doc_hashes computes them.
  void answer_sketch(const v1::Sketch& k) {
    reconciling_ = true;
    if (!sketch_ || sketch_->round() != k.round()) {
      std::vector<std::pair<std::string, uint64_t>> hashes;
      for (const auto& [key, doc] : docs_) {
        if (doc.empty()) continue;  // a store keeps no empty document
        v1::DocState st;
        st.set_key(key);
        doc.to_proto(st.mutable_root());
        hashes.emplace_back(key, Store::doc_id(key, st.SerializeAsString()));
      }
      sketch_ = std::make_unique<sync::SketchReceiver>(k.round(), std::move(hashes));
    }
    v1::SyncEnvelope env;
    std::string why;
    const auto answer = sketch_->on_sketch(k, env.mutable_sketch_reply(), &why);
    if (answer == sync::SketchReceiver::Answer::kNone) return;
    if (answer == sync::SketchReceiver::Answer::kWhole) sketch_.reset();
    send_sequenced(std::move(env));
  }

  std::unique_ptr<sync::SketchReceiver> sketch_;

  Group* group_;
  Workers* workers_;
  const std::string name_;
  const std::string parent_;
  const std::string up_subject_;
  const std::string down_subject_;
  const std::map<std::string, std::string> labels_;
  std::mt19937_64 rng_;
  uint64_t replica_id_ = 0;

  std::mutex mu_;  // inbox_ and conn_events_
  std::vector<sync::Message> inbox_;
  std::vector<bool> conn_events_;

  // Protocol state, worker thread only.
  State state_ = State::kIdle;
  uint64_t session_ = 0;
  // As ChildSync: the parent's welcome announces it (ChildOptions' default
  // until then).
  uint64_t parent_session_timeout_ms_ = sync::ChildOptions().parent_session_timeout_ms;
  uint64_t parent_replica_ = 0;
  uint64_t next_hello_ms_ = 0;
  uint64_t backoff_ms_ = 0;
  uint64_t last_heartbeat_ms_ = 0;
  sync::SendChannel up_;
  sync::RecvChannel down_recv_;
  v1::LogPosition down_;  // "persisted" position in the parent's log
  bool reconciling_ = false;
  bool ack_due_ = false;
  uint64_t last_sent_ms_ = 0;  // as ChildSync
  bool connected_ = true;
  std::vector<std::string> writable_;
  std::map<std::string, Document> docs_;
  std::vector<Overwrite> overwrites_;
  DocumentLimits limits_;
  std::vector<sync::Message> outbox_;
  std::atomic<bool> in_sync_{false};
  uint64_t publish_failures_ = 0;
  uint64_t hellos_ = 0;
  uint64_t resets_ = 0;
  uint64_t refused_ = 0;
};

// ================================================================== a fleet

struct Options {
  std::string which;
  size_t groups = 8;
  size_t workers = 4;
  int rounds = 5;
  int real_limit = 1000;
  size_t max_catchups = 64;
  std::vector<int> sizes;  // fanout
  int sites = 10000;       // session_memory, storm
  uint64_t tick_ms = 100;
  int join_timeout_s = 240;
  bool cold_join = false;   // LIGHT children start empty (reconcile) instead of warm
  bool diagnostics = true;  // fanout: the subscription-per-child runs too
};

// The hub's seed file (see the hub's "seed" command).
struct Seed {
  v1::LogPosition base;  // epoch and index; scope_version per site
  std::vector<v1::DocState> global;
  std::vector<uint64_t> versions;
  std::vector<v1::DocState> sites;
};

Seed read_seed(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  auto get64 = [&] {
    uint64_t v = 0;
    f.read(reinterpret_cast<char*>(&v), 8);
    return v;
  };
  auto get_state = [&] {
    uint32_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 4);
    std::string b(n, '\0');
    f.read(b.data(), n);
    v1::DocState d;
    if (!d.ParseFromString(b)) die("seed: bad state");
    return d;
  };
  Seed s;
  s.base.set_epoch(get64());
  s.base.set_index(get64());
  s.global.push_back(get_state());
  s.global.push_back(get_state());
  const uint64_t n = get64();
  for (uint64_t i = 0; i < n; ++i) {
    s.versions.push_back(get64());
    s.sites.push_back(get_state());
  }
  if (!f) die("seed: short file " + path);
  return s;
}

class Fleet {
 public:
  // With `demux`: the children receive through ONE extra connection holding
  // one wildcard subscription (canopy.v1.hub.*.down), demultiplexed by
  // subject (Demux), instead of one subscription each; they still publish
  // through the G connections.
  Fleet(const Options& opt, const std::string& nats_url, int n, bool real, bool demux = false)
      : opt_(opt),
        url_(nats_url),
        n_(n),
        real_(real),
        demux_(demux),
        workers_(opt.workers, opt.tick_ms) {
    for (size_t g = 0; g < opt.groups; ++g) {
      auto grp = std::make_unique<Group>();
      grp->name = "canopy-bench-spokes-" + std::to_string(g);
      grp->nats = connect_group(url_, grp->name);
      groups_.push_back(std::move(grp));
    }
    const size_t fds0 = open_fds();
    const int64_t rss0 = proc_status_kb("VmRSS");
    const int64_t t0 = now_ns();
    children_.resize(static_cast<size_t>(n));
    if (real) {
      store_dir_ = std::make_unique<testing::TempDir>("canopy-sync-bench-spokes-");
      // Open the stores in parallel (each open fsyncs its first metadata).
      std::atomic<int> next{0};
      std::vector<std::thread> ts;
      for (int w = 0; w < 8; ++w) {
        ts.emplace_back([&] {
          for (int i = next++; i < n; i = next++) {
            children_[static_cast<size_t>(i)] =
                std::make_unique<RealChild>(i, group_of(i), demux_ ? &demux_map_ : nullptr,
                                            &workers_, store_dir_->path().string());
          }
        });
      }
      for (auto& t : ts) t.join();
      store_fds_ = open_fds() - fds0;
      store_rss_kb_ = proc_status_kb("VmRSS") - rss0;
      logf(
          "opened %d child stores (ChildSync + Store) in %.1f s: +%zu fds (%.2f per store), "
          "+%lld MB RSS (%.0f KB per store); RLIMIT_NOFILE soft limit now %s",
          n, static_cast<double>(now_ns() - t0) / 1e9, store_fds_,
          static_cast<double>(store_fds_) / n, static_cast<long long>(store_rss_kb_ / 1024),
          static_cast<double>(store_rss_kb_) / n, nofile_limit().c_str());
    } else {
      for (int i = 0; i < n; ++i) {
        children_[static_cast<size_t>(i)] = std::make_unique<LightChild>(i, group_of(i), &workers_);
      }
    }
    for (auto& c : children_) workers_.add(c.get());
  }

  ~Fleet() {
    const int64_t t0 = now_ns();
    workers_.stop();
    // Connections first: their destructors wait out running handlers; the
    // children's unsubscribe then finds no connection and does nothing.
    demux_nats_.reset();
    for (auto& g : groups_) {
      std::unique_lock lock(g->mu);
      g->nats.reset();
    }
    const int64_t t1 = now_ns();
    children_.clear();
    logf("fleet torn down: connections closed in %.1f s, children (and their stores) in %.1f s",
         static_cast<double>(t1 - t0) / 1e9, static_cast<double>(now_ns() - t1) / 1e9);
    // Removing a thousand store directories takes seconds on this disk: done
    // in the background, joined before exit (cleanup_join()).
    if (store_dir_) {
      std::lock_guard lock(cleanup_mu());
      cleanup_threads().emplace_back([d = std::move(store_dir_)]() mutable { d.reset(); });
    }
  }

  static std::string nofile_limit() {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    return std::to_string(rl.rlim_cur) + " (hard " + std::to_string(rl.rlim_max) + ")";
  }

  Group* group_of(int i) { return groups_[static_cast<size_t>(i) % groups_.size()].get(); }

  // Warm LIGHT children: they hold their scope and a position at the hub's
  // log end, as spokes that were in sync before (the hub's "seed").
  void seed_from(HubProcess& hub) {
    if (real_) return;
    testing::TempDir tmp("canopy-sync-bench-seed-");
    const std::string path = tmp.file("seed.bin");
    auto r = hub.call("seed=" + path);
    if (!r.count("ok")) die("the hub could not write the seed");
    Seed seed = read_seed(path);
    if (seed.sites.size() != children_.size()) die("seed: wrong number of sites");
    for (size_t i = 0; i < children_.size(); ++i) {
      v1::LogPosition p = seed.base;
      p.set_scope_version(seed.versions[i]);
      static_cast<LightChild*>(children_[i].get())
          ->seed({&seed.global[0], &seed.global[1], &seed.sites[i]}, p);
    }
    logf(
        "seeded %zu LIGHT children warm: their scope's 3 documents and position (epoch %016llx, "
        "index %llu, their scope version)",
        children_.size(), static_cast<unsigned long long>(seed.base.epoch()),
        static_cast<unsigned long long>(seed.base.index()));
  }

  // Subscribes every child and starts the sessions.
  void connect() {
    const int64_t t0 = now_ns();
    for (auto& c : children_) {
      if (real_) {
        Status s = static_cast<RealChild*>(c.get())->attach();
        if (!s.ok()) die("attach: " + s.to_string());
      } else if (demux_) {
        auto* l = static_cast<LightChild*>(c.get());
        l->subscribe_demux(&demux_map_);
        l->start();
      } else {
        auto* l = static_cast<LightChild*>(c.get());
        Group* g = group_of(l->id);
        std::shared_lock lock(g->mu);
        Status s = l->subscribe_locked();
        if (!s.ok()) die("subscribe: " + s.to_string());
        l->start();
      }
    }
    if (demux_) {
      demux_nats_ = connect_group(url_, "canopy-bench-spokes-demux");
      demux_map_.listen(demux_nats_.get(), sync::down_subject(kHubName, "*"));
      logf("children receive through one wildcard subscription on one connection");
    }
    for (auto& g : groups_) {
      std::shared_lock lock(g->mu);
      if (g->nats) (void)g->nats->flush(std::chrono::seconds(10));
    }
    logf(
        "%d children subscribed (%s) in %.2f s; NATS.c runs one delivery thread per "
        "subscription: process threads now %lld",
        n_,
        demux_ ? "one wildcard subscription, demultiplexed"
               : (std::to_string(groups_.size()) + " connections, one subscription each").c_str(),
        static_cast<double>(now_ns() - t0) / 1e9,
        static_cast<long long>(proc_status_kb("Threads")));
    workers_.start();
  }

  size_t count_in_sync() const {
    size_t k = 0;
    for (const auto& c : children_) k += c->in_sync() ? 1 : 0;
    return k;
  }

  // Waits until every child is in sync and the hub has every session live.
  // Returns the time it took, in ms, or -1 on timeout.
  double wait_all_live(HubProcess& hub, const char* what) {
    const int64_t t0 = now_ns();
    const int64_t deadline = t0 + int64_t{opt_.join_timeout_s} * 1'000'000'000;
    int64_t last_log = 0;
    while (now_ns() < deadline) {
      const size_t synced = count_in_sync();
      if (synced == static_cast<size_t>(n_)) {
        auto st = hub.call("stats modes");
        if (num(st, "live") == n_) {
          const double ms = static_cast<double>(now_ns() - t0) / 1e6;
          logf("%s: all %d children in sync and live at the hub after %.1f s (%s)", what, n_,
               ms / 1000, summary(st).c_str());
          return ms;
        }
      }
      if (now_ns() - last_log > 5'000'000'000) {
        last_log = now_ns();
        auto st = hub.call("stats modes");
        logf("%s: %zu/%d children in sync; hub: %s", what, synced, n_, summary(st).c_str());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    auto st = hub.call("stats modes");
    logf("%s: TIMEOUT after %d s: %zu/%d in sync; hub: %s", what, opt_.join_timeout_s,
         count_in_sync(), n_, summary(st).c_str());
    return -1;
  }

  static std::string summary(const std::map<std::string, std::string>& st) {
    std::string s;
    for (const char* k : {"sessions", "live", "waiting", "catchup", "reconcile", "catchups",
                          "reconciliations", "refused", "publish_failures", "rss_kb", "heap"}) {
      auto it = st.find(k);
      if (it != st.end()) s += std::string(k) + "=" + it->second + " ";
    }
    return s;
  }

  // Closes every child connection (the G transports go away).
  void disconnect_all() {
    for (auto& g : groups_) {
      std::unique_lock lock(g->mu);
      g->nats.reset();
    }
    for (auto& c : children_) static_cast<LightChild*>(c.get())->post_connection(false);
  }

  // New connections, every subscription again, then every child learns it is
  // connected (and acks, which is what reopens its session).
  void reconnect_all() {
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      Group* g = groups_[gi].get();
      std::unique_lock lock(g->mu);
      g->nats = connect_group(url_, g->name);
      for (size_t i = gi; i < children_.size(); i += groups_.size()) {
        Status s = static_cast<LightChild*>(children_[i].get())->subscribe_locked();
        if (!s.ok()) die("resubscribe: " + s.to_string());
      }
    }
    for (auto& c : children_) static_cast<LightChild*>(c.get())->post_connection(true);
  }

  std::vector<std::unique_ptr<SimChild>>& children() { return children_; }
  std::vector<std::unique_ptr<Group>>& groups() { return groups_; }
  size_t store_fds() const { return store_fds_; }
  int64_t store_rss_kb() const { return store_rss_kb_; }
  Workers& workers() { return workers_; }

 private:
  const Options& opt_;
  std::string url_;
  int n_;
  bool real_;
  bool demux_;
  Demux demux_map_;
  std::unique_ptr<sync::NatsTransport> demux_nats_;
  std::vector<std::unique_ptr<Group>> groups_;
  std::unique_ptr<testing::TempDir> store_dir_;
  std::vector<std::unique_ptr<SimChild>> children_;
  size_t store_fds_ = 0;
  int64_t store_rss_kb_ = 0;
  Workers workers_;  // destroyed (stopped) first: declared last
};

std::unique_ptr<testing::NatsServer> start_nats() {
  testing::NatsServerOptions no;
  no.max_payload = 8 << 20;
  auto server = std::make_unique<testing::NatsServer>(no);
  std::string err;
  if (!server->start(&err)) die("nats-server: " + err);
  g_nats_pid = server->process().pid();
  logf("nats-server on %s (max_payload 8 MiB), pid %d", server->url().c_str(), g_nats_pid);
  return server;
}

const char* kind_name(bool real) {
  return real ? "REAL children (ChildSync + SyncNode + own RocksDB Store, kGroupCommit)"
              : "LIGHT children (protocol-faithful, in-memory canopy::Document per key)";
}

// ================================================================== cases

// How raw NATS subscribers receive.
enum class RawMode {
  // One subscription per subscriber, spread over the fleet's G connections
  // (NATS.c: one delivery thread each, S threads).
  kPerSubscriber,
  // One wildcard subscription per fleet connection covering its share of
  // the subjects (G delivery threads), demultiplexed by subject.
  kWildcardPerConnection,
  // Exactly as Canopy's children receive in the fair run: one wildcard
  // subscription on one extra connection, through a Demux.
  kDemux,
};

const char* raw_mode_name(RawMode m) {
  switch (m) {
    case RawMode::kPerSubscriber:
      return "one subscription per subscriber";
    case RawMode::kWildcardPerConnection:
      return "one wildcard subscription per connection";
    case RawMode::kDemux:
      return "one wildcard subscription on one connection, demultiplexed as Canopy's children";
  }
  return "?";
}

struct RawRound {
  double p50 = 0;
  double p99 = 0;
};

// Raw NATS: one payload to each of S subjects from one connection; time until
// each subscriber's handler has it, per round.
std::vector<RawRound> raw_nats(Fleet& fleet, const std::string& url, int n, size_t bytes,
                               int rounds, RawMode mode) {
  std::vector<std::atomic<int64_t>> at(static_cast<size_t>(n));
  std::atomic<int> got{0};
  std::vector<std::string> subjects;
  std::vector<std::pair<Group*, uint64_t>> subs;
  const size_t groups = fleet.groups().size();
  Demux demux;
  std::unique_ptr<sync::NatsTransport> demux_nats;
  for (int i = 0; i < n; ++i) {
    auto mark = [&at, &got, i](const sync::Message&) {
      at[static_cast<size_t>(i)].store(now_ns());
      got.fetch_add(1);
    };
    switch (mode) {
      case RawMode::kWildcardPerConnection:
        subjects.push_back("canopy.v1.rawg" + std::to_string(static_cast<size_t>(i) % groups) +
                           "." + site_name(i) + ".down");
        break;
      case RawMode::kDemux:
        subjects.push_back("canopy.v1.rawd." + site_name(i) + ".down");
        demux.add(subjects.back(), mark);
        break;
      case RawMode::kPerSubscriber: {
        subjects.push_back("canopy.v1.raw." + site_name(i) + ".down");
        Group* g = fleet.group_of(i);
        std::shared_lock lock(g->mu);
        auto id = g->nats->subscribe(subjects.back(), mark);
        if (!id.ok()) die("raw subscribe: " + id.status().to_string());
        subs.emplace_back(g, *id);
        break;
      }
    }
  }
  if (mode == RawMode::kWildcardPerConnection) {
    for (size_t gi = 0; gi < groups; ++gi) {
      Group* g = fleet.groups()[gi].get();
      std::shared_lock lock(g->mu);
      auto id = g->nats->subscribe(
          "canopy.v1.rawg" + std::to_string(gi) + ".*.down",
          [&at, &got, n](const sync::Message& m) {
            // canopy.v1.rawgG.site-NNNNN.down
            const size_t p = m.subject.find("site-");
            const int i = p == std::string::npos ? -1 : std::atoi(m.subject.c_str() + p + 5);
            if (i >= 0 && i < n) at[static_cast<size_t>(i)].store(now_ns());
            got.fetch_add(1);
          });
      if (!id.ok()) die("raw subscribe: " + id.status().to_string());
      subs.emplace_back(g, *id);
    }
  }
  if (mode == RawMode::kDemux) {
    demux_nats = connect_group(url, "canopy-bench-raw-demux");
    demux.listen(demux_nats.get(), "canopy.v1.rawd.*.down");
  }
  for (auto& g : fleet.groups()) (void)g->nats->flush(std::chrono::seconds(10));
  auto pub = connect_group(url, "canopy-bench-raw-publisher");
  const std::string payload(bytes, 'x');
  std::vector<RawRound> out;
  for (int r = 0; r < rounds; ++r) {
    for (auto& a : at) a.store(0);
    got = 0;
    const double cpu_nats0 = cpu_ms(g_nats_pid), cpu_self0 = cpu_ms(getpid());
    const int64_t t0 = now_ns();
    for (int i = 0; i < n; ++i) {
      Status s = pub->publish(subjects[static_cast<size_t>(i)], payload);
      if (!s.ok()) die("raw publish: " + s.to_string());
    }
    const int64_t published = now_ns();
    const int64_t deadline = t0 + 30'000'000'000;
    while (got.load() < n && now_ns() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::vector<double> lat;
    for (auto& a : at) {
      const int64_t t = a.load();
      if (t != 0) lat.push_back(static_cast<double>(t - t0) / 1e6);
    }
    RawRound rr{percentile(lat, 0.5), percentile(lat, 0.99)};
    out.push_back(rr);
    logf(
        "  CPU used in %.0f ms: nats-server %.0f ms, this process (publisher and subscribers) %.0f "
        "ms",
        static_cast<double>(now_ns() - t0) / 1e6, cpu_ms(g_nats_pid) - cpu_nats0,
        cpu_ms(getpid()) - cpu_self0);
    logf(
        "raw NATS (%s) S=%d round %d: %zu/%d received; publish loop %.1f ms; p50 %.1f p99 %.1f "
        "max %.1f ms",
        raw_mode_name(mode), n, r + 1, lat.size(), n, static_cast<double>(published - t0) / 1e6,
        rr.p50, rr.p99, percentile(lat, 1.0));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  for (auto& [g, id] : subs) {
    std::shared_lock lock(g->mu);
    g->nats->unsubscribe(id);
  }
  demux_nats.reset();  // waits out running handlers: `demux` outlives them
  return out;
}

double median_p50(const std::vector<RawRound>& v) {
  std::vector<double> x;
  for (const auto& r : v) x.push_back(r.p50);
  return median(x);
}
double median_p99(const std::vector<RawRound>& v) {
  std::vector<double> x;
  for (const auto& r : v) x.push_back(r.p99);
  return median(x);
}
double round1(double v) { return std::round(v * 10) / 10; }
double ratio(double a, double b) { return b > 0 ? std::round(a / b * 100) / 100 : 0; }

// The fair comparison (the `ratio` figures): Canopy's children and the raw
// NATS subscribers both receive through one wildcard subscription on one
// connection, demultiplexed by subject (Demux), in the same run. Diagnostics
// (no targets): the same with one subscription per child/subscriber
// (*_sub_per_child), which NATS.c serves with one thread each, and raw NATS
// with one wildcard subscription on each of the G connections.
void case_fanout(const Options& opt, const std::string& url) {
  const std::string bench = "sync.fanout";
  std::vector<std::pair<int, bool>> phases;  // (S, demultiplexed)
  for (int n : opt.sizes) {
    phases.emplace_back(n, true);
    if (opt.diagnostics) phases.emplace_back(n, false);
  }
  for (const auto& [n, demux] : phases) {
    const bool real = n <= opt.real_limit;
    const std::string suffix = "_s" + std::to_string(n) + (demux ? "" : "_sub_per_child");
    logf("=== fanout S=%d (%s): %s; %zu NATS connections, %zu worker threads, hub in pid below", n,
         demux ? "the fair run: children demultiplexed on one connection"
               : "DIAGNOSTIC: one NATS subscription per child",
         kind_name(real), opt.groups, opt.workers);
    HubProcess hub(url, n, opt.max_catchups);
    logf("hub pid %d ready: %s", hub.pid(), Fleet::summary(hub.ready()).c_str());
    Fleet fleet(opt, url, n, real, demux);
    if (real && demux) {
      emit(bench, "child_store_fds_per_store",
           std::round(100.0 * static_cast<double>(fleet.store_fds()) / n) / 100.0);
      emit(bench, "child_store_rss_kb_per_store",
           std::round(static_cast<double>(fleet.store_rss_kb()) / n));
    }
    if (!opt.cold_join) fleet.seed_from(hub);
    fleet.connect();
    const double join_ms = fleet.wait_all_live(hub, ("fanout S=" + std::to_string(n)).c_str());
    if (join_ms < 0) die("the children did not all go live");
    emit(bench, "join_ms" + suffix, std::round(join_ms));
    std::this_thread::sleep_for(std::chrono::seconds(2));

    std::vector<double> p50s, p99s, maxs, first_pubs, last_pubs;
    size_t msg_bytes = 0;
    for (int r = 1; r <= opt.rounds; ++r) {
      const double cpu_hub0 = cpu_ms(hub.pid()), cpu_nats0 = cpu_ms(g_nats_pid),
                   cpu_self0 = cpu_ms(getpid());
      auto put = hub.call("put_rev=" + std::to_string(r));
      const int64_t t0 = num(put, "t0");
      const int64_t deadline = now_ns() + 60'000'000'000;
      size_t have = 0;
      while (now_ns() < deadline) {
        have = 0;
        for (auto& c : fleet.children()) have += c->track.rev.load() >= r ? 1 : 0;
        if (have == static_cast<size_t>(n)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      const double cpu_hub = cpu_ms(hub.pid()) - cpu_hub0,
                   cpu_nats = cpu_ms(g_nats_pid) - cpu_nats0,
                   cpu_self = cpu_ms(getpid()) - cpu_self0;
      const double wall = static_cast<double>(now_ns() - t0) / 1e6;
      auto pub = hub.call("pubstats");
      std::vector<double> lat, recv_lat, apply_lat;
      for (auto& c : fleet.children()) {
        if (c->track.rev.load() < r) continue;
        lat.push_back(std::max<double>(0, static_cast<double>(c->track.rev_ns.load() - t0) / 1e6));
        const int64_t rc = c->track.rev_recv_ns.load();
        if (rc != 0) {
          recv_lat.push_back(static_cast<double>(rc - t0) / 1e6);
          apply_lat.push_back(static_cast<double>(c->track.rev_ns.load() - rc) / 1e6);
        }
        msg_bytes = std::max<size_t>(msg_bytes, c->track.rev_msg_bytes.load());
      }
      const double p50 = percentile(lat, 0.5), p99 = percentile(lat, 0.99),
                   mx = percentile(lat, 1.0);
      p50s.push_back(p50);
      p99s.push_back(p99);
      maxs.push_back(mx);
      first_pubs.push_back(static_cast<double>(num(pub, "first") - t0) / 1e6);
      last_pubs.push_back(static_cast<double>(num(pub, "last") - t0) / 1e6);
      logf(
          "fanout S=%d round %d: %zu/%d children have it; put() %.1f ms (returned %.2f ms after "
          "the commit listener ran); latency p50 %.1f p99 "
          "%.1f max %.1f ms | hub: first publish +%.1f ms, last publish +%.1f ms, %lld messages "
          "%lld bytes | children: received p99 +%.1f ms, received->applied p99 %.2f ms; Changes "
          "message %zu bytes",
          n, r, have, n, static_cast<double>(num(put, "put_ns")) / 1e6,
          static_cast<double>(num(put, "returned") - num(put, "committed")) / 1e6, p50, p99, mx,
          static_cast<double>(num(pub, "first") - t0) / 1e6,
          static_cast<double>(num(pub, "last") - t0) / 1e6,
          static_cast<long long>(num(pub, "published")), static_cast<long long>(num(pub, "bytes")),
          percentile(recv_lat, 0.99), percentile(apply_lat, 0.99), msg_bytes);
      logf(
          "  CPU used in the %.0f ms until the last child had it (2 CPUs = %.0f ms): hub %.0f ms, "
          "nats-server %.0f ms, simulated children (this process) %.0f ms",
          wall, 2 * wall, cpu_hub, cpu_nats, cpu_self);
      if (have != static_cast<size_t>(n)) die("round did not complete within 60 s");
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    logf("fanout S=%d%s figures below are from %s", n, demux ? "" : " (diagnostic)",
         kind_name(real));
    const double p99 = median(p99s);
    emit(bench, "p50_ms" + suffix, round1(median(p50s)));
    emit(bench, "p99_ms" + suffix, round1(p99), n == 10000 && demux ? "<2000" : "");
    emit(bench, "max_ms" + suffix, round1(median(maxs)));
    // The hub's share: from the commit to its first and last publish.
    emit(bench, "hub_first_publish_ms" + suffix, round1(median(first_pubs)));
    emit(bench, "hub_last_publish_ms" + suffix, round1(median(last_pubs)));
    if (demux) {
      // The reference, received exactly as the children above received.
      auto raw = raw_nats(fleet, url, n, msg_bytes, opt.rounds, RawMode::kDemux);
      emit(bench, "raw_nats_p50_ms" + suffix, round1(median_p50(raw)));
      emit(bench, "raw_nats_p99_ms" + suffix, round1(median_p99(raw)));
      emit(bench, "p99_vs_raw_nats" + suffix, ratio(p99, median_p99(raw)), n == 10000 ? "<=2" : "");
      if (opt.diagnostics) {
        auto wild = raw_nats(fleet, url, n, msg_bytes, opt.rounds, RawMode::kWildcardPerConnection);
        emit(bench, "raw_nats_wildcard_per_connection_p50_ms" + suffix, round1(median_p50(wild)));
        emit(bench, "raw_nats_wildcard_per_connection_p99_ms" + suffix, round1(median_p99(wild)));
        emit(bench, "p99_vs_raw_nats_wildcard_per_connection" + suffix,
             ratio(p99, median_p99(wild)));
      }
    } else {
      auto raw = raw_nats(fleet, url, n, msg_bytes, opt.rounds, RawMode::kPerSubscriber);
      emit(bench, "raw_nats_p50_ms" + suffix, round1(median_p50(raw)));
      emit(bench, "raw_nats_p99_ms" + suffix, round1(median_p99(raw)));
      emit(bench, "p99_vs_raw_nats" + suffix, ratio(p99, median_p99(raw)));
    }
    auto st = hub.call("stats");
    logf("hub at the end of S=%d: %s", n, Fleet::summary(st).c_str());
  }
}

void case_session_memory(const Options& opt, const std::string& url) {
  const std::string bench = "sync.session_memory";
  const int n = opt.sites;
  const bool real = n <= opt.real_limit;
  logf("=== session_memory S=%d: %s; hub in its own process", n, kind_name(real));
  HubProcess hub(url, n, opt.max_catchups);
  Fleet fleet(opt, url, n, real);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto before = hub.call("trim");
  logf("hub before any hello (site records, index, NATS in place): %s",
       Fleet::summary(before).c_str());
  if (!opt.cold_join) fleet.seed_from(hub);
  fleet.connect();
  const double join_ms = fleet.wait_all_live(hub, "session_memory");
  if (join_ms < 0) die("the children did not all go live");
  logf("idle for 10 s (heartbeats flowing, idle position updates)");
  std::this_thread::sleep_for(std::chrono::seconds(10));
  auto st = hub.call("stats modes");
  auto after = hub.call("trim");
  const double heap_per = static_cast<double>(num(after, "heap") - num(before, "heap")) / n;
  const double rss_per =
      static_cast<double>(num(after, "rss_kb") - num(before, "rss_kb")) * 1024.0 / n;
  logf(
      "hub after %d live idle sessions (%s): heap %lld -> %lld bytes (%.0f per session); RSS "
      "%lld -> %lld kB (%.0f bytes per session); figures from %s",
      n, Fleet::summary(st).c_str(), static_cast<long long>(num(before, "heap")),
      static_cast<long long>(num(after, "heap")), heap_per,
      static_cast<long long>(num(before, "rss_kb")), static_cast<long long>(num(after, "rss_kb")),
      rss_per, kind_name(real));
  emit(bench, "bytes_per_idle_session", std::round(heap_per), "<16384");
  emit(bench, "rss_bytes_per_idle_session", std::round(rss_per));
  emit(bench, "join_ms_s" + std::to_string(n), std::round(join_ms));
}

void case_storm(const Options& opt, const std::string& url) {
  const std::string bench = "sync.storm";
  const int n = opt.sites;
  if (n <= opt.real_limit) die("storm uses LIGHT children; raise --sites above --real-limit");
  logf("=== storm S=%d: %s; max_concurrent_catchups %zu", n, kind_name(false), opt.max_catchups);
  HubProcess hub(url, n, opt.max_catchups);
  Fleet fleet(opt, url, n, false);
  if (!opt.cold_join) fleet.seed_from(hub);
  fleet.connect();
  if (fleet.wait_all_live(hub, "storm join") < 0) die("the children did not all go live");
  std::this_thread::sleep_for(std::chrono::seconds(2));

  logf("closing all %zu child connections", fleet.groups().size());
  fleet.disconnect_all();
  const int64_t t_disc = now_ns();
  for (int k = 1; k <= kStormChanges; ++k) hub.call("storm_patch=" + std::to_string(k));
  logf(
      "made %d changes at the hub; waiting for the hub to forget the sessions "
      "(session_timeout_ms here 30 s)",
      kStormChanges);
  for (;;) {
    auto st = hub.call("stats");
    if (num(st, "sessions") == 0) break;
    if (now_ns() - t_disc > 120'000'000'000) die("the hub kept the sessions for 120 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  logf("hub forgot all sessions after %.1f s", static_cast<double>(now_ns() - t_disc) / 1e9);
  size_t early = 0;
  for (auto& c : fleet.children()) early += c->track.storm.load() == kStormAll ? 1 : 0;
  if (early != 0) logf("WARNING: %zu children had the changes before reconnecting", early);
  uint64_t hellos0 = 0;
  for (auto& c : fleet.children()) hellos0 += static_cast<LightChild*>(c.get())->hellos();
  const int64_t catchups0 = num(hub.call("stats"), "catchups");
  auto base = hub.call("reset_peak");
  logf("hub before the reconnection: %s", Fleet::summary(base).c_str());

  const int64_t t0 = now_ns();
  fleet.reconnect_all();
  logf("reconnected %zu connections and %d subscriptions in %.2f s", fleet.groups().size(), n,
       static_cast<double>(now_ns() - t0) / 1e9);
  const int64_t deadline = t0 + 170'000'000'000;
  int64_t last_log = now_ns();
  size_t have = 0;
  while (now_ns() < deadline) {
    have = 0;
    for (auto& c : fleet.children()) have += c->track.storm.load() == kStormAll ? 1 : 0;
    if (have == static_cast<size_t>(n)) break;
    if (now_ns() - last_log > 2'000'000'000) {
      last_log = now_ns();
      auto st = hub.call("stats");
      logf("storm: %zu/%d converged after %.1f s; hub: %s", have, n,
           static_cast<double>(now_ns() - t0) / 1e9, Fleet::summary(st).c_str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::vector<double> lat;
  for (auto& c : fleet.children()) {
    const int64_t t = c->track.storm_ns.load();
    if (t != 0) lat.push_back(static_cast<double>(t - t0) / 1e6);
  }
  auto st = hub.call("stats modes");
  const double converge = percentile(lat, 1.0);
  logf("storm: %zu/%d converged; p50 %.0f p99 %.0f max %.0f ms after the reconnection; hub: %s",
       have, n, percentile(lat, 0.5), percentile(lat, 0.99), converge, Fleet::summary(st).c_str());
  uint64_t hellos = 0, resets = 0;
  for (auto& c : fleet.children()) {
    hellos += static_cast<LightChild*>(c.get())->hellos();
    resets += static_cast<LightChild*>(c.get())->resets();
  }
  logf(
      "storm: during the storm the children sent %llu hellos for %d children (a hello retried "
      "before its welcome came keeps its session), the hub ran %lld catch-ups",
      static_cast<unsigned long long>(hellos - hellos0), n,
      static_cast<long long>(num(st, "catchups") - catchups0));
  logf(
      "storm: children sent %llu hellos and got %llu resets in all; hub catch-ups %lld, "
      "reconciliations %lld (since start); peak RSS: VmHWM %lld kB, sampled %lld kB, baseline "
      "%lld kB; figures from %s",
      static_cast<unsigned long long>(hellos), static_cast<unsigned long long>(resets),
      static_cast<long long>(num(st, "catchups")),
      static_cast<long long>(num(st, "reconciliations")), static_cast<long long>(num(st, "hwm_kb")),
      static_cast<long long>(num(st, "sampled_peak_kb")),
      static_cast<long long>(num(base, "rss_kb")), kind_name(false));
  if (have != static_cast<size_t>(n)) {
    logf("storm: NOT CONVERGED within 170 s");
    emit(bench, "storm_converged_children_s" + std::to_string(n), static_cast<double>(have));
  }
  emit(bench, "storm_converge_ms_s" + std::to_string(n),
       have == static_cast<size_t>(n) ? std::round(converge) : -1);
  emit(bench, "storm_hub_peak_rss_mb",
       std::round(static_cast<double>(std::max(num(st, "hwm_kb"), num(st, "sampled_peak_kb"))) /
                  1024.0 * 10) /
           10);
  emit(bench, "max_concurrent_catchups", static_cast<double>(opt.max_catchups));
}

std::vector<int> parse_sizes(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  std::string tok;
  while (std::getline(in, tok, ',')) out.push_back(std::atoi(tok.c_str()));
  return out;
}

int usage() {
  std::fprintf(stderr,
               "usage: canopy_sync_bench --case fanout|session_memory|storm [--groups G] "
               "[--workers W] [--rounds R] [--sizes 1000,10000] [--sites S] [--real-limit N] "
               "[--max-catchups K] [--join warm|cold] [--join-timeout S] [--no-diagnostics]\n");
  return 2;
}

}  // namespace
}  // namespace canopy::bench_sync

int main(int argc, char** argv) {
  using namespace canopy::bench_sync;
  signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  auto value = [&](size_t& i) -> std::string {
    if (i + 1 >= args.size()) {
      std::fprintf(stderr, "%s needs a value\n", args[i].c_str());
      std::exit(2);
    }
    return args[++i];
  };
  bool hub_role = false;
  HubArgs ha;
  Options opt;
  opt.sizes = {1000, 10000};
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--hub-role") {
      hub_role = true;
    } else if (a == "--in-fd") {
      ha.in_fd = std::atoi(value(i).c_str());
    } else if (a == "--out-fd") {
      ha.out_fd = std::atoi(value(i).c_str());
    } else if (a == "--sites") {
      ha.sites = opt.sites = std::atoi(value(i).c_str());
    } else if (a == "--nats") {
      ha.nats_url = value(i);
    } else if (a == "--dir") {
      ha.dir = value(i);
    } else if (a == "--max-catchups") {
      ha.max_catchups = opt.max_catchups = std::strtoull(value(i).c_str(), nullptr, 10);
    } else if (a == "--case") {
      opt.which = value(i);
    } else if (a == "--groups") {
      opt.groups = std::strtoull(value(i).c_str(), nullptr, 10);
    } else if (a == "--workers") {
      opt.workers = std::strtoull(value(i).c_str(), nullptr, 10);
    } else if (a == "--rounds") {
      opt.rounds = std::atoi(value(i).c_str());
    } else if (a == "--sizes") {
      opt.sizes = parse_sizes(value(i));
    } else if (a == "--real-limit") {
      opt.real_limit = std::atoi(value(i).c_str());
    } else if (a == "--join") {
      const std::string j = value(i);
      if (j != "warm" && j != "cold") return usage();
      opt.cold_join = j == "cold";
    } else if (a == "--no-diagnostics") {
      opt.diagnostics = false;
    } else if (a == "--join-timeout") {
      opt.join_timeout_s = std::atoi(value(i).c_str());
    } else {
      return usage();
    }
  }
  if (hub_role) return hub_main(ha);
  raise_nofile();
  spdlog::set_level(spdlog::level::warn);
  if (opt.which != "fanout" && opt.which != "session_memory" && opt.which != "storm") {
    return usage();
  }
  logf("case %s; RLIMIT_NOFILE %s; %u CPUs", opt.which.c_str(), Fleet::nofile_limit().c_str(),
       std::thread::hardware_concurrency());
  auto nats = start_nats();
  if (opt.which == "fanout") case_fanout(opt, nats->url());
  if (opt.which == "session_memory") case_session_memory(opt, nats->url());
  if (opt.which == "storm") case_storm(opt, nats->url());
  cleanup_join();
  logf("done");
  return 0;
}

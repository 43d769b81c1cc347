// canopy_sync_bench's common parts: time, logging and figures, /proc
// readings, the bench's fleet data (site names and labels, the template),
// what a child has of the template (Observation, Track), the hub's publish
// timestamps (TimedTransport), and the "k=v" lines of the hub's pipe.
#pragma once

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

#include "bench/report.h"
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
inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline const int64_t g_start_ns = now_ns();
inline pid_t g_nats_pid = 0;

// The TLS files of every connection to a tls:// URL (--tls-compare): the
// CA of nats-server's certificate and a client certificate from it.
struct BenchTls {
  std::string ca_file, cert_file, key_file;
};
inline BenchTls g_tls;

inline const char* g_role = "bench";

inline void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void logf(const char* fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "[%8.3f %s] %s\n", static_cast<double>(now_ns() - g_start_ns) / 1e9, g_role,
               buf);
  std::fflush(stderr);
}

[[noreturn]] inline void die(const std::string& why) {
  logf("FATAL: %s", why.c_str());
  bench::fail_bench("canopy_sync_bench", why);
}

inline void emit(const std::string& bench, const std::string& metric, double value,
                 const std::string& target = "") {
  bench::emit_figure(bench, metric, value, target);
}

// /proc/<pid>/status field in kB (VmRSS, VmHWM, Threads...).
inline int64_t proc_status_kb(const std::string& field, const std::string& pid = "self") {
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
inline double cpu_ms(pid_t pid) {
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

inline int64_t heap_bytes() {
  struct mallinfo2 mi = mallinfo2();
  return static_cast<int64_t>(mi.uordblks + mi.hblkhd);
}

inline size_t open_fds() {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

inline void raise_nofile() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  if (idx == 0) idx = 1;
  return v[std::min(idx, v.size()) - 1];
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

inline std::string site_name(int i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "site-%05d", i);
  return buf;
}

inline std::map<std::string, std::string> site_labels(int i) {
  static const char* regions[] = {"eu-west", "eu-central", "us-east", "ap-south"};
  static const char* tiers[] = {"cell-tower", "shop", "factory"};
  return {{"fleet", "bench"}, {"region", regions[i % 4]}, {"tier", tiers[i % 3]}};
}

inline std::string template_key_str() { return model::template_key(kTenant, kTemplate); }

// A ~2 KB Deployment; `rev` goes into an annotation.
inline json template_doc(int rev) {
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

inline void observe_annotation(const std::string& name, const std::string& value, Observation* o) {
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

inline bool observe_delta(const v1::Delta& d, Observation* o) {
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

inline void observe_document(const Document& doc, Observation* o) {
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
  // The fleet's count of children at or past each revision (kTrackedRevs of
  // them; null: not counted): the bench waits on one counter instead of
  // reading every child's `rev` (10,000 cache misses per look, competing
  // with the children it measures).
  static constexpr int kTrackedRevs = 64;
  std::atomic<size_t>* reached = nullptr;

  // Called by the child's own worker (or before the workers start).
  void note(const Observation& o) {
    const int64_t t = now_ns();
    if (const int old = rev.load(std::memory_order_relaxed); o.rev > old) {
      rev_ns.store(t, std::memory_order_relaxed);
      rev_recv_ns.store(last_recv_ns.load(std::memory_order_relaxed), std::memory_order_relaxed);
      rev_msg_bytes.store(last_recv_bytes.load(std::memory_order_relaxed),
                          std::memory_order_relaxed);
      rev.store(o.rev, std::memory_order_release);
      if (reached != nullptr) {
        for (int v = std::max(old + 1, 0); v <= o.rev && v < kTrackedRevs; ++v) {
          reached[v].fetch_add(1, std::memory_order_release);
        }
      }
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
inline std::map<std::string, std::string> parse_kv(const std::string& line) {
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

inline int64_t num(const std::map<std::string, std::string>& kv, const std::string& k) {
  auto it = kv.find(k);
  return it == kv.end() ? -1 : std::strtoll(it->second.c_str(), nullptr, 10);
}

}  // namespace canopy::bench_sync

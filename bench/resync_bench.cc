// canopy_resync_bench (sync.resync): what a spoke's resync after a
// disconnection costs, in bytes on the bus and in wall time.
//
// Setup. A hub Store (real RocksDB) holds `--docs` templates (default
// 1,000,000, ~200 bytes of JSON each) of 100 sites' worth
// (`t/acme/templates/s<j>-<i>`); `--scope` of them (default 10,000,
// `t/acme/templates/s1-*`) are placed on site `s1` by one placement
// (`t/acme/placements/s1`, listing them by name) and `sites/s1` exists, so the
// scope comes from the real hub::PlacementIndex. Templates are loaded as
// deltas of another hub replica (built with Document::diff, applied with
// apply_remote in batches of 10,000: the path a hub takes for replicated
// writes) with Durability::kNone; the store is then reopened with the hub
// daemon's default durability (group commit) for everything measured.
//
// The hub's ParentSync and the spoke's ChildSync (with a real Store of its
// own) run in SyncNodes over sync::MemoryNetwork (no faults, FIFO), driven by
// one loop: run_once(tick) on both nodes, deliver_all, advance a ManualClock
// by 1 ms. Options are those of the daemons: ParentOptions defaults with
// max_concurrent_catchups = 64 (HubConfig's default) and max_message_bytes =
// 1 MiB (nats-server's default max_payload, what canopy-hub passes);
// ChildOptions defaults with max_message_bytes = 8 MiB (what canopy-spoke
// passes) and the site's labels.
//
// Per k (0, 1, 100, 10,000) and mode (k = 0: log and new_session_log only;
// it measures the fixed cost that every resync pays):
//   1. the spoke is in sync; it is cut off the bus (set_connected false) and
//      the clock runs 40 s: the hub marks the spoke away (10 s of silence)
//      and keeps its session (ParentOptions::session_timeout_ms, 10 min);
//      mode "new_session_log": the clock runs 10 s past that timeout, so the
//      hub forgets the session, as after a long outage or a hub restart;
//   2. the hub makes k patches of in-scope templates (one in the middle of
//      each of k equal strides of the scope) and k of out-of-scope ones, as
//      local writes;
//   3. modes "log", "new_session_log": nothing more (the hub's log holds
//      the missed changes);
//      mode "reconcile": the hub trims its log through its last index, as
//      when the outage outlasted the retention window (the pair then
//      reconciles by sketch, docs/sync-protocol.md);
//   4. the spoke is reconnected; the loop runs until the child is in sync, at
//      a position in the hub's current epoch at or past the hub's last index,
//      the hub's session is live and nothing is in flight. Then the spoke's
//      documents are compared with the hub's in-scope documents, byte for
//      byte (not timed).
// Bytes are what both engines sent from the cut-off on (ParentStats and
// ChildStats bytes_sent: serialized envelopes, retransmissions and anything
// sent into the outage included), cross-checked by a tap endpoint subscribed
// to canopy.v1.> that counts what the bus delivered. References: the serialized DocState of every
// in-scope document ("whole"), and the serialized Delta of each of the k missed changes as the hub
// committed it ("missed"). Figures: <mode>_vs_missed_k<k> (all bytes / missed, with the target) and
// <mode>_beyond_session_vs_missed_k<k>
// ((all bytes - the k = 0 bytes) / missed: what the missed changes cost).
// CANOPY_RESYNC_TRACE=1 lists every message on stderr.
//
// Output: JSON lines on stdout ({"bench","metric","value"[,"target"]});
// progress, per-phase timings and a time breakdown on stderr.
//
//   canopy_resync_bench [--docs N] [--scope N] [--ks 0,1,100,10000] [--dir DIR]
//                       [--durability group|none] [--first-symbols N] [--spoke-writes] [--keep]
//   --first-symbols N  ParentOptions::sketch_first_symbols (exploration; default: the daemon's)
//   --spoke-writes  the spoke writes one status document after the first sync,
//                   as its reconciler would, so that the hub holds an up
//                   position for it (see ChildSync::handle_welcome)
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench/report.h"
#include "canopy/v1/sync.pb.h"
#include "hub/placement_index.h"
#include "store/clock.h"
#include "store/document.h"
#include "store/hlc.h"
#include "store/store.h"
#include "sync/engine/node.h"
#include "sync/memory_transport.h"

namespace canopy::bench {
namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr char kBench[] = "sync.resync";
constexpr char kHub[] = "hub";
constexpr char kSite[] = "s1";
constexpr char kTenant[] = "acme";
constexpr uint64_t kAuthorReplica =
    0xA0A0A0A0A0A0A0A0ull;  // the hub replica that wrote the catalogue
constexpr size_t kLoadBatch = 10'000;

void emit(const std::string& metric, double value, const std::string& target = "") {
  emit_figure(kBench, metric, value, target);
}

// CPU time of the calling thread (the one that drives both nodes), which the
// machine's other load does not inflate as it does wall time.
double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double ms_since(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

[[noreturn]] void die(const std::string& what) { fail_bench(kBench, what); }

template <typename T>
T check(StatusOr<T> v, const std::string& what) {
  if (!v.ok()) die(what + ": " + v.status().to_string());
  return std::move(v).value();
}

void check(const Status& s, const std::string& what) {
  if (!s.ok()) die(what + ": " + s.to_string());
}

std::string template_name(size_t site, size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "s%zu-%06zu", site, i);
  return buf;
}

std::string template_key(const std::string& name) {
  return std::string("t/") + kTenant + "/templates/" + name;
}

// ~200 bytes of canonical JSON: a ConfigMap.
json template_doc(const std::string& name, size_t i) {
  char config[96];
  std::snprintf(config, sizeof config,
                "listen=0.0.0.0:%zu;upstream=http://backend-%zu.svc.cluster.local;retries=3",
                8000 + i % 1000, i % 97);
  return json{{"apiVersion", "v1"},
              {"kind", "ConfigMap"},
              {"metadata", {{"name", name}, {"namespace", "edge"}}},
              {"data", {{"config", config}, {"version", "1"}}}};
}

struct Options {
  size_t docs = 1'000'000;
  size_t scope = 10'000;
  std::vector<size_t> ks = {0, 1, 100, 10'000};
  std::string dir;
  Durability durability = Durability::kGroupCommit;
  size_t first_symbols = 0;   // 0: ParentOptions' default
  bool spoke_writes = false;  // the spoke writes one status document after the first sync
  bool keep = false;
};

bool is_tmpfs(const std::string& path) {
  struct statfs s;
  return statfs(path.c_str(), &s) == 0 && s.f_type == 0x01021994;  // TMPFS_MAGIC
}

// Everything of one run: the stores, the bus, both nodes.
class Rig {
 public:
  explicit Rig(const Options& o) : o_(o), net_(1) {}

  void load_hub();
  void open_sync();
  // Runs the loop until `done` holds or `max_steps` steps; returns steps taken.
  template <typename Done>
  size_t run_until(Done done, size_t max_steps, const char* what);
  void step(uint64_t advance_ms = 1);

  // How the spoke comes back (see the file comment).
  enum class Mode { kLog, kNewSession, kReconcile };
  // One measured resync. Returns false when the spoke did not converge.
  bool resync(size_t k, Mode how);
  void initial_sync();
  double whole_scope_bytes();

  std::string dir_;

 private:
  sync::ParentSync* parent() { return hub_node_->parent(); }
  sync::ChildSync* child() { return spoke_node_->child(); }
  bool synced_at(uint64_t index);
  bool verify();
  // Diagnostic: reads the spoke's whole log as ChildSync::pump_up does when
  // its parent holds no up position for it (512 entries a read).
  void time_spoke_log_walk();

  Options o_;
  ManualClock clock_;
  std::mt19937_64 rng_{42};
  std::unique_ptr<Store> hub_;
  std::unique_ptr<Store> spoke_;
  std::unique_ptr<hub::PlacementIndex> index_;
  sync::MemoryNetwork net_;
  std::unique_ptr<sync::MemoryTransport> hub_ep_, spoke_ep_, tap_ep_;
  std::unique_ptr<sync::SyncNode> hub_node_, spoke_node_;
  uint64_t tap_down_ = 0, tap_up_ = 0, tap_msgs_ = 0;
  std::map<std::string, std::pair<uint64_t, uint64_t>> tap_kinds_;  // messages, bytes
  double hub_ms_ = 0, spoke_ms_ = 0, bus_ms_ = 0;
  std::map<Mode, double> session_bytes_;  // a resync with nothing missed (k = 0)
  uint64_t round_ = 0;                    // changes made so far (patch values stay fresh)
  size_t sites_ = 1;                      // sites whose templates the catalogue holds
};

void Rig::load_hub() {
  StoreOptions so;
  so.path = dir_ + "/hub";
  so.durability = Durability::kNone;
  so.clock = &clock_;
  hub_ = check(Store::open(so), "opening the hub store");
  const auto t0 = SteadyClock::now();
  const size_t per_site = o_.scope;
  const size_t sites = std::max<size_t>(1, (o_.docs + per_site - 1) / per_site);
  sites_ = sites;
  // Stamps in the past (one ms per document), within the skew limit.
  const uint64_t base_ms = clock_.now_ms() - o_.docs - 1000;
  v1::DeltaBatch batch;
  uint64_t seq = 0;
  size_t loaded = 0;
  auto flush = [&] {
    if (batch.deltas_size() == 0) return;
    auto r = check(hub_->apply_remote(batch, kAuthorReplica), "loading the catalogue");
    if (r.applied != static_cast<size_t>(batch.deltas_size())) die("loading: deltas not applied");
    batch.Clear();
  };
  for (size_t s = 1; s <= sites && loaded < o_.docs; ++s) {
    for (size_t i = 0; i < per_site && loaded < o_.docs; ++i, ++loaded) {
      const std::string name = template_name(s, i);
      Document empty;
      std::vector<v1::FieldOp> ops;
      empty.diff(template_doc(name, loaded), &ops);
      v1::Delta* d = batch.add_deltas();
      d->set_key(template_key(name));
      d->mutable_dot()->set_replica(kAuthorReplica);
      d->mutable_dot()->set_seq(++seq);
      d->set_hlc(hlc_from_ms(base_ms + loaded));
      for (auto& op : ops) *d->add_ops() = std::move(op);
      if (static_cast<size_t>(batch.deltas_size()) == kLoadBatch) flush();
    }
    if (s % 10 == 0) {
      std::fprintf(stderr, "sync.resync: loaded %zu documents (%.1f s)\n", loaded,
                   ms_since(t0) / 1000);
    }
  }
  flush();
  // The site record and the placement: local writes, as the hub's API makes them.
  check(hub_->put_value(std::string("sites/") + kSite,
                        json{{"name", kSite}, {"labels", {{"region", "eu-west"}}}}),
        "writing the site record");
  json names = json::array();
  for (size_t i = 0; i < o_.scope; ++i) names.push_back(template_name(1, i));
  check(hub_->put_value(std::string("t/") + kTenant + "/placements/" + kSite,
                        json{{"templates", names}, {"sites", json::array({kSite})}}),
        "writing the placement");
  check(hub_->put_value(std::string("t/") + kTenant + "/grants/all", json{{"allSites", true}}),
        "writing the grant");
  std::fprintf(stderr, "sync.resync: hub loaded: %zu documents, log index %" PRIu64 " in %.1f s\n",
               loaded + 3, hub_->last_log_index(), ms_since(t0) / 1000);
  // Reopen with the daemon's durability for everything measured.
  hub_.reset();
  so.durability = o_.durability;
  const auto t1 = SteadyClock::now();
  hub_ = check(Store::open(so), "reopening the hub store");
  std::fprintf(stderr, "sync.resync: hub store reopened in %.0f ms\n", ms_since(t1));
}

void Rig::open_sync() {
  const auto t0 = SteadyClock::now();
  index_ = check(hub::PlacementIndex::attach(hub_.get()), "loading the placement index");
  std::fprintf(stderr, "sync.resync: placement index loaded in %.0f ms; %zu keys in %s's scope\n",
               ms_since(t0), index_->scope_keys(kSite).size(), kSite);

  StoreOptions so;
  so.path = dir_ + "/spoke";
  so.durability = o_.durability;
  so.clock = &clock_;
  spoke_ = check(Store::open(so), "opening the spoke store");

  hub_ep_ = net_.endpoint(kHub);
  spoke_ep_ = net_.endpoint(kSite);
  tap_ep_ = net_.endpoint("tap");
  const bool trace = std::getenv("CANOPY_RESYNC_TRACE") != nullptr;
  check(tap_ep_
            ->subscribe("canopy.v1.>",
                        [this, trace](const sync::Message& m) {
                          ++tap_msgs_;
                          const bool down = m.subject.ends_with(".down");
                          (down ? tap_down_ : tap_up_) += m.data.size();
                          v1::SyncEnvelope env;
                          std::string kind = "garbage";
                          if (env.ParseFromString(m.data)) {
                            switch (env.body_case()) {
                              case v1::SyncEnvelope::kHello:
                                kind = "hello";
                                break;
                              case v1::SyncEnvelope::kWelcome:
                                kind = "welcome";
                                break;
                              case v1::SyncEnvelope::kChanges:
                                kind = env.changes().covered_size() > 0   ? "changes(covered)"
                                       : env.changes().reconciled()       ? "changes(reconciled)"
                                       : env.changes().entries_size() > 0 ? "changes"
                                                                          : "changes(position)";
                                break;
                              case v1::SyncEnvelope::kAck:
                                kind = "ack";
                                break;
                              case v1::SyncEnvelope::kSketch:
                                kind = "sketch";
                                break;
                              case v1::SyncEnvelope::kSketchReply:
                                kind = "sketch_reply";
                                break;
                              case v1::SyncEnvelope::kReset:
                                kind = "reset";
                                break;
                              default:
                                kind = "empty";
                                break;
                            }
                          }
                          if (trace) {
                            std::fprintf(
                                stderr, "sync.resync: trace: %s %s seq %llu acked %llu, %zu B\n",
                                down ? "down" : "up", kind.c_str(),
                                static_cast<unsigned long long>(env.seq()),
                                static_cast<unsigned long long>(env.acked()), m.data.size());
                          }
                          auto& t = tap_kinds_[(down ? "down " : "up ") + kind];
                          ++t.first;
                          t.second += m.data.size();
                        })
            .status(),
        "subscribing the tap");

  sync::Env env{&clock_, [this] { return rng_(); }};
  sync::ParentOptions po;
  po.max_concurrent_catchups = 64;            // HubConfig's default
  po.max_message_bytes = net_.max_payload();  // what canopy-hub takes from NATS (1 MiB)
  if (o_.first_symbols != 0) po.sketch_first_symbols = o_.first_symbols;
  hub_node_ = std::make_unique<sync::SyncNode>(hub_.get(), hub_ep_.get());
  hub_node_->set_parent_engine(
      std::make_unique<sync::ParentSync>(kHub, hub_.get(), index_.get(), env, po));
  index_->on_scope_change(
      [this](const sync::ScopeChange& c) { hub_node_->enqueue_scope_change(c); });
  check(hub_node_->attach(), "attaching the hub node");

  sync::ChildOptions co;
  co.labels = {{"region", "eu-west"}};
  co.software_version = "bench";
  co.max_message_bytes = std::max<size_t>(net_.max_payload(), 8u << 20);  // as canopy-spoke
  spoke_node_ = std::make_unique<sync::SyncNode>(spoke_.get(), spoke_ep_.get());
  spoke_node_->set_child_engine(
      std::make_unique<sync::ChildSync>(kSite, kHub, spoke_.get(), env, co));
  check(spoke_node_->attach(), "attaching the spoke node");
}

void Rig::step(uint64_t advance_ms) {
  auto t = SteadyClock::now();
  hub_node_->run_once(true);
  hub_ms_ += ms_since(t);
  t = SteadyClock::now();
  spoke_node_->run_once(true);
  spoke_ms_ += ms_since(t);
  t = SteadyClock::now();
  net_.deliver_all(SIZE_MAX);
  bus_ms_ += ms_since(t);
  clock_.advance_ms(advance_ms);
}

template <typename Done>
size_t Rig::run_until(Done done, size_t max_steps, const char* what) {
  for (size_t i = 0; i < max_steps; ++i) {
    if (done()) return i;
    step();
  }
  die(std::string("no convergence after ") + std::to_string(max_steps) + " steps: " + what);
}

bool Rig::synced_at(uint64_t index) {
  if (net_.in_flight() != 0 || !child()->in_sync()) return false;
  const v1::LogPosition p = child()->down_position();
  if (p.epoch() != hub_->log_epoch() || p.index() < index) return false;
  // And the hub has the spoke's acks: a spoke acks late
  // (ChildOptions::ack_delay_ms), and an outage cut in before that ack
  // would make the hub resend into it, which is no cost of the resync.
  auto kids = parent()->children();
  return kids.size() == 1 && kids[0].mode == "live" && kids[0].unacked == 0;
}

bool Rig::verify() {
  auto filter = [this](std::string_view k) { return index_->in_scope(kSite, k); };
  auto want = check(hub_->states(kKeyMin, kKeyMax, filter, SIZE_MAX), "reading the hub's scope");
  auto have =
      check(spoke_->states(kKeyMin, kKeyMax, nullptr, SIZE_MAX), "reading the spoke's store");
  if (want.size() != have.size()) {
    std::fprintf(stderr, "sync.resync: MISMATCH: hub has %zu documents in scope, spoke %zu\n",
                 want.size(), have.size());
    return false;
  }
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i].key() != have[i].key() ||
        want[i].SerializeAsString() != have[i].SerializeAsString()) {
      std::fprintf(stderr, "sync.resync: MISMATCH at %s / %s\n", want[i].key().c_str(),
                   have[i].key().c_str());
      return false;
    }
  }
  return true;
}

void Rig::time_spoke_log_walk() {
  const auto t = SteadyClock::now();
  uint64_t after = spoke_->first_log_index() - 1;
  size_t entries = 0, bytes = 0;
  for (;;) {
    auto r = check(spoke_->log_since(spoke_->log_epoch(), after, nullptr, 512), "reading the log");
    for (const auto& e : r.entries) bytes += e.ByteSizeLong();
    entries += r.entries.size();
    if (r.entries.size() < 512) break;
    after = r.entries.back().index();
  }
  std::fprintf(stderr,
               "sync.resync: diagnostic: reading the spoke's whole log (%zu entries, %zu bytes) "
               "takes %.0f ms\n",
               entries, bytes, ms_since(t));
}

double Rig::whole_scope_bytes() {
  auto filter = [this](std::string_view k) { return index_->in_scope(kSite, k); };
  auto docs = check(hub_->states(kKeyMin, kKeyMax, filter, SIZE_MAX), "reading the hub's scope");
  double total = 0, templates = 0;
  for (const auto& d : docs) {
    const double b = static_cast<double>(d.ByteSizeLong());
    total += b;
    if (d.key().starts_with("t/acme/templates/")) templates += b;
  }
  std::fprintf(stderr,
               "sync.resync: whole scope: %zu documents, %.0f bytes (templates alone %.0f, "
               "%.0f per template)\n",
               docs.size(), total, templates, templates / static_cast<double>(o_.scope));
  return total;
}

void Rig::initial_sync() {
  const uint64_t p0 = parent()->stats().bytes_sent, c0 = child()->stats().bytes_sent;
  hub_ms_ = spoke_ms_ = bus_ms_ = 0;
  const double cpu0 = thread_cpu_ms();
  const auto t0 = SteadyClock::now();
  const uint64_t target = hub_->last_log_index();
  const size_t steps = run_until([&] { return synced_at(target); }, 1'000'000, "initial sync");
  const double ms = ms_since(t0);
  const double cpu_ms = thread_cpu_ms() - cpu0;
  const uint64_t bytes = parent()->stats().bytes_sent - p0 + child()->stats().bytes_sent - c0;
  std::fprintf(stderr,
               "sync.resync: initial sync (reconciliation from empty): %.0f ms (%.0f ms CPU), %zu "
               "steps, "
               "%" PRIu64 " bytes (down %" PRIu64 ", up %" PRIu64 "), %" PRIu64
               " documents sent; hub %.0f ms, spoke %.0f ms\n",
               ms, cpu_ms, steps, bytes, parent()->stats().bytes_sent - p0,
               child()->stats().bytes_sent - c0, parent()->stats().documents_sent, hub_ms_,
               spoke_ms_);
  if (!verify()) die("the initial sync did not converge");
  if (o_.spoke_writes) {
    // As the spoke's reconciler does after applying: one status document,
    // which flows up and gives the hub an up position for the spoke.
    const std::string key = std::string("sites/") + kSite + "/status/acme/s1-000000";
    check(spoke_->put_value(key, json{{"template", "t/acme/templates/s1-000000"},
                                      {"outcome", "applied"},
                                      {"hash", "0123456789abcdef"},
                                      {"file", "canopy-4-acme-s1-000000.json"}}),
          "writing a status document at the spoke");
    run_until([&] { return hub_->get(key).ok() && synced_at(hub_->last_log_index()); }, 100'000,
              "status write");
    std::fprintf(stderr, "sync.resync: the spoke wrote one status document (it flowed up)\n");
  }
  emit("initial_sync_bytes", static_cast<double>(bytes));
  emit("initial_sync_ms", ms);
}

bool Rig::resync(size_t k, Mode how) {
  const bool reconcile = how == Mode::kReconcile;
  const char* mode = how == Mode::kLog          ? "log"
                     : how == Mode::kNewSession ? "new_session_log"
                                                : "reconcile";
  // 1. Cut the spoke off. For 40 s the hub keeps its session (away: nothing
  //    is sent to it); past the session timeout it forgets it.
  // Bytes count from here: whatever either side sends into the outage too.
  const sync::ParentStats ps0 = parent()->stats();
  const sync::ChildStats cs0 = child()->stats();
  const uint64_t td0 = tap_down_, tu0 = tap_up_, tm0 = tap_msgs_;
  tap_kinds_.clear();
  net_.set_connected(kSite, false);
  const uint64_t outage_s =
      how == Mode::kNewSession ? sync::ParentOptions().session_timeout_ms / 1000 + 10 : 40;
  for (uint64_t i = 0; i < outage_s; ++i) step(1000);
  const bool kept = parent()->session_count() != 0;
  if (kept != (how != Mode::kNewSession)) die("the hub's session did not last as configured");
  if (kept && parent()->children().front().connected) die("the hub did not notice the outage");

  // 2. k in-scope changes, spread over the scope, and k out-of-scope ones.
  ++round_;
  double missed = 0;
  for (size_t j = 0; j < k; ++j) {
    // The middle of the j-th of k equal strides (k = 1: the middle of the
    // scope, away from the placement document at its start).
    const size_t i = j * o_.scope / k + o_.scope / (2 * k);
    const std::string v = std::to_string(round_ * 100'000 + j);
    const std::string patch = R"({"data":{"version":")" + v + R"("}})";
    auto d = check(hub_->patch(template_key(template_name(1, i)), patch), "changing a template");
    if (d.ops_size() == 0) die("a change changed nothing");
    missed += static_cast<double>(d.ByteSizeLong());
    // Out of scope: the same template of another site (a new one if there is none).
    const size_t other = sites_ > 1 ? 2 + j % (sites_ - 1) : 2;
    check(hub_->patch(template_key(template_name(other, i)), patch).status(),
          "changing an out-of-scope template");
  }
  // The hub's runtime sees its commits (no session: nothing to send).
  hub_node_->run_once(false);
  spoke_node_->run_once(false);
  if (reconcile) {
    const auto t = SteadyClock::now();
    check(hub_->trim_log(hub_->last_log_index()), "trimming the hub's log");
    std::fprintf(stderr, "sync.resync: trimmed the hub's log through %" PRIu64 " in %.0f ms\n",
                 hub_->last_log_index(), ms_since(t));
  }
  const uint64_t target = hub_->last_log_index();

  // 3. Reconnect and run until in sync.
  hub_ms_ = spoke_ms_ = bus_ms_ = 0;
  const double cpu0 = thread_cpu_ms();
  const auto t0 = SteadyClock::now();
  net_.set_connected(kSite, true);
  const size_t steps = run_until([&] { return synced_at(target); }, 1'000'000, mode);
  const double ms = ms_since(t0);
  const double cpu_ms = thread_cpu_ms() - cpu0;
  const sync::ParentStats& ps = parent()->stats();
  const sync::ChildStats& cs = child()->stats();
  const uint64_t down = ps.bytes_sent - ps0.bytes_sent, up = cs.bytes_sent - cs0.bytes_sent;
  const uint64_t bytes = down + up;
  std::fprintf(stderr,
               "sync.resync: %s k=%zu: %.1f ms (%.1f ms CPU), %zu steps; %" PRIu64
               " bytes (down %" PRIu64 ", up %" PRIu64 "; bus saw %" PRIu64 " down, %" PRIu64
               " up in %" PRIu64 " messages); catch-ups %" PRIu64 ", reconciliations %" PRIu64
               ", documents sent %" PRIu64 ", hellos %" PRIu64
               "; time: hub %.1f ms, spoke %.1f ms, bus %.1f ms; missed deltas %.0f bytes\n",
               mode, k, ms, cpu_ms, steps, bytes, down, up, tap_down_ - td0, tap_up_ - tu0,
               tap_msgs_ - tm0, ps.catchups - ps0.catchups,
               ps.reconciliations - ps0.reconciliations, ps.documents_sent - ps0.documents_sent,
               cs.hellos - cs0.hellos, hub_ms_, spoke_ms_, bus_ms_, missed);
  if (tap_down_ - td0 != down || tap_up_ - tu0 != up) {
    std::fprintf(stderr, "sync.resync: note: engine byte counts and the bus's differ\n");
  }
  std::string kinds;
  for (const auto& [kind, mb] : tap_kinds_) {
    kinds += " " + kind + " " + std::to_string(mb.first) + "x/" + std::to_string(mb.second) + "B;";
  }
  std::fprintf(stderr, "sync.resync: %s k=%zu: on the bus:%s\n", mode, k, kinds.c_str());
  time_spoke_log_walk();
  const auto tv = SteadyClock::now();
  const bool ok = verify();
  std::fprintf(stderr, "sync.resync: %s k=%zu: spoke %s the hub's scope (checked in %.0f ms)\n",
               mode, k, ok ? "equals" : "DIFFERS FROM", ms_since(tv));
  const std::string K = "_k" + std::to_string(k);
  emit(std::string(mode) + "_bytes" + K, static_cast<double>(bytes));
  emit(std::string(mode) + "_ms" + K, ms);
  emit(std::string(mode) + "_cpu_ms" + K, cpu_ms);
  emit(std::string(mode) + "_down_bytes" + K, static_cast<double>(down));
  emit(std::string(mode) + "_up_bytes" + K, static_cast<double>(up));
  if (k == 0) {
    // The fixed cost (a kept session: the spoke's ack on reconnecting and
    // nothing else; a new one: hello, welcome, ack): what any resync pays.
    session_bytes_[how] = static_cast<double>(bytes);
    return ok;
  }
  if (how == Mode::kLog) emit("missed_delta_bytes" + K, missed);
  // The targets are the issue's, for a spoke that misses k changes while cut
  // off; the new session's figure (an outage longer than the hub keeps a
  // session, or a hub restart) has the handshake's fixed cost on top.
  emit(std::string(mode) + "_vs_missed" + K, static_cast<double>(bytes) / missed,
       how == Mode::kReconcile ? "<=10"
       : how == Mode::kLog     ? "<=2"
                               : "");
  // What the missed changes cost beyond the fixed cost (reconcile: beyond a
  // kept session's).
  const Mode base = how == Mode::kReconcile ? Mode::kLog : how;
  if (session_bytes_.count(base)) {
    emit(std::string(mode) + "_beyond_session_vs_missed" + K,
         (static_cast<double>(bytes) - session_bytes_[base]) / missed);
  }
  return ok;
}

std::vector<size_t> parse_list(const std::string& s) {
  std::vector<size_t> out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t comma = s.find(',', pos);
    out.push_back(std::stoul(s.substr(pos, comma - pos)));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

int run(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--docs") {
      o.docs = std::stoul(value());
    } else if (a == "--scope") {
      o.scope = std::stoul(value());
    } else if (a == "--ks") {
      o.ks = parse_list(value());
    } else if (a == "--dir") {
      o.dir = value();
    } else if (a == "--durability") {
      const std::string d = value();
      if (d == "group") {
        o.durability = Durability::kGroupCommit;
      } else if (d == "none") {
        o.durability = Durability::kNone;
      } else {
        die("--durability must be group or none");
      }
    } else if (a == "--first-symbols") {
      o.first_symbols = std::stoul(value());
    } else if (a == "--spoke-writes") {
      o.spoke_writes = true;
    } else if (a == "--keep") {
      o.keep = true;
    } else {
      die("unknown argument " + a +
          " (--docs N --scope N --ks 0,1,100,10000 --dir DIR --durability group|none "
          "--first-symbols "
          "N "
          "--spoke-writes --keep)");
    }
  }
  if (o.scope == 0 || o.docs < o.scope) die("--docs must be at least --scope, which must be > 0");
  for (size_t k : o.ks) {
    if (k > o.scope) die("every k must be in 0..--scope");
  }
  spdlog::set_level(spdlog::level::warn);

  if (o.dir.empty()) {
    o.dir = is_tmpfs("/dev/shm") ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  }
  std::string tmpl = o.dir + "/canopy-resync-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) die("cannot create a directory under " + o.dir);
  std::fprintf(stderr, "sync.resync: data in %s (%s)\n", tmpl.c_str(),
               is_tmpfs(tmpl) ? "tmpfs" : "not tmpfs");

  bool ok = true;
  {
    Rig rig(o);
    rig.dir_ = tmpl;
    rig.load_hub();
    rig.open_sync();
    rig.initial_sync();
    emit("whole_scope_bytes", rig.whole_scope_bytes());
    for (size_t k : o.ks) {
      ok = rig.resync(k, Rig::Mode::kLog) && ok;
      ok = rig.resync(k, Rig::Mode::kNewSession) && ok;
      // With nothing missed there is nothing to trim: the log still serves.
      if (k > 0) ok = rig.resync(k, Rig::Mode::kReconcile) && ok;
    }
  }
  if (!o.keep) {
    std::error_code ec;
    std::filesystem::remove_all(tmpl, ec);
  }
  if (!ok) die("a resync did not converge");
  return 0;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) { return canopy::bench::run(argc, argv); }

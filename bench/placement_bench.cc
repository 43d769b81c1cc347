// canopy_placement_bench (hub.placement): the hub's placement evaluation at
// fleet scale, driven as the hub drives it.
//
// A real Store in a temporary RocksDB directory holds `--sites` site records
// (default 100,000) with realistic labels (region, zone, tier, hardware, arch,
// customer, channel, and on some sites gpu and maintenance) and `--placements`
// placements (default 1,000, over 10 tenants) in every selector form:
// matchLabels (one and two pairs), In, In with NotIn, matchLabels with Exists,
// In with DoesNotExist, an explicit `sites` list, `sites` with a selector, and
// the wide forms whose selector names no label pair (only NotIn, only Exists,
// only DoesNotExist). Every document is built and checked by the model
// (model::site_document, model::parse_placement) and written with put_value,
// as the API writes it; the store is then reopened with the hub's durability
// (group commit) and a PlacementIndex attached to it (`load_ms`).
//
// Measured, from the committed change to its ScopeChanges delivered: a
// listener subscribed before the index stamps the start, one subscribed after
// it the end (Store listeners run in subscription order, on the writing thread,
// once the change is durable; the index's on_commit delivers its ScopeChanges
// before it returns). They are delivered as in canopy-hub: through a
// RegionScope following the site records (hub.cc), whose listener queues
// each change under a lock as SyncNode::enqueue_scope_change does. So the
// figure holds the index's CRDT apply, its evaluation and the whole hand-over
// to sync, and not RocksDB's write or the fsync.
//   site_label_change_{p50,p99}_ms        `--site-changes` (1,000) edits of one
//       random site's labels (zone, region, customer, channel, tier, hardware,
//       gpu, maintenance), target < 1 ms;
//   placement_selector_change_{p50,p99}_ms  `--placement-changes` (100) edits
//       of one placement's selector, round robin over the selector forms (so
//       the wide ones are among them), target < 10 ms;
//   *_max_ms, placement_selector_change_sites_avg   the slowest of each, and
//       how many sites' scopes one selector change alters on average.
// Per selector form, and as the writing thread's CPU time over the same
// span, on stderr.
// Every change is one the bench's own evaluation (model::SiteChoice::matches
// over its copy of the catalogue) says alters scopes; the index must report
// exactly the sites whose set of placements changed, one ScopeChange each, or
// the bench fails. Changes that would alter no scope are drawn again, not timed.
//   memory_per_site_bytes   heap the index holds (glibc mallinfo2: in-use
//       bytes with the index minus after destroying it) / sites; it includes
//       the placements' share (their documents, and every site's scope keys);
//   rss_per_site_bytes      VmRSS growth over the index's load / sites (also
//       counts what RocksDB caches while the index reads);
//   load_ms                 PlacementIndex::attach on the reopened store.
// Output: JSON lines on stdout; progress and per-form detail on stderr.
//
//   canopy_placement_bench [--sites N] [--placements N] [--site-changes N]
//       [--placement-changes N] [--seed N]
// The store lives in a TempDir (CANOPY_KEEP_TEMP=1 keeps it).
#include <malloc.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench/report.h"
#include "hub/placement_index.h"
#include "hub/region_scope.h"
#include "model/documents.h"
#include "model/keys.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"

namespace canopy::bench {
namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr char kBench[] = "hub.placement";
constexpr size_t kTenants = 10;
constexpr size_t kTemplatesPerTenant = 40;
// Draws of a change that alters some scope before the bench gives up.
constexpr size_t kMaxDraws = 1000;

void emit(const std::string& metric, double value, const std::string& target = "") {
  emit_figure(kBench, metric, value, target);
}

[[noreturn]] void die(const std::string& what) { fail_bench(kBench, what); }

template <typename T>
T check(StatusOr<T> r, const std::string& what) {
  if (!r.ok()) die(what + ": " + r.status().to_string());
  return std::move(r).value();
}

double ms_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

// CPU time of the calling thread: beside the wall-clock figures, to tell the
// index's own cost from time lost to other processes on a shared machine.
double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.starts_with("VmRSS:")) return std::stod(line.substr(6)) * 1024.0;
  }
  die("no VmRSS in /proc/self/status");
}

double heap_in_use() {
  const struct mallinfo2 m = mallinfo2();
  return static_cast<double>(m.uordblks + m.hblkhd);
}

// The value at quantile q of `v` (nearest rank).
double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(q * static_cast<double>(v.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

struct Options {
  size_t sites = 100'000;
  size_t placements = 1'000;
  size_t site_changes = 1'000;
  size_t placement_changes = 100;
  uint64_t seed = 1;
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--sites") {
      o.sites = std::stoull(value());
    } else if (a == "--placements") {
      o.placements = std::stoull(value());
    } else if (a == "--site-changes") {
      o.site_changes = std::stoull(value());
    } else if (a == "--placement-changes") {
      o.placement_changes = std::stoull(value());
    } else if (a == "--seed") {
      o.seed = std::stoull(value());
    } else {
      die("unknown argument " + a +
          " (--sites N --placements N --site-changes N --placement-changes N --seed N)");
    }
  }
  if (o.sites < 100 || o.placements < 20) die("at least 100 sites and 20 placements");
  return o;
}

// --- The fleet's vocabulary.

const std::vector<std::string> kRegions = {"eu-west", "eu-central", "eu-north",     "eu-south",
                                           "us-east", "us-west",    "us-central",   "ca-east",
                                           "sa-east", "ap-south",   "ap-northeast", "ap-southeast"};
const std::vector<std::string> kZoneSuffixes = {"a", "b", "c"};
const std::vector<std::string> kTiers = {"cell-tower", "shop", "factory", "vehicle", "depot"};
// Hardware models and their architecture.
const std::vector<std::pair<std::string, std::string>> kHardware = {
    {"jetson-orin", "arm64"}, {"rpi5", "arm64"}, {"nuc13", "amd64"},        {"epyc-edge", "amd64"},
    {"xeon-d", "amd64"},      {"imx8", "arm64"}, {"ampere-altra", "arm64"}, {"celeron-j", "amd64"}};
constexpr size_t kCustomers = 200;
const std::vector<std::string> kGpus = {"nvidia-t4", "nvidia-l4", "intel-arc"};

std::string site_name(size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "site-%06zu", i);
  return buf;
}
std::string customer(size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "cust-%03zu", i % kCustomers);
  return buf;
}
std::string tenant(size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "tenant-%02zu", i % kTenants);
  return buf;
}
std::string template_name(size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "app-%02zu", i % kTemplatesPerTenant);
  return buf;
}
std::string zone(const std::string& region, size_t i) {
  return region + "-" + kZoneSuffixes[i % kZoneSuffixes.size()];
}

using Rng = std::mt19937_64;
size_t pick(Rng& rng, size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); }
bool chance(Rng& rng, double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }

std::string channel(Rng& rng) {
  const double x = std::uniform_real_distribution<double>(0, 1)(rng);
  return x < 0.80 ? "stable" : x < 0.95 ? "beta" : "canary";
}

model::Labels random_labels(Rng& rng) {
  model::Labels l;
  const std::string& region = kRegions[pick(rng, kRegions.size())];
  const auto& hw = kHardware[pick(rng, kHardware.size())];
  l["region"] = region;
  l["zone"] = zone(region, pick(rng, kZoneSuffixes.size()));
  l["tier"] = kTiers[pick(rng, kTiers.size())];
  l["hardware"] = hw.first;
  l["arch"] = hw.second;
  l["customer"] = customer(pick(rng, kCustomers));
  l["channel"] = channel(rng);
  if (chance(rng, 0.10)) l["gpu"] = kGpus[pick(rng, kGpus.size())];
  if (chance(rng, 0.02)) l["maintenance"] = "planned";
  return l;
}

// --- Selector forms.

enum class Form {
  kMatchLabelsOne,    // {customer}
  kMatchLabelsTwo,    // {region, tier}
  kInTwo,             // zone In [2], tier In [1]
  kInNotIn,           // region In [1], hardware In [2], channel NotIn [canary]
  kLabelsExists,      // {region}, gpu Exists
  kInDoesNotExist,    // customer In [3], maintenance DoesNotExist
  kSites,             // sites: 20..200 names
  kSitesAndSelector,  // sites: 10 names, {zone, tier}
  kWideNotIn,         // channel NotIn [...], tier NotIn [vehicle]
  kWideExists,        // gpu Exists (, maintenance DoesNotExist)
  kWideDoesNotExist,  // maintenance DoesNotExist (, channel NotIn [canary])
};
constexpr size_t kForms = 11;

const char* form_name(Form f) {
  switch (f) {
    case Form::kMatchLabelsOne:
      return "matchLabels";
    case Form::kMatchLabelsTwo:
      return "matchLabels(2)";
    case Form::kInTwo:
      return "In+In";
    case Form::kInNotIn:
      return "In+NotIn";
    case Form::kLabelsExists:
      return "matchLabels+Exists";
    case Form::kInDoesNotExist:
      return "In+DoesNotExist";
    case Form::kSites:
      return "sites";
    case Form::kSitesAndSelector:
      return "sites+matchLabels";
    case Form::kWideNotIn:
      return "NotIn(wide)";
    case Form::kWideExists:
      return "Exists(wide)";
    case Form::kWideDoesNotExist:
      return "DoesNotExist(wide)";
  }
  return "?";
}

// Placements per 1,000 of each form; the wide ones are few, as fleet-wide
// agents are.
constexpr size_t kFormWeights[kForms] = {200, 150, 150, 150, 100, 100, 100, 40, 4, 3, 3};

Form form_of(size_t i, size_t n) {
  const size_t pos = i * 1000 / n;
  size_t acc = 0;
  for (size_t f = 0; f < kForms; ++f) {
    acc += kFormWeights[f];
    if (pos < acc) return static_cast<Form>(f);
  }
  return Form::kMatchLabelsOne;
}

json requirement(const std::string& key, const std::string& op,
                 const std::vector<std::string>& values = {}) {
  json r = {{"key", key}, {"operator", op}};
  if (!values.empty()) r["values"] = values;
  return r;
}

// A selector (and site list) of form `f`; `variant` picks its values, so that
// two variants of one form choose different sites.
void choose(Form f, size_t variant, size_t sites, Rng& rng, json* doc) {
  doc->erase("selector");
  doc->erase("sites");
  auto region = [&](size_t k) { return kRegions[k % kRegions.size()]; };
  auto some_sites = [&](size_t n) {
    std::set<std::string> names;
    while (names.size() < n) names.insert(site_name(pick(rng, sites)));
    return std::vector<std::string>(names.begin(), names.end());
  };
  switch (f) {
    case Form::kMatchLabelsOne:
      (*doc)["selector"] = {{"matchLabels", {{"customer", customer(variant)}}}};
      break;
    case Form::kMatchLabelsTwo:
      (*doc)["selector"] = {
          {"matchLabels", {{"region", region(variant)}, {"tier", kTiers[variant / 7 % 5]}}}};
      break;
    case Form::kInTwo: {
      const std::string r = region(variant);
      (*doc)["selector"] = {{"matchExpressions",
                             {requirement("zone", "In", {zone(r, variant), zone(r, variant + 1)}),
                              requirement("tier", "In", {kTiers[variant / 3 % 5]})}}};
      break;
    }
    case Form::kInNotIn:
      (*doc)["selector"] = {
          {"matchExpressions",
           {requirement("region", "In", {region(variant)}),
            requirement("hardware", "In",
                        {kHardware[variant % 8].first, kHardware[(variant + 3) % 8].first}),
            requirement("channel", "NotIn", {"canary"})}}};
      break;
    case Form::kLabelsExists:
      (*doc)["selector"] = {{"matchLabels", {{"region", region(variant)}}},
                            {"matchExpressions", {requirement("gpu", "Exists")}}};
      break;
    case Form::kInDoesNotExist:
      (*doc)["selector"] = {
          {"matchExpressions",
           {requirement("customer", "In",
                        {customer(variant), customer(variant + 71), customer(variant + 143)}),
            requirement("maintenance", "DoesNotExist")}}};
      break;
    case Form::kSites:
      (*doc)["sites"] = some_sites(20 + pick(rng, 181));
      break;
    case Form::kSitesAndSelector: {
      const std::string r = region(variant);
      (*doc)["sites"] = some_sites(10);
      (*doc)["selector"] = {
          {"matchLabels", {{"zone", zone(r, variant / 12)}, {"tier", kTiers[variant / 5 % 5]}}}};
      break;
    }
    case Form::kWideNotIn:
      (*doc)["selector"] = {
          {"matchExpressions",
           {requirement("channel", "NotIn",
                        variant % 2 == 0 ? std::vector<std::string>{"stable"}
                                         : std::vector<std::string>{"stable", "beta"}),
            requirement("tier", "NotIn", {"vehicle"})}}};
      break;
    case Form::kWideExists: {
      json e = {requirement("gpu", "Exists")};
      if (variant % 2 == 1) e.push_back(requirement("maintenance", "DoesNotExist"));
      (*doc)["selector"] = {{"matchExpressions", e}};
      break;
    }
    case Form::kWideDoesNotExist: {
      json e = {requirement("maintenance", "DoesNotExist")};
      if (variant % 2 == 1) e.push_back(requirement("channel", "NotIn", {"canary"}));
      (*doc)["selector"] = {{"matchExpressions", e}};
      break;
    }
  }
}

// One placement as the bench knows it: its document and what the model reads.
struct BenchPlacement {
  std::string key;
  Form form;
  size_t variant;
  json doc;
  model::Placement parsed;
};

model::Placement parse_or_die(const json& doc, const std::string& key) {
  auto p = model::parse_placement(doc);
  if (!p.ok()) die("the model refuses placement " + key + ": " + p.status().to_string());
  return std::move(p).value();
}

// --- The run.

struct Timing {
  bool armed = false;
  std::string key;  // the key whose commit is timed
  SteadyClock::time_point start, end;
  double cpu_start = 0, cpu_end = 0;  // the writing thread's CPU time, ms
  bool started = false, ended = false;
};

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)), rng_(o_.seed) {}

  void run();

 private:
  void build_catalogue();
  void write_catalogue();
  void attach();
  void verify_sample();
  void site_changes();
  void placement_changes();
  void memory();

  // Placements (indices) matching `labels` at site `name`.
  std::vector<size_t> matching(const std::string& name, const model::Labels& labels) const;
  // Writes `doc` at `key` and returns the commit-to-delivery time in ms.
  double timed_put(const std::string& key, const json& doc);
  std::unique_ptr<Store> open_store(Durability d);

  Options o_;
  Rng rng_;
  std::string dir_;
  std::unique_ptr<canopy::testing::TempDir> temp_;
  std::vector<model::Labels> labels_;  // by site index
  std::vector<BenchPlacement> placements_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<hub::PlacementIndex> index_;
  std::unique_ptr<hub::RegionScope> regions_;
  Timing timing_;
  // The sync engine's queue of scope changes (SyncNode::scope_changes_).
  std::mutex delivered_mu_;
  std::deque<sync::ScopeChange> delivered_;
  double heap_before_load_ = 0;
  double last_cpu_ms_ = 0;  // CPU time of the latest timed_put's span
};

std::unique_ptr<Store> Bench::open_store(Durability d) {
  StoreOptions so;
  so.path = dir_ + "/hub";
  so.durability = d;
  return check(Store::open(so), "opening the store at " + so.path);
}

void Bench::build_catalogue() {
  labels_.reserve(o_.sites);
  for (size_t i = 0; i < o_.sites; ++i) labels_.push_back(random_labels(rng_));
  std::vector<size_t> variants(kForms, 0);
  for (size_t i = 0; i < o_.placements; ++i) {
    BenchPlacement p;
    p.form = form_of(i, o_.placements);
    p.variant = variants[static_cast<size_t>(p.form)]++;
    const std::string t = tenant(i);
    p.key = model::placement_key(t, "p-" + std::to_string(i));
    std::set<std::string> templates;
    const size_t n = 1 + pick(rng_, 3);
    while (templates.size() < n) templates.insert(template_name(pick(rng_, kTemplatesPerTenant)));
    p.doc = {{"templates", templates}, {"rollout", {{"maxUnavailable", 1}, {"maxFailures", 2}}}};
    choose(p.form, p.variant, o_.sites, rng_, &p.doc);
    p.parsed = parse_or_die(p.doc, p.key);
    placements_.push_back(std::move(p));
  }
}

void Bench::write_catalogue() {
  const auto t0 = SteadyClock::now();
  store_ = open_store(Durability::kNone);
  for (size_t i = 0; i < o_.sites; ++i) {
    const model::SiteRecord record{site_name(i), labels_[i], {}};
    check(store_->put_value(model::site_key(record.name), model::site_document(record)),
          "writing site " + record.name);
  }
  for (size_t t = 0; t < kTenants; ++t) {
    check(store_->put_value(model::tenant_key(tenant(t)),
                            model::tenant_document({tenant(t), "bench tenant"})),
          "writing a tenant");
    // Every tenant may place on every site: the bench measures the selectors.
    check(store_->put_value(model::grant_key(tenant(t), "all"), json{{"allSites", true}}),
          "writing a grant");
    for (size_t i = 0; i < kTemplatesPerTenant; ++i) {
      const json manifest = {{"apiVersion", "v1"},
                             {"kind", "ConfigMap"},
                             {"metadata", {{"name", template_name(i)}}},
                             {"data", {{"config", "value-" + std::to_string(i)}}}};
      if (auto v = model::validate_manifest(manifest); !v.ok()) die(v.to_string());
      check(store_->put_value(model::template_key(tenant(t), template_name(i)), manifest),
            "writing a template");
    }
  }
  for (const auto& p : placements_) check(store_->put_value(p.key, p.doc), "writing " + p.key);
  store_.reset();
  std::fprintf(stderr, "%s: wrote %zu sites, %zu placements, %zu templates in %.1f s\n", kBench,
               o_.sites, o_.placements, kTenants * kTemplatesPerTenant, ms_since(t0) / 1000);
}

void Bench::attach() {
  // The hub's durability for everything measured.
  store_ = open_store(Durability::kGroupCommit);
  // Stamps around the index's on_commit: Store listeners run in subscription
  // order, so the first runs just before the index's and the second just after.
  store_->subscribe([this](const v1::LogEntry& e) {
    if (!timing_.armed || !e.has_delta() || e.delta().key() != timing_.key) return;
    timing_.start = SteadyClock::now();
    timing_.cpu_start = thread_cpu_ms();
    timing_.started = true;
  });
  heap_before_load_ = heap_in_use();
  const double rss0 = rss_bytes();
  const auto t0 = SteadyClock::now();
  index_ = check(hub::PlacementIndex::attach(store_.get()), "loading the placement index");
  const double load_ms = ms_since(t0);
  const double rss1 = rss_bytes();
  store_->subscribe([this](const v1::LogEntry& e) {
    if (!timing_.started || !e.has_delta() || e.delta().key() != timing_.key) return;
    timing_.cpu_end = thread_cpu_ms();
    timing_.end = SteadyClock::now();
    timing_.ended = true;
  });
  // As canopy-hub wires it (Hub::start): the index's changes go through a
  // RegionScope to SyncNode::enqueue_scope_change, which takes a copy and
  // queues it under its lock.
  regions_ = hub::RegionScope::follow_records(index_.get(), "bench-hub");
  regions_->on_scope_change([this](const sync::ScopeChange& c) {
    sync::ScopeChange copy = c;
    std::lock_guard lock(delivered_mu_);
    delivered_.push_back(std::move(copy));
  });
  std::fprintf(stderr, "%s: index loaded in %.0f ms; RSS %.0f -> %.0f MiB; heap %+.0f MiB\n",
               kBench, load_ms, rss0 / 1048576, rss1 / 1048576,
               (heap_in_use() - heap_before_load_) / 1048576);
  emit("load_ms", load_ms);
  emit("rss_per_site_bytes", std::round((rss1 - rss0) / static_cast<double>(o_.sites)));
}

std::vector<size_t> Bench::matching(const std::string& name, const model::Labels& labels) const {
  std::vector<size_t> out;
  for (size_t i = 0; i < placements_.size(); ++i) {
    if (placements_[i].parsed.choice.matches(name, labels)) out.push_back(i);
  }
  return out;
}

void Bench::verify_sample() {
  // The index against the model, on a sample of sites.
  size_t pairs = 0;
  for (size_t n = 0; n < 1000; ++n) {
    const size_t s = pick(rng_, o_.sites);
    std::vector<std::string> want;
    for (size_t i : matching(site_name(s), labels_[s])) want.push_back(placements_[i].key);
    std::sort(want.begin(), want.end());
    if (index_->placements_of(site_name(s)) != want) {
      die("after loading, the index's placements of " + site_name(s) + " differ from the model's");
    }
    pairs += want.size();
  }
  std::fprintf(stderr, "%s: 1000 sampled sites agree with the model; %.1f placements a site\n",
               kBench, static_cast<double>(pairs) / 1000);
}

double Bench::timed_put(const std::string& key, const json& doc) {
  delivered_.clear();
  timing_ = Timing{};
  timing_.armed = true;
  timing_.key = key;
  check(store_->put_value(key, doc), "writing " + key);
  timing_.armed = false;
  if (!timing_.started || !timing_.ended) die("the commit of " + key + " was not seen");
  last_cpu_ms_ = timing_.cpu_end - timing_.cpu_start;
  return std::chrono::duration<double, std::milli>(timing_.end - timing_.start).count();
}

void Bench::site_changes() {
  std::vector<double> times, cpu;
  size_t redrawn = 0;
  std::map<std::string, size_t> kinds;
  while (times.size() < o_.site_changes) {
    const size_t s = pick(rng_, o_.sites);
    const std::string name = site_name(s);
    model::Labels next = labels_[s];
    const char* kind = "";
    switch (pick(rng_, 8)) {
      case 0:
        kind = "zone";
        next["zone"] = zone(next["region"], pick(rng_, kZoneSuffixes.size()));
        break;
      case 1:
        kind = "region";
        next["region"] = kRegions[pick(rng_, kRegions.size())];
        next["zone"] = zone(next["region"], pick(rng_, kZoneSuffixes.size()));
        break;
      case 2:
        kind = "customer";
        next["customer"] = customer(pick(rng_, kCustomers));
        break;
      case 3:
        kind = "channel";
        next["channel"] = channel(rng_);
        break;
      case 4:
        kind = "tier";
        next["tier"] = kTiers[pick(rng_, kTiers.size())];
        break;
      case 5: {
        kind = "hardware";
        const auto& hw = kHardware[pick(rng_, kHardware.size())];
        next["hardware"] = hw.first;
        next["arch"] = hw.second;
        break;
      }
      case 6:
        kind = "gpu";
        if (next.erase("gpu") == 0) next["gpu"] = kGpus[pick(rng_, kGpus.size())];
        break;
      default:
        kind = "maintenance";
        if (next.erase("maintenance") == 0) next["maintenance"] = "planned";
        break;
    }
    if (matching(name, next) == matching(name, labels_[s])) {
      ++redrawn;  // no scope would change: not a figure of the index's work
      if (redrawn > kMaxDraws * o_.site_changes) die("no site change alters a scope");
      continue;
    }
    const double ms =
        timed_put(model::site_key(name), model::site_document(model::SiteRecord{name, next, {}}));
    if (delivered_.size() != 1 || delivered_.front().child != name) {
      die("a label change of " + name + " delivered " + std::to_string(delivered_.size()) +
          " scope changes, not one for that site");
    }
    labels_[s] = std::move(next);
    times.push_back(ms);
    cpu.push_back(last_cpu_ms_);
    ++kinds[kind];
  }
  std::string mix;
  for (const auto& [k, n] : kinds) mix += " " + k + "=" + std::to_string(n);
  std::fprintf(stderr, "%s: %zu site label changes (%zu drawn that change no scope, skipped):%s\n",
               kBench, times.size(), redrawn, mix.c_str());
  std::vector<size_t> order(times.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return times[a] > times[b]; });
  std::string slowest;
  for (size_t i = 0; i < order.size() && i < 5; ++i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " #%zu %.3f ms", order[i] + 1, times[order[i]]);
    slowest += buf;
  }
  std::fprintf(stderr, "%s: slowest site label changes (#n: n-th after the load):%s\n", kBench,
               slowest.c_str());
  std::fprintf(stderr, "%s: site label changes, CPU time: p50 %.3f ms, p99 %.3f ms\n", kBench,
               quantile(cpu, 0.5), quantile(cpu, 0.99));
  emit("site_label_change_p50_ms", quantile(times, 0.5), "<1");
  emit("site_label_change_p99_ms", quantile(times, 0.99), "<1");
  emit("site_label_change_max_ms", quantile(times, 1.0));
}

void Bench::placement_changes() {
  std::vector<double> times, cpu;
  std::vector<std::vector<double>> by_form(kForms), cpu_by_form(kForms);
  std::vector<size_t> sites_by_form(kForms, 0);
  std::vector<std::vector<size_t>> of_form(kForms);
  for (size_t i = 0; i < placements_.size(); ++i) {
    of_form[static_cast<size_t>(placements_[i].form)].push_back(i);
  }
  size_t changed_sites = 0;
  for (size_t n = 0; n < o_.placement_changes; ++n) {
    const size_t f = n % kForms;
    if (of_form[f].empty()) continue;
    BenchPlacement& p = placements_[of_form[f][pick(rng_, of_form[f].size())]];
    // Another variant of the same form, one that changes some site's match.
    json doc;
    model::Placement parsed;
    size_t flipped = 0;
    for (size_t draw = 0;; ++draw) {
      if (draw == kMaxDraws) die("no selector change of " + p.key + " alters a scope");
      const size_t variant = p.variant + 1 + pick(rng_, 100);
      doc = p.doc;
      choose(p.form, variant, o_.sites, rng_, &doc);
      parsed = parse_or_die(doc, p.key);
      flipped = 0;
      for (size_t s = 0; s < o_.sites; ++s) {
        const std::string name = site_name(s);
        if (p.parsed.choice.matches(name, labels_[s]) != parsed.choice.matches(name, labels_[s])) {
          ++flipped;
        }
      }
      if (flipped > 0) {
        p.variant = variant;
        break;
      }
    }
    const double ms = timed_put(p.key, doc);
    if (delivered_.size() != flipped) {
      die("a selector change of " + p.key + " delivered " + std::to_string(delivered_.size()) +
          " scope changes; the model says " + std::to_string(flipped) + " sites change");
    }
    p.doc = std::move(doc);
    p.parsed = std::move(parsed);
    changed_sites += flipped;
    sites_by_form[f] += flipped;
    times.push_back(ms);
    cpu.push_back(last_cpu_ms_);
    by_form[f].push_back(ms);
    cpu_by_form[f].push_back(last_cpu_ms_);
  }
  for (size_t f = 0; f < kForms; ++f) {
    if (by_form[f].empty()) continue;
    std::fprintf(stderr,
                 "%s:   %-20s %3zu changes, %7.1f sites changed on average, p50 %7.3f ms, "
                 "max %7.3f ms (CPU p50 %7.3f ms)\n",
                 kBench, form_name(static_cast<Form>(f)), by_form[f].size(),
                 static_cast<double>(sites_by_form[f]) / by_form[f].size(),
                 quantile(by_form[f], 0.5), quantile(by_form[f], 1.0),
                 quantile(cpu_by_form[f], 0.5));
  }
  std::fprintf(stderr, "%s: placement selector changes, CPU time: p50 %.3f ms, p99 %.3f ms\n",
               kBench, quantile(cpu, 0.5), quantile(cpu, 0.99));
  emit("placement_selector_change_p50_ms", quantile(times, 0.5), "<10");
  emit("placement_selector_change_p99_ms", quantile(times, 0.99), "<10");
  emit("placement_selector_change_max_ms", quantile(times, 1.0));
  emit("placement_selector_change_sites_avg",
       times.empty() ? 0 : static_cast<double>(changed_sites) / times.size());
}

void Bench::memory() {
  const double with_index = heap_in_use();
  regions_.reset();
  index_.reset();
  const double without = heap_in_use();
  std::fprintf(stderr, "%s: heap with the index %.0f MiB, without %.0f MiB\n", kBench,
               with_index / 1048576, without / 1048576);
  emit("memory_per_site_bytes", std::round((with_index - without) / static_cast<double>(o_.sites)));
}

void Bench::run() {
  temp_ = std::make_unique<canopy::testing::TempDir>("canopy-placement-bench-");
  dir_ = temp_->path().string();
  std::fprintf(stderr, "%s: %zu sites, %zu placements, seed %llu, data in %s\n", kBench, o_.sites,
               o_.placements, static_cast<unsigned long long>(o_.seed), dir_.c_str());
  build_catalogue();
  write_catalogue();
  attach();
  verify_sample();
  site_changes();
  placement_changes();
  memory();
  store_.reset();
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) {
  canopy::bench::Bench bench(canopy::bench::parse_options(argc, argv));
  bench.run();
  return 0;
}

#include "spoke/spoke.h"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <utility>

#include "daemon/process.h"
#include "spoke/enroll.h"
#include "spoke/kube/kube_applier.h"
#include "store/hlc.h"
#include "sync/subjects.h"

namespace canopy::spoke {

// Housekeeping, as at the hub: the log and tombstones older than the retention
// window go.
constexpr auto kHousekeepingInterval = std::chrono::minutes(10);
// Decoded documents the spoke's store keeps in memory: at most this many,
// and about this many bytes (a few large documents stay under it too).
constexpr size_t kDocCacheEntries = 256;
constexpr size_t kDocCacheBytes = 1 << 20;
// RocksDB's block cache and memtables for the spoke's store (StoreOptions).
constexpr size_t kBlockCacheBytes = 256 << 10;
constexpr size_t kWriteBufferBytes = 256 << 10;
// A burst of commits settles this long before a reconcile pass.
constexpr auto kDebounce = std::chrono::milliseconds(20);

Spoke::Spoke(SpokeConfig config) : config_(std::move(config)), rng_(std::random_device{}()) {}

Spoke::~Spoke() { stop(); }

Status Spoke::start() {
  CANOPY_CHECK(!started_);
  started_ = true;
  const auto started = std::chrono::steady_clock::now();
  StoreOptions so;
  so.path = config_.data_dir;
  so.durability = config_.durability;
  so.disk_reserve_bytes = config_.disk_reserve_bytes;
  // The hub's default keeps 100,000 decoded documents in memory; a spoke
  // writes rarely (its status documents) and reads its desired documents in
  // scans, so a small cache serves it and keeps megabytes off a site machine.
  so.doc_cache_entries = kDocCacheEntries;
  so.doc_cache_bytes = kDocCacheBytes;
  // And RocksDB's memory in proportion: the spoke's store is a few MB.
  so.block_cache_bytes = kBlockCacheBytes;
  so.write_buffer_bytes = kWriteBufferBytes;
  auto store_or = Store::open(so);
  if (!store_or.ok()) {
    return Status(store_or.status().code(),
                  "cannot open the store: " + store_or.status().message());
  }
  store_ = std::move(store_or).value();

  if (config_.applier == "kube") {
    kube::KubeApplierOptions ko;
    if (config_.kubeconfig.empty()) {
      auto e = kube::in_cluster_endpoint();
      if (!e.ok()) {
        stop();
        return Status(e.status().code(), "kube applier: " + e.status().message());
      }
      ko.endpoint = std::move(e).value();
    } else {
      auto e = kube::load_kubeconfig(config_.kubeconfig, config_.kube_context);
      if (!e.ok()) {
        stop();
        return Status(e.status().code(), "kube applier: " + e.status().message());
      }
      ko.endpoint = std::move(e).value();
    }
    ko.inventory_path = config_.data_dir + "/kube-inventory.json";
    ko.audit_interval = std::chrono::seconds(config_.kube_audit_seconds);
    ko.client.user_agent = std::string("canopy-spoke/") + daemon::version();
    auto applier_or = kube::KubeApplier::open(std::move(ko));
    if (!applier_or.ok()) {
      stop();
      return Status(applier_or.status().code(), "kube applier: " + applier_or.status().message());
    }
    spdlog::info("site {}: applying to {} ({})", config_.site,
                 applier_or.value()->client().endpoint().server,
                 applier_or.value()->client().endpoint().source);
    applier_ = std::move(applier_or).value();
  } else {
    ManifestsDirOptions mo;
    mo.dir = config_.manifests_dir;
    auto applier_or = ManifestsDirApplier::open(mo);
    if (!applier_or.ok()) {
      stop();
      return Status(applier_or.status().code(),
                    "manifests directory: " + applier_or.status().message());
    }
    applier_ = std::move(applier_or).value();
  }
  ReconcilerOptions ro;
  ro.may_prune = [this] { return scope_complete_.load(); };
  reconciler_ =
      std::make_unique<Reconciler>(store_.get(), config_.site, applier_.get(), std::move(ro));
  // A file of ours edited or deleted by hand (or the directory deleted) is
  // repaired at once, as drift, rather than at the next full resync.
  if (config_.applier == "manifests-dir") {
    auto watch_or = DirWatch::start(
        config_.manifests_dir,
        [](std::string_view name) {
          std::string tenant, template_name;
          return model::parse_manifest_file_name(name, &tenant, &template_name);
        },
        [this] {
          {
            std::lock_guard lock(mu_);
            dirty_ = true;
          }
          cv_.notify_one();
        });
    if (!watch_or.ok()) {
      // Not fatal: drift is still repaired by the periodic resync.
      spdlog::warn("site {}: not watching {}: {}; hand edits are repaired every {} s", config_.site,
                   config_.manifests_dir, watch_or.status().to_string(), config_.resync_seconds);
    } else {
      watch_ = std::move(watch_or).value();
    }
  }

  // Autonomy first: apply what the local store holds, before any network.
  reconcile_and_log("first reconcile");
  spdlog::info("site {}: {} objects applied from the local store {} ms after start", config_.site,
               objects_.load(),
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count());

  listener_ = store_->subscribe([this](const v1::LogEntry&) {
    {
      std::lock_guard lock(mu_);
      dirty_ = true;
    }
    cv_.notify_one();
  });

  sync::NatsOptions no;
  no.urls = config_.nats_urls;
  no.name = "canopy-spoke-" + config_.site;
  // An enrolled site connects as its own NATS user (spoke/enroll.h).
  auto creds = load_nats_credentials(config_.nats_credentials_path());
  if (!creds.ok()) {
    stop();
    return Status(creds.status().code(), "NATS credentials: " + creds.status().message());
  }
  if (creds->has_value()) {
    no.user = (*creds)->user;
    no.password = (*creds)->password;
    spdlog::info("spoke {}: NATS user {} (from {})", config_.site, no.user,
                 config_.nats_credentials_path());
  }
  set_nats_tls(&no);
  auto nats_or = sync::NatsTransport::connect(no);
  if (!nats_or.ok()) {
    stop();
    return Status(nats_or.status().code(), "cannot set up NATS: " + nats_or.status().message());
  }
  nats_ = std::move(nats_or).value();
  sync::Env env{SystemClock::instance(), [this] { return rng_(); }};
  sync::ChildOptions co;
  co.labels = config_.labels;
  co.software_version = daemon::version();
  // Hubs of one level (active-active): start at this site's own choice
  // among them, fail over along the list.
  auto parents = sync::preferred_order(config_.site, *sync::parse_node_list(config_.parent));
  co.fallback_parents.assign(parents.begin() + 1, parents.end());
  // A site moved to another region follows: its old hub redirects it to the
  // root, which redirects it to its new region (docs/hierarchy.md).
  co.follow_redirects = true;
  node_ = std::make_unique<sync::SyncNode>(store_.get(), nats_.get());
  node_->set_child_engine(
      std::make_unique<sync::ChildSync>(config_.site, parents.front(), store_.get(), env, co));
  if (Status s = node_->attach(); !s.ok()) {
    stop();
    return Status(s.code(), "cannot subscribe: " + s.message());
  }
  // Given the clock, the runtime sleeps until the session has something to
  // do (a heartbeat every 2 s when idle) instead of ticking 20 times a second.
  runtime_ = std::make_unique<sync::SyncRuntime>(node_.get(), 50, SystemClock::instance());
  runtime_->start();
  reconcile_thread_ = std::thread([this] { reconcile_loop(); });
  return ok_status();
}

void Spoke::stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  watch_.reset();
  if (runtime_) runtime_->stop();
  if (listener_ != 0) store_->unsubscribe(listener_);
  if (reconcile_thread_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    reconcile_thread_.join();
  }
  runtime_.reset();
  node_.reset();
  nats_.reset();
  reconciler_.reset();
  applier_.reset();
  store_.reset();
  spdlog::info("site {} stopped", config_.site);
}

// NATS over TLS (spoke/config.h): the configured files, else the site's
// identity from its enrollment, so that an enrolled site uses its own
// certificate for mTLS once its URLs say tls://.
void Spoke::set_nats_tls(sync::NatsOptions* o) const {
  if (!nats_tls_wanted(config_)) return;
  const NatsTlsFiles files = nats_tls_files(config_);
  o->tls = true;
  o->tls_server_name = config_.nats_tls_server_name;
  o->tls_ca_file = files.ca_file;
  o->tls_cert_file = files.cert_file;
  o->tls_key_file = files.key_file;
  spdlog::info("spoke {}: NATS over TLS, CA {}, client certificate {}", config_.site,
               o->tls_ca_file.empty() ? "(system)" : o->tls_ca_file,
               o->tls_cert_file.empty() ? "(none)" : o->tls_cert_file);
}

SpokeHealth Spoke::health() { return metrics().health; }

SpokeMetrics Spoke::metrics() {
  SpokeMetrics m;
  SpokeHealth& h = m.health;
  h.nats_connected = nats_ && nats_->connected();
  if (nats_) h.nats_error = nats_->last_error();
  bool active = false;
  if (runtime_) {
    runtime_->call([&] {
      h.in_sync = node_->child()->in_sync();
      active = node_->child()->active();
      h.documents_received = node_->child()->stats().documents_received;
      h.parent = node_->child()->parent();
      h.failovers = node_->child()->stats().failovers;
      h.redirects = node_->child()->stats().redirects;
      m.child = node_->child()->stats();
    });
    m.node = node_->stats();
  }
  h.session_open = active && h.nats_connected;
  h.objects = objects_.load();
  h.failed = failed_.load();
  h.applied = applied_.load();
  m.held = held_.load();
  std::lock_guard lock(totals_mu_);
  m.reconcile = totals_;
  return m;
}

void Spoke::reconcile_and_log(const char* what) {
  Status s = reconciler_->reconcile_once();
  last_pass_failed_ = !s.ok();
  if (!s.ok()) {
    spdlog::error("{}: {}", what, s.to_string());
  } else if (reconciler_->last_stats().changed > 0 || reconciler_->last_stats().pruned > 0) {
    spdlog::info("site {}: applied {} changes, pruned {}", config_.site,
                 reconciler_->last_stats().changed, reconciler_->last_stats().pruned);
  }
  const ReconcileStats& st = reconciler_->last_stats();
  objects_ = st.rendered;
  failed_ = st.failed;
  held_ = st.held;
  if (s.ok()) applied_ = true;
  {
    std::lock_guard lock(totals_mu_);
    ++totals_.passes;
    totals_.failed_passes += s.ok() ? 0 : 1;
    totals_.changed += st.changed;
    totals_.unchanged += st.unchanged;
    totals_.failed += st.failed;
    totals_.pruned += st.pruned;
    totals_.drifted += st.drifted;
  }
  // A pass may parse megabytes (changed documents, the kube applier's
  // audit LISTs) and free most of it: give the freed pages back, since a
  // site's spoke idles far longer than it works (a few ms at most).
  malloc_trim(0);
}

// Reconciles whenever the store changes (debounced), every resync_seconds
// (repairs drift in the manifests directory) or, for an applier that
// schedules its own checks, when it asks (health still progressing, a drift
// audit due), after a failed pass with backoff
// (1 s doubling to resync_seconds: a cluster that is down), and once when the
// sync session first catches up (pruning was held until then).
void Spoke::reconcile_loop() {
  using std::chrono::milliseconds;
  std::unique_lock lock(mu_);
  auto last_housekeeping = std::chrono::steady_clock::now();
  const milliseconds resync = std::chrono::seconds(config_.resync_seconds);
  milliseconds backoff{1000};
  while (!stopping_) {
    if (std::chrono::steady_clock::now() - last_housekeeping >= kHousekeepingInterval) {
      last_housekeeping = std::chrono::steady_clock::now();
      lock.unlock();
      store_->expire_older_than(config_.log_retention_hours * 3600 * 1000);
      lock.lock();
    }
    milliseconds wait = resync;
    // An applier that schedules its own checks (the kube applier's audit
    // finds drift; a periodic pass would only repeat it) sets the pace.
    if (auto next = applier_->next_check()) wait = std::max(*next, milliseconds(50));
    if (last_pass_failed_) {
      wait = std::min(wait, backoff);
      backoff = std::min(backoff * 2, resync);
    } else {
      backoff = milliseconds(1000);
    }
    if (!scope_complete_) wait = std::min(wait, milliseconds(500));
    cv_.wait_for(lock, wait, [this] { return dirty_ || stopping_; });
    if (stopping_) break;
    if (!scope_complete_ && !dirty_) {
      bool in_sync = false;
      lock.unlock();
      if (runtime_) runtime_->call([&] { in_sync = node_->child()->in_sync(); });
      lock.lock();
      if (!in_sync) continue;
      scope_complete_ = true;
      spdlog::info("site {}: caught up with {}; pruning enabled", config_.site, config_.parent);
    }
    lock.unlock();
    std::this_thread::sleep_for(kDebounce);
    lock.lock();
    dirty_ = false;
    lock.unlock();
    reconcile_and_log("reconcile");
    lock.lock();
  }
}

}  // namespace canopy::spoke

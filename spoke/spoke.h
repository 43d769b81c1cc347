// Spoke: the daemon at a site as an object with a start/stop lifecycle.
//
// It composes the site's store, an applier (manifests-dir, or kube: server-side
// apply to the site's cluster), the reconciler and
// its thread (reconciles whenever the store changes, debounced, and every
// resync_seconds; runs the store's housekeeping), and the child sync engine
// talking to the hub over NATS. Autonomy first: start() applies what the local
// store holds before it connects. It speaks to no user: the site's local HTTP
// API lives in api/ and is served over a Spoke by the binary (cmd/), so tests
// can run several spokes and a hub in one process.
//
// Lifecycle: start() once; stop() stops the sync runtime, then the
// reconciler thread, then closes the store. stop() is idempotent, is called by
// the destructor, and cleans up after a start() that failed half way. The
// accessors are valid between a successful start() and stop(); servers over
// the spoke must be stopped before it.
//
// Thread-safety: start() and stop() from one thread; the accessors from any.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "spoke/config.h"
#include "spoke/dir_watch.h"
#include "spoke/manifests_dir_applier.h"
#include "spoke/reconciler.h"
#include "store/status.h"
#include "store/store.h"
#include "sync/engine/node.h"
#include "sync/nats_transport.h"

namespace canopy::spoke {

// What the spoke reports about itself (the local API's /healthz).
struct SpokeHealth {
  bool nats_connected = false;
  // Why NATS is not connected (NatsTransport::last_error); empty once it is.
  std::string nats_error;
  bool session_open = false;  // the child session is active and NATS connected
  bool in_sync = false;       // caught up with the hub, nothing of ours unacked
  size_t objects = 0;         // rendered by the last reconcile pass
  size_t failed = 0;          // failed in the last reconcile pass
  // Documents received from the parent since start (a reconciliation that
  // finds the site up to date receives none).
  uint64_t documents_received = 0;
  bool applied = false;  // a reconcile pass completed without error since start
  // The hub the session is with (one of `parent`'s list), and how many times
  // it moved to another: a dead hub, or one that no longer serves the site
  // (it moved to another regional hub).
  std::string parent;
  uint64_t failovers = 0;
  uint64_t redirects = 0;  // of those, to the hub a redirect named
};

// Sums over the reconcile passes since start (ReconcileStats).
struct ReconcileTotals {
  uint64_t passes = 0;
  uint64_t failed_passes = 0;  // passes that returned an error (retried with backoff)
  uint64_t changed = 0;
  uint64_t unchanged = 0;
  uint64_t failed = 0;
  uint64_t pruned = 0;
  uint64_t drifted = 0;
};

// What the local API's /metrics reports.
struct SpokeMetrics {
  SpokeHealth health;
  size_t held = 0;  // held back by a rollout in the last pass
  ReconcileTotals reconcile;
  sync::ChildStats child;
  sync::NodeStats node;
};

class Spoke {
 public:
  // `config` must be valid (validate_spoke_config).
  explicit Spoke(SpokeConfig config);
  ~Spoke();
  Spoke(const Spoke&) = delete;
  Spoke& operator=(const Spoke&) = delete;

  // Opens the store and the applier, applies what the store holds (without
  // pruning: that waits until the session has caught up with the hub),
  // starts the reconciler, connects to NATS and says hello. Call once. The
  // kube applier does not need the cluster to be up: passes fail and are
  // retried with backoff until it answers.
  Status start();
  void stop();

  const SpokeConfig& config() const { return config_; }
  Store* store() { return store_.get(); }
  SpokeHealth health();
  // The health plus the counters; one short call on the sync runtime's thread.
  SpokeMetrics metrics();

 private:
  void reconcile_loop();
  void reconcile_and_log(const char* what);
  void set_nats_tls(sync::NatsOptions* o) const;

  const SpokeConfig config_;
  std::mt19937_64 rng_;
  bool started_ = false;
  bool stopped_ = false;

  std::unique_ptr<Store> store_;
  std::unique_ptr<Applier> applier_;
  std::unique_ptr<DirWatch> watch_;  // the manifests directory: hand edits wake the reconciler
  std::unique_ptr<Reconciler> reconciler_;  // used by the reconcile thread only
  std::atomic<size_t> objects_{0};
  std::atomic<size_t> failed_{0};
  std::atomic<size_t> held_{0};
  std::atomic<bool> applied_{false};
  std::mutex totals_mu_;
  ReconcileTotals totals_;  // guarded by totals_mu_
  // The sync session caught up with the hub once since start: the site's
  // scope is complete, pruning is safe (see ReconcilerOptions::may_prune).
  std::atomic<bool> scope_complete_{false};
  bool last_pass_failed_ = false;  // reconcile thread only

  std::mutex mu_;
  std::condition_variable cv_;
  bool dirty_ = false;
  bool stopping_ = false;
  uint64_t listener_ = 0;
  std::thread reconcile_thread_;

  std::unique_ptr<sync::NatsTransport> nats_;
  std::unique_ptr<sync::SyncNode> node_;
  std::unique_ptr<sync::SyncRuntime> runtime_;
};

}  // namespace canopy::spoke

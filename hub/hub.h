// Hub: a control-plane replica as an object with a start/stop lifecycle.
//
// It composes the store, the placement index (per-site scopes), the status
// aggregate (per-placement rollout state), the rollout controller (stepped
// every second on a thread of its own), and the parent sync engine serving
// its sites over NATS, plus the periodic housekeeping of the store. A hub
// with regions below it composes its index with a RegionScope; a regional
// hub (config `parent`) runs the child engine too, in the same SyncNode: a
// child of its parent for its sites' scopes (HubConfig::parent). It speaks
// to no user: the Catalog gRPC API and the health endpoint live in api/ and
// are served over a Hub by the binary (cmd/), so several hubs and spokes can
// run in one process for tests as well as one per process in the field.
//
// Lifecycle: start() once; stop() stops the sync runtime and the
// housekeeping thread, then closes the store. stop() is idempotent, is called
// by the destructor, and also cleans up after a start() that failed half way.
// The accessors are valid between a successful start() and stop(); servers
// over the hub must be stopped before it.
//
// Thread-safety: start() and stop() from one thread; the accessors from any
// thread (the store, index and aggregate are thread-safe; the session queries
// run on the sync runtime's thread).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hub/config.h"
#include "hub/enrollment.h"
#include "hub/peer_scope.h"
#include "hub/placement_index.h"
#include "hub/region_scope.h"
#include "hub/rollout_controller.h"
#include "hub/status_aggregate.h"
#include "hub/telemetry_barrier.h"
#include "model/documents.h"
#include "store/status.h"
#include "store/store.h"
#include "sync/engine/node.h"
#include "sync/nats_transport.h"

namespace canopy::hub {

// A regional hub's session with its parent (Hub::upstream), or a hub's with
// the peer it follows (Hub::peer_link).
struct UpstreamInfo {
  std::string parent;         // the one of the session (of several: the current one)
  bool session_open = false;  // welcomed, and NATS connected
  bool in_sync = false;       // caught up with the parent, nothing of ours unacked
  uint64_t down_index = 0;    // the parent's log index this hub has applied
  uint64_t hellos = 0;        // sessions started since start()
  uint64_t failovers = 0;     // moves to another hub of the level since start()
};

// The hub's sync state at one moment, for metrics.
struct HubSyncSnapshot {
  std::vector<sync::ChildInfo> sessions;
  sync::ParentStats parent;
  sync::NodeStats node;
  uint64_t now_ms = 0;  // the clock ChildInfo::last_seen_ms is on, when taken
};

// What a benchmark may put between a hub and its parts.
struct HubHooks {
  // Wraps the hub's NATS transport (a benchmark timestamps the hub's
  // publishes); the wrapper must forward every call to the transport it is
  // given, which outlives it.
  std::function<std::unique_ptr<sync::Transport>(sync::Transport*)> wrap_transport;
};

class Hub {
 public:
  // `config` must be valid (validate_hub_config).
  explicit Hub(HubConfig config, HubHooks hooks = {});
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  // Opens the store, loads the index, connects to NATS and starts serving
  // the sites' sessions. Call once.
  Status start();
  void stop();

  const HubConfig& config() const { return config_; }
  Store* store() { return store_.get(); }
  PlacementIndex* index() { return index_.get(); }
  StatusAggregate* status() { return status_.get(); }
  // Site identities: CA, bootstrap tokens, NATS users, revocation.
  Enrollment* enrollment() { return enrollment_.get(); }

  bool nats_connected() const;
  // Why NATS is not connected (NatsTransport::last_error); empty once it is.
  std::string nats_last_error() const;
  size_t session_count();
  std::vector<sync::ChildInfo> sessions();
  // Each session's liveness alone, sorted by site name (what presence reads).
  std::vector<sync::ChildLiveness> session_liveness();
  // Whether a child, or a site below a regional child, has a live session
  // and when it was last heard (sites below a region: through the region's
  // presence document, model::SitePresence; with peers, a site in session
  // with a peer: through the peer's). The lookup holds a snapshot of this
  // hub's sessions and reads one presence document per site asked, so a
  // status costs reads for the sites it covers, not for the fleet.
  LivenessOf liveness_lookup();
  // The session with the parent; nullopt at the root.
  std::optional<UpstreamInfo> upstream();
  // The session with the peer this hub follows; nullopt without peers.
  std::optional<UpstreamInfo> peer_link();
  // One call on the sync runtime's thread, O(sessions): the sessions and the
  // parent engine's counters; the node's counters are read under its lock.
  HubSyncSnapshot sync_snapshot();

 private:
  // REQUIRES: the thread of the runtime that drives `child`.
  UpstreamInfo upstream_of(const sync::ChildSync* child) const;
  void housekeeping_loop();
  void rollout_loop();
  // A regional hub, or a hub with peers: writes its sites' presence
  // documents when their sessions open or are lost (checked every second).
  void presence_loop();
  void write_presence(uint64_t started_ms);
  // The site's presence document; nullopt when absent or unreadable.
  std::optional<model::SitePresence> read_presence(const std::string& site);

  const HubConfig config_;
  const HubHooks hooks_;
  std::mt19937_64 rng_;
  bool started_ = false;
  bool stopped_ = false;

  // Declared in start-up order; stop() tears down in reverse.
  std::unique_ptr<Store> store_;
  std::unique_ptr<PlacementIndex> index_;
  std::unique_ptr<StatusAggregate> status_;
  std::unique_ptr<Enrollment> enrollment_;
  std::unique_ptr<RegionScope> regions_;  // the index composed with the regions below
  std::unique_ptr<sync::NatsTransport> nats_;
  std::unique_ptr<TelemetryBarrier> telemetry_barrier_;
  std::unique_ptr<sync::Transport> wrapped_;  // HubHooks::wrap_transport's, over nats_
  std::unique_ptr<sync::SyncNode> node_;
  std::unique_ptr<sync::SyncRuntime> runtime_;
  // Active-active (config `peers`): the peers' scope over regions_, and this
  // hub's child session with one peer, on a node and thread of its own.
  std::vector<std::string> peers_;
  std::unique_ptr<PeerScope> peer_scope_;
  std::unique_ptr<sync::SyncNode> peer_node_;
  std::unique_ptr<sync::SyncRuntime> peer_runtime_;

  std::mutex housekeeping_mu_;
  std::condition_variable housekeeping_cv_;
  bool housekeeping_stop_ = false;
  std::thread housekeeping_;
  std::unique_ptr<RolloutController> rollouts_;
  // Set by a store listener when a document a rollout depends on commits
  // (placements, templates, site records, status, holds); the rollout thread
  // steps then, and when a hold ends, and is otherwise idle.
  std::atomic<bool> rollout_dirty_{true};
  uint64_t rollout_listener_ = 0;
  std::thread rollout_thread_;
  std::thread presence_thread_;
  // What the store holds of each site's presence document, as the presence
  // thread last read or wrote it: whether this hub wrote it, and `connected`.
  struct PresenceSeen {
    bool ours = false;
    bool connected = false;
  };
  std::unordered_map<std::string, PresenceSeen> presence_seen_;  // presence thread only
  // With peers: sites whose presence document a commit from elsewhere (a
  // peer's write, a region's) changed since the presence thread read it. It
  // reads those again, not every site's every second.
  std::mutex presence_mu_;
  std::unordered_set<std::string> presence_changed_;  // guarded by presence_mu_
  uint64_t presence_listener_ = 0;
};

}  // namespace canopy::hub

// Deterministic simulation of a federation, in the spirit of FoundationDB's:
// one root hub, sites below it and a two-level chain (root -> regional hub ->
// sites), each a real Store on RocksDB and real sync engines, talking over the
// in-memory bus. With CANOPY_SIM_ACTIVE_ACTIVE=1, every other seed runs the
// root level active-active: a second root hub "hub2" peers with "hub"
// (hub::PeerScope, each a child of the other), the root's sites name both as
// parents and fail over when their hub falls silent (crashes, cut links), and
// writes land at either root; CANOPY_SIM_REGION_FAILOVER=1 makes the regional
// hub fail over between them too. With CANOPY_SIM_REGION_PAIR=1, half the
// seeds (1 and 0 modulo 4, so also with active-active roots) have region
// reg served by two hubs: reg2 serves it too (the root's
// RegionScope::serve_region, as its hello says), peers with reg, and the
// region's sites name both. The peers reconcile every 20 s of simulated
// time, and healing lasts long enough for one round (docs/hierarchy.md,
// Known limits, has what these seeds found). Sites follow redirects as
// canopy-spoke does: the regional hub's sites try the root (the ancestor its
// welcome names) when their hub is silent, and the root sends them back.
// With CANOPY_SIM_MOVES=1, sites move: every hub's regions follow its
// records (RegionScope::follow_records), as in canopy-hub, and the root
// rewrites a site record naming the regional hub, or no longer naming it (a
// deleted or refused record names none); the site follows the redirects.
// CI runs it on seeds 2001..4000 and, with active-active roots, 20501..21000
// (simulation_moves, simulation_moves_active_active). Without it the regions
// are fixed (RegionScope::create). The stores live in an
// in-memory file system that injects storage faults (sim_fs.h). Scopes are the production ones:
// every parent attaches a real hub::PlacementIndex to its store, the root composes it with its
// regional hub's member list (hub::RegionScope), and their ScopeChanges reach the sync node as in
// canopy-hub. The replicas write the real catalogue (sim_catalog.h): site records and their labels,
// templates, placements and overrides at the root, status and local overrides at the sites, so
// scopes move because the data does. A seeded scheduler writes on every replica, edits labels and
// selectors, partitions links, disconnects nodes, crashes and reopens them (what was not synced is
// lost), fails a store's write in the middle of a sync step and then crashes it, restores a site
// from an old backup, and lets the bus drop, duplicate and reorder messages. Every replica id, log
// epoch and session id comes from the seed. Then it heals everything and checks:
//   - every child holds exactly the documents of its scope, equal to its parent's;
//   - every replica holds exactly what the root's index (or, for the regional
//     hub, the root's RegionScope) puts in its scope, equal to the root's;
//   - every site renders (model/render.h over spoke::load_desired_state of
//     its own store) the same objects as the root renders for it;
//   - every write a replica acknowledged is still there, at the writer and at the root;
//   - with two roots (or two hubs of the region), both hold the same documents.
// CANOPY_SIM_FIRST and CANOPY_SIM_SEEDS set which seeds run (default 1..10000);
// CANOPY_SIM_STEPS the chaos steps per seed (default 150);
// CANOPY_SEED replays one, with debug logs; CANOPY_SIM_DEBUG=1 adds log dumps
// to a failure.
//
// The world is declared here; sim_world.cc builds it and runs the chaos,
// sim_checks.cc heals it and checks it, and simulation_test.cc runs the seeds.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "hub/peer_scope.h"
#include "hub/placement_index.h"
#include "hub/region_scope.h"
#include "store/clock.h"
#include "store/store.h"
#include "sync/engine/node.h"
#include "sync/memory_transport.h"
#include "tests/simulation/sim_catalog.h"
#include "tests/simulation/sim_fs.h"

namespace canopy::sim {

// How often peer hubs reconcile (ChildOptions::reconcile_every_ms), in
// simulated time.
constexpr int kPeerReconcileMs = 20'000;

struct SimNode {
  std::string name;
  std::string parent;                  // empty for the root
  std::vector<std::string> children;   // empty for a leaf site
  std::vector<std::string> fallbacks;  // other parents (active-active roots)
  std::string peer;                    // a peer hub of its level (active-active)
  std::string region;                  // a regional hub: the region it serves
  uint64_t replica = 0;
  std::string dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<sync::MemoryTransport> transport;
  // A parent's scopes: its placement index, composed with its regional hubs'
  // member lists when it has any (as a regional hub's parent).
  std::unique_ptr<hub::PlacementIndex> index;
  std::unique_ptr<hub::RegionScope> regions;
  std::unique_ptr<hub::PeerScope> peers;
  sync::ScopeProvider* scope = nullptr;
  std::unique_ptr<sync::SyncNode> node;
  // A regional hub with a peer: its session with the peer, on a node of its
  // own over the same transport (canopy-hub's peer_node_).
  std::unique_ptr<sync::SyncNode> peer_node;
  std::optional<std::string> backup;  // a copy of the data directory
};

// The last acknowledged write to a key with one writer: what it must read.
struct Expected {
  std::string writer;
  std::optional<std::string> json;  // nullopt: deleted
  // A regional hub's write about a member site: the site, and how often it
  // had changed hubs when the write was made (World::home_changes_).
  std::string member;
  uint64_t member_moves = 0;
};

class World {
 public:
  // Set-up and chaos (sim_world.cc).
  explicit World(uint64_t seed);
  ~World();
  void add(const std::string& name, const std::string& parent);
  // A hub `name` of the same level as `of`: its peer, serving the same
  // children (and region), below the same parent.
  SimNode& add_peer(const std::string& name, const std::string& of);
  void open(SimNode& n);
  void close(SimNode& n);
  // Power loss: what the store had not synced is gone.
  void crash(SimNode& n);
  // The node's store fails its next write, whenever that comes (a message
  // it applies, a position it saves, a sync of its log, a local write): what
  // depends on the write must not be sent, and a local write that failed is
  // not acknowledged (its outcome is unknown). Once the write failed, the node
  // crashes, as a daemon whose disk failed would, losing what it had not synced.
  void arm_write_failure(SimNode& n);
  void crash_after_write_failure();
  // Keeps a copy of a leaf site's data, or later puts it back in place.
  void backup_or_restore(SimNode& n);
  // Whether it recorded what the key must read (a single writer's write
  // that took place).
  bool write(SimNode& n, const SimWrite& w, bool single_writer);
  std::string pick_leaf();
  // The hub that serves `site` now, by the root's site records: its regional
  // hub, or the root.
  std::string home(const std::string& site);
  // The parent a child syncs with: a site's home, a regional hub's parent.
  std::string parent_of(const std::string& child);
  std::string pick_child();
  void step_all(bool tick);
  void chaos(int steps);
  // A site the regional hub `r` serves now (with moves: its record is
  // there), or empty.
  std::string pick_member(SimNode& r);
  // A regional hub writes about `member`, a site it serves as far as it
  // knows. The write holds only while the site stays: once the root has
  // moved it away, it is refused (stale from the start when the root had
  // moved it already), and the regional hub forgets it.
  void write_about_member(SimNode& r, const std::string& member);
  // Counts, per site, the changes of the hub that serves it in the roots'
  // records (hub's and hub2's views).
  void note_homes();
  uint64_t failed_writes() const { return failed_writes_; }
  uint64_t moves() const { return moves_; }
  // Children that moved to another parent after its silence, so far.
  uint64_t failovers() const;
  // Redirects the sites followed (a silent regional hub's sites sent back by
  // the root), so far.
  uint64_t redirects() const;

  // Healing and the checks (sim_checks.cc).
  bool quiet();
  void heal();
  static std::map<std::string, std::string> visible(Store& s);
  // With CANOPY_SIM_DEBUG set: the log entries of `key` at every replica.
  std::string debug(SimNode&, SimNode&, const std::string& key) { return debug(key); }
  std::string debug(const std::string& key);
  // What `site`'s renderer makes of the documents in `store`: one line per
  // rendered object, and per template that cannot be rendered. Global
  // failures (a placement or override the model refuses) are left out: the
  // root holds every such document, a site none, since the index places
  // them nowhere.
  static std::vector<std::string> render(Store& store, const std::string& site);
  // Every replica against the root's own view: what the root's index (for a
  // site) or RegionScope (for the regional hub) puts in its scope is exactly
  // what it holds, with the root's values; and every site renders what the
  // root renders for it.
  std::string check_against_root();
  uint64_t scope_changes() const { return scope_changes_; }
  uint64_t rendered_objects() const { return rendered_objects_; }
  // Returns a description of the first violation, or empty.
  std::string check();

 private:
  uint64_t seed_;
  const bool with_moves_ = std::getenv("CANOPY_SIM_MOVES") != nullptr;
  std::mt19937_64 rng_;
  SimFileSystem fs_;        // outlives the stores
  std::string fault_node_;  // whose store fails its next write
  uint64_t failed_writes_ = 0;
  uint64_t failovers_ = 0;  // of engines since closed
  uint64_t redirects_ = 0;  // of engines since closed
  uint64_t moves_ = 0;
  uint64_t outdated_writes_ = 0;                  // a regional hub's, about a site that left it
  std::map<std::string, std::string> last_home_;  // site -> its hubs as the roots name them
  std::map<std::string, uint64_t> home_changes_;  // site -> how often they changed
  ManualClock clock_;
  sync::MemoryNetwork net_;
  std::unique_ptr<SimCatalog> catalog_;
  uint64_t scope_changes_ = 0;  // delivered to the nodes' queues
  uint64_t rendered_objects_ = 0;
  std::map<std::string, SimNode> nodes_;
  std::map<std::string, Expected> expected_;
  std::set<std::string> multi_writer_;
  std::set<std::string> restored_;
};

}  // namespace canopy::sim

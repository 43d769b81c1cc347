// The simulated federation (sim_world.h): building the world, opening,
// closing and crashing its replicas, and the seeded chaos with its writes.
#include "tests/simulation/sim_world.h"

#include <gtest/gtest.h>
#include <rocksdb/env.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/keys.h"

namespace canopy::sim {

World::World(uint64_t seed) : seed_(seed), rng_(seed), net_(seed ^ 0x9e3779b97f4a7c15ULL) {
  const int sites = 1 + static_cast<int>(rng_() % 2);
  add("hub", "");
  for (int i = 1; i <= sites; ++i) add("a" + std::to_string(i), "hub");
  add("reg", "hub");
  add("r1", "reg");
  add("r2", "reg");
  nodes_["reg"].region = "reg";
  if (seed % 4 < 2 && std::getenv("CANOPY_SIM_REGION_PAIR") != nullptr) {
    // Region reg served by two hubs: reg2 serves it too (--region reg),
    // peers with reg, and the region's sites name both.
    SimNode& r2 = add_peer("reg2", "reg");
    for (const auto& c : r2.children) nodes_[c].fallbacks = {"reg2"};
  }
  if (seed % 2 == 0 && std::getenv("CANOPY_SIM_ACTIVE_ACTIVE") != nullptr) {
    // Active-active roots: hub2 serves the same children, peers with hub.
    SimNode& h2 = add_peer("hub2", "hub");
    // The root's sites fail over; the regional hub keeps one parent, or
    // fails over too with CANOPY_SIM_REGION_FAILOVER.
    const bool region_fails_over = std::getenv("CANOPY_SIM_REGION_FAILOVER") != nullptr;
    for (const auto& c : h2.children) {
      if (nodes_[c].children.empty() || region_fails_over) nodes_[c].fallbacks = {"hub2"};
    }
  }
  std::vector<std::string> leaves;
  for (auto& [name, n] : nodes_) {
    if (n.children.empty()) leaves.push_back(name);
  }
  catalog_ =
      std::make_unique<SimCatalog>(&rng_, leaves, with_moves_ ? "reg" : "", nodes_["reg"].children);
  for (auto& [name, n] : nodes_) open(n);
  // The fleet as the API would set it up: every site's record, and a few
  // placements.
  for (const auto& site : leaves) write(nodes_["hub"], catalog_->site_record(site), true);
  for (const auto& t : catalog_->tenants()) write(nodes_["hub"], catalog_->initial_grant(t), true);
  for (int i = 0; i < 3; ++i) write(nodes_["hub"], catalog_->placement(), true);
}

World::~World() {
  for (auto& [name, n] : nodes_) close(n);
}

void World::add(const std::string& name, const std::string& parent) {
  SimNode& n = nodes_[name];
  n.name = name;
  n.parent = parent;
  n.replica = 1000 + nodes_.size();
  n.dir = "/sim/" + name;
  if (!parent.empty()) nodes_[parent].children.push_back(name);
}

SimNode& World::add_peer(const std::string& name, const std::string& of) {
  SimNode& n = nodes_[name];
  SimNode& other = nodes_[of];
  n.name = name;
  n.parent = other.parent;
  n.region = other.region;
  n.replica = 1000 + nodes_.size();
  n.dir = "/sim/" + name;
  n.children = other.children;
  n.peer = of;
  other.peer = name;
  if (!n.parent.empty()) nodes_[n.parent].children.push_back(name);
  return n;
}

void World::open(SimNode& n) {
  StoreOptions o;
  o.path = n.dir;
  // As the daemons write: acknowledged once the write-ahead log is synced.
  o.durability = Durability::kGroupCommit;
  o.clock = &clock_;
  o.replica_id = n.replica;
  o.random = [this] { return rng_(); };
  o.env = fs_.env();
  o.file_opening_threads = 1;
  auto st = Store::open(o);
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  n.store = std::move(st).value();
  n.replica = n.store->replica_id();  // a new one after a restore
  n.transport = net_.endpoint(n.name);
  n.node = std::make_unique<sync::SyncNode>(n.store.get(), n.transport.get());
  sync::Env env{&clock_, [this] { return rng_(); }};
  if (!n.children.empty()) {
    // As canopy-hub wires it (hub/hub.cc): the index follows the store, and
    // its scope changes go to the node's queue.
    auto index = hub::PlacementIndex::attach(n.store.get());
    ASSERT_TRUE(index.ok()) << index.status().to_string();
    n.index = std::move(index).value();
    sync::SyncNode* node = n.node.get();
    auto enqueue = [this, node](const sync::ScopeChange& c) {
      ++scope_changes_;
      node->enqueue_scope_change(c);
    };
    if (with_moves_) {
      // A regional hub serves only the sites whose records it was given;
      // the regions below a hub are those its site records name, and
      // follow them.
      n.index->set_serve_unknown(n.parent.empty());
      n.regions =
          hub::RegionScope::follow_records(n.index.get(), n.region.empty() ? n.name : n.region);
      n.regions->on_scope_change(enqueue);
      n.scope = n.regions.get();
    } else {
      // Fixed regions: the regional hub's members never change.
      n.scope = n.index.get();
      hub::RegionScope::Regions regions;
      for (const auto& c : n.children) {
        if (!nodes_[c].children.empty()) regions[nodes_[c].region] = nodes_[c].children;
      }
      if (!regions.empty()) {
        auto composed = hub::RegionScope::create(n.index.get(), std::move(regions));
        ASSERT_TRUE(composed.ok()) << composed.status().to_string();
        n.regions = std::move(composed).value();
        n.regions->on_scope_change(enqueue);
        n.scope = n.regions.get();
      } else {
        n.index->on_scope_change(enqueue);
      }
    }
    sync::ParentOptions po;
    po.max_concurrent_catchups = 2;  // exercise the queue
    po.sketch_first_symbols = 1;     // several sketch rounds even for small differences
    po.log_read_limit = 7;
    // Timeouts scaled down to the simulated outages (seconds): children
    // go away and come back, and sessions are forgotten, in every run.
    po.away_after_ms = 1'000;
    po.session_timeout_ms = 4'000;
    // A regional hub names its parents to its sites, as canopy-hub does.
    if (!n.parent.empty()) {
      po.ancestors = {n.parent};
      po.ancestors.insert(po.ancestors.end(), n.fallbacks.begin(), n.fallbacks.end());
    }
    if (n.regions) {
      // The hubs below that serve a region, as their hellos would say
      // (canopy-hub's hello hook).
      for (const auto& c : n.children) {
        if (!nodes_[c].region.empty()) n.regions->serve_region(c, nodes_[c].region);
      }
    }
    if (!n.peer.empty()) {
      hub::PeerScope::OwnSites own;
      hub::PeerScope::OwnVersion own_version;
      if (!n.parent.empty() && n.regions) {
        hub::RegionScope* regions = n.regions.get();
        own = [regions] { return regions->own_sites(); };
        own_version = [regions] { return regions->own_sites_version(); };
      } else if (!n.parent.empty()) {
        // Fixed regions: the regional hub's sites are its children.
        std::vector<std::string> children = n.children;
        std::sort(children.begin(), children.end());
        own = [children] { return children; };
      }
      n.peers = std::make_unique<hub::PeerScope>(n.scope, std::vector<std::string>{n.peer},
                                                 std::move(own), std::move(own_version));
      n.scope = n.peers.get();
      if (!n.parent.empty() && with_moves_) {
        // What a region's hubs may write to each other follows their
        // sites (canopy-hub's listener); fixed regions never change them.
        hub::PeerScope* peers = n.peers.get();
        n.regions->on_own_sites_change([node, peers] {
          for (const auto& c : peers->own_sites_changed()) node->enqueue_scope_change(c);
        });
      }
    }
    n.node->set_parent_engine(
        std::make_unique<sync::ParentSync>(n.name, n.store.get(), n.scope, env, po));
  }
  // A root's child engine is its session with its peer, as canopy-hub's.
  const std::string& up = n.parent.empty() ? n.peer : n.parent;
  if (!up.empty()) {
    sync::ChildOptions co;
    co.log_read_limit = 7;
    co.heartbeat_ms = 300;
    co.parent_session_timeout_ms = 4'000;
    co.fallback_parents = n.fallbacks;
    // Sites follow redirects, as canopy-spoke does: a site of the regional
    // hub tries the root when its hub is silent, and is sent back.
    co.follow_redirects = n.children.empty();
    // Peers compare their documents now and then, as canopy-hub's do, and
    // so do a region's hubs with their parent.
    if (!n.peer.empty()) co.reconcile_every_ms = kPeerReconcileMs;
    n.node->set_child_engine(std::make_unique<sync::ChildSync>(n.name, up, n.store.get(), env, co));
  }
  ASSERT_TRUE(n.node->attach().ok());
  if (!n.parent.empty() && !n.peer.empty()) {
    // A regional hub's session with its peer, as canopy-hub's.
    sync::ChildOptions co;
    co.log_read_limit = 7;
    co.heartbeat_ms = 300;
    co.parent_session_timeout_ms = 4'000;
    co.reconcile_every_ms = kPeerReconcileMs;
    co.keep_unwritable = true;
    n.peer_node = std::make_unique<sync::SyncNode>(n.store.get(), n.transport.get());
    n.peer_node->set_child_engine(
        std::make_unique<sync::ChildSync>(n.name, n.peer, n.store.get(), env, co));
    ASSERT_TRUE(n.peer_node->attach().ok());
  }
}

void World::close(SimNode& n) {
  if (n.regions) {
    n.regions->on_scope_change(nullptr);
    n.regions->on_own_sites_change(nullptr);
  }
  if (n.index && !n.regions) n.index->on_scope_change(nullptr);
  if (n.node && n.node->child() != nullptr) {
    failovers_ += n.node->child()->stats().failovers;
    redirects_ += n.node->child()->stats().redirects;
  }
  n.peer_node.reset();
  n.node.reset();
  n.scope = nullptr;
  n.peers.reset();
  n.regions.reset();
  n.index.reset();
  n.transport.reset();
  n.store.reset();
}

void World::crash(SimNode& n) {
  spdlog::debug("sim: {} crashes", n.name);
  if (n.name == fault_node_) fault_node_.clear();  // crash() disarms it
  fs_.crash(n.dir);
  close(n);
  fs_.recover(n.dir);
  open(n);
}

void World::arm_write_failure(SimNode& n) {
  if (!fault_node_.empty()) return;
  spdlog::debug("sim: {} fails its next write", n.name);
  fs_.fail_next_write(n.dir);
  fault_node_ = n.name;
}

void World::crash_after_write_failure() {
  if (fault_node_.empty() || fs_.armed()) return;
  ++failed_writes_;
  SimNode& n = nodes_[fault_node_];
  fault_node_.clear();
  crash(n);
}

void World::backup_or_restore(SimNode& n) {
  spdlog::debug("sim: {} {}", n.name, n.backup ? "restored from its backup" : "backed up");
  if (n.name == fault_node_) {
    fs_.disarm();
    fault_node_.clear();
  }
  close(n);
  if (!n.backup) {
    n.backup = n.dir + ".backup";
    fs_.copy_dir(n.dir, *n.backup);
  } else {
    fs_.copy_dir(*n.backup, n.dir);
    // As an operator restores (store.h, kRestoredMarker): the store takes a
    // new replica id at its next open.
    ASSERT_TRUE(rocksdb::WriteStringToFile(fs_.env(), "", n.dir + "/" + kRestoredMarker).ok());
    restored_.insert(n.name);
  }
  open(n);
}

bool World::write(SimNode& n, const SimWrite& w, bool single_writer) {
  spdlog::debug("sim: {} {} {} {}", n.name,
                w.op == SimWrite::Op::kPut     ? "puts"
                : w.op == SimWrite::Op::kPatch ? "patches"
                                               : "removes",
                w.key, w.doc.is_null() ? "" : w.doc.dump());
  StatusOr<v1::Delta> r = Status(StatusCode::kUnknown, "unset");
  switch (w.op) {
    case SimWrite::Op::kPut:
      r = n.store->put_value(w.key, w.doc);
      break;
    case SimWrite::Op::kPatch:
      r = n.store->patch(w.key, w.doc.dump());
      break;
    case SimWrite::Op::kRemove:
      r = n.store->remove(w.key);
      if (r.status().code() == StatusCode::kNotFound) return false;
      break;
  }
  if (!r.ok() && n.name == fault_node_) {
    multi_writer_.insert(w.key);  // failed: it may or may not have happened
    return false;
  }
  EXPECT_TRUE(r.ok()) << w.key << ": " << r.status().to_string();
  if (!r.ok()) return false;
  if (!single_writer) {
    multi_writer_.insert(w.key);
    return false;
  }
  auto now = n.store->get(w.key);
  if (r->ops_size() == 0) {
    // The store writes nothing for a value it holds already: no new stamp,
    // so the write that put it there is still the one that counts (and a
    // refusal of it, say for a site that has left and come back since,
    // still takes it: simulation seed 800 with moves).
    auto e = expected_.find(w.key);
    if (e != expected_.end() && e->second.writer == n.name && now.ok() && e->second.json == *now)
      return false;
  }
  expected_[w.key] =
      Expected{n.name, now.ok() ? std::optional<std::string>(*now) : std::nullopt, "", 0};
  return true;
}

std::string World::pick_leaf() {
  std::vector<std::string> leaves;
  for (auto& [name, n] : nodes_) {
    if (n.children.empty()) leaves.push_back(name);
  }
  return leaves[rng_() % leaves.size()];
}

std::string World::home(const std::string& site) {
  const std::string region = nodes_["hub"].regions->region_of(site);
  return region.empty() ? "hub" : region;
}

std::string World::parent_of(const std::string& child) {
  return nodes_[child].children.empty() ? home(child) : nodes_[child].parent;
}

std::string World::pick_child() {
  std::vector<std::string> all;
  for (auto& [name, n] : nodes_) {
    if (!n.parent.empty()) all.push_back(name);
  }
  return all[rng_() % all.size()];
}

void World::step_all(bool tick) {
  for (auto& [name, n] : nodes_) {
    n.node->run_once(tick);
    if (n.peer_node) n.peer_node->run_once(tick);
  }
}

void World::chaos(int steps) {
  net_.set_faults(sync::MemoryFaults{0.05, 0.05, 0.2});
  for (int i = 0; i < steps; ++i) {
    const int action = static_cast<int>(rng_() % 100);
    if (action < 25) {
      // A write at the root (desired state), at a site (its own keys), or
      // at the root into a site's keys (concurrent writers).
      const int who = static_cast<int>(rng_() % 10);
      if (who < 5) {
        // With two roots, either takes desired state: keys written at both
        // are checked for convergence, not for one writer's value.
        const bool second = nodes_.count("hub2") != 0 && rng_() % 3 == 0;
        write(nodes_[second ? "hub2" : "hub"], catalog_->root_write(), !second);
      } else if (who < 9) {
        SimNode& c = nodes_[pick_child()];
        if (c.children.empty()) {
          write(c, catalog_->site_write(c.name), true);
        } else if (std::string member = pick_member(c); !member.empty()) {
          write_about_member(c, member);
        }
      } else {
        const std::string site = pick_leaf();
        write(nodes_["hub"], catalog_->shared_write(site), false);
        write(nodes_[site], catalog_->shared_write(site), false);
      }
    } else if (action < 30) {
      std::string c = pick_child();
      std::string other = parent_of(c);
      if (nodes_.count("hub2") != 0 && rng_() % 4 == 0) {
        // The peers' own link, or a child's link to the second root.
        c = "hub2";
        other = rng_() % 2 == 0 ? std::string("hub") : pick_child();
        if (nodes_[other].parent != "hub" && other != "hub") other = "hub";
      } else if (nodes_.count("reg2") != 0 && rng_() % 4 == 0) {
        // The region's hubs' own link, or a site's link to the second.
        c = "reg2";
        const auto& sites = nodes_["reg2"].children;
        other = rng_() % 2 == 0 ? std::string("reg") : sites[rng_() % sites.size()];
      }
      const bool cut = !net_.partitioned(c, other);
      spdlog::debug("sim: link {} - {} {}", c, other, cut ? "cut" : "restored");
      net_.partition(c, other, cut);
    } else if (action < 33) {
      const std::string c = pick_child();
      spdlog::debug("sim: {} {}", c, net_.is_connected(c) ? "disconnects" : "reconnects");
      net_.set_connected(c, !net_.is_connected(c));
    } else if (action < 35) {
      auto it = nodes_.begin();
      std::advance(it, rng_() % nodes_.size());
      if (rng_() % 2 == 0) {
        crash(it->second);
      } else {
        arm_write_failure(it->second);
      }
    } else if (action < 36) {
      backup_or_restore(nodes_[pick_leaf()]);
    } else if (action < 40) {
      // What moves scopes: a site's labels, or a placement's choice of sites.
      write(nodes_["hub"], catalog_->scope_edit(), true);
    } else if (with_moves_ && action < 42) {
      // A site moves into the regional hub, or out of it to the root
      // (docs/hierarchy.md, "Moving a site"); it follows the redirects.
      const std::string site = pick_leaf();
      const std::string to = home(site) == "reg" ? "" : "reg";
      spdlog::debug("sim: {} moves to {}", site, to.empty() ? "the root" : to);
      write(nodes_["hub"], catalog_->move(site, to), true);
      ++moves_;
    } else {
      const int deliveries = static_cast<int>(rng_() % 20);
      for (int d = 0; d < deliveries; ++d) net_.deliver_one();
      step_all(rng_() % 3 == 0);
      clock_.advance_ms(10 + rng_() % 200);
    }
    crash_after_write_failure();
    note_homes();
  }
}

std::string World::pick_member(SimNode& r) {
  std::vector<std::string> members;
  for (auto& [name, n] : nodes_) {
    if (!n.children.empty()) continue;
    const bool member =
        with_moves_ ? r.store->get(model::site_key(name)).ok()
                    : std::find(r.children.begin(), r.children.end(), name) != r.children.end();
    if (member) members.push_back(name);
  }
  return members.empty() ? std::string() : members[rng_() % members.size()];
}

void World::write_about_member(SimNode& r, const std::string& member) {
  const SimWrite w = catalog_->region_write(member);
  bool current = true;
  for (const char* root : {"hub", "hub2"}) {
    auto it = nodes_.find(root);
    if (it != nodes_.end() && !it->second.scope->writable_by(r.name, w.key)) current = false;
  }
  // Two hubs of the region write about the same members: their writes are
  // concurrent (neither need have seen the other's), checked for
  // convergence, not for one writer's value.
  if (nodes_.count("reg2") != 0) current = false;
  // A removal of what it does not hold (it forgot the key) records
  // nothing: an older expectation must keep the member's old count.
  if (!write(r, w, current)) return;
  auto e = expected_.find(w.key);
  if (current && e != expected_.end() && e->second.writer == r.name) {
    e->second.member = member;
    e->second.member_moves = home_changes_[member];
  }
}

void World::note_homes() {
  for (auto& [name, n] : nodes_) {
    if (!n.children.empty()) continue;
    std::string now;
    for (const char* root : {"hub", "hub2"}) {
      auto it = nodes_.find(root);
      if (it != nodes_.end()) now += it->second.regions->region_of(name) + "|";
    }
    auto [it, fresh] = last_home_.emplace(name, now);
    if (!fresh && it->second != now) {
      ++home_changes_[name];
      it->second = now;
    }
  }
}

uint64_t World::failovers() const {
  uint64_t n = failovers_;
  for (const auto& [name, node] : nodes_) {
    if (node.node && node.node->child() != nullptr) n += node.node->child()->stats().failovers;
  }
  return n;
}

uint64_t World::redirects() const {
  uint64_t n = redirects_;
  for (const auto& [name, node] : nodes_) {
    if (node.node && node.node->child() != nullptr) n += node.node->child()->stats().redirects;
  }
  return n;
}

}  // namespace canopy::sim

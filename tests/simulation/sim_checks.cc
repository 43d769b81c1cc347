// The simulated federation (sim_world.h) healed, and the checks of what it
// converged to: peers alike, every child equal to its parent in its scope,
// every replica equal to the root's view, and acknowledged writes kept.
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/keys.h"
#include "model/render.h"
#include "spoke/desired_state.h"
#include "tests/simulation/sim_world.h"

namespace canopy::sim {
namespace {

using json = nlohmann::json;

}  // namespace

bool World::quiet() {
  if (net_.in_flight() != 0) return false;
  for (auto& [name, n] : nodes_) {
    if (n.node->child() != nullptr && !n.node->child()->in_sync()) return false;
    if (n.peer_node && !n.peer_node->child()->in_sync()) return false;
  }
  return true;
}

void World::heal() {
  fs_.disarm();
  fault_node_.clear();
  net_.set_faults(sync::MemoryFaults{});
  net_.heal_partitions();
  for (auto& [name, n] : nodes_) net_.set_connected(name, true);
  int quiet_rounds = 0;
  // With peers, long enough for their next comparison of documents.
  const bool peers = nodes_.count("hub2") != 0 || nodes_.count("reg2") != 0;
  const int min_rounds = peers ? kPeerReconcileMs / 100 + 50 : 0;
  for (int i = 0; i < 4000 && (quiet_rounds < 30 || i < min_rounds); ++i) {
    net_.deliver_all(100'000);
    step_all(true);
    clock_.advance_ms(100);
    quiet_rounds = quiet() ? quiet_rounds + 1 : 0;
  }
}

std::map<std::string, std::string> World::visible(Store& s) {
  std::map<std::string, std::string> out;
  auto page = s.scan("", "", 1'000'000);
  for (auto& item : page->items) out[item.key] = item.json;
  return out;
}

std::string World::debug(const std::string& key) {
  if (std::getenv("CANOPY_SIM_DEBUG") == nullptr) return "";
  std::string out;
  for (auto& [name, node] : nodes_) {
    SimNode* n = &node;
    auto log = n->store->log_since(n->store->log_epoch(), 0, nullptr, 1'000'000);
    for (const auto& e : log->entries) {
      if ((e.has_delta() ? e.delta().key() : e.doc().key()) == key) {
        out += "\n  " + n->name + " log: " + e.ShortDebugString();
      }
    }
  }
  return out;
}

std::vector<std::string> World::render(Store& store, const std::string& site) {
  auto text = store.get(model::site_key(site));
  if (!text.ok()) return {"no site record: " + text.status().to_string()};
  auto record = model::parse_site(site, json::parse(*text, nullptr, false));
  if (!record.ok()) return {"site record refused: " + record.status().message()};
  auto desired = spoke::load_desired_state(store, site);
  if (!desired.ok()) return {"cannot load: " + desired.status().to_string()};
  auto result = model::render_site(*record, *desired);
  if (!result.ok()) return {"cannot render: " + result.status().to_string()};
  std::vector<std::string> out;
  for (const auto& o : result->objects) {
    out.push_back(o.template_key + " " + o.hash + " " + o.object.dump());
  }
  for (const auto& f : result->failures) {
    if (!f.template_name.empty()) out.push_back(f.template_key + " failed: " + f.error);
  }
  return out;
}

std::string World::check_against_root() {
  SimNode& root = nodes_["hub"];
  const auto rv = visible(*root.store);
  for (auto& [name, n] : nodes_) {
    if (n.parent.empty()) continue;
    sync::ScopeProvider& scope =
        n.children.empty() ? static_cast<sync::ScopeProvider&>(*root.index) : *root.scope;
    const auto nv = visible(*n.store);
    for (const auto& [k, v] : rv) {
      if (!scope.in_scope(name, k)) continue;
      auto it = nv.find(k);
      if (it == nv.end()) return name + " lacks " + k + ", in its scope at the root: " + v;
      if (it->second != v) return name + " has " + k + " = " + it->second + ", root " + v;
    }
    for (const auto& [k, v] : nv) {
      if (!rv.count(k)) return name + " has " + k + " that the root lacks";
      if (!scope.in_scope(name, k)) return name + " holds " + k + ", outside its root scope";
    }
    if (!n.children.empty()) continue;
    const auto here = render(*n.store, name);
    const auto there = render(*root.store, name);
    rendered_objects_ += here.size();
    if (here != there) {
      std::string diff = name + " renders differently from the root:";
      for (const auto& l : here) diff += "\n  site: " + l;
      for (const auto& l : there) diff += "\n  root: " + l;
      return diff;
    }
  }
  return "";
}

std::string World::check() {
  // Peers hold the same state, key for key.
  for (const auto& [one, two] : {std::pair<std::string, std::string>{"hub", "hub2"},
                                 std::pair<std::string, std::string>{"reg", "reg2"}}) {
    if (nodes_.count(two) == 0) continue;
    const auto a = visible(*nodes_[one].store);
    const auto b = visible(*nodes_[two].store);
    for (const auto& [k, v] : a) {
      auto it = b.find(k);
      if (it == b.end()) return two + " lacks " + k + " that " + one + " has: " + v + debug(k);
      if (it->second != v) {
        return two + " has " + k + " = " + it->second + " but " + one + " has " + v + debug(k);
      }
    }
    for (const auto& [k, v] : b) {
      if (!a.count(k)) {
        const bool in_scope = nodes_["hub"].scope->in_scope(one, k);
        return two + " has " + k + " that " + one + " lacks (" + (in_scope ? "in" : "not in") +
               " their scope at the root): " + v + debug(k);
      }
    }
  }
  for (auto& [cname, c] : nodes_) {
    if (c.parent.empty()) continue;
    SimNode& p = nodes_[parent_of(cname)];
    sync::ScopeProvider& scope = *p.scope;
    const auto pv = visible(*p.store);
    const auto cv = visible(*c.store);
    for (const auto& [k, v] : pv) {
      if (!scope.in_scope(cname, k)) continue;
      auto it = cv.find(k);
      if (it == cv.end()) {
        return cname + " lacks " + k + " that " + p.name + " has: " + v + debug(c, p, k);
      }
      if (it->second != v) {
        return cname + " has " + k + " = " + it->second + " but " + p.name + " has " + v +
               debug(c, p, k);
      }
    }
    for (const auto& [k, v] : cv) {
      if (!scope.in_scope(cname, k)) {
        return cname + " holds " + k + " outside its scope" + debug(c, p, k);
      }
      if (!pv.count(k)) return cname + " has " + k + " that " + p.name + " lacks" + debug(c, p, k);
    }
  }
  if (std::string problem = check_against_root(); !problem.empty()) return problem;
  // Acknowledged writes survive, at the writer and at the root.
  for (const auto& [key, e] : expected_) {
    if (multi_writer_.count(key)) continue;
    // A regional hub's write about a site that has left it since (and
    // may be back): the root refuses it once it knows, and the hub
    // forgets it. Whether it reached the root first is a race.
    if (!e.member.empty() && home_changes_[e.member] != e.member_moves) {
      ++outdated_writes_;
      continue;
    }
    for (const std::string& where : {e.writer, std::string("hub")}) {
      if (restored_.count(e.writer)) continue;  // its later writes were rolled back on purpose
      auto got = nodes_[where].store->get(key);
      const std::optional<std::string> now =
          got.ok() ? std::optional<std::string>(*got) : std::nullopt;
      if (now != e.json) {
        return "write of " + key + " by " + e.writer + " lost at " + where + ": expected " +
               e.json.value_or("<deleted>") + ", found " + now.value_or("<deleted>");
      }
    }
  }
  return "";
}

}  // namespace canopy::sim

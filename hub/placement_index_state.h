// The internal state of PlacementIndex (declared in placement_index.h),
// shared by its implementation files: a site's scope keys, the evaluated
// sites and rules, tenants' grants and the selector index. Internal to hub/.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hub/placement_index.h"
#include "model/documents.h"

namespace canopy::hub {
namespace placement_detail {

inline std::string label_pair(std::string_view k, std::string_view v) {
  std::string s;
  s.reserve(k.size() + v.size() + 1);
  s.append(k);
  s.push_back('\0');
  s.append(v);
  return s;
}

}  // namespace placement_detail

// --- Internal state.

// What a placement change reads and writes of each site it visits comes
// first, in its first cache line (a selector change visits thousands of
// sites, and waits on memory for each: PlacementIndex::visit prefetches them).
// A site's scope keys are not stored with it: whether it holds a key is its
// bit in the key's Holders, and its keys are those of its placements (each
// one's key and templates) and of its overrides (scope_of).
struct PlacementIndex::Site {
  uint32_t id = 0;     // dense, in creation order: its bit in placement_detail::Bits
  bool known = false;  // a visible sites/<name> document
  // How the record went away: dropped here because it left this replica's
  // scope (the site moved to another regional hub), or deleted.
  bool moved = false;
  bool deleted = false;
  // Sum of the XXH3 of its scope keys (PlacementIndex::scope_version).
  uint64_t key_hash_sum = 0;
  std::vector<Rule*> placements;  // matching placements, unordered (a few)
  std::string name;
  std::unordered_set<Rule*> overrides;  // overrides in scope
  Labels labels;
  std::string region;  // the record's regional hub; empty: none
};

// A placement or an override, as evaluated.
struct PlacementIndex::Rule {
  std::string key;
  bool exists = false;       // present and valid (model::parse_placement / parse_override)
  model::SiteChoice choice;  // listed sites and label selector
  std::vector<std::string> templates;  // placement: template keys, sorted
  std::string template_key;            // override: the template it patches
  // Override: the sites holding it in scope. (A placement's are matched_bits.)
  std::unordered_set<Site*> matched;
  // Placement: the sites it matches, by id.
  placement_detail::Bits matched_bits;
  TenantGrants* grants = nullptr;          // its tenant's grants (set when it exists)
  std::vector<std::string> indexed_pairs;  // the label pairs it is indexed under
  bool wide = false;  // indexed as a candidate for every site (no candidate pairs)
};

// The grants of one tenant, by grant key.
struct PlacementIndex::TenantGrants {
  std::map<std::string, model::Grant, std::less<>> grants;

  bool gives(const Site& site) const {
    for (const auto& [key, g] : grants) {
      if (g.grants(site.name, site.labels)) return true;
    }
    return false;
  }
};

// Known sites by label pair and by label key, as Bits, and every site by id:
// a selector is evaluated from these, not site by site.
struct PlacementIndex::LabelIndex {
  using Bits = placement_detail::Bits;
  std::unordered_map<std::string, Bits> pairs;  // label_pair(k, v) -> sites
  std::unordered_map<std::string, Bits> keys;   // label key -> sites having it
  Bits known;
  std::vector<Site*> by_id;

  // REQUIRES: site->known, with its labels; remove() before they change.
  void add(const Site& site) {
    known.set(site.id);
    for (const auto& [k, v] : site.labels) {
      pairs[placement_detail::label_pair(k, v)].set(site.id);
      keys[k].set(site.id);
    }
  }
  void remove(const Site& site) {
    known.reset(site.id);
    for (const auto& [k, v] : site.labels) {
      if (auto it = pairs.find(placement_detail::label_pair(k, v)); it != pairs.end()) {
        it->second.reset(site.id);
      }
      if (auto it = keys.find(k); it != keys.end()) it->second.reset(site.id);
    }
  }
  size_t pair_count(std::string_view k, std::string_view v) const {
    auto it = pairs.find(placement_detail::label_pair(k, v));
    return it == pairs.end() ? 0 : it->second.count();
  }
  // Sets `out` to the known sites whose labels the selector matches (none
  // for an empty selector), exactly as model::LabelSelector::matches. `out`
  // keeps its buffer: evaluating into a reused one allocates nothing.
  void select(const model::LabelSelector& sel, Bits* out) const {
    const size_t n = sel.empty() ? 0 : known.words();
    out->assign_zero(n);
    if (n == 0) return;
    uint64_t* w = out->data();
    for (size_t i = 0; i < n; ++i) w[i] = known.word(i);
    auto find = [](const std::unordered_map<std::string, Bits>& m,
                   const std::string& k) -> const Bits* {
      auto it = m.find(k);
      return it == m.end() ? nullptr : &it->second;
    };
    // AND (or AND NOT) with the union of `sets`.
    auto apply = [&](const std::vector<const Bits*>& sets, bool negate) {
      for (size_t i = 0; i < n; ++i) {
        uint64_t u = 0;
        for (const Bits* b : sets) u |= b->word(i);
        w[i] &= negate ? ~u : u;
      }
    };
    std::vector<const Bits*> sets;
    for (const auto& [k, v] : sel.match_labels()) {
      sets.clear();
      if (const Bits* b = find(pairs, placement_detail::label_pair(k, v))) sets.push_back(b);
      apply(sets, false);
    }
    for (const model::Requirement& r : sel.expressions()) {
      sets.clear();
      if (r.op == model::SelectorOp::kIn || r.op == model::SelectorOp::kNotIn) {
        for (const auto& v : r.values) {
          if (const Bits* b = find(pairs, placement_detail::label_pair(r.key, v))) {
            sets.push_back(b);
          }
        }
      } else if (const Bits* b = find(keys, r.key)) {
        sets.push_back(b);
      }
      apply(sets, r.op == model::SelectorOp::kNotIn || r.op == model::SelectorOp::kDoesNotExist);
    }
  }
};

// Rules by one of their label pairs and by listed site name: the candidates
// for a site are the rules indexed under any of its labels or its name.
struct PlacementIndex::SelectorIndex {
  std::unordered_map<std::string, std::unordered_set<Rule*>> by_label;
  std::unordered_map<std::string, std::unordered_set<Rule*>> by_site;
  // Rules whose selector names no label pair every match must carry (only
  // NotIn, Exists, DoesNotExist): candidates for every site.
  std::unordered_set<Rule*> wide;

  void add(Rule* r) {
    if (!r->exists) return;
    if (auto pairs = r->choice.selector.candidate_pairs()) {
      for (const auto& [k, v] : *pairs) {
        r->indexed_pairs.push_back(placement_detail::label_pair(k, v));
        by_label[r->indexed_pairs.back()].insert(r);
      }
    } else if (!r->choice.selector.empty()) {
      r->wide = true;
      wide.insert(r);
    }
    for (const auto& s : r->choice.sites) by_site[s].insert(r);
  }
  void remove(Rule* r) {
    for (const auto& p : r->indexed_pairs) erase(&by_label, p, r);
    r->indexed_pairs.clear();
    if (r->wide) wide.erase(r);
    r->wide = false;
    for (const auto& s : r->choice.sites) erase(&by_site, s, r);
  }
  std::unordered_set<Rule*> candidates(const Site& site) const {
    std::unordered_set<Rule*> out(wide.begin(), wide.end());
    for (const auto& [k, v] : site.labels) {
      auto it = by_label.find(placement_detail::label_pair(k, v));
      if (it != by_label.end()) out.insert(it->second.begin(), it->second.end());
    }
    auto it = by_site.find(site.name);
    if (it != by_site.end()) out.insert(it->second.begin(), it->second.end());
    return out;
  }

 private:
  static void erase(std::unordered_map<std::string, std::unordered_set<Rule*>>* m,
                    const std::string& k, Rule* r) {
    auto it = m->find(k);
    if (it == m->end()) return;
    it->second.erase(r);
    if (it->second.empty()) m->erase(it);
  }
};

template <typename F>
void PlacementIndex::visit(const std::vector<Site*>& sites, F&& f) {
  // Sites kSiteAhead ahead are fetched; by the time a site is kDataAhead
  // ahead it has arrived, and its placements are fetched.
  constexpr size_t kSiteAhead = 16;
  constexpr size_t kDataAhead = 8;
  const size_t n = sites.size();
  for (size_t i = 0; i < n; ++i) {
    if (i + kSiteAhead < n) {
      __builtin_prefetch(sites[i + kSiteAhead]);
    }
    if (i + kDataAhead < n) __builtin_prefetch(sites[i + kDataAhead]->placements.data());
    f(sites[i]);
  }
}

}  // namespace canopy::hub

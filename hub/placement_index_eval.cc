// PlacementIndex's evaluation (declared in placement_index.h): sites,
// placements, overrides and grants as they change, and the scope keys they
// add to or remove from each site.
#include <algorithm>
#include <memory>
#include <utility>

#include "hub/placement_index.h"
#include "hub/placement_index_state.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"

namespace canopy::hub {
namespace {

using model::is_dns1123_label;
using model::template_key;
using placement_detail::Bits;

}  // namespace

// --- Evaluation.

void PlacementIndex::update_site(const std::string& name, const Document& doc, Changes* changes) {
  auto& slot = sites_[name];
  if (!slot) {
    slot = std::make_unique<Site>();
    slot->name = name;
    slot->id = static_cast<uint32_t>(labels_->by_id.size());
    labels_->by_id.push_back(slot.get());
  }
  Site* site = slot.get();

  // The record as the model reads it; one it refuses makes the site unknown
  // (matching nothing), as the site's own renderer then renders nothing.
  model::Labels labels;
  std::string region;
  bool known = false;
  if (doc.exists() && is_dns1123_label(name)) {
    auto record = model::parse_site(name, doc.to_value());
    if (record.ok()) {
      known = true;
      labels = std::move(record->labels);
      region = std::move(record->region);
    }
  }
  if (site->region != region) {
    if (!site->region.empty()) {
      auto count = region_sites_.find(site->region);
      if (--count->second == 0) region_sites_.erase(count);
    }
    if (!region.empty()) ++region_sites_[region];
    site->region = region;
    // Reported with the scope the site has once the commit is evaluated
    // (on_commit fills it in).
    if (changes != nullptr) region_changes_.push_back(RegionChange{name, region, {}});
  }
  const bool was_moved = site->moved;
  if (known) {
    site->moved = site->deleted = false;
  } else if (!dropping_) {
    // Deleted (or refused) at the root: served still, so that its keys are
    // dropped at the site. Also when the record had left this replica
    // before (dropped while a regional hub's new parent had not yet learned
    // that the site is in its region, and the deletion came after): the
    // site would otherwise keep what it holds forever (simulation seed
    // 3502 with CANOPY_SIM_REGION_FAILOVER).
    site->deleted = true;
    site->moved = false;
  } else {
    // The record left this replica's scope: the site is another hub's now,
    // also when the record was refused or deleted here first (a record the
    // model refuses names no region, so the root takes the site back).
    site->moved = true;
    site->deleted = false;
  }
  if (site->moved != was_moved && changes != nullptr) changes->serving.push_back(site->id);
  if (site->known == known && site->labels == labels) return;

  if (site->known) labels_->remove(*site);
  site->known = known;
  site->labels = std::move(labels);
  if (site->known) labels_->add(*site);

  std::unordered_set<Rule*> wanted;
  if (site->known) {
    for (Rule* p : placement_selectors_->candidates(*site)) {
      if (matches(*p, *site)) wanted.insert(p);
    }
  }
  const std::vector<Rule*> had(site->placements.begin(), site->placements.end());
  for (Rule* p : had) {
    if (wanted.contains(p)) continue;
    KeyRef key{&p->key};
    std::vector<KeyRef> templates = key_refs(p->templates);
    remove_placement(site, p, &key, &templates, changes);
    p->matched_bits.reset(site->id);
  }
  for (Rule* p : wanted) {
    if (std::find(site->placements.begin(), site->placements.end(), p) != site->placements.end()) {
      continue;
    }
    KeyRef key{&p->key};
    std::vector<KeyRef> templates = key_refs(p->templates);
    add_placement(site, p, &key, &templates, changes);
    p->matched_bits.set(site->id);
  }

  // Overrides whose selector now matches (or no longer does) while their
  // template stayed in scope.
  const std::unordered_set<Rule*> wanted_overrides = overrides_wanted(site);
  const std::vector<Rule*> held(site->overrides.begin(), site->overrides.end());
  for (Rule* o : held) {
    if (!wanted_overrides.contains(o)) remove_override(site, o, changes);
  }
  for (Rule* o : wanted_overrides) {
    if (!site->overrides.contains(o)) add_override(site, o, changes);
  }
}

void PlacementIndex::update_placement(const std::string& key, std::string_view tenant,
                                      const Document& doc, Changes* changes) {
  auto& slot = placements_[key];
  if (!slot) {
    slot = std::make_unique<Rule>();
    slot->key = key;
  }
  Rule* p = slot.get();

  Rule fresh;
  fresh.key = key;
  if (doc.exists() && is_dns1123_label(tenant)) {
    auto placement = model::parse_placement(doc.to_value());
    if (placement.ok()) {
      fresh.exists = true;
      fresh.grants = grants_of(tenant);
      fresh.choice = std::move(placement->choice);
      for (const auto& t : placement->templates) fresh.templates.push_back(template_key(tenant, t));
    }
  }
  // The sites it matches now, against those it matched: the words that
  // differ name the sites that leave and enter; no other site is visited,
  // unless the placement's templates changed.
  Bits& now = scratch_bits_;
  matching_bits(fresh, &now);
  Bits& had = p->matched_bits;
  const size_t words = std::max(now.words(), had.words());
  auto each = [&](auto&& pick, auto&& f) {
    visit_.clear();
    for (size_t i = 0; i < words; ++i) {
      for (uint64_t x = pick(had.word(i), now.word(i)); x != 0; x &= x - 1) {
        visit_.push_back(labels_->by_id[i * 64 + static_cast<size_t>(__builtin_ctzll(x))]);
      }
    }
    visit(visit_, f);
  };
  // Its keys, resolved once for all the sites visited.
  KeyRef own{&p->key};
  std::vector<KeyRef> old_templates = key_refs(p->templates);
  std::vector<KeyRef> new_templates = key_refs(fresh.templates);
  each([](uint64_t h, uint64_t n) { return h & ~n; },
       [&](Site* s) { remove_placement(s, p, &own, &old_templates, changes); });
  std::vector<std::string> added, removed;
  std::set_difference(fresh.templates.begin(), fresh.templates.end(), p->templates.begin(),
                      p->templates.end(), std::back_inserter(added));
  std::set_difference(p->templates.begin(), p->templates.end(), fresh.templates.begin(),
                      fresh.templates.end(), std::back_inserter(removed));
  each([](uint64_t h, uint64_t n) { return n & ~h; },
       [&](Site* s) { add_placement(s, p, &own, &new_templates, changes); });
  if (!added.empty() || !removed.empty()) {
    std::vector<KeyRef> to_add = key_refs(added), to_remove = key_refs(removed);
    each([](uint64_t h, uint64_t n) { return h & n; },
         [&](Site* s) {
           for (auto& t : to_add) ref_template(s, &t, changes);
           for (auto& t : to_remove) unref_template(s, &t, changes);
         });
  }

  placement_selectors_->remove(p);
  p->exists = fresh.exists;
  p->grants = fresh.grants;
  p->choice = std::move(fresh.choice);
  p->templates = std::move(fresh.templates);
  std::swap(p->matched_bits, now);  // the old set's buffer is the next scratch
  placement_selectors_->add(p);
}

void PlacementIndex::update_override(const std::string& key, std::string_view tenant,
                                     const Document& doc, Changes* changes) {
  auto& slot = overrides_[key];
  if (!slot) {
    slot = std::make_unique<Rule>();
    slot->key = key;
  }
  Rule* o = slot.get();

  Rule fresh;
  fresh.key = key;
  if (doc.exists() && is_dns1123_label(tenant)) {
    auto override_doc = model::parse_override(doc.to_value());
    if (override_doc.ok()) {
      fresh.exists = true;
      fresh.grants = grants_of(tenant);
      fresh.template_key = template_key(tenant, override_doc->template_name);
      fresh.choice = std::move(override_doc->choice);
    }
  }

  // The sites to hold it: those matching it that hold its template.
  std::unordered_set<Site*> now;
  if (fresh.exists) {
    auto holders = holders_.find(fresh.template_key);
    if (holders != holders_.end()) {
      Bits matching;
      matching_bits(fresh, &matching);
      matching.for_each([&](uint32_t id) {
        if (holders->second.sites.test(id)) now.insert(labels_->by_id[id]);
      });
    }
  }

  const std::vector<Site*> before(o->matched.begin(), o->matched.end());
  for (Site* s : before) {
    if (!now.contains(s)) remove_override(s, o, changes);
  }
  for (Site* s : now) {
    if (!o->matched.contains(s)) add_override(s, o, changes);
  }

  override_selectors_->remove(o);
  if (!o->template_key.empty()) {
    auto it = overrides_by_template_.find(o->template_key);
    if (it != overrides_by_template_.end()) {
      it->second.erase(o);
      if (it->second.empty()) overrides_by_template_.erase(it);
    }
  }
  o->exists = fresh.exists;
  o->grants = fresh.grants;
  o->template_key = std::move(fresh.template_key);
  o->choice = std::move(fresh.choice);
  override_selectors_->add(o);
  if (o->exists) overrides_by_template_[o->template_key].insert(o);
  CANOPY_CHECK(o->matched == now);
}

bool PlacementIndex::matches(const Rule& rule, const Site& site) const {
  return rule.exists && site.known && rule.choice.matches(site.name, site.labels) &&
         rule.grants != nullptr && rule.grants->gives(site);
}

PlacementIndex::TenantGrants* PlacementIndex::grants_of(std::string_view tenant) {
  auto it = grants_.find(std::string(tenant));
  if (it == grants_.end()) {
    it = grants_.emplace(std::string(tenant), std::make_unique<TenantGrants>()).first;
  }
  return it->second.get();
}

void PlacementIndex::update_grant(const std::string& key, std::string_view tenant,
                                  const Document& doc, Changes* changes) {
  if (doc.exists() || !doc.empty()) {  // a deleted grant stays listed: its tombstone
    grant_keys_.insert(key);
  } else {
    grant_keys_.erase(key);
  }
  if (!is_dns1123_label(tenant)) return;
  TenantGrants* g = grants_of(tenant);
  std::optional<model::Grant> grant;
  if (doc.exists()) {
    auto parsed = model::parse_grant(doc.to_value());
    if (parsed.ok()) grant = std::move(parsed).value();
  }
  if (grant) {
    g->grants.insert_or_assign(key, std::move(*grant));
  } else if (g->grants.erase(key) == 0) {
    return;  // neither before nor now: nothing changes
  }
  // Grants change rarely and a tenant has few rules: evaluate each of its
  // placements, then its overrides, as if it had been written again.
  const std::string prefix = "t/" + std::string(tenant) + "/";
  std::vector<std::string> placements, overrides;
  for (const auto& [k, rule] : placements_) {
    if (k.starts_with(prefix)) placements.push_back(k);
  }
  for (const auto& [k, rule] : overrides_) {
    if (k.starts_with(prefix)) overrides.push_back(k);
  }
  std::sort(placements.begin(), placements.end());
  std::sort(overrides.begin(), overrides.end());
  for (const auto& k : placements) update_placement(k, tenant, docs_.at(k), changes);
  for (const auto& k : overrides) update_override(k, tenant, docs_.at(k), changes);
}

std::vector<std::string> PlacementIndex::grant_keys() {
  std::lock_guard lock(mu_);
  return {grant_keys_.begin(), grant_keys_.end()};
}

bool PlacementIndex::granted(std::string_view tenant, std::string_view site) {
  std::lock_guard lock(mu_);
  Site* s = site_or_null(site);
  auto it = grants_.find(std::string(tenant));
  return s != nullptr && s->known && it != grants_.end() && it->second->gives(*s);
}

void PlacementIndex::matching_bits(const Rule& rule, Bits* out) {
  out->assign_zero(0);
  if (!rule.exists) return;
  labels_->select(rule.choice.selector, out);
  // A tenant granted every site needs no check site by site.
  bool all_granted = false;
  if (rule.grants != nullptr) {
    for (const auto& [key, g] : rule.grants->grants) all_granted = all_granted || g.all_sites;
  }
  if (!all_granted) {
    std::vector<uint32_t> refused;
    out->for_each([&](uint32_t id) {
      if (rule.grants == nullptr || !rule.grants->gives(*labels_->by_id[id])) refused.push_back(id);
    });
    for (uint32_t id : refused) out->reset(id);
  }
  for (const auto& name : rule.choice.sites) {
    Site* s = site_or_null(name);
    if (s != nullptr && matches(rule, *s)) out->set(s->id);
  }
}

std::unordered_set<PlacementIndex::Rule*> PlacementIndex::overrides_wanted(Site* site) {
  std::unordered_set<Rule*> out;
  if (!site->known) return out;
  for (Rule* o : override_selectors_->candidates(*site)) {
    if (matches(*o, *site) && holds(*site, o->template_key)) out.insert(o);
  }
  return out;
}

std::vector<PlacementIndex::KeyRef> PlacementIndex::key_refs(const std::vector<std::string>& keys) {
  std::vector<KeyRef> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(KeyRef{&k});
  return out;
}

PlacementIndex::Holder* PlacementIndex::resolve(KeyRef* k) {
  if (k->holder == nullptr) k->holder = holder_of(*k->key);
  return k->holder;
}

const std::unordered_set<PlacementIndex::Rule*>* PlacementIndex::overrides_of(KeyRef* t) {
  if (!t->overrides_known) {
    auto it = overrides_by_template_.find(*t->key);
    t->overrides = it == overrides_by_template_.end() ? nullptr : &it->second;
    t->overrides_known = true;
  }
  return t->overrides;
}

void PlacementIndex::add_placement(Site* site, Rule* placement, KeyRef* key,
                                   std::vector<KeyRef>* templates, Changes* changes) {
  site->placements.push_back(placement);
  ref(site, key, changes);
  for (auto& t : *templates) ref_template(site, &t, changes);
}

void PlacementIndex::remove_placement(Site* site, Rule* placement, KeyRef* key,
                                      std::vector<KeyRef>* templates, Changes* changes) {
  auto it = std::find(site->placements.begin(), site->placements.end(), placement);
  CANOPY_CHECK(it != site->placements.end());
  *it = site->placements.back();
  site->placements.pop_back();
  for (auto& t : *templates) unref_template(site, &t, changes);
  unref(site, key, changes);
}

void PlacementIndex::ref_template(Site* site, KeyRef* t, Changes* changes) {
  if (!ref(site, t, changes)) return;
  const auto* overrides = overrides_of(t);
  if (overrides == nullptr) return;
  for (Rule* o : *overrides) {
    if (matches(*o, *site)) add_override(site, o, changes);
  }
}

void PlacementIndex::unref_template(Site* site, KeyRef* t, Changes* changes) {
  if (!unref(site, t, changes)) return;
  const auto* overrides = overrides_of(t);
  if (overrides == nullptr) return;
  for (Rule* o : *overrides) {
    if (site->overrides.contains(o)) remove_override(site, o, changes);
  }
}

void PlacementIndex::add_override(Site* site, Rule* override_rule, Changes* changes) {
  if (!site->overrides.insert(override_rule).second) return;
  override_rule->matched.insert(site);
  ref(site, override_rule->key, changes);
}

void PlacementIndex::remove_override(Site* site, Rule* override_rule, Changes* changes) {
  if (site->overrides.erase(override_rule) == 0) return;
  override_rule->matched.erase(site);
  unref(site, override_rule->key, changes);
}

bool PlacementIndex::ref(Site* site, KeyRef* k, Changes* changes) {
  Holder* holder = resolve(k);
  if (holder->second.sites.test(site->id)) {
    ++holder->second.extra[site->id];
    return false;
  }
  enter(site, holder, changes);
  return true;
}

bool PlacementIndex::unref(Site* site, KeyRef* k, Changes* changes) {
  if (k->holder == nullptr) {
    auto it = holders_.find(*k->key);
    CANOPY_CHECK(it != holders_.end());
    k->holder = &*it;
  }
  Holder* holder = k->holder;
  CANOPY_CHECK(holder->second.sites.test(site->id));
  auto& extra = holder->second.extra;
  if (!extra.empty()) {
    if (auto it = extra.find(site->id); it != extra.end()) {
      if (--it->second == 0) extra.erase(it);
      return false;
    }
  }
  leave(site, holder, changes);
  return true;
}

bool PlacementIndex::ref(Site* site, const std::string& key, Changes* changes) {
  KeyRef k{&key};
  return ref(site, &k, changes);
}

bool PlacementIndex::unref(Site* site, const std::string& key, Changes* changes) {
  KeyRef k{&key};
  return unref(site, &k, changes);
}

bool PlacementIndex::holds(const Site& site, std::string_view key) const {
  auto it = holders_.find(key);
  return it != holders_.end() && it->second.sites.test(site.id);
}

PlacementIndex::Holder* PlacementIndex::holder_of(const std::string& key) {
  auto [it, inserted] = holders_.try_emplace(key);
  if (inserted) it->second.hash = key_hash(key);
  return &*it;
}

void PlacementIndex::enter(Site* site, Holder* holder, Changes* changes) {
  holder->second.sites.set(site->id);
  ++holder->second.count;
  site->key_hash_sum += holder->second.hash;
  generation_.fetch_add(1, std::memory_order_release);
  if (changes != nullptr) changes->notes.push_back(Note{site->id, 1, &holder->first});
}

void PlacementIndex::leave(Site* site, Holder* holder, Changes* changes) {
  holder->second.sites.reset(site->id);
  --holder->second.count;
  site->key_hash_sum -= holder->second.hash;
  generation_.fetch_add(1, std::memory_order_release);
  if (changes != nullptr) changes->notes.push_back(Note{site->id, -1, &holder->first});
  // Erased once the document is evaluated, if no site holds it then.
  if (holder->second.count == 0) emptied_.push_back(&holder->first);
}

PlacementIndex::Site* PlacementIndex::site_or_null(std::string_view name) {
  auto it = sites_.find(name);
  return it == sites_.end() ? nullptr : it->second.get();
}

}  // namespace canopy::hub

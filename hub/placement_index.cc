#include "hub/placement_index.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"

namespace canopy::hub {
namespace {

using model::is_dns1123_label;
using model::kSitesPrefix;
using model::kTenantsPrefix;
using model::site_key;
using model::template_key;

using json = nlohmann::json;

// Greater than every character a store key may hold: P + kKeyEnd bounds every
// key that starts with P.
constexpr std::string_view kKeyEnd = kKeyMax;

std::string label_pair(std::string_view k, std::string_view v) {
  std::string s;
  s.reserve(k.size() + v.size() + 1);
  s.append(k);
  s.push_back('\0');
  s.append(v);
  return s;
}

// The smallest string greater than `key`.
std::string successor(std::string_view key) {
  std::string s(key);
  s.push_back('\0');
  return s;
}

// A site's scope keys (views of holders_' keys) with the number of reasons
// each is in scope, sorted by key. A flat array rather than a tree: a scope
// holds tens of keys, and the version hash reads all of them whenever the
// scope changes, so contiguous entries cost one cache miss a key, not two.
class ScopeKeys {
 public:
  struct Entry {
    std::string_view key;
    uint32_t count;
  };
  using const_iterator = std::vector<Entry>::const_iterator;

  const_iterator begin() const { return entries_.begin(); }
  const_iterator end() const { return entries_.end(); }
  size_t size() const { return entries_.size(); }
  bool contains(std::string_view key) const {
    auto it = lower_bound(key);
    return it != entries_.end() && it->key == key;
  }
  // The entry of `key`, nullptr when it is not in scope.
  Entry* find(std::string_view key) {
    auto it = lower_bound(key);
    return it != entries_.end() && it->key == key ? &*it : nullptr;
  }
  // REQUIRES: `key` is not in scope and outlives its entry.
  void insert(std::string_view key) { entries_.insert(lower_bound(key), Entry{key, 1}); }
  // REQUIRES: `e` is an entry of this scope.
  void erase(Entry* e) { entries_.erase(entries_.begin() + (e - entries_.data())); }

 private:
  std::vector<Entry>::iterator lower_bound(std::string_view key) {
    return std::lower_bound(entries_.begin(), entries_.end(), key,
                            [](const Entry& e, std::string_view k) { return e.key < k; });
  }
  std::vector<Entry>::const_iterator lower_bound(std::string_view key) const {
    return std::lower_bound(entries_.begin(), entries_.end(), key,
                            [](const Entry& e, std::string_view k) { return e.key < k; });
  }

  std::vector<Entry> entries_;
};

}  // namespace

// --- Internal state.

struct PlacementIndex::Site {
  std::string name;
  bool known = false;  // a visible sites/<name> document
  Labels labels;
  std::string region;  // the record's regional hub; empty: none
  // How the record went away: dropped here because it left this replica's
  // scope (the site moved to another regional hub), or deleted.
  bool moved = false;
  bool deleted = false;
  std::unordered_set<Rule*> placements;  // matching placements
  std::unordered_set<Rule*> overrides;   // overrides in scope
  ScopeKeys scope;
  bool version_valid = false;
  uint64_t version = 0;
  // Scratch of matching_sites: equal to mark_ when the site is in its result.
  uint64_t mark = 0;
};

// A placement or an override, as evaluated.
struct PlacementIndex::Rule {
  std::string key;
  bool exists = false;       // present and valid (model::parse_placement / parse_override)
  model::SiteChoice choice;  // listed sites and label selector
  std::vector<std::string> templates;  // placement: template keys, sorted
  std::string template_key;            // override: the template it patches
  // Placement: the sites it matches. Override: the sites holding it in scope.
  std::unordered_set<Site*> matched;
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
        r->indexed_pairs.push_back(label_pair(k, v));
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
      auto it = by_label.find(label_pair(k, v));
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

PlacementIndex::PlacementIndex()
    : placement_selectors_(std::make_unique<SelectorIndex>()),
      override_selectors_(std::make_unique<SelectorIndex>()) {}

PlacementIndex::~PlacementIndex() {
  if (attached_ != nullptr) attached_->unsubscribe(subscription_);
}

StatusOr<std::unique_ptr<PlacementIndex>> PlacementIndex::attach(Store* store) {
  auto index = std::make_unique<PlacementIndex>();
  PlacementIndex* raw = index.get();
  // Subscribe before loading: whatever commits meanwhile is joined either way.
  index->subscription_ = store->subscribe([raw](const v1::LogEntry& e) { raw->on_commit(e); });
  index->attached_ = store;
  CANOPY_RETURN_IF_ERROR(index->load(*store));
  return index;
}

PlacementIndex::DocKind PlacementIndex::classify(std::string_view key, std::string_view* tenant,
                                                 std::string_view* name) {
  const model::ParsedKey k = model::parse_key(key);
  switch (k.kind) {
    case model::KeyKind::kSite:
      *name = k.site;
      return DocKind::kSite;
    case model::KeyKind::kPlacement:
      *tenant = k.tenant;
      *name = k.name;
      return DocKind::kPlacement;
    case model::KeyKind::kOverride:
      *tenant = k.tenant;
      *name = k.name;
      return DocKind::kOverride;
    case model::KeyKind::kGrant:
      *tenant = k.tenant;
      *name = k.name;
      return DocKind::kGrant;
    default:
      return DocKind::kNone;
  }
}

// --- Loading.

Status PlacementIndex::load(Store& store) {
  auto merge = [this](const v1::DocState& st) {
    std::lock_guard lock(mu_);
    docs_[st.key()].merge(st.root());
  };

  // Site records: one step per site record and one per site subtree, which is
  // skipped whole (status documents are many and not needed here).
  const std::string sites_end = std::string(kSitesPrefix) + std::string(kKeyEnd);
  std::string cursor(kSitesPrefix);
  while (true) {
    auto page = store.states(cursor, sites_end, nullptr, 1);
    if (!page.ok()) return page.status();
    if (page->empty()) break;
    const v1::DocState& st = page->front();
    std::string_view rest = std::string_view(st.key()).substr(kSitesPrefix.size());
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      merge(st);
      cursor = successor(st.key());
    } else {
      cursor = std::string(kSitesPrefix) + std::string(rest.substr(0, slash)) + "/" +
               std::string(kKeyEnd);
    }
  }

  // Tenants: for each, its placements and overrides page by page; templates
  // and everything else are skipped.
  const std::string tenants_end = std::string(kTenantsPrefix) + std::string(kKeyEnd);
  cursor = std::string(kTenantsPrefix);
  while (true) {
    auto page = store.states(cursor, tenants_end, nullptr, 1);
    if (!page.ok()) return page.status();
    if (page->empty()) break;
    const std::string& first = page->front().key();
    std::string_view rest = std::string_view(first).substr(kTenantsPrefix.size());
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      cursor = successor(first);
      continue;
    }
    const std::string tenant_prefix =
        std::string(kTenantsPrefix) + std::string(rest.substr(0, slash)) + "/";
    for (const char* kind : {"grants/", "overrides/", "placements/"}) {
      const std::string prefix = tenant_prefix + kind;
      const std::string end = prefix + std::string(kKeyEnd);
      auto is_doc = [&prefix](std::string_view k) {
        return k.substr(prefix.size()).find('/') == std::string_view::npos;
      };
      std::string from = prefix;
      while (true) {
        auto docs = store.states(from, end, is_doc, kLoadPageSize);
        if (!docs.ok()) return docs.status();
        for (const auto& st : *docs) merge(st);
        if (docs->size() < kLoadPageSize) break;
        from = successor(docs->back().key());
      }
    }
    cursor = tenant_prefix + std::string(kKeyEnd);
  }

  std::lock_guard lock(mu_);
  std::vector<std::string> sites, grants, placements, overrides;
  for (const auto& [key, doc] : docs_) {
    std::string_view tenant, name;
    switch (classify(key, &tenant, &name)) {
      case DocKind::kSite:
        sites.push_back(key);
        break;
      case DocKind::kPlacement:
        placements.push_back(key);
        break;
      case DocKind::kOverride:
        overrides.push_back(key);
        break;
      case DocKind::kGrant:
        grants.push_back(key);
        break;
      case DocKind::kNone:
        break;
    }
  }
  // No changes are reported for what load finds, so none are recorded: at
  // 100,000 sites they were millions of small allocations, all freed at once.
  for (auto* group : {&sites, &grants, &placements, &overrides}) {
    std::sort(group->begin(), group->end());
    for (const auto& key : *group) evaluate(key, nullptr);
  }
  loaded_ = true;
  spdlog::info("placement index: {} sites, {} grants, {} placements, {} overrides", sites.size(),
               grants.size(), placements.size(), overrides.size());
  return ok_status();
}

// --- Following commits.

void PlacementIndex::on_commit(const v1::LogEntry& entry) {
  const std::string* key = nullptr;
  if (entry.has_delta()) {
    key = &entry.delta().key();
  } else if (entry.has_doc()) {
    key = &entry.doc().key();
  } else {
    return;
  }
  std::string_view tenant, name;
  if (classify(*key, &tenant, &name) == DocKind::kNone) return;

  std::vector<sync::ScopeChange> changes;
  ScopeListener listener;
  std::vector<RegionChange> region_changes;
  RegionListener region_listener;
  {
    std::lock_guard lock(mu_);
    Document& doc = docs_[*key];
    if (entry.index() == 0) {
      doc = Document();  // dropped locally (left this replica's scope)
    } else if (entry.has_delta()) {
      doc.apply(entry.delta(), nullptr);
    } else {
      doc.merge(entry.doc().root());
    }
    if (!loaded_) return;
    Changes net;
    dropping_ = entry.index() == 0;
    evaluate(*key, &net);
    dropping_ = false;
    changes = collect(&net);
    listener = listener_;
    for (auto& rc : region_changes_) {
      if (const Site* site = site_or_null(rc.site)) {
        for (const auto& e : site->scope) rc.scope_keys.emplace_back(e.key);
      }
    }
    region_changes.swap(region_changes_);
    region_listener = region_listener_;
  }
  if (listener) {
    for (const auto& c : changes) listener(c);
  }
  if (region_listener) {
    for (const auto& c : region_changes) region_listener(c);
  }
}

void PlacementIndex::on_region_change(RegionListener listener) {
  std::lock_guard lock(mu_);
  region_listener_ = std::move(listener);
}

std::map<std::string, std::string> PlacementIndex::site_regions() {
  std::map<std::string, std::string> out;
  std::lock_guard lock(mu_);
  for (const auto& [name, site] : sites_) {
    if (site->known && !site->region.empty()) out.emplace(name, site->region);
  }
  return out;
}

bool PlacementIndex::serves(std::string_view site) {
  std::lock_guard lock(mu_);
  const Site* s = site_or_null(site);
  if (s == nullptr) return serve_unknown_;
  if (s->known || s->deleted) return true;  // a deleted record: its keys are dropped
  if (s->moved) return false;
  return serve_unknown_;
}

void PlacementIndex::set_serve_unknown(bool serve) {
  std::lock_guard lock(mu_);
  serve_unknown_ = serve;
}

void PlacementIndex::on_scope_change(ScopeListener listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

void PlacementIndex::evaluate(const std::string& key, Changes* changes) {
  std::string_view tenant, name;
  const DocKind kind = classify(key, &tenant, &name);
  const Document& doc = docs_.at(key);
  switch (kind) {
    case DocKind::kSite:
      update_site(std::string(name), doc, changes);
      break;
    case DocKind::kPlacement:
      update_placement(key, tenant, doc, changes);
      break;
    case DocKind::kOverride:
      update_override(key, tenant, doc, changes);
      break;
    case DocKind::kGrant:
      update_grant(key, tenant, doc, changes);
      break;
    case DocKind::kNone:
      break;
  }
}

std::vector<sync::ScopeChange> PlacementIndex::collect(Changes* changes) {
  std::vector<sync::ScopeChange> out;
  for (auto& [site, keys] : *changes) {
    sync::ScopeChange c;
    c.child = site->name;
    c.version = version_locked(site);
    for (auto& [key, net] : keys) {
      if (net > 0) c.entered.push_back(key);
      if (net < 0) c.left.push_back(key);
    }
    if (!c.entered.empty() || !c.left.empty()) out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.child < b.child; });
  return out;
}

// --- Evaluation.

void PlacementIndex::update_site(const std::string& name, const Document& doc, Changes* changes) {
  auto& slot = sites_[name];
  if (!slot) {
    slot = std::make_unique<Site>();
    slot->name = name;
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
    site->region = region;
    // Reported with the scope the site has once the commit is evaluated
    // (on_commit fills it in).
    if (changes != nullptr) region_changes_.push_back(RegionChange{name, region, {}});
  }
  if (known) {
    site->moved = site->deleted = false;
  } else if (site->known) {
    (dropping_ ? site->moved : site->deleted) = true;
  }
  if (site->known == known && site->labels == labels) return;

  if (site->known) {
    for (const auto& [k, v] : site->labels) {
      auto it = sites_by_label_.find(label_pair(k, v));
      if (it == sites_by_label_.end()) continue;
      it->second.erase(site);
      if (it->second.empty()) sites_by_label_.erase(it);
    }
  }
  site->known = known;
  site->labels = std::move(labels);
  if (site->known) {
    for (const auto& [k, v] : site->labels) sites_by_label_[label_pair(k, v)].insert(site);
  }

  std::unordered_set<Rule*> wanted;
  if (site->known) {
    for (Rule* p : placement_selectors_->candidates(*site)) {
      if (matches(*p, *site)) wanted.insert(p);
    }
  }
  const std::vector<Rule*> had(site->placements.begin(), site->placements.end());
  for (Rule* p : had) {
    if (wanted.contains(p)) continue;
    remove_placement(site, p, p->templates, changes);
    p->matched.erase(site);
  }
  for (Rule* p : wanted) {
    if (site->placements.contains(p)) continue;
    add_placement(site, p, p->templates, changes);
    p->matched.insert(site);
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
  // The sites it matches now are marked; p->matched is edited in place, by
  // the sites that leave and enter, not rebuilt (a wide placement matches
  // most of the fleet, and few of its sites change).
  const std::vector<Site*> now = matching_sites(fresh);
  std::vector<Site*> left;
  for (Site* s : p->matched) {
    if (s->mark != mark_) left.push_back(s);
  }
  for (Site* s : left) remove_placement(s, p, p->templates, changes);
  std::vector<std::string> added, removed;
  std::set_difference(fresh.templates.begin(), fresh.templates.end(), p->templates.begin(),
                      p->templates.end(), std::back_inserter(added));
  std::set_difference(p->templates.begin(), p->templates.end(), fresh.templates.begin(),
                      fresh.templates.end(), std::back_inserter(removed));
  std::vector<Site*> entered;
  for (Site* s : now) {
    if (!p->matched.contains(s)) {
      add_placement(s, p, fresh.templates, changes);
      entered.push_back(s);
      continue;
    }
    for (const auto& t : added) ref_template(s, t, changes);
    for (const auto& t : removed) unref_template(s, t, changes);
  }

  placement_selectors_->remove(p);
  p->exists = fresh.exists;
  p->grants = fresh.grants;
  p->choice = std::move(fresh.choice);
  p->templates = std::move(fresh.templates);
  for (Site* s : left) p->matched.erase(s);
  p->matched.insert(entered.begin(), entered.end());
  placement_selectors_->add(p);
  CANOPY_CHECK(p->matched.size() == now.size());
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

  // The sites to hold it: those matching it that hold its template. Walk
  // whichever is smaller, the template's holders or the selector's sites.
  std::unordered_set<Site*> now;
  if (fresh.exists) {
    auto holders = holders_.find(fresh.template_key);
    const size_t by_selector = fresh.choice.sites.size() + selector_candidates(fresh);
    if (holders == holders_.end()) {
      // No site holds the template.
    } else if (holders->second.size() <= by_selector) {
      for (Site* s : holders->second) {
        if (matches(fresh, *s)) now.insert(s);
      }
    } else {
      for (Site* s : matching_sites(fresh)) {
        if (s->scope.contains(fresh.template_key)) now.insert(s);
      }
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
  if (doc.exists()) {
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

size_t PlacementIndex::selector_candidates(const Rule& rule) const {
  if (rule.choice.selector.empty()) return 0;
  auto pairs = rule.choice.selector.candidate_pairs();
  if (!pairs) return sites_.size();
  size_t n = 0;
  for (const auto& [k, v] : *pairs) {
    auto it = sites_by_label_.find(label_pair(k, v));
    if (it != sites_by_label_.end()) n += it->second.size();
  }
  return n;
}

std::vector<PlacementIndex::Site*> PlacementIndex::matching_sites(const Rule& rule) {
  const uint64_t mark = ++mark_;
  std::vector<Site*> out;
  if (!rule.exists) return out;
  auto take = [&out, mark](Site* s) {
    if (s->mark == mark) return;  // listed and matched by the selector as well
    s->mark = mark;
    out.push_back(s);
  };
  // Room for every candidate up front: growing by doubling to tens of
  // thousands of sites costs more than the matching does.
  out.reserve(rule.choice.sites.size() + selector_candidates(rule));
  for (const auto& name : rule.choice.sites) {
    Site* s = site_or_null(name);
    if (s != nullptr && matches(rule, *s)) take(s);
  }
  if (rule.choice.selector.empty()) return out;
  auto pairs = rule.choice.selector.candidate_pairs();
  if (!pairs) {
    // Only NotIn / Exists / DoesNotExist: any known site may match.
    for (const auto& [name, s] : sites_) {
      if (matches(rule, *s)) take(s.get());
    }
    return out;
  }
  // Every match carries one of the candidate pairs.
  for (const auto& [k, v] : *pairs) {
    auto it = sites_by_label_.find(label_pair(k, v));
    if (it == sites_by_label_.end()) continue;
    for (Site* s : it->second) {
      if (matches(rule, *s)) take(s);
    }
  }
  return out;
}

std::unordered_set<PlacementIndex::Rule*> PlacementIndex::overrides_wanted(Site* site) {
  std::unordered_set<Rule*> out;
  if (!site->known) return out;
  for (Rule* o : override_selectors_->candidates(*site)) {
    if (matches(*o, *site) && site->scope.contains(o->template_key)) out.insert(o);
  }
  return out;
}

void PlacementIndex::add_placement(Site* site, Rule* placement,
                                   const std::vector<std::string>& templates, Changes* changes) {
  site->placements.insert(placement);
  ref(site, placement->key, changes);
  for (const auto& t : templates) ref_template(site, t, changes);
}

void PlacementIndex::remove_placement(Site* site, Rule* placement,
                                      const std::vector<std::string>& templates, Changes* changes) {
  site->placements.erase(placement);
  for (const auto& t : templates) unref_template(site, t, changes);
  unref(site, placement->key, changes);
}

void PlacementIndex::ref_template(Site* site, const std::string& key, Changes* changes) {
  if (!ref(site, key, changes)) return;
  auto it = overrides_by_template_.find(key);
  if (it == overrides_by_template_.end()) return;
  for (Rule* o : it->second) {
    if (matches(*o, *site)) add_override(site, o, changes);
  }
}

void PlacementIndex::unref_template(Site* site, const std::string& key, Changes* changes) {
  if (!unref(site, key, changes)) return;
  auto it = overrides_by_template_.find(key);
  if (it == overrides_by_template_.end()) return;
  for (Rule* o : it->second) {
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

bool PlacementIndex::ref(Site* site, const std::string& key, Changes* changes) {
  if (ScopeKeys::Entry* e = site->scope.find(key)) {
    ++e->count;
    return false;
  }
  auto holder = holders_.try_emplace(key).first;
  holder->second.insert(site);
  site->scope.insert(holder->first);
  site->version_valid = false;
  if (changes != nullptr) (*changes)[site][key] += 1;
  return true;
}

bool PlacementIndex::unref(Site* site, const std::string& key, Changes* changes) {
  ScopeKeys::Entry* e = site->scope.find(key);
  CANOPY_CHECK(e != nullptr);
  if (--e->count > 0) return false;
  site->scope.erase(e);
  auto holder = holders_.find(key);
  CANOPY_CHECK(holder != holders_.end());
  holder->second.erase(site);
  if (holder->second.empty()) holders_.erase(holder);
  site->version_valid = false;
  if (changes != nullptr) (*changes)[site][key] -= 1;
  return true;
}

PlacementIndex::Site* PlacementIndex::site_or_null(std::string_view name) {
  auto it = sites_.find(name);
  return it == sites_.end() ? nullptr : it->second.get();
}

// --- Queries.

namespace {}  // namespace

bool PlacementIndex::in_scope(std::string_view site, std::string_view key) {
  if (model::in_site_subtree(site, key)) return true;
  if (!key.starts_with(kTenantsPrefix)) return false;
  std::lock_guard lock(mu_);
  const Site* s = site_or_null(site);
  return s != nullptr && s->scope.contains(key);
}

std::optional<sync::ScopeProvider::Listing> PlacementIndex::list_scope(std::string_view site) {
  if (!is_dns1123_label(site)) return Listing{};
  // Its own subtree (in_own_subtree), and the tenants' keys placed on it.
  Listing out;
  out.keys.push_back(site_key(site));
  out.prefixes.push_back(site_key(site) + "/");
  std::lock_guard lock(mu_);
  const Site* s = site_or_null(site);
  if (s != nullptr) {
    out.keys.reserve(s->scope.size() + 1);
    for (const auto& e : s->scope) out.keys.emplace_back(e.key);
  }
  return out;
}

std::vector<std::string> PlacementIndex::writable_prefixes(std::string_view site) {
  if (!is_dns1123_label(site)) return {};
  const std::string base = site_key(site);
  return {base + "/status/", base + "/overrides/"};
}

bool PlacementIndex::writable_by(std::string_view site, std::string_view key) {
  for (const auto& prefix : writable_prefixes(site)) {
    if (key.size() > prefix.size() && key.starts_with(prefix)) return true;
  }
  return false;
}

uint64_t PlacementIndex::version(std::string_view site) {
  std::lock_guard lock(mu_);
  return version_locked(site_or_null(site));
}

uint64_t PlacementIndex::version_locked(Site* s) {
  if (s != nullptr && s->version_valid) return s->version;
  // One pass over the keys into a reused buffer: XXH3 of the concatenation,
  // the same value as hashing key by key, without a state to allocate.
  version_input_.clear();
  if (s != nullptr) {
    for (const auto& e : s->scope) {
      version_input_.append(e.key);
      version_input_.push_back('\n');
    }
  }
  const uint64_t v = XXH3_64bits(version_input_.data(), version_input_.size());
  if (s != nullptr) {
    s->version = v;
    s->version_valid = true;
  }
  return v;
}

std::vector<std::string> PlacementIndex::sites_for(std::string_view key) {
  if (key.starts_with(kSitesPrefix)) {
    std::string_view rest = key.substr(kSitesPrefix.size());
    rest = rest.substr(0, rest.find('/'));
    if (!is_dns1123_label(rest)) return {};
    return {std::string(rest)};
  }
  std::vector<std::string> out;
  std::lock_guard lock(mu_);
  auto it = holders_.find(std::string(key));
  if (it == holders_.end()) return out;
  out.reserve(it->second.size());
  for (const Site* s : it->second) out.push_back(s->name);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> PlacementIndex::known_sites(std::string_view after, size_t limit) {
  std::vector<std::string> out;
  std::lock_guard lock(mu_);
  for (auto it = sites_.upper_bound(after); it != sites_.end() && out.size() < limit; ++it) {
    if (it->second->known) out.push_back(it->first);
  }
  return out;
}

IndexCounts PlacementIndex::counts() {
  IndexCounts c;
  std::lock_guard lock(mu_);
  for (const auto& [name, site] : sites_) c.known_sites += site->known ? 1 : 0;
  for (const auto& [key, rule] : placements_) c.placements += rule->exists ? 1 : 0;
  for (const auto& [key, rule] : overrides_) c.overrides += rule->exists ? 1 : 0;
  return c;
}

std::optional<Labels> PlacementIndex::site_labels(std::string_view site) {
  std::lock_guard lock(mu_);
  const Site* s = site_or_null(site);
  if (s == nullptr || !s->known) return std::nullopt;
  return s->labels;
}

std::vector<std::string> PlacementIndex::scope_keys(std::string_view site) {
  std::vector<std::string> out;
  std::lock_guard lock(mu_);
  const Site* s = site_or_null(site);
  if (s == nullptr) return out;
  out.reserve(s->scope.size());
  for (const auto& e : s->scope) out.emplace_back(e.key);
  return out;
}

std::vector<std::string> PlacementIndex::placements_of(std::string_view site) {
  std::vector<std::string> out;
  std::lock_guard lock(mu_);
  const Site* s = site_or_null(site);
  if (s == nullptr) return out;
  for (const Rule* p : s->placements) out.push_back(p->key);
  std::sort(out.begin(), out.end());
  return out;
}

void register_site(Store* store, const std::string& child, const v1::Hello& hello) {
  // The hub's record is the one source of truth for a site's labels: a
  // spoke's configured labels are only its request, taken when the hub has no
  // record of the site yet. Later edits go through the API.
  auto existing = store->get(site_key(child));
  if (existing.ok()) return;
  if (existing.status().code() != StatusCode::kNotFound) {
    spdlog::warn("registering site {}: {}", child, existing.status().to_string());
    return;
  }
  model::SiteRecord record{child, {}, {}};
  for (const auto& [k, v] : hello.labels()) record.labels.emplace(k, v);
  const json doc = model::site_document(record);
  if (auto valid = model::parse_site(child, doc); !valid.ok()) {
    spdlog::warn("site {} asked for labels the hub refuses: {}; registered without labels", child,
                 valid.status().message());
    record.labels.clear();
  }
  auto r = store->put_value(site_key(child), model::site_document(record));
  if (!r.ok()) spdlog::warn("registering site {}: {}", child, r.status().to_string());
}

}  // namespace canopy::hub

// PlacementIndex (declared in placement_index.h): construction, loading
// from the store, following its commits, and register_site. Evaluation is in
// placement_index_eval.cc, queries in placement_index_query.cc, the internal
// state in placement_index_state.h.
#include "hub/placement_index.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "hub/placement_index_state.h"
#include "model/documents.h"
#include "model/keys.h"

namespace canopy::hub {
namespace {

using model::kSitesPrefix;
using model::kTenantsPrefix;
using model::site_key;

using json = nlohmann::json;

// Greater than every character a store key may hold: P + kKeyEnd bounds every
// key that starts with P.
constexpr std::string_view kKeyEnd = kKeyMax;

// The smallest string greater than `key`.
std::string successor(std::string_view key) {
  std::string s(key);
  s.push_back('\0');
  return s;
}

}  // namespace

PlacementIndex::PlacementIndex()
    : labels_(std::make_unique<LabelIndex>()),
      placement_selectors_(std::make_unique<SelectorIndex>()),
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
    dropping_ = entry.index() == 0;
    evaluate(*key, &changes_);
    dropping_ = false;
    changes = collect(&changes_);
    listener = listener_;
    for (auto& rc : region_changes_) {
      if (const Site* site = site_or_null(rc.site)) {
        rc.scope_keys = scope_of(*site);
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

size_t PlacementIndex::sites_naming_region(std::string_view region) {
  std::lock_guard lock(mu_);
  auto it = region_sites_.find(region);
  return it == region_sites_.end() ? 0 : it->second;
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
  // While loading, nothing is collected: erase here what no site holds.
  if (changes == nullptr) erase_emptied();
}

std::vector<sync::ScopeChange> PlacementIndex::collect(Changes* changes) {
  // By site, then by key (interned: equal pointers are equal keys), to net
  // each site's changes of each key.
  auto& notes = changes->notes;
  std::sort(notes.begin(), notes.end(), [](const Note& a, const Note& b) {
    return a.site_id != b.site_id ? a.site_id < b.site_id : std::less<>()(a.key, b.key);
  });
  // Sites whose keys changed alike share their lists: one entered and one
  // left list per distinct net change (keys +1 or -1, in pointer order).
  using Net = std::vector<std::pair<const std::string*, int>>;
  using Lists = std::pair<sync::KeyList, sync::KeyList>;
  std::map<Net, Lists> shared;
  std::vector<std::pair<const Site*, const Lists*>> changed;
  Net net;
  for (size_t i = 0; i < notes.size();) {
    const uint32_t site = notes[i].site_id;
    net.clear();
    while (i < notes.size() && notes[i].site_id == site) {
      const std::string* key = notes[i].key;
      int sum = 0;
      for (; i < notes.size() && notes[i].site_id == site && notes[i].key == key; ++i) {
        sum += notes[i].delta;
      }
      if (sum != 0) net.emplace_back(key, sum > 0 ? 1 : -1);
    }
    if (net.empty()) continue;
    auto it = shared.find(net);
    if (it == shared.end()) {
      std::vector<std::string> entered, left;
      for (const auto& [key, delta] : net) (delta > 0 ? entered : left).push_back(*key);
      std::sort(entered.begin(), entered.end());
      std::sort(left.begin(), left.end());
      it = shared.emplace(net, Lists{std::move(entered), std::move(left)}).first;
    }
    changed.emplace_back(labels_->by_id[site], &it->second);
  }
  notes.clear();
  // Sites served differently without a key to show it: an empty change.
  static const Lists kNoKeys;
  for (uint32_t site : changes->serving) {
    const bool listed = std::any_of(changed.begin(), changed.end(),
                                    [&](const auto& c) { return c.first->id == site; });
    if (!listed) changed.emplace_back(labels_->by_id[site], &kNoKeys);
  }
  changes->serving.clear();
  std::vector<sync::ScopeChange> out(changed.size());
  for (size_t i = 0; i < changed.size(); ++i) {
    if (i + 16 < changed.size()) {
      const char* ahead = reinterpret_cast<const char*>(changed[i + 16].first);
      __builtin_prefetch(ahead);
      __builtin_prefetch(ahead + 64);
    }
    sync::ScopeChange& c = out[i];
    const Site* site = changed[i].first;
    c.child = site->name;
    c.entered = changed[i].second->first;
    c.left = changed[i].second->second;
    c.version = scope_version(site->key_hash_sum);
  }
  erase_emptied();
  return out;
}

void PlacementIndex::erase_emptied() {
  // A key may have been emptied twice; no entry is erased before this loop,
  // so equal pointers are the same entry.
  std::sort(emptied_.begin(), emptied_.end());
  emptied_.erase(std::unique(emptied_.begin(), emptied_.end()), emptied_.end());
  for (const std::string* key : emptied_) {
    auto it = holders_.find(*key);
    if (it != holders_.end() && it->second.count == 0) holders_.erase(it);
  }
  emptied_.clear();
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

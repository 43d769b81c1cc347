#include "hub/region_scope.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <set>
#include <utility>

#include "model/keys.h"
#include "model/names.h"

namespace canopy::hub {
namespace {

uint64_t key_hash(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }

// Members count in the version as names no key can have.
uint64_t member_hash(std::string_view site) {
  const std::string tagged = "\n member " + std::string(site);
  return key_hash(tagged);
}

}  // namespace

RegionScope::RegionScope(PlacementIndex* index) : index_(index) {}

StatusOr<std::unique_ptr<RegionScope>> RegionScope::create(PlacementIndex* index, Regions regions) {
  std::set<std::string, std::less<>> seen;
  for (auto& [name, members] : regions) {
    if (!model::is_dns1123_label(name)) {
      return invalid_argument("region \"" + name + "\" is not a DNS-1123 label");
    }
    if (members.empty()) return invalid_argument("region \"" + name + "\" has no member site");
    for (const auto& site : members) {
      if (!model::is_dns1123_label(site)) {
        return invalid_argument("region \"" + name + "\": site \"" + site +
                                "\" is not a DNS-1123 label");
      }
      if (!seen.insert(site).second) {
        return invalid_argument("site \"" + site + "\" is listed twice");
      }
    }
  }
  for (const auto& [name, members] : regions) {
    if (seen.contains(name)) {
      return invalid_argument("region \"" + name + "\" is named like a member site");
    }
  }
  std::unique_ptr<RegionScope> scope(new RegionScope(index));
  // Listen first, then read: a change delivered meanwhile waits for mu_ and
  // then applies idempotently on top of what was read (see the header).
  RegionScope* raw = scope.get();
  index->on_scope_change([raw](const sync::ScopeChange& c) { raw->on_member_change(c); });
  for (const auto& [name, members] : regions) {
    for (const auto& site : members) {
      const auto keys = index->scope_keys(site);
      std::lock_guard lock(scope->mu_);
      scope->move_locked(site, name, keys, nullptr);
    }
  }
  return scope;
}

std::unique_ptr<RegionScope> RegionScope::follow_records(PlacementIndex* index, std::string self) {
  std::unique_ptr<RegionScope> scope(new RegionScope(index));
  RegionScope* raw = scope.get();
  raw->follows_records_ = true;
  raw->self_ = std::move(self);
  index->on_scope_change([raw](const sync::ScopeChange& c) { raw->on_member_change(c); });
  index->on_region_change([raw](const PlacementIndex::RegionChange& c) {
    raw->move_site(c.site, c.region, c.scope_keys);
  });
  for (const auto& [site, region] : index->site_regions()) {
    const auto keys = index->scope_keys(site);
    std::lock_guard lock(raw->mu_);
    if (region == raw->self_ && raw->own_.insert(site).second) {
      raw->own_hash_sum_ += member_hash(site);
    }
    raw->move_locked(site, region, keys, nullptr);
  }
  return scope;
}

RegionScope::~RegionScope() {
  index_->on_scope_change(nullptr);
  if (follows_records_) index_->on_region_change(nullptr);
}

void RegionScope::on_scope_change(ScopeListener listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

void RegionScope::serve_region(const std::string& hub, const std::string& region) {
  std::lock_guard lock(mu_);
  if (hub != region && members_.contains(hub)) {
    spdlog::warn(
        "regions: hub {} says it serves region {}, but a site of a region is named {}: "
        "ignored",
        hub, region, hub);
    return;
  }
  auto it = hub_regions_.find(hub);
  if (it != hub_regions_.end()) {
    if (it->second == region) return;
    auto& hubs = region_hubs_[it->second];
    std::erase(hubs, hub);
    if (hubs.empty()) region_hubs_.erase(it->second);
    spdlog::info("regions: hub {} now serves region {}, not {}", hub, region, it->second);
    hub_regions_.erase(it);
  }
  // A hub named like its region is served by that name: nothing to map (and
  // children_for does no extra work in a hierarchy of such hubs).
  generation_.fetch_add(1, std::memory_order_release);
  if (hub == region) return;
  hub_regions_.emplace(hub, region);
  spdlog::info("regions: hub {} serves region {}", hub, region);
  auto& hubs = region_hubs_[region];
  hubs.insert(std::lower_bound(hubs.begin(), hubs.end(), hub), hub);
}

std::string RegionScope::region_of_hub(std::string_view hub) const {
  std::lock_guard lock(mu_);
  auto it = hub_regions_.find(hub);
  return it == hub_regions_.end() ? std::string(hub) : it->second;
}

void RegionScope::append_serving(const std::string& region, std::vector<std::string>* out) const {
  out->push_back(region);
  auto it = region_hubs_.find(region);
  if (it == region_hubs_.end()) return;
  for (const auto& hub : it->second) {
    if (hub != region) out->push_back(hub);
  }
}

std::vector<sync::ScopeChange> RegionScope::for_serving(sync::ScopeChange change) const {
  std::vector<std::string> children;
  append_serving(change.child, &children);
  std::vector<sync::ScopeChange> out(children.size(), change);
  for (size_t i = 0; i < children.size(); ++i) out[i].child = std::move(children[i]);
  return out;
}

std::string RegionScope::region_of(std::string_view site) const {
  std::lock_guard lock(mu_);
  auto it = members_.find(std::string(site));
  return it == members_.end() ? std::string() : it->second.region->name;
}

bool RegionScope::is_region(std::string_view child) const {
  std::lock_guard lock(mu_);
  return find_region(child) != nullptr;
}

RegionScope::Regions RegionScope::regions() const {
  Regions out;
  std::lock_guard lock(mu_);
  for (const auto& [name, region] : regions_) {
    auto& members = out[name];
    for (const auto& [site, id] : region->members) members.push_back(site);
  }
  return out;
}

const RegionScope::Region* RegionScope::find_region(std::string_view child) const {
  auto it = regions_.find(child);
  if (it != regions_.end()) return it->second.get();
  auto hub = hub_regions_.find(child);
  if (hub == hub_regions_.end()) return nullptr;
  it = regions_.find(hub->second);
  return it == regions_.end() ? nullptr : it->second.get();
}

std::string_view RegionScope::site_of_key(std::string_view key) {
  if (!key.starts_with(model::kSitesPrefix)) return {};
  std::string_view site = key.substr(model::kSitesPrefix.size());
  return site.substr(0, site.find('/'));
}

const RegionScope::Region* RegionScope::region_of_site_key(std::string_view key) const {
  const std::string_view site = site_of_key(key);
  if (site.empty()) return nullptr;
  auto it = members_.find(std::string(site));
  return it == members_.end() ? nullptr : it->second.region;
}

// --- Changes.

bool RegionScope::add_key(Region* region, uint32_t member, const std::string& key) {
  auto [it, inserted] = region->keys.try_emplace(key);
  auto& holders = it->second;
  auto pos = std::lower_bound(holders.begin(), holders.end(), member);
  if (pos == holders.end() || *pos != member) holders.insert(pos, member);
  if (inserted) region->hash_sum += key_hash(key);
  return inserted;
}

bool RegionScope::remove_key(Region* region, uint32_t member, const std::string& key) {
  auto it = region->keys.find(key);
  if (it == region->keys.end()) return false;
  auto& holders = it->second;
  auto pos = std::lower_bound(holders.begin(), holders.end(), member);
  if (pos == holders.end() || *pos != member) return false;
  holders.erase(pos);
  if (!holders.empty()) return false;
  region->keys.erase(it);
  region->hash_sum -= key_hash(key);
  return true;
}

uint64_t RegionScope::version_of(const Region& region) {
  const uint64_t v = XXH3_64bits(&region.hash_sum, sizeof(region.hash_sum));
  return v == 0 ? 1 : v;
}

std::vector<std::string> RegionScope::own_sites() const {
  std::lock_guard lock(mu_);
  return {own_.begin(), own_.end()};
}

uint64_t RegionScope::own_sites_version() const {
  std::lock_guard lock(mu_);
  const uint64_t v = XXH3_64bits(&own_hash_sum_, sizeof(own_hash_sum_));
  return v == 0 ? 1 : v;
}

void RegionScope::on_own_sites_change(std::function<void()> listener) {
  std::lock_guard lock(mu_);
  own_listener_ = std::move(listener);
}

void RegionScope::move_site(const std::string& site, const std::string& region,
                            const std::vector<std::string>& scope_keys) {
  std::vector<sync::ScopeChange> changes;
  ScopeListener listener;
  std::function<void()> own_listener;
  {
    std::lock_guard lock(mu_);
    if (!self_.empty()) {
      const bool own = region == self_;
      if (own ? own_.insert(site).second : own_.erase(site) > 0) {
        own_hash_sum_ += own ? member_hash(site) : -member_hash(site);  // modulo 2^64
        own_listener = own_listener_;
      }
    }
    if (move_locked(site, region, scope_keys, &changes)) listener = listener_;
  }
  if (listener) {
    for (const auto& c : changes) listener(c);
  }
  if (own_listener) own_listener();
}

bool RegionScope::move_locked(const std::string& site, const std::string& named,
                              const std::vector<std::string>& scope_keys,
                              std::vector<sync::ScopeChange>* changes) {
  // A record naming this hub: one of its own sites, in no region below it.
  const std::string region = !self_.empty() && named == self_ ? std::string() : named;
  auto it = members_.find(site);
  Region* old = it == members_.end() ? nullptr : it->second.region;
  if (old != nullptr && old->name == region) return false;
  if (old == nullptr && region.empty()) return false;
  if (!region.empty() &&
      (regions_.contains(site) || hub_regions_.contains(site) || members_.contains(region))) {
    spdlog::warn("site {} names {} as its regional hub, but {}: ignored", site, region,
                 members_.contains(region) ? "that is a member site, not a regional hub"
                                           : "the site is itself a regional hub");
    return false;
  }
  // A region's change goes to each hub serving it; the site's to the site.
  auto reconcile = [this, changes](std::string child, uint64_t version) {
    if (changes == nullptr) return;
    sync::ScopeChange c;
    c.child = std::move(child);
    c.version = version;
    c.reconcile = true;
    for (auto& each : for_serving(std::move(c))) changes->push_back(std::move(each));
  };
  if (old != nullptr) {
    const uint32_t id = it->second.id;
    for (auto k = old->keys.begin(); k != old->keys.end();) {
      auto& holders = k->second;
      auto pos = std::lower_bound(holders.begin(), holders.end(), id);
      if (pos != holders.end() && *pos == id) holders.erase(pos);
      if (holders.empty()) {
        old->hash_sum -= key_hash(k->first);
        k = old->keys.erase(k);
      } else {
        ++k;
      }
    }
    old->members.erase(site);
    old->hash_sum -= member_hash(site);
    members_.erase(it);
    spdlog::info("regions: site {} leaves regional hub {}", site, old->name);
    if (old->members.empty()) {
      // No record names it any more: it is no region now, as after a
      // restart (regions come from the records). What it holds as one (the
      // grants) it drops in the reconciliation.
      const std::string name = old->name;
      regions_.erase(name);
      reconcile(name, 0);
    } else {
      reconcile(old->name, version_of(*old));
    }
  }
  if (!region.empty()) {
    auto& slot = regions_[region];
    if (!slot) {
      slot = std::make_unique<Region>();
      slot->name = region;
    }
    Region* r = slot.get();
    const uint32_t id = r->next_member++;
    r->members.emplace(site, id);
    r->hash_sum += member_hash(site);
    members_.emplace(site, Member{r, id});
    for (const auto& key : scope_keys) add_key(r, id, key);
    spdlog::info("regions: site {} joins regional hub {}", site, region);
    reconcile(region, version_of(*r));
  }
  // A session the site had with this hub directly ends (or one it has
  // through no region may start): the engine asks serves() again.
  reconcile(site, 0);
  generation_.fetch_add(1, std::memory_order_release);
  return true;
}

void RegionScope::on_member_change(const sync::ScopeChange& change) {
  std::vector<sync::ScopeChange> out;
  ScopeListener listener;
  bool direct = false;
  {
    std::lock_guard lock(mu_);
    listener = listener_;
    auto it = members_.find(change.child);
    if (it == members_.end()) {
      direct = true;  // a direct child: passed on as it is, not copied
    } else {
      Region* region = it->second.region;
      const uint32_t member = it->second.id;
      sync::ScopeChange c;
      c.child = region->name;
      std::vector<std::string> entered, left;
      for (const auto& key : change.entered) {
        if (add_key(region, member, key)) entered.push_back(key);
      }
      for (const auto& key : change.left) {
        if (remove_key(region, member, key)) left.push_back(key);
      }
      c.version = version_of(*region);
      if (entered.empty() && left.empty()) return;
      generation_.fetch_add(1, std::memory_order_release);
      c.entered = std::move(entered);
      c.left = std::move(left);
      out = for_serving(std::move(c));
    }
  }
  if (!listener) return;
  if (direct) {
    listener(change);
    return;
  }
  for (const auto& c : out) listener(c);
}

// --- Queries. The index is called without mu_ held.

bool RegionScope::in_scope(std::string_view child, std::string_view key) {
  {
    std::lock_guard lock(mu_);
    if (const Region* region = find_region(child)) {
      if (key.starts_with(model::kSitesPrefix)) return region_of_site_key(key) == region;
      if (model::parse_key(key).kind == model::KeyKind::kGrant) return true;
      return region->keys.contains(key);
    }
  }
  return index_->in_scope(child, key);
}

std::vector<std::string> RegionScope::writable_prefixes(std::string_view child) {
  std::vector<std::string> members;
  bool region_found = false;
  {
    std::lock_guard lock(mu_);
    if (const Region* region = find_region(child)) {
      region_found = true;
      for (const auto& [site, id] : region->members) members.push_back(site);
    }
  }
  if (!region_found) return index_->writable_prefixes(child);
  std::vector<std::string> out;
  for (const auto& site : members) {
    auto prefixes = index_->writable_prefixes(site);
    out.insert(out.end(), std::make_move_iterator(prefixes.begin()),
               std::make_move_iterator(prefixes.end()));
    out.push_back(model::presence_key(site));
  }
  return out;
}

bool RegionScope::writable_by(std::string_view child, std::string_view key) {
  std::string site;
  {
    std::lock_guard lock(mu_);
    const Region* region = find_region(child);
    if (region == nullptr) {
      site = std::string(child);  // not a region: the index decides for it
    } else if (region_of_site_key(key) != region) {
      return false;
    } else if (model::parse_key(key).kind == model::KeyKind::kPresence) {
      return true;  // the region's own report of its sessions with its members
    } else {
      site = std::string(site_of_key(key));
    }
  }
  return index_->writable_by(site, key);
}

uint64_t RegionScope::version(std::string_view child) {
  {
    std::lock_guard lock(mu_);
    if (const Region* region = find_region(child)) return version_of(*region);
  }
  return index_->version(child);
}

std::optional<sync::ScopeProvider::Listing> RegionScope::list_scope(std::string_view child) {
  Listing out;
  std::vector<std::string> keys;
  bool region_found = false;
  {
    std::lock_guard lock(mu_);
    const Region* region = find_region(child);
    region_found = region != nullptr;
    if (region != nullptr) {
      for (const auto& [site, id] : region->members) {
        out.keys.push_back(model::site_key(site));
        out.prefixes.push_back(model::site_subtree(site));
      }
      keys.reserve(region->keys.size());
      for (const auto& [key, holders] : region->keys) keys.push_back(key);
    }
  }
  if (!region_found) return index_->list_scope(child);
  // The members' records, the grants, then the keys the members hold.
  for (auto& key : index_->grant_keys()) out.keys.push_back(std::move(key));
  out.keys.insert(out.keys.end(), std::make_move_iterator(keys.begin()),
                  std::make_move_iterator(keys.end()));
  return out;
}

std::vector<std::string> RegionScope::children_for(std::string_view key) {
  return route(key).children;
}

sync::ScopeProvider::Route RegionScope::route(std::string_view key) {
  if (model::parse_key(key).kind == model::KeyKind::kGrant) {
    std::vector<std::string> out;
    std::lock_guard lock(mu_);
    for (const auto& [name, region] : regions_) append_serving(name, &out);
    if (!region_hubs_.empty()) {
      std::sort(out.begin(), out.end());
      out.erase(std::unique(out.begin(), out.end()), out.end());
    }
    return {std::move(out), false};
  }
  Route route = index_->route(key);
  std::vector<std::string>& out = route.children;
  bool mapped = false;
  {
    std::lock_guard lock(mu_);
    const size_t n = out.size();
    if (route.exact && (!regions_.empty() || !hub_regions_.empty())) {
      // A child named like a region is asked as one (in_scope).
      for (size_t i = 0; i < n && route.exact; ++i) route.exact = find_region(out[i]) == nullptr;
    }
    std::vector<const Region*> expanded;  // regions whose hubs are added (few)
    for (size_t i = 0; i < n; ++i) {
      auto it = members_.find(out[i]);
      if (it == members_.end()) continue;
      const Region* region = it->second.region;
      out[i] = region->name;
      mapped = true;
      if (region_hubs_.empty()) continue;  // every region served by its name alone
      auto hubs = region_hubs_.find(region->name);
      if (hubs == region_hubs_.end()) continue;
      if (std::find(expanded.begin(), expanded.end(), region) != expanded.end()) continue;
      expanded.push_back(region);
      for (const auto& hub : hubs->second) out.push_back(hub);
    }
  }
  if (mapped) {
    route.exact = false;
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
  }
  return route;
}

std::vector<std::string> RegionScope::redirect_for(std::string_view child) {
  std::lock_guard lock(mu_);
  auto it = members_.find(std::string(child));
  if (it == members_.end()) return {};
  const std::string& region = it->second.region->name;
  auto hubs = region_hubs_.find(region);
  if (hubs == region_hubs_.end()) return {region};
  return hubs->second;
}

bool RegionScope::serves(std::string_view child) {
  {
    std::lock_guard lock(mu_);
    if (find_region(child) != nullptr) return true;
    if (members_.contains(std::string(child))) return false;  // through its region
  }
  return index_->serves(child);
}

void take_hello(Store* store, PlacementIndex* index, RegionScope* regions, bool registers,
                const std::string& child, const v1::Hello& hello) {
  auto role = hello.labels().find(std::string(kRoleLabel));
  if (role != hello.labels().end() && role->second == kRoleHub) {
    auto label = hello.labels().find(std::string(kRegionLabel));
    std::string region = child;
    if (label != hello.labels().end() && label->second != child) {
      auto identity = store->get(model::site_identity_key(child));
      // Unreadable counts as a site: the claim is taken at the next hello.
      const bool is_site = index->site_labels(child).has_value() || identity.ok() ||
                           identity.status().code() != StatusCode::kNotFound;
      if (is_site || !model::is_dns1123_label(label->second)) {
        spdlog::warn("hello from {} says it is a hub of region \"{}\", but {}: not taken", child,
                     label->second, is_site ? "it is a site here" : "that is not a DNS-1123 label");
      } else {
        region = label->second;
      }
    }
    regions->serve_region(child, region);
    return;
  }
  if (role != hello.labels().end() && role->second == kRolePeer) return;
  if (!registers) return;
  if (regions->is_region(child) || index->sites_naming_region(child) > 0) {
    spdlog::warn(
        "hello from {}: a region, or a hub serving one, has that name: not registered "
        "as a site",
        child);
    return;
  }
  register_site(store, child, hello);
}

}  // namespace canopy::hub

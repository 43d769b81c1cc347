#include "hub/region_scope.h"

#include <xxhash.h>

#include <algorithm>
#include <set>
#include <utility>

#include "model/keys.h"
#include "model/names.h"

namespace canopy::hub {
namespace {

uint64_t key_hash(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }

}  // namespace

RegionScope::RegionScope(PlacementIndex* index) : index_(index) {}

StatusOr<std::unique_ptr<RegionScope>> RegionScope::create(PlacementIndex* index, Regions regions) {
  std::unique_ptr<RegionScope> scope(new RegionScope(index));
  std::set<std::string, std::less<>> seen;
  for (auto& [name, members] : regions) {
    if (!model::is_dns1123_label(name)) {
      return invalid_argument("region \"" + name + "\" is not a DNS-1123 label");
    }
    if (members.empty()) return invalid_argument("region \"" + name + "\" has no member site");
    auto region = std::make_unique<Region>();
    region->name = name;
    region->members = std::move(members);
    std::sort(region->members.begin(), region->members.end());
    for (const auto& site : region->members) {
      if (!model::is_dns1123_label(site)) {
        return invalid_argument("region \"" + name + "\": site \"" + site +
                                "\" is not a DNS-1123 label");
      }
      if (!seen.insert(site).second) {
        return invalid_argument("site \"" + site + "\" is listed twice");
      }
    }
    scope->regions_.emplace(name, std::move(region));
  }
  for (auto& [name, region] : scope->regions_) {
    if (seen.contains(name)) {
      return invalid_argument("region \"" + name + "\" is named like a member site");
    }
    for (uint32_t i = 0; i < region->members.size(); ++i) {
      scope->members_.emplace(region->members[i], Member{region.get(), i});
    }
  }

  // Listen first, then read: a change delivered meanwhile waits for mu_ and
  // then applies idempotently on top of what was read (see the header).
  RegionScope* raw = scope.get();
  std::lock_guard lock(scope->mu_);
  index->on_scope_change([raw](const sync::ScopeChange& c) { raw->on_member_change(c); });
  for (auto& [name, region] : scope->regions_) {
    for (uint32_t i = 0; i < region->members.size(); ++i) {
      for (const auto& key : index->scope_keys(region->members[i])) {
        add_key(region.get(), i, key);
      }
    }
  }
  return scope;
}

RegionScope::~RegionScope() { index_->on_scope_change(nullptr); }

void RegionScope::on_scope_change(ScopeListener listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

std::string RegionScope::region_of(std::string_view site) const {
  auto it = members_.find(std::string(site));
  return it == members_.end() ? std::string() : it->second.region->name;
}

bool RegionScope::is_region(std::string_view child) const { return find_region(child) != nullptr; }

const RegionScope::Region* RegionScope::find_region(std::string_view child) const {
  auto it = regions_.find(child);
  return it == regions_.end() ? nullptr : it->second.get();
}

const RegionScope::Region* RegionScope::region_of_site_key(std::string_view key) const {
  if (!key.starts_with(model::kSitesPrefix)) return nullptr;
  std::string_view site = key.substr(model::kSitesPrefix.size());
  site = site.substr(0, site.find('/'));
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

void RegionScope::on_member_change(const sync::ScopeChange& change) {
  sync::ScopeChange out;
  ScopeListener listener;
  {
    std::lock_guard lock(mu_);
    listener = listener_;
    auto it = members_.find(change.child);
    if (it == members_.end()) {
      out = change;  // a direct child
    } else {
      Region* region = it->second.region;
      const uint32_t member = it->second.index;
      out.child = region->name;
      for (const auto& key : change.entered) {
        if (add_key(region, member, key)) out.entered.push_back(key);
      }
      for (const auto& key : change.left) {
        if (remove_key(region, member, key)) out.left.push_back(key);
      }
      out.version = version_of(*region);
      if (out.entered.empty() && out.left.empty()) return;
    }
  }
  if (listener) listener(out);
}

// --- Queries.

bool RegionScope::in_scope(std::string_view child, std::string_view key) {
  const Region* region = find_region(child);
  if (region == nullptr) return index_->in_scope(child, key);
  if (key.starts_with(model::kSitesPrefix)) return region_of_site_key(key) == region;
  if (model::parse_key(key).kind == model::KeyKind::kGrant) return true;
  std::lock_guard lock(mu_);
  return region->keys.contains(key);
}

std::vector<std::string> RegionScope::writable_prefixes(std::string_view child) {
  const Region* region = find_region(child);
  if (region == nullptr) return index_->writable_prefixes(child);
  std::vector<std::string> out;
  for (const auto& site : region->members) {
    auto prefixes = index_->writable_prefixes(site);
    out.insert(out.end(), std::make_move_iterator(prefixes.begin()),
               std::make_move_iterator(prefixes.end()));
  }
  return out;
}

bool RegionScope::writable_by(std::string_view child, std::string_view key) {
  const Region* region = find_region(child);
  if (region == nullptr) return index_->writable_by(child, key);
  if (region_of_site_key(key) != region) return false;
  std::string_view site = key.substr(model::kSitesPrefix.size());
  site = site.substr(0, site.find('/'));
  return index_->writable_by(site, key);
}

uint64_t RegionScope::version(std::string_view child) {
  const Region* region = find_region(child);
  if (region == nullptr) return index_->version(child);
  std::lock_guard lock(mu_);
  return version_of(*region);
}

std::optional<sync::ScopeProvider::Listing> RegionScope::list_scope(std::string_view child) {
  const Region* region = find_region(child);
  if (region == nullptr) return index_->list_scope(child);
  Listing out;
  for (const auto& site : region->members) {
    out.keys.push_back(model::site_key(site));
    out.prefixes.push_back(model::site_subtree(site));
  }
  for (auto& key : index_->grant_keys()) out.keys.push_back(std::move(key));
  std::lock_guard lock(mu_);
  out.keys.reserve(out.keys.size() + region->keys.size());
  for (const auto& [key, holders] : region->keys) out.keys.push_back(key);
  return out;
}

std::vector<std::string> RegionScope::children_for(std::string_view key) {
  if (model::parse_key(key).kind == model::KeyKind::kGrant) {
    std::vector<std::string> out;
    for (const auto& [name, region] : regions_) out.push_back(name);
    return out;
  }
  std::vector<std::string> out = index_->sites_for(key);
  bool mapped = false;
  for (auto& child : out) {
    auto it = members_.find(child);
    if (it == members_.end()) continue;
    child = it->second.region->name;
    mapped = true;
  }
  if (mapped) {
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
  }
  return out;
}

}  // namespace canopy::hub

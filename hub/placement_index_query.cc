// PlacementIndex's queries (declared in placement_index.h): scopes, their
// versions, the sites holding a key, and what the index knows of a site.
#include <xxhash.h>

#include <algorithm>

#include "hub/placement_index.h"
#include "hub/placement_index_state.h"
#include "model/keys.h"
#include "model/names.h"

namespace canopy::hub {
namespace {

using model::is_dns1123_label;
using model::kSitesPrefix;
using model::kTenantsPrefix;
using model::site_key;

}  // namespace

// --- Queries.

bool PlacementIndex::in_scope(std::string_view site, std::string_view key) {
  if (model::in_site_subtree(site, key)) return true;
  if (!key.starts_with(kTenantsPrefix)) return false;
  std::lock_guard lock(mu_);
  const Site* s = site_or_null(site);
  return s != nullptr && holds(*s, key);
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
    std::vector<std::string> keys = scope_of(*s);
    out.keys.insert(out.keys.end(), std::make_move_iterator(keys.begin()),
                    std::make_move_iterator(keys.end()));
  }
  return out;
}

std::vector<std::string> PlacementIndex::writable_prefixes(std::string_view site) {
  return model::site_writable_prefixes(site);
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
  return scope_version(s != nullptr ? s->key_hash_sum : 0);
}

std::vector<std::string> PlacementIndex::scope_of(const Site& site) {
  std::vector<const std::string*> keys;
  for (const Rule* p : site.placements) {
    keys.push_back(&p->key);
    for (const auto& t : p->templates) keys.push_back(&t);
  }
  for (const Rule* o : site.overrides) keys.push_back(&o->key);
  std::sort(keys.begin(), keys.end(), [](const auto* a, const auto* b) { return *a < *b; });
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const std::string* k : keys) {
    if (out.empty() || out.back() != *k) out.push_back(*k);
  }
  return out;
}

uint64_t PlacementIndex::key_hash(std::string_view key) {
  return XXH3_64bits(key.data(), key.size());
}

uint64_t PlacementIndex::scope_version(uint64_t key_hash_sum) {
  unsigned char bytes[sizeof key_hash_sum];
  for (size_t i = 0; i < sizeof bytes; ++i) {
    bytes[i] = static_cast<unsigned char>(key_hash_sum >> (8 * i));
  }
  const uint64_t v = XXH3_64bits(bytes, sizeof bytes);
  return v == 0 ? 1 : v;
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
  auto it = holders_.find(key);
  if (it == holders_.end()) return out;
  const Holders& h = it->second;
  out.reserve(h.count);
  const std::vector<Site*>& by_id = labels_->by_id;
  // Held by a good share of the sites (a template placed fleet-wide): walk
  // them in name order, testing each one's bit, which is sequential and
  // yields the list sorted. Otherwise sorting the few names costs less.
  if (h.count >= 64 && h.count * 8 >= by_id.size()) {
    if (name_order_.size() != by_id.size()) {
      name_order_.clear();
      name_order_.reserve(sites_.size());
      for (const auto& [name, site] : sites_) name_order_.push_back(site->id);
    }
    for (const uint32_t id : name_order_) {
      if (h.sites.test(id)) out.push_back(by_id[id]->name);
    }
    return out;
  }
  h.sites.for_each([&](uint32_t id) { out.push_back(by_id[id]->name); });
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
  out = scope_of(*s);
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

}  // namespace canopy::hub

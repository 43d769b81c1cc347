// RegionScope: the scopes a parent gives its children when some of them are
// regional hubs (DESIGN.md, "Hierarchy and scale-out").
//
// A regional hub is a child of its parent for the union of its member sites'
// scopes: a key is in a region's scope when it is in any member's scope, and
// the region may write what any member may write (each member's
// `sites/<site>/status/` and `sites/<site>/overrides/`, whole subtrees being
// in scope as for a site). Every other child (a site connected directly) is
// answered by the parent's PlacementIndex unchanged. The regions and their
// members are fixed at creation; a site belongs to at most one region.
//
// Grants. A regional hub evaluates placements for its own sites with its own
// PlacementIndex, which places a tenant only on granted sites: so every grant
// (`t/<tenant>/grants/<g>`) is in every region's scope, by rule, as a site's
// own subtree is in the site's — not part of the key set or the version, listed
// by list_scope, routed to every region by children_for. Sites never get them.
//
// ScopeChanges. RegionScope takes over the index's listener (on_scope_change)
// and re-expresses each member's change for its region: a key enters a region
// when it enters the first member to hold it, and leaves it only when it
// leaves the last one. To know that, RegionScope keeps, per region, every
// placement, template and override key held by any member together with the
// members holding it. It cannot ask the index instead ("does another member
// still hold it?"): the index reports a commit's changes one site at a time
// after evaluating the whole commit, so when one commit moves a key into two
// members, the index already shows the second member holding it while the
// first member's change is re-expressed, and the key would enter neither.
// Applying a member's change is idempotent (a member enters a key it already
// holds, or leaves one it does not hold: nothing happens), which makes the
// start-up race harmless: create() installs the listener before it reads the
// members' scopes, and a change delivered meanwhile applies on top of either
// state. Changes of direct children pass through unchanged.
//
// Version. A region's version is derived from its key set (the XXH3 hashes of
// its keys, summed, then hashed again; never 0), updated as each change is
// applied, so that the version a re-expressed ScopeChange announces is the
// region's version right after that change — not a later one, which the
// sync engine must not announce before the keys that make it (sync/scope.h).
//
// Costs (R regions, m members of a region, k keys in its scope): in_scope,
// version and writable_by for a region O(log k) / O(1) / O(log R); a member's
// change O(changed keys × log k); memory O(k) per region (the keys, plus the
// members holding each; a regional hub holds those documents anyway).
//
// Thread-safety: every method is safe from any thread. The internal mutex is
// never held while calling the index or the listener; the listener is called
// from the index's on_commit, with the store's lock held (same rules as
// PlacementIndex::on_scope_change: only enqueue, never call the store).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hub/placement_index.h"
#include "store/status.h"
#include "sync/scope.h"

namespace canopy::hub {

class RegionScope final : public sync::ScopeProvider {
 public:
  using ScopeListener = PlacementIndex::ScopeListener;
  // Region name -> member site names.
  using Regions = std::map<std::string, std::vector<std::string>, std::less<>>;

  // Composes `index` (the parent's, attached and loaded) with `regions`.
  // InvalidArgument when a name is not a DNS-1123 label, a region has no
  // member, a site is listed twice, or a region is named like a member site.
  // REQUIRES: `index` outlives the result; no other listener is set on it
  // while the result lives (it takes over the index's listener).
  static StatusOr<std::unique_ptr<RegionScope>> create(PlacementIndex* index, Regions regions);
  ~RegionScope() override;
  RegionScope(const RegionScope&) = delete;
  RegionScope& operator=(const RegionScope&) = delete;

  // Replaces the listener of scope changes: the index's for direct children,
  // re-expressed ones for regions.
  void on_scope_change(ScopeListener listener);

  // The region `site` belongs to; empty when none.
  std::string region_of(std::string_view site) const;
  bool is_region(std::string_view child) const;

  // --- sync::ScopeProvider.
  bool in_scope(std::string_view child, std::string_view key) override;
  std::vector<std::string> writable_prefixes(std::string_view child) override;
  bool writable_by(std::string_view child, std::string_view key) override;
  uint64_t version(std::string_view child) override;
  std::optional<Listing> list_scope(std::string_view child) override;
  // The index's sites for `key`, each member replaced by its region; sorted.
  std::vector<std::string> children_for(std::string_view key) override;

 private:
  struct Region {
    std::string name;
    std::vector<std::string> members;  // sorted
    // Tenant keys in the region's scope -> indices (into members) holding them, sorted.
    std::map<std::string, std::vector<uint32_t>, std::less<>> keys;
    uint64_t hash_sum = 0;  // sum of XXH3 of `keys`
  };
  struct Member {
    Region* region;
    uint32_t index;
  };

  explicit RegionScope(PlacementIndex* index);
  void on_member_change(const sync::ScopeChange& change);
  // REQUIRES: mu_ held. Return true when the key entered / left the region.
  static bool add_key(Region* region, uint32_t member, const std::string& key);
  static bool remove_key(Region* region, uint32_t member, const std::string& key);
  static uint64_t version_of(const Region& region);
  // The region a `sites/<site>` key or a key under it belongs to; nullptr if none.
  const Region* region_of_site_key(std::string_view key) const;
  const Region* find_region(std::string_view child) const;

  PlacementIndex* const index_;
  // Fixed after create(): safe to read without mu_.
  std::map<std::string, std::unique_ptr<Region>, std::less<>> regions_;
  std::unordered_map<std::string, Member> members_;  // site -> its region

  mutable std::mutex mu_;  // guards Region::keys, Region::hash_sum, listener_
  ScopeListener listener_;
};

}  // namespace canopy::hub

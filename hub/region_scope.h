// RegionScope: the scopes a parent gives its children when some of them are
// regional hubs (DESIGN.md, "Hierarchy and scale-out"; docs/hierarchy.md).
//
// A regional hub is a child of its parent for the union of its member sites'
// scopes: a key is in a region's scope when it is in any member's scope, and
// the region may write what any member may write (each member's
// `sites/<site>/status/` and `sites/<site>/overrides/`, whole subtrees being
// in scope as for a site), and its members' presence documents
// (`sites/<site>/presence`: its sessions with them, model::SitePresence).
// Every other child (a site connected directly) is answered by the parent's
// PlacementIndex unchanged. A site belongs to at most one region; a member
// site is not served directly (serves() is false for it: it syncs through its
// region).
//
// Membership. In the daemons it follows the site records (follow_records):
// a record's `region` field (model::SiteRecord::region) makes the site a
// member of that regional hub, and changing it moves the site. The
// simulation fixes it at creation (create). A move changes two regions'
// scopes as a whole (the site's subtree and every key only it held move):
// each gets a ScopeChange with `reconcile` set, and its session reconciles,
// which sends only what the region lacks and drops what it must no longer
// hold. The moved site's session with its old region ends without drops
// (that region no longer serves it); it keeps what it holds and reconciles
// with its new region when it says hello there.
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
// Hubs of a region. A region is served by the hub named like it, or by the
// hubs that say in their hello that they serve it (serve_region: several
// regional hubs of one region, active-active, each with its own name and
// session). Each such hub is a child with the region's scope: in_scope,
// writable_by, version and list_scope answer for it as for the region; every
// ScopeChange of the region goes to the region's name and to each of its
// hubs; children_for names them all; a member site is redirected to them
// (redirect_for; the engine tries them in the site's preferred order). A hub keeps its region
// until it says another; the map lives in memory (hubs say hello again after
// a restart of this hub).
//
// Version. A region's version is derived from its key set and its members
// (the XXH3 hashes of its keys and member names, summed, then hashed again;
// never 0), updated as each change is applied, so that the version a
// re-expressed ScopeChange announces is the region's version right after that
// change — not a later one, which the sync engine must not announce before
// the keys that make it (sync/scope.h).
//
// Costs (R regions, m members of a region, k keys in its scope): in_scope,
// version and writable_by for a region O(log k) / O(1) / O(log R); a member's
// change O(changed keys × log k); a move O(k); memory O(k) per region (the
// keys, plus the members holding each; a regional hub holds those documents
// anyway).
//
// Thread-safety: every method is safe from any thread. The internal mutex is
// never held while calling the index or the listener; the listener is called
// from the index's on_commit, with the store's lock held (same rules as
// PlacementIndex::on_scope_change: only enqueue, never call the store).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hub/placement_index.h"
#include "store/status.h"
#include "sync/scope.h"

namespace canopy::hub {

// The hello label a regional hub ("hub") or a peer hub of the same level
// ("peer") sends its parent, so that the parent does not register it as a site.
inline constexpr std::string_view kRoleLabel = "canopy.io/role";
inline constexpr std::string_view kRoleHub = "hub";
inline constexpr std::string_view kRolePeer = "peer";
// The hello label with which a regional hub names the region it serves
// (HubConfig::region); without it, the region is the hub's name.
inline constexpr std::string_view kRegionLabel = "canopy.io/region";

class RegionScope final : public sync::ScopeProvider {
 public:
  using ScopeListener = PlacementIndex::ScopeListener;
  // Region name -> member site names.
  using Regions = std::map<std::string, std::vector<std::string>, std::less<>>;

  // Composes `index` (the parent's, attached and loaded) with `regions`,
  // fixed. InvalidArgument when a name is not a DNS-1123 label, a region has
  // no member, a site is listed twice, or a region is named like a member
  // site.
  // REQUIRES: `index` outlives the result; no other listener is set on it
  // while the result lives (it takes over the index's listener).
  static StatusOr<std::unique_ptr<RegionScope>> create(PlacementIndex* index, Regions regions);
  // Composes `index` with the regions its site records name, and follows
  // their changes (PlacementIndex::on_region_change). `self` is this hub's
  // name: a record naming it is a site of this hub's own (at a regional hub,
  // every record it holds names it). REQUIRES: as create(); nothing commits
  // to the store meanwhile (the hub makes it before it serves anything).
  static std::unique_ptr<RegionScope> follow_records(PlacementIndex* index, std::string self);
  ~RegionScope() override;
  RegionScope(const RegionScope&) = delete;
  RegionScope& operator=(const RegionScope&) = delete;

  // Replaces the listener of scope changes: the index's for direct children,
  // re-expressed ones for regions.
  void on_scope_change(ScopeListener listener);
  // follow_records: called (without locks held, from the index's commit
  // listener: only enqueue) when a site record naming `self` appears or
  // stops naming it, i.e. when this hub's own sites change.
  void on_own_sites_change(std::function<void()> listener);
  // follow_records: the sites whose records name `self`, sorted.
  std::vector<std::string> own_sites() const;
  // A version of own_sites() (never 0), kept as they change: O(1).
  uint64_t own_sites_version() const;

  // Makes `site` a member of `region` (empty: of none), whose scope is
  // `scope_keys`. A region named like a member site, or a site that is a
  // region, is refused (logged; the site stays where it was).
  void move_site(const std::string& site, const std::string& region,
                 const std::vector<std::string>& scope_keys);

  // `hub` serves `region` (its hello says so): it is given the region's
  // scope. A hub named like a member site is refused (logged).
  void serve_region(const std::string& hub, const std::string& region);
  // The region `hub` serves: the one it said, else its own name.
  std::string region_of_hub(std::string_view hub) const;

  // The region `site` belongs to; empty when none.
  std::string region_of(std::string_view site) const;
  bool is_region(std::string_view child) const;
  // Region -> its member sites (sorted). A region exists while a record
  // names it: the last member leaving ends it (its hub is then served as any
  // child the index does not know).
  Regions regions() const;

  // --- sync::ScopeProvider.
  bool in_scope(std::string_view child, std::string_view key) override;
  std::vector<std::string> writable_prefixes(std::string_view child) override;
  bool writable_by(std::string_view child, std::string_view key) override;
  uint64_t version(std::string_view child) override;
  std::optional<Listing> list_scope(std::string_view child) override;
  // The index's sites for `key`, each member replaced by its region; sorted.
  std::vector<std::string> children_for(std::string_view key) override;
  // Exact when the index's list is and none of it is a region's member or
  // named like a region (each such child is asked in_scope then).
  Route route(std::string_view key) override;
  // The index's and this scope's own: both only grow, so their sum moves
  // whenever either does.
  uint64_t generation() override {
    const uint64_t index = index_->generation();
    return index == 0 ? 0 : index + generation_.load(std::memory_order_acquire);
  }
  // Regions, and direct children the index serves; never a region's member.
  bool serves(std::string_view child) override;
  // A member site: the hubs of its region (sorted), or the region's name when
  // no hub said it serves it (it syncs there, not here).
  std::vector<std::string> redirect_for(std::string_view child) override;

 private:
  struct Region {
    std::string name;
    std::map<std::string, uint32_t, std::less<>> members;  // site -> member id
    uint32_t next_member = 0;
    // Tenant keys in the region's scope -> ids of the members holding them, sorted.
    std::map<std::string, std::vector<uint32_t>, std::less<>> keys;
    uint64_t hash_sum = 0;  // sum of XXH3 of `keys` and of the members' names
  };
  struct Member {
    Region* region;
    uint32_t id;
  };

  explicit RegionScope(PlacementIndex* index);
  void on_member_change(const sync::ScopeChange& change);
  // REQUIRES: mu_ held, for all below.
  // Return true when the key entered / left the region.
  static bool add_key(Region* region, uint32_t member, const std::string& key);
  static bool remove_key(Region* region, uint32_t member, const std::string& key);
  static uint64_t version_of(const Region& region);
  // Adds `changes` for what moving `site` to `region` changes; false when refused.
  bool move_locked(const std::string& site, const std::string& region,
                   const std::vector<std::string>& scope_keys,
                   std::vector<sync::ScopeChange>* changes);
  // The member `site` of a `sites/<site>` key or a key under it; "" if none.
  static std::string_view site_of_key(std::string_view key);
  const Region* region_of_site_key(std::string_view key) const;
  // The region `child` is, or whose hub it is; nullptr if neither.
  const Region* find_region(std::string_view child) const;
  // The children a change of `region` goes to: its name and its hubs.
  void append_serving(const std::string& region, std::vector<std::string>* out) const;
  // `change` (of a region) for each child serving it.
  std::vector<sync::ScopeChange> for_serving(sync::ScopeChange change) const;

  PlacementIndex* const index_;
  mutable std::mutex mu_;
  // Moved, under mu_, by every change of what version() answers for a
  // region or a hub serving one (see generation()).
  std::atomic<uint64_t> generation_{0};
  std::map<std::string, std::unique_ptr<Region>, std::less<>> regions_;
  std::unordered_map<std::string, Member> members_;  // site -> its region
  // Hub -> the region it serves, for hubs not named like it.
  std::map<std::string, std::string, std::less<>> hub_regions_;
  // Region -> the hubs serving it (hub_regions_ inverted), sorted.
  std::map<std::string, std::vector<std::string>, std::less<>> region_hubs_;
  ScopeListener listener_;
  std::function<void()> own_listener_;
  std::set<std::string, std::less<>> own_;  // follow_records: sites whose record names self_
  uint64_t own_hash_sum_ = 0;               // sum of XXH3 of each of own_, modulo 2^64
  bool follows_records_ = false;
  std::string self_;  // follow_records: this hub's name
};

// What a hub takes from a child's hello (ParentSync's hello hook in
// canopy-hub). A label is a claim:
// - A regional hub (kRoleHub) serves the region its kRegionLabel names, or
//   its own name; a child that is a site here (a record or an enrolled
//   identity) serves no region other than its name, whatever it says, so
//   that no site takes a region's scope by saying so.
// - A peer hub (kRolePeer) is neither.
// - Any other child is a site. Only the root (`registers`) writes its record
//   (register_site): below it, records come from the parent. A child named
//   like a region, or like a hub serving one, is not registered: a site and a
//   region never share a name (the API refuses it the same way).
void take_hello(Store* store, PlacementIndex* index, RegionScope* regions, bool registers,
                const std::string& child, const v1::Hello& hello);

}  // namespace canopy::hub

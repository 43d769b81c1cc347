// PlacementIndex: the hub's evaluation of placements into per-site scopes.
//
// A site's scope (docs/keys.md) is `sites/<site>` and everything under
// `sites/<site>/`, every placement that matches the site, every template those
// placements list, and every hub override of those templates that matches the
// site — a placement only on sites its tenant is granted (below). The index
// answers sync's questions about it (sync::ScopeProvider) and
// reports every change of a site's key set as a sync::ScopeChange.
//
// Input. The index is built from a Store (`load`: paginated reads of `sites/`
// and `t/`, skipping what it does not need) and then follows the store's
// committed changes (`on_commit`, wired to Store::subscribe). A listener runs
// with the store's lock held, so on_commit never calls the store: it keeps its
// own CRDT copy (a canopy::Document) of every document it evaluates — site
// records, placements and hub overrides, all small — and applies each log
// entry to it (a delta's ops, or a whole state's join). Because the join is
// order-free and idempotent, `attach` subscribes first and loads afterwards:
// a change that lands while loading is joined in either way, never lost.
// Templates are never read: a template key is in scope because a placement
// names it, whether or not the document exists (its deletion must reach the
// site as well).
//
// Matching. Documents are read by the model (model/documents.h): a site
// matches a rule (placement or override) when the rule's SiteChoice matches
// the site's record — the same function the site's renderer calls — and one
// of the grants of the rule's tenant (`t/<tenant>/grants/<g>`) gives the site
// to that tenant: a tenant without grants places nowhere. Grants never reach
// a site (they are not in its scope); the hub's scope is where they hold, so
// a revoked grant takes the tenant's keys out of the site's scope and the
// spoke removes what it applied. Only known
// sites (a `sites/<site>` record the model accepts) match; an unknown site's
// scope is its own subtree. An override is in a site's scope when it matches
// the site and its template is in the site's scope. A document the model
// refuses matches nothing (fail closed: scope is the security boundary).
//
// Data structures and costs (S sites, k keys in one site's scope):
//   - every site has a dense id (never reused: sites are never forgotten),
//     and sets of sites are bit sets of ids (placement_detail::Bits; S/64
//     words, 1,563 at 100,000 sites);
//   - per site: its matching placements and overrides, which give its scope
//     keys, and the sum of its keys' hashes, so that its version is O(1) and
//     kept up to date as keys enter and leave;
//   - per scope key: the bit set of sites holding it, so sites_for is
//     O(S/64 + result) and in_scope O(1), and the sites holding it for more
//     than one reason (a template listed by two of their placements), with
//     how many more;
//   - known sites by label pair `k=v` and by label key, as bit sets
//     (LabelIndex): a selector, in any form, is evaluated as unions,
//     intersections and complements of those, O(S/64) a requirement, never
//     site by site; only the tenant's grants are then checked per matching
//     site, and not at all when the tenant is granted every site;
//   - per placement, the bit set of sites it matches: a placement change
//     compares the old and new sets word by word and visits only the sites
//     that leave or enter (and, when its templates change, those it keeps);
//   - rules by their candidate label pairs (LabelSelector::candidate_pairs:
//     one matchLabels pair, or the values of an `In`) and by listed site
//     name, so that a site change visits only the rules that could match it;
//     a rule with only NotIn / Exists / DoesNotExist ("wide") is a candidate
//     for every site;
//   - overrides by template key, so that a template entering a site's scope
//     finds its overrides directly.
// A change touches only what it changes: a placement's sites, a site's rules.
// Keys are stored once (interned) however many sites hold them.
//
// ScopeChange. Every commit that alters sites' key sets produces one
// ScopeChange per site (entered and left keys sorted, net of the commit; the
// sites in the order the index first saw them),
// delivered to the listener registered with on_scope_change. Sites whose
// keys changed alike share one entered and one left list (sync::KeyList):
// a selector change moving 10,000 sites builds each list once. The listener is
// called from on_commit, on the store's writing thread with the store's lock
// held (not the index's): it must only enqueue the change, never call the
// store, and must not block. Changes are not reported while `load` runs.
//
// Thread-safety: every method is safe from any thread (one internal mutex,
// never held while calling out). on_commit calls are serialized by the store.
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
#include <unordered_set>
#include <vector>

#include "canopy/v1/store.pb.h"
#include "canopy/v1/sync.pb.h"
#include "model/selector.h"
#include "store/document.h"
#include "store/status.h"
#include "store/store.h"
#include "sync/scope.h"

namespace canopy::hub {

// The site registry as the hub keeps it: a child's hello describes the site
// (its labels), and this writes the record `sites/<child>` that the index
// reads. A failed write is logged; the child's next hello writes it again.
// (ParentSync's hello hook in canopy-hub.)
void register_site(Store* store, const std::string& child, const v1::Hello& hello);

using Labels = model::Labels;

namespace placement_detail {

// A set of sites by their dense ids (Site::id), one bit each: the inverted
// label index and a placement's matching sites. 100,000 sites are 1,563
// words, so a selector is evaluated with a few passes over memory, and the
// sites a change moves are the words of the old and new sets that differ.
class Bits {
 public:
  bool test(uint32_t i) const { return i / 64 < w_.size() && (w_[i / 64] >> (i % 64) & 1) != 0; }
  void set(uint32_t i) {
    if (i / 64 >= w_.size()) w_.resize(i / 64 + 1, 0);
    w_[i / 64] |= uint64_t{1} << (i % 64);
  }
  void reset(uint32_t i) {
    if (i / 64 < w_.size()) w_[i / 64] &= ~(uint64_t{1} << (i % 64));
  }
  size_t words() const { return w_.size(); }
  uint64_t word(size_t i) const { return i < w_.size() ? w_[i] : 0; }
  // Empties the set and makes it `n` words long, keeping its buffer.
  void assign_zero(size_t n) { w_.assign(n, 0); }
  // Makes room for `n` words (zero-filled).
  void grow(size_t n) {
    if (w_.size() < n) w_.resize(n, 0);
  }
  uint64_t* data() { return w_.data(); }
  size_t count() const {
    size_t n = 0;
    for (uint64_t x : w_) n += static_cast<size_t>(__builtin_popcountll(x));
    return n;
  }
  bool none() const {
    for (uint64_t x : w_) {
      if (x != 0) return false;
    }
    return true;
  }
  // Calls f(id) for every set bit, in id order.
  template <typename F>
  void for_each(F&& f) const {
    for (size_t i = 0; i < w_.size(); ++i) {
      for (uint64_t x = w_[i]; x != 0; x &= x - 1) {
        f(static_cast<uint32_t>(i * 64 + static_cast<size_t>(__builtin_ctzll(x))));
      }
    }
  }

 private:
  std::vector<uint64_t> w_;
};

}  // namespace placement_detail

// What the index holds, for metrics.
struct IndexCounts {
  size_t known_sites = 0;
  size_t placements = 0;  // valid placements, matching any site or none
  size_t overrides = 0;   // valid overrides
};

class PlacementIndex final : public sync::ScopeProvider {
 public:
  using ScopeListener = std::function<void(const sync::ScopeChange&)>;

  // Documents read per page while loading.
  static constexpr size_t kLoadPageSize = 1000;

  PlacementIndex();
  ~PlacementIndex() override;
  PlacementIndex(const PlacementIndex&) = delete;
  PlacementIndex& operator=(const PlacementIndex&) = delete;

  // Subscribes a new index to `store` and loads it. The index unsubscribes when
  // destroyed. REQUIRES: `store` outlives the index.
  static StatusOr<std::unique_ptr<PlacementIndex>> attach(Store* store);

  // Reads every site record, placement and override of `store` and builds the
  // scopes. To miss nothing, subscribe on_commit before calling load. Call
  // once; no ScopeChange is reported for what load finds.
  Status load(Store& store);

  // Follows one committed change. Never calls the store (see above).
  void on_commit(const v1::LogEntry& entry);

  // Replaces the listener of scope changes (see above for what it may do).
  void on_scope_change(ScopeListener listener);

  // A site record's `region` changed (model::SiteRecord::region; empty: none,
  // or the record is gone), with the site's scope keys at that point.
  // Reported after the commit's scope changes, with the same rules as
  // on_scope_change; none while loading (read site_regions() instead).
  struct RegionChange {
    std::string site;
    std::string region;
    std::vector<std::string> scope_keys;
  };
  using RegionListener = std::function<void(const RegionChange&)>;
  void on_region_change(RegionListener listener);
  // Site -> region, for every known site whose record names one.
  std::map<std::string, std::string> site_regions();

  // --- sync::ScopeProvider.
  bool in_scope(std::string_view site, std::string_view key) override;
  // `sites/<site>/status/` and `sites/<site>/overrides/`; none for a name that
  // is not a DNS-1123 label.
  std::vector<std::string> writable_prefixes(std::string_view site) override;
  // Only keys strictly under those prefixes.
  bool writable_by(std::string_view site, std::string_view key) override;
  // Of the site's in-scope placement, template and override keys (not of
  // their contents; the site's own subtree is always in scope and not part of
  // it): XXH3 of the 8 bytes, little-endian, of the sum modulo 2^64 of each
  // key's XXH3; 1 where that is 0 (0 means "unknown" in a ScopeChange). A sum
  // so that it follows each key entering or leaving in O(1) (scope_version).
  uint64_t version(std::string_view site) override;
  // The version of a scope whose keys' XXH3 values sum to `key_hash_sum`.
  static uint64_t scope_version(uint64_t key_hash_sum);
  static uint64_t key_hash(std::string_view key);
  std::optional<Listing> list_scope(std::string_view site) override;
  std::vector<std::string> children_for(std::string_view key) override { return sites_for(key); }
  // Exact: sites_for reads the same bits as in_scope.
  Route route(std::string_view key) override { return {sites_for(key), true}; }
  // Moves with every key entering or leaving any site's scope (the only
  // changes of a version).
  uint64_t generation() override { return generation_.load(std::memory_order_acquire); }
  // Not a site whose record left this replica's scope (it moved to another
  // regional hub: its session ends without drops, and it keeps what it
  // holds); a site with no record only when set_serve_unknown (the default:
  // the root registers a new site from its hello, register_site; a regional
  // hub serves only the sites its parent gave it a record of). A site whose
  // record was deleted is served: it is told to drop its scope.
  bool serves(std::string_view site) override;
  void set_serve_unknown(bool serve);

  // Sites whose scope holds `key`, sorted. For `sites/<site>` and keys under it
  // that is `<site>`, known or not. O(result).
  std::vector<std::string> sites_for(std::string_view key);
  // Known sites in name order after `after`, at most `limit`.
  std::vector<std::string> known_sites(std::string_view after = {}, size_t limit = SIZE_MAX);
  // Keys of every grant document that exists, valid or not, sorted.
  std::vector<std::string> grant_keys();
  // Whether a grant of `tenant` gives it the known site `site`.
  bool granted(std::string_view tenant, std::string_view site);
  // Labels of a known site; nullopt for an unknown one.
  std::optional<Labels> site_labels(std::string_view site);
  // How many known sites' records name `region` as their regional hub.
  size_t sites_naming_region(std::string_view region);
  // The placement, template and override keys in a site's scope, sorted.
  std::vector<std::string> scope_keys(std::string_view site);
  // Keys of the placements matching a site, sorted.
  std::vector<std::string> placements_of(std::string_view site);
  // O(sites + placements + overrides), under the index's lock.
  IndexCounts counts();

 private:
  struct Site;
  struct Rule;
  struct SelectorIndex;
  struct LabelIndex;
  struct TenantGrants;
  // One commit's changes of sites' key sets, as they happen: +1 a key
  // entered a site's scope, -1 it left (by interned key; collect() nets them).
  // Keys are not erased from holders_ while a commit is evaluated (emptied_
  // lists those that lost their last holder), so the interned keys the
  // changes point at stay valid until collect() has read them.
  struct Note {
    uint32_t site_id;
    int delta;
    const std::string* key;
  };
  struct Changes {
    std::vector<Note> notes;
    // Sites that stopped (or started) being served here with no change of
    // keys to announce it (a refused record that then left this replica):
    // each gets a ScopeChange of its own, so that its session ends.
    std::vector<uint32_t> serving;
  };
  // Interned scope keys -> the sites holding them, by id, and how many.
  struct Holders {
    placement_detail::Bits sites;
    size_t count = 0;
    uint64_t hash = 0;  // key_hash of the key
    // Site id -> reasons it holds the key beyond the first (a template listed
    // by two of its placements: 1). Most keys have none.
    std::unordered_map<uint32_t, uint32_t> extra;
  };
  using Holder = std::pair<const std::string, Holders>;
  // A scope key, resolved once for the many sites one change visits: its
  // holders_ entry and, for a template, the overrides of it (each looked up
  // when first needed). Valid while one document is evaluated: holders_
  // entries are erased only after it (erase_emptied), and
  // overrides_by_template_ changes only in update_override, which uses none.
  struct KeyRef {
    const std::string* key;
    Holder* holder = nullptr;
    const std::unordered_set<Rule*>* overrides = nullptr;
    bool overrides_known = false;
  };
  static std::vector<KeyRef> key_refs(const std::vector<std::string>& keys);
  Holder* resolve(KeyRef* k);
  const std::unordered_set<Rule*>* overrides_of(KeyRef* t);

  enum class DocKind { kNone, kSite, kPlacement, kOverride, kGrant };
  static DocKind classify(std::string_view key, std::string_view* tenant, std::string_view* name);

  // REQUIRES: mu_ held, for all below. `changes` may be null (while loading):
  // nothing is recorded then.
  void evaluate(const std::string& key, Changes* changes);
  void update_site(const std::string& name, const Document& doc, Changes* changes);
  void update_placement(const std::string& key, std::string_view tenant, const Document& doc,
                        Changes* changes);
  void update_override(const std::string& key, std::string_view tenant, const Document& doc,
                       Changes* changes);
  // Re-evaluates the tenant's placements and overrides against its grants.
  void update_grant(const std::string& key, std::string_view tenant, const Document& doc,
                    Changes* changes);
  TenantGrants* grants_of(std::string_view tenant);
  // Sets `out` to the known sites the rule matches, by id.
  void matching_bits(const Rule& rule, placement_detail::Bits* out);
  bool matches(const Rule& rule, const Site& site) const;
  std::unordered_set<Rule*> overrides_wanted(Site* site);
  // `key` is the placement's key, `templates` its templates' keys.
  void add_placement(Site* site, Rule* placement, KeyRef* key, std::vector<KeyRef>* templates,
                     Changes* changes);
  void remove_placement(Site* site, Rule* placement, KeyRef* key, std::vector<KeyRef>* templates,
                        Changes* changes);
  void ref_template(Site* site, KeyRef* t, Changes* changes);
  void unref_template(Site* site, KeyRef* t, Changes* changes);
  void add_override(Site* site, Rule* override_rule, Changes* changes);
  void remove_override(Site* site, Rule* override_rule, Changes* changes);
  // Returns true when the key entered / left the site's scope.
  bool ref(Site* site, KeyRef* k, Changes* changes);
  bool unref(Site* site, KeyRef* k, Changes* changes);
  bool ref(Site* site, const std::string& key, Changes* changes);
  bool unref(Site* site, const std::string& key, Changes* changes);
  // Erases the holders_ entries emptied_ lists that no site holds.
  void erase_emptied();
  // The site's scope keys, sorted.
  static std::vector<std::string> scope_of(const Site& site);
  // Calls f(site) for each of `sites`, in order, prefetching the sites
  // ahead of it and their placements and scope keys: visiting thousands of
  // sites waits on memory, not on the CPU, unless the loads overlap.
  template <typename F>
  static void visit(const std::vector<Site*>& sites, F&& f);
  // The key's entry in holders_, created if need be.
  Holder* holder_of(const std::string& key);
  // Whether `key` is in the site's scope (its holders' bit set).
  bool holds(const Site& site, std::string_view key) const;
  // `holder`'s key enters / leaves the site's scope. REQUIRES: it is not /
  // is in the scope (leave: with no reason left).
  void enter(Site* site, Holder* holder, Changes* changes);
  void leave(Site* site, Holder* holder, Changes* changes);
  Site* site_or_null(std::string_view name);
  // The commit's ScopeChanges, by site id (the order the index first saw
  // the sites); clears `changes` and erases the keys no site holds any more.
  std::vector<sync::ScopeChange> collect(Changes* changes);
  uint64_t version_locked(Site* site);

  std::mutex mu_;
  // See generation(); moved under mu_ by enter() and leave().
  std::atomic<uint64_t> generation_{1};
  bool loaded_ = false;
  ScopeListener listener_;
  RegionListener region_listener_;
  // Region changes of the commit being evaluated (mu_ held; on_commit reports
  // and clears them).
  std::vector<RegionChange> region_changes_;
  bool dropping_ = false;  // the commit being evaluated is a local drop (index 0)
  bool serve_unknown_ = true;
  Store* attached_ = nullptr;
  uint64_t subscription_ = 0;

  // CRDT copies of the documents the index evaluates.
  std::unordered_map<std::string, Document> docs_;
  std::map<std::string, std::unique_ptr<Site>, std::less<>> sites_;
  std::map<std::string, size_t, std::less<>> region_sites_;  // region -> sites naming it
  std::unordered_map<std::string, std::unique_ptr<Rule>> placements_;
  std::unordered_map<std::string, std::unique_ptr<Rule>> overrides_;
  // Tenant name -> its grants; entries are never erased (rules point at them).
  std::unordered_map<std::string, std::unique_ptr<TenantGrants>> grants_;
  std::set<std::string> grant_keys_;  // grant documents that exist
  // Transparent: looked up by string_view without a copy.
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view k) const { return std::hash<std::string_view>()(k); }
  };
  std::unordered_map<std::string, Holders, KeyHash, std::equal_to<>> holders_;
  // Keys that lost their last holder while a document was evaluated.
  std::vector<const std::string*> emptied_;
  // Known sites by label, as bit sets of site ids.
  std::unique_ptr<LabelIndex> labels_;
  std::unique_ptr<SelectorIndex> placement_selectors_;
  std::unique_ptr<SelectorIndex> override_selectors_;
  // Template key -> overrides of that template.
  std::unordered_map<std::string, std::unordered_set<Rule*>> overrides_by_template_;
  // Scratch of on_commit and update_placement, kept to reuse their buffers:
  // a large allocation right after many small frees (the sync thread freeing
  // the last commit's changes) costs glibc a pass over all of them.
  Changes changes_;
  placement_detail::Bits scratch_bits_;
  std::vector<Site*> visit_;
  // Every site's id in name order (sites_' order), for sites_for: a key held
  // by many sites is listed by walking this, already sorted, instead of
  // sorting thousands of names at each commit. Rebuilt when sites were added
  // (sites_ never loses one).
  std::vector<uint32_t> name_order_;
};

}  // namespace canopy::hub

// Scope: which keys a child replica may hold and which it may write.
//
// The parent decides. Sync asks the ScopeProvider for every key it would send
// down or accept up; nothing outside `in_scope` ever reaches the child, and a
// child's write outside `writable_by` is refused and logged, never merged.
//
// `version` names the child's current scope: it must change whenever the set of
// keys in scope changes (a new placement, a label change). A child stores the
// version it last caught up with; a session that resumes with another version
// reconciles instead of replaying the log, since keys that entered the scope
// must arrive whole and keys that left must be dropped.
//
// Thread-safety: called with the sync engine's lock held; implementations must
// be thread-safe against their own writers.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace canopy::sync {

class ScopeProvider {
 public:
  virtual ~ScopeProvider() = default;
  virtual bool in_scope(std::string_view child, std::string_view key) = 0;
  // The key prefixes `child` may write; `writable_by` must agree with them.
  virtual std::vector<std::string> writable_prefixes(std::string_view child) = 0;
  virtual bool writable_by(std::string_view child, std::string_view key) {
    for (const auto& p : writable_prefixes(child)) {
      if (key.starts_with(p)) return true;
    }
    return false;
  }
  virtual uint64_t version(std::string_view child) = 0;
  // The child's scope as a list, when the provider can give one: exact keys
  // plus key prefixes (every key under a prefix is in scope). Reconciliation
  // then reads only those documents instead of filtering everything the
  // parent holds (a root hub holds far more than any one site's scope).
  // It must agree with `in_scope` on every key the parent holds, deleted
  // documents (tombstones) included: a key that is routed but not listed
  // looks "only at the child" to a reconciliation, and a delta that arrives
  // meanwhile saves the child's stale copy from its drop and merges onto it
  // (the copy then keeps what the parent deleted).
  struct Listing {
    std::vector<std::string> keys;
    std::vector<std::string> prefixes;
  };
  virtual std::optional<Listing> list_scope(std::string_view /*child*/) { return std::nullopt; }
  // The children whose scope holds `key`, so that a committed change is routed
  // only to the sessions that need it (O(result), not O(children)).
  virtual std::vector<std::string> children_for(std::string_view key) = 0;
  // children_for(key), and whether that list is exact: the children for
  // which in_scope(child, key) holds when it is called, never more. The
  // parent routes a committed change by an exact list alone instead of
  // asking in_scope again for each child (10,000 look-ups for a change
  // placed on every site).
  struct Route {
    std::vector<std::string> children;
    bool exact = false;
  };
  virtual Route route(std::string_view key) { return {children_for(key), false}; }
  // A number that changes whenever any child's `version` may have changed;
  // 0 when the provider keeps none (then version() is asked every time). A
  // version read after reading generation() is no older than that
  // generation, so the parent keeps each child's version until it changes.
  virtual uint64_t generation() { return 0; }
  // Whether this parent serves `child` at all. A child it does not serve
  // (a site without a record at a regional hub; a site that belongs to a
  // regional hub, at that hub's parent) gets no session: its hello is
  // refused and it keeps what it holds, instead of being handed an empty
  // scope that would make it drop everything. A session whose child stops
  // being served ends, without drops (the site moved to another hub).
  virtual bool serves(std::string_view /*child*/) { return true; }
  // For a child this parent does not serve: the children of ours that serve
  // it (a site's regional hub, or the hubs of an active-active region); the
  // child is redirected to the first, in its preferred_order, with a live
  // session here (else the first) when it says hello. Empty: none known.
  virtual std::vector<std::string> redirect_for(std::string_view /*child*/) { return {}; }
};

// An immutable list of keys, shared by the copies of it: one placement change
// moves the same keys into thousands of sites, and each site's ScopeChange is
// copied on its way to sync (RegionScope, SyncNode's queue), so copying one
// copies a pointer, not its strings. Reads as a const std::vector; built from
// one (or a braced list), never changed after.
class KeyList {
 public:
  using value_type = std::string;
  using const_iterator = std::vector<std::string>::const_iterator;
  using iterator = const_iterator;

  KeyList() = default;
  KeyList(std::vector<std::string> keys)  // NOLINT(google-explicit-constructor)
      : keys_(keys.empty() ? nullptr
                           : std::make_shared<const std::vector<std::string>>(std::move(keys))) {}
  KeyList(std::initializer_list<std::string> keys) : KeyList(std::vector<std::string>(keys)) {}

  const std::vector<std::string>& get() const { return keys_ ? *keys_ : none(); }
  const_iterator begin() const { return get().begin(); }
  const_iterator end() const { return get().end(); }
  size_t size() const { return keys_ ? keys_->size() : 0; }
  bool empty() const { return size() == 0; }
  const std::string& operator[](size_t i) const { return get()[i]; }
  // Whether two lists are the same shared one (equal without comparing).
  bool shares(const KeyList& other) const { return keys_ == other.keys_; }

  friend bool operator==(const KeyList& a, const KeyList& b) {
    return a.keys_ == b.keys_ || a.get() == b.get();
  }
  friend bool operator==(const KeyList& a, const std::vector<std::string>& b) {
    return a.get() == b;
  }

 private:
  static const std::vector<std::string>& none() {
    static const std::vector<std::string> kNone;
    return kNone;
  }
  std::shared_ptr<const std::vector<std::string>> keys_;
};

// A change of one child's scope, computed by the parent's own logic (placement
// evaluation) and handed to sync, which ships the entering keys whole and tells
// the child to drop the leaving ones. Cheap to copy (KeyList).
struct ScopeChange {
  std::string child;
  KeyList entered;
  KeyList left;
  // The child's scope version right after this change. Changes are queued
  // before sync handles them, and by then the scope may have changed again:
  // the message carrying this change must announce this version, not the
  // current one, or a child that misses the next change's message would hold
  // the newer version without its documents. 0: unknown (the current one).
  uint64_t version = 0;
  // The scope changed in ways `entered` and `left` do not list (a regional
  // hub gained or lost a member site): the session reconciles its whole
  // scope, which sends only what the child lacks and drops what it must not
  // hold.
  bool reconcile = false;
};

}  // namespace canopy::sync

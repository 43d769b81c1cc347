// PeerScope: the scope a hub gives the other hubs of its level (active-active,
// docs/hierarchy.md), composed over the scope it gives everyone else.
//
// Hubs of one level are replicas of the same state: a peer holds every key
// and may write every key, like the hub itself. Each hub is a child of one
// peer at a time (ChildSync with fallbacks: the first live one in name order)
// over the ordinary session protocol, so every write reaches every peer
// through a connected graph of sessions and merges by the CRDT rules; nothing
// but the scope below differs from a site's session. A peer's scope never
// changes (version 1); every committed key is routed to it.
//
// Peers below a parent (the hubs of one region, docs/hierarchy.md,
// "Active-active regions"; own_sites given). Each holds exactly the scope its
// parent gives the region, and only the parent may change that scope's
// desired state. So a peer may write only what the level's own sites may
// write (their status, local overrides, holds, reported values: model::
// site_writable_prefixes) and their presence documents, never a key of the
// parent's: a copy a peer kept after the parent took it out of the region's
// scope (the drop raced the peer's stream) is then dropped by the next
// reconciliation between the peers instead of spreading back. The version
// follows the set of own sites (a hash of their names); when a site record
// naming this hub's region appears or goes, own_sites_changed returns a
// reconciling ScopeChange for each peer, so that its session learns what it
// may write now.
//
// Thread-safety: as the inner provider; the peer list is fixed; own_sites
// must be callable from any thread.
#pragma once

#include <xxhash.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/keys.h"
#include "sync/scope.h"

namespace canopy::hub {

class PeerScope final : public sync::ScopeProvider {
 public:
  using OwnSites = std::function<std::vector<std::string>()>;
  using OwnVersion = std::function<uint64_t()>;
  // `inner` (not owned) must outlive this. `own_sites`: the sites this hub
  // serves, sorted, for peers below a parent; empty at the top level.
  // `own_version`: a version of that set (never 0) that changes whenever it
  // does, read in O(1) (RegionScope::own_sites_version); empty: a hash of
  // the list, O(sites) at every read.
  PeerScope(sync::ScopeProvider* inner, std::vector<std::string> peers, OwnSites own_sites = {},
            OwnVersion own_version = {})
      : inner_(inner),
        peers_(sorted(std::move(peers))),
        own_sites_(std::move(own_sites)),
        own_version_(std::move(own_version)) {
    if (own_sites_) announced_ = own_sites_version();
  }

  bool is_peer(std::string_view child) const {
    return std::find(peers_.begin(), peers_.end(), child) != peers_.end();
  }

  bool in_scope(std::string_view child, std::string_view key) override {
    return is_peer(child) || inner_->in_scope(child, key);
  }
  std::vector<std::string> writable_prefixes(std::string_view child) override {
    if (!is_peer(child)) return inner_->writable_prefixes(child);
    if (!own_sites_) return {""};
    std::vector<std::string> out;
    for (const auto& site : own_sites_()) {
      for (auto& prefix : inner_->writable_prefixes(site)) out.push_back(std::move(prefix));
      out.push_back(model::presence_key(site));
    }
    return out;
  }
  bool writable_by(std::string_view child, std::string_view key) override {
    if (!is_peer(child)) return inner_->writable_by(child, key);
    if (!own_sites_) return true;
    // What one of our sites may write (the inner scope's rule for it), or
    // its presence document.
    const model::ParsedKey k = model::parse_key(key);
    if (k.site.empty()) return false;
    const std::string site(k.site);
    if (!inner_->serves(site)) return false;
    return k.kind == model::KeyKind::kPresence || inner_->writable_by(site, key);
  }
  uint64_t version(std::string_view child) override {
    if (!is_peer(child)) return inner_->version(child);
    return own_sites_ ? own_sites_version() : 1;
  }

  // For peers below a parent, when this hub's own sites may have changed
  // (RegionScope::on_own_sites_change): a reconciling change for each peer
  // if the set did change, so that its session learns what it may write
  // now; otherwise none.
  std::vector<sync::ScopeChange> own_sites_changed() {
    if (!own_sites_) return {};
    const uint64_t now = own_sites_version();
    {
      std::lock_guard lock(mu_);
      if (now == announced_) return {};
      announced_ = now;
    }
    std::vector<sync::ScopeChange> out;
    for (const auto& peer : peers_) {
      sync::ScopeChange c;
      c.child = peer;
      c.version = now;
      c.reconcile = true;
      out.push_back(std::move(c));
    }
    return out;
  }
  std::optional<Listing> list_scope(std::string_view child) override {
    if (is_peer(child)) return Listing{{}, {""}};
    return inner_->list_scope(child);
  }
  std::vector<std::string> children_for(std::string_view key) override {
    return with_peers(inner_->children_for(key));
  }
  // As exact as the inner scope's: peers hold every key.
  Route route(std::string_view key) override {
    Route r = inner_->route(key);
    r.children = with_peers(std::move(r.children));
    return r;
  }
  bool serves(std::string_view child) override { return is_peer(child) || inner_->serves(child); }
  // A peer's version follows our own sites when they are given: it has no
  // generation then.
  uint64_t generation() override { return own_sites_ ? 0 : inner_->generation(); }
  std::vector<std::string> redirect_for(std::string_view child) override {
    return is_peer(child) ? std::vector<std::string>() : inner_->redirect_for(child);
  }

 private:
  // `children` (sorted) and the peers, sorted (the parent engine walks
  // sorted lists in one pass).
  std::vector<std::string> with_peers(std::vector<std::string> out) const {
    const auto mid = static_cast<std::ptrdiff_t>(out.size());
    out.insert(out.end(), peers_.begin(), peers_.end());
    std::inplace_merge(out.begin(), out.begin() + mid, out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
  static std::vector<std::string> sorted(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  }
  uint64_t own_sites_version() const {
    return own_version_ ? own_version_() : version_of(own_sites_());
  }
  static uint64_t version_of(const std::vector<std::string>& sites) {
    uint64_t h = 0x6f776e2d73697465ULL;  // "own-site"
    for (const auto& site : sites) h = XXH3_64bits_withSeed(site.data(), site.size(), h);
    return h == 0 ? 1 : h;
  }
  sync::ScopeProvider* inner_;
  const std::vector<std::string> peers_;
  const OwnSites own_sites_;
  const OwnVersion own_version_;
  std::mutex mu_;
  uint64_t announced_ = 0;  // guarded by mu_: the version on_inner_change last announced
};

}  // namespace canopy::hub

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
// Thread-safety: as the inner provider; the peer list is fixed.
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sync/scope.h"

namespace canopy::hub {

class PeerScope final : public sync::ScopeProvider {
 public:
  // `inner` (not owned) must outlive this.
  PeerScope(sync::ScopeProvider* inner, std::vector<std::string> peers)
      : inner_(inner), peers_(sorted(std::move(peers))) {}

  bool is_peer(std::string_view child) const {
    return std::find(peers_.begin(), peers_.end(), child) != peers_.end();
  }

  bool in_scope(std::string_view child, std::string_view key) override {
    return is_peer(child) || inner_->in_scope(child, key);
  }
  std::vector<std::string> writable_prefixes(std::string_view child) override {
    if (is_peer(child)) return {""};
    return inner_->writable_prefixes(child);
  }
  bool writable_by(std::string_view child, std::string_view key) override {
    return is_peer(child) || inner_->writable_by(child, key);
  }
  uint64_t version(std::string_view child) override {
    return is_peer(child) ? 1 : inner_->version(child);
  }
  std::optional<Listing> list_scope(std::string_view child) override {
    if (is_peer(child)) return Listing{{}, {""}};
    return inner_->list_scope(child);
  }
  std::vector<std::string> children_for(std::string_view key) override {
    // Kept sorted (the parent engine walks sorted lists in one pass).
    std::vector<std::string> out = inner_->children_for(key);
    const auto mid = static_cast<std::ptrdiff_t>(out.size());
    out.insert(out.end(), peers_.begin(), peers_.end());
    std::inplace_merge(out.begin(), out.begin() + mid, out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
  bool serves(std::string_view child) override { return is_peer(child) || inner_->serves(child); }
  std::vector<std::string> redirect_for(std::string_view child) override {
    return is_peer(child) ? std::vector<std::string>() : inner_->redirect_for(child);
  }

 private:
  static std::vector<std::string> sorted(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  }
  sync::ScopeProvider* inner_;
  const std::vector<std::string> peers_;
};

}  // namespace canopy::hub

// SimScope: the scope rules of the simulated federation, standing in for the
// hub's placement index (hub/placement_index.h) with rules small enough to
// check by hand:
//   d/<group>/<n>   desired state, written at the root; a site holds the
//                   groups assigned to it, a regional hub the union of its sites';
//   s/<site>/<n>    written by the site (and sometimes the root); in scope and
//                   writable for the site and for the regional hub above it.
#pragma once

#include <xxhash.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "sync/scope.h"

namespace canopy::sim {

// Which groups each site holds, and which sites sit below each regional hub.
struct Assignments {
  std::map<std::string, std::set<std::string>> groups;
  std::map<std::string, std::vector<std::string>> members;  // regional -> sites

  std::set<std::string> groups_of(const std::string& child) const {
    auto m = members.find(child);
    if (m == members.end()) {
      auto g = groups.find(child);
      return g == groups.end() ? std::set<std::string>() : g->second;
    }
    std::set<std::string> out;
    for (const auto& site : m->second) {
      auto g = groups_of(site);
      out.insert(g.begin(), g.end());
    }
    return out;
  }
  bool covers_site(const std::string& child, std::string_view site) const {
    if (site == child) return true;
    auto m = members.find(child);
    if (m == members.end()) return false;
    for (const auto& s : m->second) {
      if (s == site) return true;
    }
    return false;
  }
};

inline std::string_view token(std::string_view key, size_t i) {
  for (size_t n = 0; n < i; ++n) {
    const size_t slash = key.find('/');
    if (slash == std::string_view::npos) return {};
    key.remove_prefix(slash + 1);
  }
  return key.substr(0, key.find('/'));
}

class SimScope final : public sync::ScopeProvider {
 public:
  SimScope(const Assignments* a, std::vector<std::string> children)
      : a_(a), children_(std::move(children)) {}

  bool in_scope(std::string_view child, std::string_view key) override {
    const std::string c(child);
    if (key.starts_with("s/")) return a_->covers_site(c, token(key, 1));
    if (key.starts_with("d/")) return a_->groups_of(c).count(std::string(token(key, 1))) > 0;
    return false;
  }
  std::vector<std::string> writable_prefixes(std::string_view child) override {
    std::vector<std::string> out = {"s/" + std::string(child) + "/"};
    auto m = a_->members.find(std::string(child));
    if (m != a_->members.end()) {
      for (const auto& site : m->second) out.push_back("s/" + site + "/");
    }
    return out;
  }
  uint64_t version(std::string_view child) override {
    std::string all;
    for (const auto& g : a_->groups_of(std::string(child))) all += g + ",";
    return XXH3_64bits(all.data(), all.size()) | 1;
  }
  std::vector<std::string> children_for(std::string_view key) override {
    std::vector<std::string> out;
    for (const auto& c : children_) {
      if (in_scope(c, key)) out.push_back(c);
    }
    return out;
  }
  const std::vector<std::string>& children() const { return children_; }

 private:
  const Assignments* a_;
  std::vector<std::string> children_;
};

}  // namespace canopy::sim

// Parts the sync tests share: a scope by key prefixes (and
// tests/support/test_store.h's store opener).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/store.h"
#include "sync/scope.h"
#include "tests/support/test_store.h"

namespace canopy::sync {

// Each of `children` holds the keys under `prefixes` and its own
// `s/<child>/...`, which it may write.
class PrefixScope final : public ScopeProvider {
 public:
  explicit PrefixScope(std::vector<std::string> children = {"site"})
      : children_(std::move(children)) {}
  bool in_scope(std::string_view child, std::string_view key) override {
    if (key.starts_with("s/" + std::string(child) + "/")) return true;
    for (const auto& p : prefixes) {
      if (key.starts_with(p)) return true;
    }
    return false;
  }
  std::vector<std::string> writable_prefixes(std::string_view child) override {
    return {"s/" + std::string(child) + "/"};
  }
  uint64_t version(std::string_view) override { return version_; }
  std::vector<std::string> children_for(std::string_view key) override {
    std::vector<std::string> out;
    for (const auto& c : children_) {
      if (in_scope(c, key)) out.push_back(c);
    }
    return out;
  }
  std::set<std::string> prefixes{"d/"};
  uint64_t version_ = 1;

 private:
  std::vector<std::string> children_;
};

}  // namespace canopy::sync

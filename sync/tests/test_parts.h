// Parts the sync tests share: a scope by key prefixes, and a store opened the
// way those tests want it (no fsync, a manual clock, a fixed replica id).
#pragma once

#include <gtest/gtest.h>

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
#include "tests/support/temp_dir.h"

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

// A store in `dir`/`name` without fsync, on `clock`, with replica id `id`
// (and `random` for its ids and epochs, when given).
inline std::unique_ptr<Store> open_test_store(testing::TempDir& dir, const std::string& name,
                                              uint64_t id, Clock* clock,
                                              std::function<uint64_t()> random = {}) {
  StoreOptions o;
  o.path = dir.file(name);
  o.durability = Durability::kNone;
  o.clock = clock;
  o.replica_id = id;
  if (random) o.random = std::move(random);
  auto s = Store::open(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

}  // namespace canopy::sync

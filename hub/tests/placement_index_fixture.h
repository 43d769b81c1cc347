// PlacementIndexTest's fixture (placement_index_test.cc,
// placement_index_agreement_test.cc): a PlacementIndex over a real store.
#pragma once

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <utility>

#include "hub/placement_index.h"
#include "tests/support/temp_dir.h"

namespace canopy::hub {

using json = nlohmann::json;
using Keys = std::vector<std::string>;

constexpr char kWebKey[] = "t/acme/templates/web";
constexpr char kDbKey[] = "t/acme/templates/db";
constexpr char kPlacementKey[] = "t/acme/placements/shop";
constexpr char kAcmeGrant[] = "t/acme/grants/all";

inline std::unique_ptr<Store> open_store(const std::string& path, uint64_t replica = 0) {
  StoreOptions o;
  o.path = path;
  o.durability = Durability::kNone;
  o.replica_id = replica;
  auto s = Store::open(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

class PlacementIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = open_store(dir_.file("hub"));
    ASSERT_NE(store_, nullptr);
    auto index = PlacementIndex::attach(store_.get());
    ASSERT_TRUE(index.ok()) << index.status().to_string();
    index_ = std::move(index).value();
    listen(index_.get());
    // acme may place on every site; GrantsGateWhereATenantPlaces takes it away.
    put(kAcmeGrant, {{"allSites", true}});
  }

  void listen(PlacementIndex* index) {
    index->on_scope_change([this](const sync::ScopeChange& c) {
      std::lock_guard lock(mu_);
      events_.push_back(c);
    });
  }

  void put(const std::string& key, const json& doc) {
    auto r = store_->put_value(key, doc);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }
  void remove(const std::string& key) {
    auto r = store_->remove(key);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }
  void site(const std::string& name, const json& labels) {
    put("sites/" + name, {{"name", name}, {"labels", labels}});
  }

  // Events since the last call, by site; a site reported twice fails.
  std::map<std::string, sync::ScopeChange> take() {
    std::lock_guard lock(mu_);
    std::map<std::string, sync::ScopeChange> out;
    for (auto& e : events_) {
      EXPECT_TRUE(out.emplace(e.child, e).second) << "two changes for " << e.child;
    }
    events_.clear();
    return out;
  }

  std::vector<sync::ScopeChange> take_list() {
    std::lock_guard lock(mu_);
    return std::exchange(events_, {});
  }

  canopy::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<PlacementIndex> index_;
  std::mutex mu_;
  std::vector<sync::ScopeChange> events_;
};

inline json placement(const Keys& templates, const json& labels, const Keys& sites = {}) {
  json p = {{"templates", templates}};
  if (!labels.is_null()) p["selector"] = {{"matchLabels", labels}};
  if (!sites.empty()) p["sites"] = sites;
  return p;
}

}  // namespace canopy::hub

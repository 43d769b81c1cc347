// RegionScope over a real store and PlacementIndex: writes go through the
// Store, reach the index through its subscription, and the index's changes
// reach RegionScope as at a hub with regional hubs below it.
#include "hub/region_scope.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <utility>

#include "hub/peer_scope.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_store.h"

namespace canopy::hub {
namespace {

using json = nlohmann::json;
using Keys = std::vector<std::string>;
// acme may place on every site (the fixture's grant; grants are in every
// region's scope).
constexpr char kAcmeGrant[] = "t/acme/grants/all";

constexpr char kWebKey[] = "t/acme/templates/web";
constexpr char kDbKey[] = "t/acme/templates/db";
constexpr char kShopKey[] = "t/acme/placements/shop";

class RegionScopeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = open_test_store(dir_, "hub");
    ASSERT_NE(store_, nullptr);
    auto index = PlacementIndex::attach(store_.get());
    ASSERT_TRUE(index.ok()) << index.status().to_string();
    index_ = std::move(index).value();
    ASSERT_TRUE(store_->put_value(kAcmeGrant, nlohmann::json{{"allSites", true}}).ok());
  }

  void make_scope(RegionScope::Regions regions = {{"reg", {"r2", "r1"}}}) {
    auto scope = RegionScope::create(index_.get(), std::move(regions));
    ASSERT_TRUE(scope.ok()) << scope.status().to_string();
    scope_ = std::move(scope).value();
    scope_->on_scope_change([this](const sync::ScopeChange& c) {
      std::lock_guard lock(mu_);
      // The version a change announces is the scope's version right after it.
      EXPECT_EQ(c.version, scope_->version(c.child)) << c.child;
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
  static json placement(const Keys& templates, const json& labels, const Keys& sites = {}) {
    json p = {{"templates", templates}};
    if (!labels.is_null()) p["selector"] = {{"matchLabels", labels}};
    if (!sites.empty()) p["sites"] = sites;
    return p;
  }

  // Changes since the last call, by child; a child reported twice fails.
  std::map<std::string, sync::ScopeChange> take() {
    std::lock_guard lock(mu_);
    std::map<std::string, sync::ScopeChange> out;
    for (auto& e : events_) {
      EXPECT_TRUE(out.emplace(e.child, e).second) << "two changes for " << e.child;
    }
    events_.clear();
    return out;
  }

  canopy::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<PlacementIndex> index_;
  std::unique_ptr<RegionScope> scope_;
  std::mutex mu_;
  std::vector<sync::ScopeChange> events_;
};

TEST_F(RegionScopeTest, RefusesBadRegions) {
  using R = RegionScope::Regions;
  for (const R& bad :
       {R{{"Reg", {"r1"}}}, R{{"reg", {}}}, R{{"reg", {"r_1"}}}, R{{"reg", {"r1", "r1"}}},
        R{{"reg", {"r1"}}, {"eu", {"r1"}}}, R{{"reg", {"r1"}}, {"r1", {"r2"}}}}) {
    auto scope = RegionScope::create(index_.get(), bad);
    EXPECT_EQ(scope.status().code(), StatusCode::kInvalidArgument) << bad.begin()->first;
  }
}

TEST_F(RegionScopeTest, EveryRegionHoldsEveryGrantAndNoSiteDoes) {
  make_scope({{"reg", {"r1"}}, {"west", {"w1"}}});
  site("r1", {{"region", "eu"}});
  site("d1", {{"region", "eu"}});
  put("t/globex/grants/towers", {{"sites", {"d1"}}});
  put("t/beta/grants/bad", {{"sites", "not a list"}});  // refused, still replicated
  const uint64_t version = scope_->version("reg");
  for (const char* key : {"t/acme/grants/all", "t/globex/grants/towers", "t/beta/grants/bad"}) {
    EXPECT_TRUE(scope_->in_scope("reg", key)) << key;
    EXPECT_TRUE(scope_->in_scope("west", key)) << key;
    EXPECT_FALSE(scope_->in_scope("d1", key)) << key;
    EXPECT_FALSE(scope_->in_scope("r1", key)) << key;
    EXPECT_EQ(scope_->children_for(key), (Keys{"reg", "west"})) << key;
  }
  auto listing = scope_->list_scope("reg");
  ASSERT_TRUE(listing.has_value());
  for (const char* key : {"t/acme/grants/all", "t/globex/grants/towers", "t/beta/grants/bad"}) {
    EXPECT_NE(std::find(listing->keys.begin(), listing->keys.end(), key), listing->keys.end())
        << key;
  }
  // Grants are in scope by rule: writing one changes no region's key set.
  EXPECT_EQ(scope_->version("reg"), version);
  // A deleted grant stays listed: its tombstone reaches a region that held
  // the grant (a copy left out of the listing would be saved from its drop
  // by a later put of the grant, and keep what was deleted).
  remove("t/globex/grants/towers");
  listing = scope_->list_scope("reg");
  EXPECT_NE(std::find(listing->keys.begin(), listing->keys.end(), "t/globex/grants/towers"),
            listing->keys.end());
  // A region may not write them.
  EXPECT_FALSE(scope_->writable_by("reg", "t/acme/grants/all"));
}

TEST_F(RegionScopeTest, RegionHoldsItsMembersSubtreesAndWritesThem) {
  make_scope();
  EXPECT_TRUE(scope_->is_region("reg"));
  EXPECT_FALSE(scope_->is_region("r1"));
  EXPECT_EQ(scope_->region_of("r1"), "reg");
  EXPECT_EQ(scope_->region_of("a1"), "");

  for (const char* key : {"sites/r1", "sites/r2", "sites/r1/status/acme/web"}) {
    EXPECT_TRUE(scope_->in_scope("reg", key)) << key;
  }
  for (const char* key :
       {"sites/a1", "sites/r10", "sites/reg", "sites/a1/status/acme/web", kWebKey}) {
    EXPECT_FALSE(scope_->in_scope("reg", key)) << key;
  }
  EXPECT_TRUE(scope_->writable_by("reg", "sites/r1/status/acme/web"));
  EXPECT_TRUE(scope_->writable_by("reg", "sites/r2/overrides/acme/web"));
  EXPECT_FALSE(scope_->writable_by("reg", "sites/r1"));
  EXPECT_FALSE(scope_->writable_by("reg", "sites/r1/status/"));
  EXPECT_FALSE(scope_->writable_by("reg", "sites/a1/status/acme/web"));
  EXPECT_FALSE(scope_->writable_by("reg", "sites/reg/status/acme/web"));
  EXPECT_FALSE(scope_->writable_by("reg", kWebKey));
  EXPECT_EQ(
      scope_->writable_prefixes("reg"),
      (Keys{"sites/r1/status/", "sites/r1/overrides/", "sites/r1/holds/", "sites/r1/reported/",
            "sites/r1/presence", "sites/r2/status/", "sites/r2/overrides/", "sites/r2/holds/",
            "sites/r2/reported/", "sites/r2/presence"}));
  // Every writable key is in scope.
  for (const auto& p : scope_->writable_prefixes("reg"))
    EXPECT_TRUE(scope_->in_scope("reg", p + "x"));

  // A direct site is the index's.
  EXPECT_TRUE(scope_->in_scope("a1", "sites/a1/status/acme/web"));
  EXPECT_EQ(scope_->writable_prefixes("a1"), index_->writable_prefixes("a1"));
  EXPECT_EQ(scope_->version("a1"), index_->version("a1"));

  EXPECT_EQ(scope_->children_for("sites/r1/status/acme/web"), Keys{"reg"});
  EXPECT_EQ(scope_->children_for("sites/a1"), Keys{"a1"});
}

TEST_F(RegionScopeTest, KeyLeavesRegionOnlyWhenItLeavesEveryMember) {
  site("r1", {{"tier", "shop"}});
  site("r2", {{"tier", "tower"}});
  site("a1", {{"tier", "shop"}});
  make_scope();
  const uint64_t empty = scope_->version("reg");

  put(kShopKey, placement({"web"}, {{"tier", "shop"}}));
  auto c = take();
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c["reg"].entered, (Keys{kShopKey, kWebKey}));
  EXPECT_TRUE(c["reg"].left.empty());
  EXPECT_EQ(c["a1"].entered, (Keys{kShopKey, kWebKey}));  // passed through
  EXPECT_EQ(c["a1"].version, index_->version("a1"));
  EXPECT_TRUE(scope_->in_scope("reg", kWebKey));
  EXPECT_EQ(scope_->children_for(kWebKey), (Keys{"a1", "reg"}));
  const uint64_t one = scope_->version("reg");
  EXPECT_NE(one, empty);

  // r2 joins: the region already holds the keys.
  site("r2", {{"tier", "shop"}});
  EXPECT_TRUE(take().empty());
  EXPECT_EQ(scope_->version("reg"), one);
  EXPECT_EQ(scope_->children_for(kWebKey), (Keys{"a1", "reg"}));

  // r1 leaves: r2 still holds them.
  site("r1", {{"tier", "tower"}});
  EXPECT_TRUE(take().empty());
  EXPECT_TRUE(scope_->in_scope("reg", kShopKey));

  // r2 leaves: now they leave the region.
  site("r2", {{"tier", "tower"}});
  c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(c["reg"].entered.empty());
  EXPECT_EQ(c["reg"].left, (Keys{kShopKey, kWebKey}));
  EXPECT_FALSE(scope_->in_scope("reg", kWebKey));
  EXPECT_EQ(scope_->version("reg"), empty);
  EXPECT_EQ(scope_->children_for(kWebKey), Keys{"a1"});
}

// One commit moves keys into (and out of) both members: the index reports
// the members one after the other, already evaluated; the region must see
// each key enter and leave exactly once.
TEST_F(RegionScopeTest, OneCommitChangingBothMembers) {
  site("r1", {{"tier", "shop"}});
  site("r2", {{"tier", "shop"}});
  make_scope();
  put(kShopKey, placement({"web", "db"}, {{"tier", "shop"}}));
  auto c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c["reg"].entered, (Keys{kShopKey, kDbKey, kWebKey}));

  put(kShopKey, placement({"web"}, {{"tier", "shop"}}));
  c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(c["reg"].entered.empty());
  EXPECT_EQ(c["reg"].left, Keys{kDbKey});

  remove(kShopKey);
  c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c["reg"].left, (Keys{kShopKey, kWebKey}));
  ASSERT_TRUE(scope_->list_scope("reg").has_value());
  EXPECT_EQ(scope_->list_scope("reg")->keys, (Keys{"sites/r1", "sites/r2", kAcmeGrant}));
}

TEST_F(RegionScopeTest, StartsFromTheIndexAndListsTheUnion) {
  site("r1", {{"tier", "shop"}});
  site("r2", {{"tier", "tower"}});
  put(kShopKey, placement({"web"}, {{"tier", "shop"}}));
  put("t/acme/placements/tower", placement({"db"}, {{"tier", "tower"}}));
  put("t/acme/overrides/eu", {{"template", "db"}, {"patch", {{"x", 1}}}, {"sites", {"r2"}}});
  make_scope();
  EXPECT_TRUE(take().empty());
  auto listing = scope_->list_scope("reg");
  ASSERT_TRUE(listing.has_value());
  EXPECT_EQ(listing->keys, (Keys{"sites/r1", "sites/r2", kAcmeGrant, "t/acme/overrides/eu",
                                 kShopKey, "t/acme/placements/tower", kDbKey, kWebKey}));
  EXPECT_EQ(listing->prefixes, (Keys{"sites/r1/", "sites/r2/"}));
  EXPECT_EQ(scope_->list_scope("r1")->keys, index_->list_scope("r1")->keys);
  EXPECT_EQ(scope_->children_for("t/acme/overrides/eu"), Keys{"reg"});

  // The version is a function of the key set, whatever the history.
  const uint64_t v = scope_->version("reg");
  scope_.reset();
  make_scope();
  EXPECT_EQ(scope_->version("reg"), v);
}

TEST_F(RegionScopeTest, ReleasesTheIndexWhenDestroyed) {
  site("r1", {{"tier", "shop"}});
  make_scope();
  scope_.reset();
  put(kShopKey, placement({"web"}, {{"tier", "shop"}}));  // must not reach a dead scope
  EXPECT_TRUE(index_->in_scope("r1", kWebKey));
}

// Random label and placement edits: the region's scope is always the union
// of its members', and the changes it reported add up to it.
TEST_F(RegionScopeTest, RandomEditsMatchTheUnionOfMembers) {
  const Keys sites = {"r1", "r2", "r3", "a1"};
  make_scope({{"reg", {"r1", "r2", "r3"}}});
  std::mt19937_64 rng(7);
  std::set<std::string> reported;  // the region's keys, as its changes say
  uint64_t last_generation = scope_->generation();
  std::map<std::string, uint64_t> last_version = {{"reg", scope_->version("reg")},
                                                  {"a1", scope_->version("a1")}};
  for (int step = 0; step < 400; ++step) {
    const std::string s = sites[rng() % sites.size()];
    switch (rng() % 3) {
      case 0:
        site(s, {{"tier", rng() % 2 ? "shop" : "tower"}});
        break;
      case 1: {
        Keys templates;
        for (const char* t : {"web", "db", "cache"}) {
          if (rng() % 2) templates.push_back(t);
        }
        if (templates.empty()) templates.push_back("web");
        Keys listed;
        if (rng() % 3 == 0) listed.push_back(s);
        put("t/acme/placements/p" + std::to_string(rng() % 3),
            placement(templates, {{"tier", rng() % 2 ? "shop" : "tower"}}, listed));
        break;
      }
      default: {
        auto r = store_->remove("t/acme/placements/p" + std::to_string(rng() % 3));
        ASSERT_TRUE(r.ok() || r.status().code() == StatusCode::kNotFound);
      }
    }
    // One commit may change the region through several members: one
    // re-expressed change each.
    std::vector<sync::ScopeChange> changes;
    {
      std::lock_guard lock(mu_);
      changes.swap(events_);
    }
    for (const auto& c : changes) {
      if (c.child != "reg") continue;
      for (const auto& k : c.entered) EXPECT_TRUE(reported.insert(k).second) << k;
      for (const auto& k : c.left) EXPECT_EQ(reported.erase(k), 1u) << k;
    }
    std::set<std::string> want;
    for (const char* m : {"r1", "r2", "r3"}) {
      for (const auto& k : index_->scope_keys(m)) want.insert(k);
    }
    ASSERT_EQ(reported, want) << "step " << step;
    for (const auto& k : want) {
      ASSERT_TRUE(scope_->in_scope("reg", k));
      auto children = scope_->children_for(k);
      ASSERT_TRUE(std::find(children.begin(), children.end(), "reg") != children.end());
      // Routed to the region through its members: not exact (in_scope
      // answers for the region from its own keys).
      EXPECT_FALSE(scope_->route(k).exact) << k;
    }
    for (const auto& k : index_->scope_keys("a1")) {
      const sync::ScopeProvider::Route route = scope_->route(k);
      if (!route.exact) continue;
      for (const char* c : {"reg", "a1"}) {
        const bool listed =
            std::find(route.children.begin(), route.children.end(), c) != route.children.end();
        ASSERT_EQ(listed, scope_->in_scope(c, k)) << "step " << step << ", " << c << ", " << k;
      }
    }
    // A version moved only with the generation.
    const uint64_t generation = scope_->generation();
    for (auto& [child, version] : last_version) {
      const uint64_t now = scope_->version(child);
      if (now != version) {
        EXPECT_NE(generation, last_generation) << "step " << step << ": " << child;
      }
      version = now;
    }
    last_generation = generation;
  }
}

}  // namespace
}  // namespace canopy::hub

namespace canopy::hub {
namespace {

// Membership from the site records' `region` field, as at canopy-hub: a move
// reconciles both regions as a whole, and the moved site is served only
// through its region.
class RegionRecordsTest : public RegionScopeTest {
 protected:
  void follow() {
    scope_ = RegionScope::follow_records(index_.get(), "root");
    scope_->on_scope_change([this](const sync::ScopeChange& c) {
      std::lock_guard lock(mu_);
      events_.push_back(c);
    });
  }
  void member(const std::string& name, const json& labels, const std::string& region) {
    json doc = {{"name", name}, {"labels", labels}};
    if (!region.empty()) doc["region"] = region;
    put("sites/" + name, doc);
  }
  std::vector<sync::ScopeChange> all() {
    std::lock_guard lock(mu_);
    auto out = std::move(events_);
    events_.clear();
    return out;
  }
  static const sync::ScopeChange* find(const std::vector<sync::ScopeChange>& v,
                                       const std::string& child) {
    for (const auto& c : v) {
      if (c.child == child) return &c;
    }
    return nullptr;
  }
};

// The root's hello hook (take_hello): what a child's hello registers, and
// which region a hub's hello is given.
TEST_F(RegionRecordsTest, AHelloRegistersNoSiteNamedLikeARegionOrItsHub) {
  member("s1", {{"tier", "gold"}}, "eu");
  follow();
  auto hello = [](std::map<std::string, std::string> labels) {
    v1::Hello h;
    for (auto& [k, v] : labels) (*h.mutable_labels())[k] = v;
    return h;
  };
  auto registered = [&](const std::string& site) { return store_->get("sites/" + site).ok(); };
  const std::string role(kRoleLabel), region(kRegionLabel);

  take_hello(store_.get(), index_.get(), scope_.get(), true, "shop-1", hello({{"tier", "gold"}}));
  EXPECT_TRUE(registered("shop-1")) << "the root registers a new site at its hello";
  auto labels = index_->site_labels("shop-1");
  ASSERT_TRUE(labels.has_value());
  EXPECT_EQ(labels->size(), 1u);
  EXPECT_EQ(labels->count("tier"), 1u);

  take_hello(store_.get(), index_.get(), scope_.get(), true, "eu", hello({{"tier", "gold"}}));
  EXPECT_FALSE(registered("eu")) << "a site named like a region was registered";
  EXPECT_EQ(scope_->regions(), (RegionScope::Regions{{"eu", {"s1"}}}));

  take_hello(store_.get(), index_.get(), scope_.get(), true, "eu-a",
             hello({{role, std::string(kRoleHub)}, {region, "eu"}}));
  EXPECT_EQ(scope_->region_of_hub("eu-a"), "eu");
  EXPECT_FALSE(registered("eu-a")) << "a hub is no site";
  take_hello(store_.get(), index_.get(), scope_.get(), true, "eu-a", hello({}));
  EXPECT_FALSE(registered("eu-a")) << "a child named like a region's hub was registered";

  // A site's claim to serve a region is not taken: it serves only its name.
  take_hello(store_.get(), index_.get(), scope_.get(), true, "shop-1",
             hello({{role, std::string(kRoleHub)}, {region, "eu"}}));
  EXPECT_EQ(scope_->region_of_hub("shop-1"), "shop-1");
  EXPECT_FALSE(scope_->in_scope("shop-1", "sites/s1/status/acme/web"));

  take_hello(store_.get(), index_.get(), scope_.get(), true, "eu-p",
             hello({{role, std::string(kRolePeer)}}));
  EXPECT_FALSE(registered("eu-p")) << "a peer hub is no site";
  take_hello(store_.get(), index_.get(), scope_.get(), false, "shop-2", hello({}));
  EXPECT_FALSE(registered("shop-2")) << "only the root registers sites";
}

TEST_F(RegionRecordsTest, StartsFromTheRecordsAndFollowsMoves) {
  member("s1", {{"tier", "gold"}}, "eu");
  member("s2", {{"tier", "gold"}}, "eu");
  member("s3", {{"tier", "silver"}}, "");
  put(kShopKey, placement({"web"}, {{"tier", "gold"}}));
  put(kWebKey, {{"kind", "ConfigMap"}});
  follow();
  EXPECT_EQ(scope_->regions(), (RegionScope::Regions{{"eu", {"s1", "s2"}}}));
  EXPECT_TRUE(scope_->serves("eu"));
  EXPECT_FALSE(scope_->serves("s1")) << "a member syncs through its region";
  EXPECT_TRUE(scope_->serves("s3"));
  EXPECT_TRUE(scope_->serves("nobody")) << "the root registers a new site at its hello";
  index_->set_serve_unknown(false);
  EXPECT_FALSE(scope_->serves("nobody")) << "a regional hub serves only sites with a record";
  EXPECT_TRUE(scope_->in_scope("eu", kWebKey));
  EXPECT_TRUE(scope_->in_scope("eu", "sites/s1/status/acme/web"));
  EXPECT_FALSE(scope_->in_scope("eu", "sites/s3"));
  EXPECT_TRUE(scope_->writable_by("eu", "sites/s1/presence"));
  EXPECT_FALSE(scope_->writable_by("eu", "sites/s3/presence"));
  EXPECT_FALSE(scope_->writable_by("s1", "sites/s1/presence")) << "a site's is its hub's";
  const uint64_t eu_before = scope_->version("eu");

  // s2 moves to us: eu keeps web (s1 still holds it), us gets it; both
  // regions reconcile, s2's own direct session (if any) is asked again.
  member("s2", {{"tier", "gold"}}, "us");
  auto changes = all();
  const auto* eu = find(changes, "eu");
  const auto* us = find(changes, "us");
  ASSERT_NE(eu, nullptr);
  ASSERT_NE(us, nullptr);
  EXPECT_TRUE(eu->reconcile);
  EXPECT_TRUE(us->reconcile);
  EXPECT_EQ(eu->version, scope_->version("eu"));
  EXPECT_EQ(us->version, scope_->version("us"));
  EXPECT_NE(scope_->version("eu"), eu_before);
  ASSERT_NE(find(changes, "s2"), nullptr);
  EXPECT_EQ(scope_->regions(), (RegionScope::Regions{{"eu", {"s1"}}, {"us", {"s2"}}}));
  EXPECT_TRUE(scope_->in_scope("eu", kWebKey));
  EXPECT_TRUE(scope_->in_scope("us", kWebKey));
  EXPECT_FALSE(scope_->in_scope("eu", "sites/s2/status/acme/web"));
  EXPECT_TRUE(scope_->in_scope("us", "sites/s2/status/acme/web"));
  EXPECT_EQ(scope_->children_for(kWebKey), (Keys{"eu", "us"}));

  // s1 leaves every region: eu keeps no key, s1 is served directly, and eu,
  // which no record names now, is no region (as after a restart): it
  // reconciles, and drops the grants it held as one.
  member("s1", {{"tier", "gold"}}, "");
  changes = all();
  ASSERT_NE(find(changes, "eu"), nullptr);
  EXPECT_TRUE(find(changes, "eu")->reconcile);
  EXPECT_FALSE(scope_->in_scope("eu", kWebKey));
  EXPECT_TRUE(scope_->serves("s1"));
  EXPECT_FALSE(scope_->is_region("eu"));
  EXPECT_FALSE(scope_->in_scope("eu", "t/acme/grants/g0"));
  EXPECT_EQ(scope_->children_for(kWebKey), (Keys{"s1", "us"}));

  // A record naming a member site as its region is ignored.
  member("s3", {{"tier", "silver"}}, "s2");
  EXPECT_EQ(scope_->region_of("s3"), "");
  // A deleted record takes the site out of its region.
  remove("sites/s2");
  EXPECT_EQ(scope_->region_of("s2"), "");
}

// Two hubs serve region eu (active-active, each its own name): each is given
// eu's scope, every change of eu goes to both, and a member is redirected to
// them. Until a hub says which region it serves, it is no region's.
TEST_F(RegionRecordsTest, HubsThatServeOneRegionEachHaveItsScope) {
  member("s1", {{"tier", "gold"}}, "eu");
  member("s2", {{"tier", "silver"}}, "");
  put(kShopKey, placement({"web"}, {{"tier", "gold"}}));
  put(kWebKey, {{"kind", "ConfigMap"}});
  follow();
  EXPECT_FALSE(scope_->in_scope("eu-a", kWebKey)) << "eu-a said nothing yet";
  EXPECT_EQ(scope_->redirect_for("s1"), (Keys{"eu"}));
  scope_->serve_region("eu-a", "eu");
  scope_->serve_region("eu-b", "eu");
  EXPECT_EQ(scope_->region_of_hub("eu-a"), "eu");
  EXPECT_EQ(scope_->region_of_hub("us"), "us") << "a hub that said nothing serves its name";
  for (const char* hub : {"eu-a", "eu-b"}) {
    EXPECT_TRUE(scope_->serves(hub)) << hub;
    EXPECT_TRUE(scope_->is_region(hub)) << hub;
    EXPECT_TRUE(scope_->in_scope(hub, kWebKey)) << hub;
    EXPECT_TRUE(scope_->in_scope(hub, "sites/s1")) << hub;
    EXPECT_TRUE(scope_->in_scope(hub, kAcmeGrant)) << hub;
    EXPECT_FALSE(scope_->in_scope(hub, "sites/s2")) << hub;
    EXPECT_TRUE(scope_->writable_by(hub, "sites/s1/presence")) << hub;
    EXPECT_FALSE(scope_->writable_by(hub, "sites/s2/presence")) << hub;
    EXPECT_EQ(scope_->version(hub), scope_->version("eu")) << hub;
    auto listing = scope_->list_scope(hub);
    ASSERT_TRUE(listing.has_value());
    EXPECT_TRUE(std::find(listing->keys.begin(), listing->keys.end(), kWebKey) !=
                listing->keys.end());
  }
  EXPECT_EQ(scope_->children_for(kWebKey), (Keys{"eu", "eu-a", "eu-b"}));
  EXPECT_EQ(scope_->children_for(kAcmeGrant), (Keys{"eu", "eu-a", "eu-b"}));
  EXPECT_EQ(scope_->redirect_for("s1"), (Keys{"eu-a", "eu-b"}));
  EXPECT_TRUE(scope_->redirect_for("s2").empty()) << "served here";

  // A change of eu's keys, and a move into eu, reach both hubs.
  all();
  put(kDbKey, {{"kind", "ConfigMap"}});
  put(kShopKey, placement({"web", "db"}, {{"tier", "gold"}}));
  auto changes = all();
  for (const char* hub : {"eu", "eu-a", "eu-b"}) {
    const auto* c = find(changes, hub);
    ASSERT_NE(c, nullptr) << hub;
    EXPECT_EQ(c->entered, (Keys{kDbKey})) << hub;
    EXPECT_EQ(c->version, scope_->version(hub)) << hub;
  }
  member("s2", {{"tier", "silver"}}, "eu");
  changes = all();
  for (const char* hub : {"eu", "eu-a", "eu-b"}) {
    ASSERT_NE(find(changes, hub), nullptr) << hub;
    EXPECT_TRUE(find(changes, hub)->reconcile) << hub;
  }
  EXPECT_TRUE(scope_->in_scope("eu-b", "sites/s2"));

  // A hub that now says another region leaves eu's; a site named like a
  // hub is no member, and a hub named like a member is refused.
  scope_->serve_region("eu-b", "us");
  EXPECT_FALSE(scope_->in_scope("eu-b", kWebKey));
  EXPECT_EQ(scope_->children_for(kWebKey), (Keys{"eu", "eu-a"}));
  member("eu-a", {{"tier", "gold"}}, "eu");
  EXPECT_EQ(scope_->region_of("eu-a"), "");
  scope_->serve_region("s1", "eu");
  EXPECT_EQ(scope_->region_of_hub("s1"), "s1");
  EXPECT_FALSE(scope_->serves("s1")) << "still a member of eu";
}

// The hubs of one region are peers below a parent: each may write to the
// other only what their sites may write, and a new site of the region
// changes that (a reconciling change for each peer). At the top level a
// peer writes everything.
TEST_F(RegionRecordsTest, PeersBelowAParentWriteOnlyWhatTheirSitesMay) {
  member("s1", {{"tier", "gold"}}, "eu");
  put(kShopKey, placement({"web"}, {{"tier", "gold"}}));
  put(kWebKey, {{"kind", "ConfigMap"}});
  index_->set_serve_unknown(false);  // a regional hub
  scope_ = RegionScope::follow_records(index_.get(), "eu");
  RegionScope* regions = scope_.get();
  PeerScope peers(
      scope_.get(), {"eu-b"}, [regions] { return regions->own_sites(); },
      [regions] { return regions->own_sites_version(); });
  EXPECT_EQ(regions->own_sites(), (Keys{"s1"}));
  std::vector<sync::ScopeChange> to_peers;
  scope_->on_own_sites_change([&] {
    std::lock_guard lock(mu_);
    for (auto& p : peers.own_sites_changed()) to_peers.push_back(std::move(p));
  });
  EXPECT_TRUE(peers.in_scope("eu-b", kWebKey)) << "a peer holds everything";
  EXPECT_TRUE(peers.writable_by("eu-b", "sites/s1/status/acme/web"));
  EXPECT_TRUE(peers.writable_by("eu-b", "sites/s1/presence"));
  EXPECT_FALSE(peers.writable_by("eu-b", "sites/s1")) << "the record is the parent's";
  EXPECT_FALSE(peers.writable_by("eu-b", kWebKey)) << "desired state is the parent's";
  EXPECT_FALSE(peers.writable_by("eu-b", "sites/s2/status/acme/web")) << "no site of ours";
  const auto prefixes = peers.writable_prefixes("eu-b");
  EXPECT_TRUE(std::find(prefixes.begin(), prefixes.end(), "sites/s1/status/") != prefixes.end());
  EXPECT_TRUE(std::find(prefixes.begin(), prefixes.end(), "sites/s1/presence") != prefixes.end());
  const uint64_t before = peers.version("eu-b");

  member("s2", {{"tier", "gold"}}, "eu");  // a new site of the region
  EXPECT_NE(peers.version("eu-b"), before);
  const uint64_t with_both = peers.version("eu-b");
  EXPECT_TRUE(peers.writable_by("eu-b", "sites/s2/status/acme/web"));
  {
    std::lock_guard lock(mu_);
    ASSERT_EQ(to_peers.size(), 1u);
    EXPECT_EQ(to_peers[0].child, "eu-b");
    EXPECT_TRUE(to_peers[0].reconcile);
    EXPECT_EQ(to_peers[0].version, peers.version("eu-b"));
    to_peers.clear();
  }
  put(kDbKey, {{"kind", "ConfigMap"}});
  put(kShopKey, placement({"web", "db"}, {{"tier", "gold"}}));
  {
    std::lock_guard lock(mu_);
    EXPECT_TRUE(to_peers.empty()) << "the sites did not change";
  }

  // A record that no longer names the region: one site fewer.
  member("s1", {{"tier", "gold"}}, "us");
  {
    std::lock_guard lock(mu_);
    ASSERT_EQ(to_peers.size(), 1u);
    EXPECT_EQ(to_peers[0].version, peers.version("eu-b"));
  }
  EXPECT_NE(peers.version("eu-b"), with_both);
  // The version is the set's, whatever the order of the moves that made it.
  member("s1", {{"tier", "gold"}}, "eu");
  EXPECT_EQ(peers.version("eu-b"), with_both);

  PeerScope top(scope_.get(), {"root-b"});
  EXPECT_TRUE(top.writable_by("root-b", kWebKey));
  EXPECT_EQ(top.version("root-b"), 1u);
  EXPECT_EQ(top.writable_prefixes("root-b"), (Keys{""}));
  scope_->on_own_sites_change(nullptr);
}

TEST_F(RegionRecordsTest, ALabelChangeInTheMoveCommitIsNotLost) {
  member("s1", {{"tier", "gold"}}, "eu");
  put(kShopKey, placement({"web"}, {{"tier", "gold"}}));
  follow();
  // One commit moves s1 and takes web out of its scope.
  member("s1", {{"tier", "silver"}}, "us");
  all();
  EXPECT_FALSE(scope_->in_scope("eu", kWebKey));
  EXPECT_FALSE(scope_->in_scope("us", kWebKey));
  member("s1", {{"tier", "gold"}}, "us");
  EXPECT_TRUE(scope_->in_scope("us", kWebKey));
  EXPECT_FALSE(scope_->in_scope("eu", kWebKey));
}

}  // namespace
}  // namespace canopy::hub

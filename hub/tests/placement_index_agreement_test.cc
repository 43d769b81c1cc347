// PlacementIndex agrees with a fresh evaluation: after a load, replicated
// deltas and states, concurrent writers and random selector changes, and at
// 10,000 sites.
#include "hub/tests/placement_index_fixture.h"

namespace canopy::hub {
namespace {

// A second index loaded from the store agrees with the incremental one.
TEST_F(PlacementIndexTest, LoadAgreesWithIncrementalEvaluation) {
  for (int i = 0; i < 30; ++i) {
    const std::string name = "s" + std::to_string(i);
    site(name, {{"region", i % 3 == 0 ? "eu" : "us"}, {"tier", i % 2 == 0 ? "edge" : "core"}});
    put("sites/" + name + "/status/acme/web", {{"outcome", "applied"}});
  }
  put("t/beta/grants/all", {{"allSites", true}});
  put("t/acme-2/grants/some", {{"sites", {"s1", "s2"}}});
  for (const char* tenant : {"acme", "beta", "acme-2"}) {
    const std::string t = tenant;
    put("t/" + t + "/templates/web", {{"kind", "ConfigMap"}});
    put("t/" + t + "/placements/eu", placement({"web", "db"}, {{"region", "eu"}}, {"s1"}));
    put("t/" + t + "/placements/edge", placement({"cache"}, {{"tier", "edge"}}));
    put("t/" + t + "/overrides/web-core", {{"template", "web"},
                                           {"selector", {{"matchLabels", {{"tier", "core"}}}}},
                                           {"patch", json::object()}});
  }
  remove("t/beta/placements/edge");
  remove("sites/s3");

  auto loaded = PlacementIndex::attach(store_.get());
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  EXPECT_EQ((*loaded)->known_sites(), index_->known_sites());
  for (int i = 0; i < 30; ++i) {
    const std::string name = "s" + std::to_string(i);
    EXPECT_EQ((*loaded)->scope_keys(name), index_->scope_keys(name)) << name;
    EXPECT_EQ((*loaded)->version(name), index_->version(name)) << name;
  }
  EXPECT_EQ(index_->scope_keys("s1"),
            (Keys{"t/acme-2/overrides/web-core", "t/acme-2/placements/eu", "t/acme-2/templates/db",
                  "t/acme-2/templates/web", "t/acme/overrides/web-core", "t/acme/placements/eu",
                  "t/acme/templates/db", "t/acme/templates/web", "t/beta/overrides/web-core",
                  "t/beta/placements/eu", "t/beta/templates/db", "t/beta/templates/web"}));
  EXPECT_TRUE(index_->scope_keys("s3").empty());

  // Both follow later commits alike.
  put("t/beta/placements/edge", placement({"cache"}, {{"tier", "edge"}}));
  for (int i = 0; i < 30; ++i) {
    const std::string name = "s" + std::to_string(i);
    EXPECT_EQ((*loaded)->version(name), index_->version(name)) << name;
  }
}

// Changes that arrive by replication (partial deltas, whole states) are
// evaluated like local writes.
TEST_F(PlacementIndexTest, FollowsReplicatedDeltasAndStates) {
  site("a", {{"region", "eu"}});
  take();
  auto peer = open_store(dir_.file("peer"), 2);
  ASSERT_NE(peer, nullptr);
  v1::DeltaBatch batch;
  auto d1 = peer->put_value(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  ASSERT_TRUE(d1.ok());
  *batch.add_deltas() = *d1;
  // The second delta carries only the changed field.
  auto d2 = peer->patch(kPlacementKey, R"({"templates":["web","db"]})");
  ASSERT_TRUE(d2.ok());
  *batch.add_deltas() = *d2;
  ASSERT_TRUE(store_->apply_remote(batch, 2).ok());
  // One change per log entry: the placement with web, then db.
  auto changes = take_list();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].entered, (Keys{kPlacementKey, kWebKey}));
  EXPECT_EQ(changes[1].entered, Keys{kDbKey});
  auto ev = take();

  // A whole state joined in (a key entering the hub's scope from a peer).
  const std::string other = "t/acme/placements/other";
  ASSERT_TRUE(peer->put_value(other, placement({"cache"}, nullptr, {"a"})).ok());
  auto st = peer->state(other);
  ASSERT_TRUE(st.ok() && st->has_value());
  ASSERT_TRUE(store_->apply_states({**st}, 2).ok());
  ev = take();
  EXPECT_EQ(ev["a"].entered, (Keys{other, "t/acme/templates/cache"}));

  // A concurrent local write and an older remote one: the index sees what the
  // store keeps.
  auto d3 = peer->patch(kPlacementKey, R"({"templates":["db"]})");
  ASSERT_TRUE(d3.ok());
  put(kPlacementKey, placement({"web", "db", "cache"}, {{"region", "eu"}}));
  take();
  v1::DeltaBatch late;
  *late.add_deltas() = *d3;
  ASSERT_TRUE(store_->apply_remote(late, 2).ok());
  auto stored = store_->get(kPlacementKey);
  ASSERT_TRUE(stored.ok());
  const json stored_doc = json::parse(*stored);
  Keys expect_templates;
  for (const auto& t : stored_doc["templates"]) {
    expect_templates.push_back("t/acme/templates/" + t.get<std::string>());
  }
  for (const auto& t : expect_templates) EXPECT_TRUE(index_->in_scope("a", t)) << t;
  Keys all = {"t/acme/templates/cache", "t/acme/templates/db", "t/acme/templates/web"};
  for (const auto& t : all) {
    const bool want =
        std::find(expect_templates.begin(), expect_templates.end(), t) != expect_templates.end() ||
        t == "t/acme/templates/cache";  // also listed by `other`
    EXPECT_EQ(index_->in_scope("a", t), want) << t;
  }
}

// Writers on several threads, readers on another: the incremental index ends
// where a fresh load of the store does.
TEST_F(PlacementIndexTest, ConcurrentWritersAgreeWithAFreshLoad) {
  put(kPlacementKey, placement({"web"}, {{"region", "r1"}}));
  put("t/acme/placements/two", placement({"db"}, {{"tier", "edge"}}));
  put("t/acme/overrides/web-edge", {{"template", "web"},
                                    {"selector", {{"matchLabels", {{"tier", "edge"}}}}},
                                    {"patch", json::object()}});
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done) {
      (void)index_->in_scope("s-1-1", kWebKey);
      (void)index_->version("s-2-2");
      (void)index_->sites_for(kWebKey);
    }
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < 200; ++i) {
        const std::string name = "s-" + std::to_string(w) + "-" + std::to_string(i % 20);
        const json labels = {{"region", "r" + std::to_string(i % 3)},
                             {"tier", i % 2 == 0 ? "edge" : "core"}};
        ASSERT_TRUE(store_->put_value("sites/" + name, {{"labels", labels}}).ok());
        if (i % 50 == 0) {
          ASSERT_TRUE(store_
                          ->put_value(kPlacementKey,
                                      placement({"web"}, {{"region", "r" + std::to_string(w)}}))
                          .ok());
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  reader.join();

  auto loaded = PlacementIndex::attach(store_.get());
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ((*loaded)->known_sites(), index_->known_sites());
  for (const auto& name : index_->known_sites()) {
    EXPECT_EQ((*loaded)->scope_keys(name), index_->scope_keys(name)) << name;
  }
  EXPECT_EQ((*loaded)->sites_for(kWebKey), index_->sites_for(kWebKey));
}

// A selector change, in every selector form and from each form to the next:
// the changes reported, applied to the scopes the index held before, give
// exactly the scopes a fresh load of the store evaluates from scratch; each
// change names a site whose scope did change, once, with the version it
// leads to. Sites enter and leave, with the overrides of their templates.
TEST_F(PlacementIndexTest, SelectorChangesAgreeWithAFreshEvaluation) {
  const std::vector<std::string> regions = {"eu", "us", "ap"};
  const std::vector<std::string> channels = {"stable", "beta", "canary"};
  std::vector<std::string> names;
  for (int i = 0; i < 120; ++i) {
    const std::string name = "s-" + std::to_string(i);
    json labels = {{"region", regions[i % 3]},
                   {"channel", channels[(i / 3) % 3]},
                   {"tier", i % 4 == 0 ? "edge" : "core"}};
    if (i % 5 == 0) labels["gpu"] = i % 10 == 0 ? "t4" : "l4";
    if (i % 7 == 0) labels["maintenance"] = "planned";
    site(name, labels);
    names.push_back(name);
  }
  put("t/acme/overrides/web-edge", {{"template", "web"},
                                    {"selector", {{"matchLabels", {{"tier", "edge"}}}}},
                                    {"patch", json::object()}});
  put("t/acme/overrides/db-gpu",
      {{"template", "db"},
       {"selector", {{"matchExpressions", {{{"key", "gpu"}, {"operator", "Exists"}}}}}},
       {"patch", json::object()}});
  // Another placement shares the web template: a site it holds keeps web.
  put("t/acme/placements/base", placement({"web"}, {{"region", "us"}}));

  auto expr = [](const std::string& key, const std::string& op, const Keys& values = {}) {
    json r = {{"key", key}, {"operator", op}};
    if (!values.empty()) r["values"] = values;
    return r;
  };
  auto with = [](json selector, const Keys& sites = {}) {
    json p = {{"templates", {"web", "db"}}};
    if (!selector.is_null()) p["selector"] = std::move(selector);
    if (!sites.empty()) p["sites"] = sites;
    return p;
  };
  const std::vector<json> forms = {
      with({{"matchLabels", {{"region", "eu"}}}}),
      with({{"matchLabels", {{"region", "us"}, {"tier", "edge"}}}}),
      with({{"matchExpressions", {expr("region", "In", {"eu", "ap"})}}}),
      with({{"matchExpressions",
             {expr("region", "In", {"us"}), expr("channel", "NotIn", {"canary"})}}}),
      with({{"matchLabels", {{"tier", "core"}}}, {"matchExpressions", {expr("gpu", "Exists")}}}),
      with({{"matchExpressions",
             {expr("channel", "In", {"beta"}), expr("maintenance", "DoesNotExist")}}}),
      with(nullptr, {"s-1", "s-2", "s-3", "s-50", "nobody"}),
      with({{"matchLabels", {{"region", "ap"}}}}, {"s-0", "s-4"}),
      with({{"matchExpressions",
             {expr("channel", "NotIn", {"stable"}), expr("tier", "NotIn", {"core"})}}}),
      with({{"matchExpressions", {expr("gpu", "Exists")}}}),
      with({{"matchExpressions", {expr("maintenance", "DoesNotExist")}}}),
      with({{"matchExpressions", {expr("channel", "NotIn", {"canary"})}}}),
  };
  put(kPlacementKey, forms.back());
  take_list();

  std::map<std::string, std::set<std::string>> scopes;
  for (const auto& n : names) {
    const Keys k = index_->scope_keys(n);
    scopes[n] = {k.begin(), k.end()};
  }
  size_t entered_sites = 0, left_sites = 0;
  for (size_t i = 0; i < 2 * forms.size(); ++i) {
    // Every form, then each form after a wide one and a wide one after it.
    const json& next = i < forms.size() ? forms[i] : (i % 2 == 0 ? forms[8] : forms[i % 12]);
    put(kPlacementKey, next);
    for (const auto& [child, change] : take()) {
      ASSERT_TRUE(scopes.contains(child)) << child;
      EXPECT_TRUE(std::is_sorted(change.entered.begin(), change.entered.end()));
      EXPECT_TRUE(std::is_sorted(change.left.begin(), change.left.end()));
      EXPECT_FALSE(change.entered.empty() && change.left.empty()) << child;
      auto& scope = scopes[child];
      for (const auto& k : change.entered) EXPECT_TRUE(scope.insert(k).second) << child << k;
      for (const auto& k : change.left) EXPECT_EQ(scope.erase(k), 1u) << child << k;
      if (std::find(change.entered.begin(), change.entered.end(), kPlacementKey) !=
          change.entered.end()) {
        ++entered_sites;
      }
      if (std::find(change.left.begin(), change.left.end(), kPlacementKey) != change.left.end()) {
        ++left_sites;
      }
      EXPECT_EQ(change.version, index_->version(child)) << child;
    }
    auto fresh = PlacementIndex::attach(store_.get());
    ASSERT_TRUE(fresh.ok()) << fresh.status().to_string();
    for (const auto& n : names) {
      const Keys want = (*fresh)->scope_keys(n);
      ASSERT_EQ(index_->scope_keys(n), want) << "form " << i << ", site " << n;
      ASSERT_EQ(Keys(scopes[n].begin(), scopes[n].end()), want) << "form " << i << ", site " << n;
      ASSERT_EQ(index_->version(n), (*fresh)->version(n)) << n;
    }
    Keys sorted_names = names;
    sorted_names.push_back("nobody");  // listed by a placement, no record
    std::sort(sorted_names.begin(), sorted_names.end());
    for (const char* key : {kPlacementKey, kWebKey, kDbKey, "t/acme/overrides/db-gpu"}) {
      EXPECT_EQ(index_->sites_for(key), (*fresh)->sites_for(key)) << key;
      // The route is exact: the sites in_scope says hold the key, in order
      // (many of them: walked in name order; a few: sorted).
      const sync::ScopeProvider::Route route = index_->route(key);
      EXPECT_TRUE(route.exact);
      Keys holding;
      for (const auto& n : sorted_names) {
        if (index_->in_scope(n, key)) holding.push_back(n);
      }
      EXPECT_EQ(route.children, holding) << "form " << i << ", key " << key;
    }
  }
  EXPECT_GT(entered_sites, 100u);
  EXPECT_GT(left_sites, 100u);
}

// generation() moves whenever a site's scope version may have moved, so that
// the sync engine may keep each child's version until it does; a change of
// a template's content moves no scope and not the generation.
TEST_F(PlacementIndexTest, TheGenerationMovesWithEveryScopeChange) {
  site("a", {{"region", "eu"}});
  site("b", {{"region", "us"}});
  put(kWebKey, {{"kind", "ConfigMap"}, {"data", {{"v", "1"}}}});
  take();
  uint64_t generation = index_->generation();
  const uint64_t a0 = index_->version("a"), b0 = index_->version("b");
  auto moved = [&] {
    const uint64_t now = index_->generation();
    const bool m = now != generation;
    generation = now;
    return m;
  };

  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  take();
  EXPECT_NE(index_->version("a"), a0);
  EXPECT_TRUE(moved()) << "a's scope took the placement and its template";

  put(kWebKey, {{"kind", "ConfigMap"}, {"data", {{"v", "2"}}}});
  take();
  EXPECT_FALSE(moved()) << "a template's content moved the generation";

  site("b", {{"region", "eu"}});
  take();
  EXPECT_NE(index_->version("b"), b0);
  EXPECT_TRUE(moved()) << "b's label change gave it the placement";

  put(kPlacementKey, placement({"web"}, {{"region", "nowhere"}}));
  take();
  EXPECT_EQ(index_->version("a"), a0);
  EXPECT_EQ(index_->version("b"), b0);
  EXPECT_TRUE(moved()) << "both sites lost the placement";
}

// 10,000 sites: a placement change visits only its own sites.
TEST_F(PlacementIndexTest, ScalesToTenThousandSites) {
  constexpr int kSites = 10'000;
  for (int i = 0; i < kSites; ++i) {
    site("site-" + std::to_string(i), {{"region", "r" + std::to_string(i % 100)}});
  }
  take();
  const auto start = std::chrono::steady_clock::now();
  put(kPlacementKey, placement({"web"}, {{"region", "r7"}}));
  auto ev = take();
  EXPECT_EQ(ev.size(), 100u);
  put(kPlacementKey, placement({"web", "db"}, {{"region", "r7"}}));
  ev = take();
  EXPECT_EQ(ev.size(), 100u);
  EXPECT_EQ(ev["site-7"].entered, Keys{kDbKey});
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(index_->sites_for(kDbKey).size(), 100u);
  // Placed on every site: its route lists them all, in name order.
  put(kPlacementKey,
      {{"templates", {"web"}},
       {"selector", {{"matchExpressions", {{{"key", "region"}, {"operator", "Exists"}}}}}}});
  take();
  const std::vector<std::string> all = index_->route(kWebKey).children;
  EXPECT_EQ(all.size(), static_cast<size_t>(kSites));
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
  put(kPlacementKey, placement({"web", "db"}, {{"region", "r7"}}));
  take();
  EXPECT_TRUE(index_->in_scope("site-107", kDbKey));
  EXPECT_FALSE(index_->in_scope("site-108", kDbKey));
  std::printf(
      "two placement changes over 10000 sites: %lld us\n",
      static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(took).count()));

  // Reload over a store with 10,000 sites and their status documents.
  auto loaded = PlacementIndex::attach(store_.get());
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ((*loaded)->known_sites().size(), static_cast<size_t>(kSites));
  EXPECT_EQ((*loaded)->version("site-7"), index_->version("site-7"));
}

}  // namespace
}  // namespace canopy::hub

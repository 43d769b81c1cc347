// PlacementIndex over a real store: every write goes through the Store and
// reaches the index through its subscription, as at the hub.
#include "hub/tests/placement_index_fixture.h"

namespace canopy::hub {
namespace {

TEST_F(PlacementIndexTest, UnknownSiteHoldsOnlyItsOwnSubtree) {
  EXPECT_TRUE(index_->in_scope("x", "sites/x"));
  EXPECT_TRUE(index_->in_scope("x", "sites/x/status/acme/web"));
  EXPECT_FALSE(index_->in_scope("x", "sites/xy"));
  EXPECT_FALSE(index_->in_scope("x", "sites/xy/status/acme/web"));
  EXPECT_FALSE(index_->in_scope("x", "sites/y"));
  EXPECT_FALSE(index_->in_scope("x", kWebKey));
  EXPECT_FALSE(index_->in_scope("X/", "sites/X//a"));

  EXPECT_TRUE(index_->writable_by("x", "sites/x/status/acme/web"));
  EXPECT_TRUE(index_->writable_by("x", "sites/x/overrides/acme/web"));
  EXPECT_FALSE(index_->writable_by("x", "sites/x"));
  EXPECT_FALSE(index_->writable_by("x", "sites/x/status/"));
  EXPECT_FALSE(index_->writable_by("x", "sites/x/labels"));
  EXPECT_FALSE(index_->writable_by("x", "sites/y/status/acme/web"));
  EXPECT_FALSE(index_->writable_by("x", "sites/xy/status/acme/web"));
  EXPECT_FALSE(index_->writable_by("x", kWebKey));
  EXPECT_EQ(index_->writable_prefixes("x"),
            (Keys{"sites/x/status/", "sites/x/overrides/", "sites/x/holds/", "sites/x/reported/"}));
  EXPECT_TRUE(index_->writable_by("x", "sites/x/reported/acme/pump-1"));
  EXPECT_FALSE(index_->writable_by("x", "sites/x/devices/acme/pump-1"));
  EXPECT_TRUE(index_->writable_prefixes("X/").empty());

  EXPECT_EQ(index_->sites_for("sites/x/status/acme/web"), Keys{"x"});
  EXPECT_EQ(index_->sites_for("sites/x"), Keys{"x"});
  EXPECT_TRUE(index_->sites_for(kWebKey).empty());
  EXPECT_TRUE(index_->known_sites().empty());
  EXPECT_FALSE(index_->site_labels("x").has_value());
  // The version of an empty scope is the same for every site.
  EXPECT_EQ(index_->version("x"), index_->version("y"));
}

TEST_F(PlacementIndexTest, NewPlacementEntersMatchingSites) {
  site("a", {{"region", "eu"}});
  site("b", {{"region", "eu"}, {"tier", "edge"}});
  site("c", {{"region", "us"}});
  EXPECT_TRUE(take().empty());
  const uint64_t empty = index_->version("a");
  EXPECT_EQ(index_->known_sites(), (Keys{"a", "b", "c"}));
  EXPECT_EQ(index_->known_sites("a", 1), Keys{"b"});
  EXPECT_EQ(index_->site_labels("b"), (Labels{{"region", "eu"}, {"tier", "edge"}}));

  // A template document alone changes no scope.
  put(kWebKey, {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "web"}}}});
  EXPECT_TRUE(take().empty());

  put(kPlacementKey, placement({"web", "db"}, {{"region", "eu"}}));
  auto ev = take();
  ASSERT_EQ(ev.size(), 2u);
  const Keys entered = {kPlacementKey, kDbKey, kWebKey};
  EXPECT_EQ(ev["a"].entered, entered);
  EXPECT_TRUE(ev["a"].left.empty());
  EXPECT_EQ(ev["b"].entered, entered);

  EXPECT_TRUE(index_->in_scope("a", kWebKey));
  EXPECT_TRUE(index_->in_scope("b", kPlacementKey));
  EXPECT_FALSE(index_->in_scope("c", kWebKey));
  EXPECT_FALSE(index_->in_scope("a", "t/other/templates/web"));
  EXPECT_EQ(index_->sites_for(kWebKey), (Keys{"a", "b"}));
  EXPECT_EQ(index_->sites_for(kPlacementKey), (Keys{"a", "b"}));
  EXPECT_EQ(index_->scope_keys("a"), entered);
  EXPECT_EQ(index_->placements_of("a"), Keys{kPlacementKey});
  EXPECT_NE(index_->version("a"), empty);
  EXPECT_EQ(index_->version("a"), index_->version("b"));
  EXPECT_EQ(index_->version("c"), empty);
  IndexCounts counts = index_->counts();
  EXPECT_EQ(counts.known_sites, 3u);
  EXPECT_EQ(counts.placements, 1u);
  EXPECT_EQ(counts.overrides, 0u);

  // A change of contents that leaves the key set alone: no event, same version.
  const uint64_t before = index_->version("a");
  put(kPlacementKey, [] {
    json p = placement({"db", "web"}, {{"region", "eu"}});
    p["rollout"] = {{"maxUnavailable", 1}};
    return p;
  }());
  put(kWebKey, {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "web2"}}}});
  EXPECT_TRUE(take().empty());
  EXPECT_EQ(index_->version("a"), before);
}

// A child keeps its scope version across reconnects and hub restarts, so the
// value is part of the protocol: XXH3 of the little-endian 8 bytes of the sum
// (modulo 2^64) of the keys' XXH3 values.
TEST_F(PlacementIndexTest, VersionIsTheDocumentedHash) {
  auto expected = [](const Keys& keys) {
    uint64_t sum = 0;
    for (const auto& k : keys) sum += XXH3_64bits(k.data(), k.size());
    unsigned char bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(sum >> (8 * i));
    const uint64_t v = XXH3_64bits(bytes, sizeof bytes);
    return v == 0 ? uint64_t{1} : v;
  };
  EXPECT_EQ(index_->version("a"), expected({}));
  site("a", {{"region", "eu"}});
  put(kPlacementKey, placement({"web", "db"}, {{"region", "eu"}}));
  put("t/acme/placements/other", placement({"web"}, nullptr, {"a"}));
  const Keys keys = {"t/acme/placements/other", kPlacementKey, kDbKey, kWebKey};
  EXPECT_EQ(index_->scope_keys("a"), keys);
  EXPECT_EQ(index_->version("a"), expected(keys));
  auto list = take_list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1].version, expected(keys));
}

TEST_F(PlacementIndexTest, SelectorChangeMovesSites) {
  site("a", {{"region", "eu"}});
  site("b", {{"region", "us"}});
  site("c", {{"region", "us"}, {"tier", "edge"}});
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  take();

  put(kPlacementKey, placement({"web"}, {{"region", "us"}}));
  auto ev = take();
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev["a"].left, (Keys{kPlacementKey, kWebKey}));
  EXPECT_TRUE(ev["a"].entered.empty());
  EXPECT_EQ(ev["b"].entered, (Keys{kPlacementKey, kWebKey}));
  EXPECT_EQ(ev["c"].entered, (Keys{kPlacementKey, kWebKey}));
  EXPECT_FALSE(index_->in_scope("a", kWebKey));
  EXPECT_EQ(index_->sites_for(kWebKey), (Keys{"b", "c"}));

  // Two pairs: both must hold. Plus a site listed by name.
  put(kPlacementKey, placement({"web"}, {{"region", "us"}, {"tier", "edge"}}, {"a"}));
  ev = take();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev["a"].entered, (Keys{kPlacementKey, kWebKey}));
  EXPECT_EQ(ev["b"].left, (Keys{kPlacementKey, kWebKey}));
  EXPECT_EQ(index_->sites_for(kPlacementKey), (Keys{"a", "c"}));

  // An empty selector matches nothing by labels; the listed site stays.
  put(kPlacementKey, placement({"web"}, json::object(), {"a"}));
  ev = take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev["c"].left, (Keys{kPlacementKey, kWebKey}));
  EXPECT_EQ(index_->sites_for(kWebKey), Keys{"a"});
}

TEST_F(PlacementIndexTest, ListedScopeIsExactlyWhatInScopeAccepts) {
  site("a", {{"region", "eu"}});
  site("ab", {{"region", "eu"}});  // a name that extends a's: not a's subtree
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  put("sites/a/status/acme/web", {{"ready", true}});
  put("sites/ab/status/acme/web", {{"ready", true}});
  put("t/acme/templates/other", {{"kind", "ConfigMap"}});
  put(kWebKey, {{"kind", "Deployment"}});
  auto listing = index_->list_scope("a");
  ASSERT_TRUE(listing.has_value());
  // Every document the store holds, by the listing and by in_scope.
  auto page = store_->scan("", "", 1000);
  ASSERT_TRUE(page.ok());
  std::set<std::string> listed, accepted;
  for (const auto& item : page->items) {
    if (index_->in_scope("a", item.key)) accepted.insert(item.key);
    bool in =
        std::find(listing->keys.begin(), listing->keys.end(), item.key) != listing->keys.end();
    for (const auto& p : listing->prefixes) in = in || item.key.starts_with(p);
    if (in) listed.insert(item.key);
  }
  EXPECT_EQ(listed, accepted);
  EXPECT_TRUE(accepted.contains(kWebKey));
  EXPECT_TRUE(accepted.contains("sites/a/status/acme/web"));
  EXPECT_FALSE(accepted.contains("sites/ab/status/acme/web"));
}

TEST_F(PlacementIndexTest, EachChangeCarriesTheVersionItLeadsTo) {
  // Sync handles changes after they were queued; each must name the scope
  // version right after it, not whatever the index holds by then.
  site("a", {{"region", "eu"}});
  take();
  const uint64_t v0 = index_->version("a");
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  const uint64_t v1 = index_->version("a");
  put(kPlacementKey, placement({"web"}, {{"region", "us"}}));
  const uint64_t v2 = index_->version("a");
  auto list = take_list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].version, v1);
  EXPECT_EQ(list[1].version, v2);
  EXPECT_NE(v0, v1);
  EXPECT_NE(v1, v2);
  EXPECT_EQ(v2, v0);  // the same key set again: the same version
}

TEST_F(PlacementIndexTest, SiteLabelChangeMovesTheSite) {
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  EXPECT_TRUE(take().empty());

  // A site that appears with matching labels enters.
  site("a", {{"region", "eu"}});
  auto ev = take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev["a"].entered, (Keys{kPlacementKey, kWebKey}));

  const uint64_t in_eu = index_->version("a");
  site("a", {{"region", "us"}});
  ev = take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev["a"].left, (Keys{kPlacementKey, kWebKey}));
  EXPECT_FALSE(index_->in_scope("a", kWebKey));
  EXPECT_NE(index_->version("a"), in_eu);

  site("a", {{"region", "eu"}, {"arch", "arm64"}});
  ev = take();
  EXPECT_EQ(ev["a"].entered, (Keys{kPlacementKey, kWebKey}));
  EXPECT_EQ(index_->version("a"), in_eu);  // same key set, same version

  // Only the labels of the site doc count; a patch of another field is no change.
  auto r = store_->patch("sites/a", R"({"address":"10.0.0.1"})");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(take().empty());

  // A deleted site record takes the site's placements away.
  remove("sites/a");
  ev = take();
  EXPECT_EQ(ev["a"].left, (Keys{kPlacementKey, kWebKey}));
  EXPECT_TRUE(index_->known_sites().empty());
  EXPECT_TRUE(index_->in_scope("a", "sites/a/status/acme/web"));
}

TEST_F(PlacementIndexTest, DeletedPlacementLeaves) {
  site("a", {{"region", "eu"}});
  site("b", {{"region", "eu"}});
  put(kPlacementKey, placement({"web", "db"}, {{"region", "eu"}}));
  take();
  remove(kPlacementKey);
  auto ev = take();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev["a"].left, (Keys{kPlacementKey, kDbKey, kWebKey}));
  EXPECT_EQ(ev["b"].left, (Keys{kPlacementKey, kDbKey, kWebKey}));
  EXPECT_TRUE(index_->sites_for(kWebKey).empty());
  EXPECT_TRUE(index_->scope_keys("a").empty());
  EXPECT_EQ(index_->version("a"), index_->version("unknown"));
  EXPECT_EQ(index_->counts().placements, 0u);

  // Recreated: enters again.
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  EXPECT_EQ(take()["a"].entered, (Keys{kPlacementKey, kWebKey}));
}

// A regional hub serves only sites with a record. One dropped here (it left
// this hub's scope) is not served; its deletion arriving afterwards makes it
// served again, with nothing in its scope, so that the site drops what it
// holds instead of keeping it forever.
TEST_F(PlacementIndexTest, ADeletionAfterADropServesTheSiteToEmptyIt) {
  index_->set_serve_unknown(false);
  site("s1", {{"tier", "gold"}});
  put(kPlacementKey, placement({"web"}, {{"tier", "gold"}}));
  EXPECT_TRUE(index_->serves("s1"));
  EXPECT_TRUE(index_->in_scope("s1", kWebKey));

  // The record's tombstone, as the root would send it.
  canopy::testing::TempDir root_dir;
  auto root = open_store(root_dir.file("root"), 77);
  ASSERT_NE(root, nullptr);
  ASSERT_TRUE(root->put_value("sites/s1", {{"name", "s1"}, {"labels", {{"tier", "gold"}}}}).ok());
  ASSERT_TRUE(root->remove("sites/s1").ok());
  auto tombstone = root->state("sites/s1");
  ASSERT_TRUE(tombstone.ok() && tombstone->has_value());

  ASSERT_TRUE(store_->drop({"sites/s1"}).ok());
  EXPECT_FALSE(index_->serves("s1")) << "dropped: the site moved away";
  ASSERT_TRUE(store_->apply_states({**tombstone}, 77).ok());
  EXPECT_TRUE(index_->serves("s1")) << "deleted: served, to drop its keys";
  EXPECT_FALSE(index_->in_scope("s1", kWebKey));

  // A record that comes back is served as before.
  site("s1", {{"tier", "gold"}});
  EXPECT_TRUE(index_->serves("s1"));
  EXPECT_TRUE(index_->in_scope("s1", kWebKey));
}

TEST_F(PlacementIndexTest, TemplateAddedToPlacementEntersAlone) {
  site("a", {{"region", "eu"}});
  site("b", {{"region", "us"}});
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  take();

  put(kPlacementKey, placement({"web", "db"}, {{"region", "eu"}}));
  auto ev = take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev["a"].entered, Keys{kDbKey});
  EXPECT_TRUE(ev["a"].left.empty());

  // A template listed by two placements stays while one of them remains.
  const std::string other = "t/acme/placements/other";
  put(other, placement({"db"}, {{"region", "eu"}}));
  EXPECT_EQ(take()["a"].entered, Keys{other});
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  EXPECT_TRUE(take().empty());
  EXPECT_TRUE(index_->in_scope("a", kDbKey));
  remove(other);
  ev = take();
  EXPECT_EQ(ev["a"].left, (Keys{other, kDbKey}));
  EXPECT_TRUE(index_->in_scope("a", kWebKey));
}

TEST_F(PlacementIndexTest, OverridesFollowTheirTemplateAndSelector) {
  site("a", {{"region", "eu"}, {"tier", "edge"}});
  site("b", {{"region", "eu"}});
  site("c", {{"region", "us"}});
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  take();

  const std::string edge = "t/acme/overrides/web-edge";
  put(edge, {{"template", "web"},
             {"selector", {{"matchLabels", {{"tier", "edge"}}}}},
             {"patch", {{"spec", {{"replicas", 1}}}}}});
  auto ev = take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev["a"].entered, Keys{edge});
  EXPECT_TRUE(index_->in_scope("a", edge));
  EXPECT_FALSE(index_->in_scope("b", edge));
  EXPECT_EQ(index_->sites_for(edge), Keys{"a"});

  // An override of a template out of scope, or for a site without the
  // template, enters nowhere.
  const std::string db = "t/acme/overrides/db-eu";
  put(db, {{"template", "db"},
           {"selector", {{"matchLabels", {{"region", "eu"}}}}},
           {"patch", json::object()}});
  const std::string us = "t/acme/overrides/web-c";
  put(us, {{"template", "web"}, {"sites", {"c"}}, {"patch", json::object()}});
  EXPECT_TRUE(take().empty());

  // The template reaches c: its override comes with it.
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}, {"c"}));
  ev = take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev["c"].entered, (Keys{us, kPlacementKey, kWebKey}));

  // The db template is added: the db override comes to the eu sites.
  put(kPlacementKey, placement({"web", "db"}, {{"region", "eu"}}, {"c"}));
  ev = take();
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev["a"].entered, (Keys{db, kDbKey}));
  EXPECT_EQ(ev["b"].entered, (Keys{db, kDbKey}));
  EXPECT_EQ(ev["c"].entered, Keys{kDbKey});

  // A site label change takes the selector-matched override away alone.
  site("a", {{"region", "eu"}});
  ev = take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev["a"].left, Keys{edge});
  EXPECT_TRUE(ev["a"].entered.empty());

  // The override's selector changes.
  put(edge, {{"template", "web"},
             {"selector", {{"matchLabels", {{"region", "eu"}}}}},
             {"patch", {{"spec", {{"replicas", 1}}}}}});
  ev = take();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev["a"].entered, Keys{edge});
  EXPECT_EQ(ev["b"].entered, Keys{edge});

  // The template leaves the placement: its overrides leave with it.
  put(kPlacementKey, placement({"db"}, {{"region", "eu"}}, {"c"}));
  ev = take();
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev["a"].left, (Keys{edge, kWebKey}));
  EXPECT_EQ(ev["c"].left, (Keys{us, kWebKey}));

  // A deleted override leaves.
  remove(db);
  ev = take();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev["a"].left, Keys{db});
}

TEST_F(PlacementIndexTest, SitesListedByNameEnterWhenTheyAppear) {
  put(kPlacementKey, placement({"web"}, nullptr, {"z"}));
  EXPECT_TRUE(take().empty());
  EXPECT_FALSE(index_->in_scope("z", kWebKey));
  put("sites/z", {{"name", "z"}});
  auto ev = take();
  EXPECT_EQ(ev["z"].entered, (Keys{kPlacementKey, kWebKey}));
}

TEST_F(PlacementIndexTest, BadNamesAndSelectorsMatchNothing) {
  site("a", {{"region", "eu"}, {"n", "1"}});
  // Template names that are not labels make the placement match nothing: a
  // key outside the tenant's templates never enters a scope, and the site's
  // renderer, which reads placements with the same function, agrees.
  put(kPlacementKey, {{"templates", {"web", "../x", "Web", 5, "a/b"}},
                      {"selector", {{"matchLabels", {{"region", "eu"}}}}}});
  EXPECT_TRUE(take().empty());
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}));
  EXPECT_EQ(take()["a"].entered, (Keys{kPlacementKey, kWebKey}));
  // A selector value that is not a string makes the selector match nothing.
  put(kPlacementKey,
      {{"templates", {"web"}}, {"selector", {{"matchLabels", {{"region", "eu"}, {"n", 1}}}}}});
  EXPECT_EQ(take()["a"].left, (Keys{kPlacementKey, kWebKey}));
  // Keys that are not documents of the layout are ignored.
  put("t/acme/placements/x/y", placement({"web"}, {{"region", "eu"}}));
  put("t/Bad_Tenant/placements/p", placement({"web"}, {{"region", "eu"}}));
  put("sites/a/labels", {{"region", "us"}});
  EXPECT_TRUE(take().empty());
  EXPECT_TRUE(index_->scope_keys("a").empty());
}

TEST_F(PlacementIndexTest, GrantsGateWhereATenantPlaces) {
  site("a", {{"region", "eu"}});
  site("b", {{"region", "eu"}, {"tier", "edge"}});
  site("c", {{"region", "us"}});
  put(kPlacementKey, placement({"web"}, {{"region", "eu"}}, {"c"}));
  EXPECT_EQ(take().size(), 3u);
  // No grant: the tenant places nowhere, whatever its placements say.
  remove(kAcmeGrant);
  auto events = take();
  ASSERT_EQ(events.size(), 3u);
  for (const auto& [name, e] : events) EXPECT_EQ(e.left, (Keys{kPlacementKey, kWebKey})) << name;
  EXPECT_FALSE(index_->granted("acme", "a"));
  // A grant by selector, then one by name.
  put("t/acme/grants/edge", {{"selector", {{"matchLabels", {{"tier", "edge"}}}}}});
  events = take();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events["b"].entered, (Keys{kPlacementKey, kWebKey}));
  put("t/acme/grants/us", {{"sites", {"c"}}});
  EXPECT_EQ(take()["c"].entered, (Keys{kPlacementKey, kWebKey}));
  // A site's labels decide its grants as they decide its placements.
  site("a", {{"region", "eu"}, {"tier", "edge"}});
  EXPECT_EQ(take()["a"].entered, (Keys{kPlacementKey, kWebKey}));
  site("b", {{"region", "eu"}});
  EXPECT_EQ(take()["b"].left, (Keys{kPlacementKey, kWebKey}));
  EXPECT_TRUE(index_->granted("acme", "a"));
  EXPECT_FALSE(index_->granted("acme", "b"));
  EXPECT_TRUE(index_->granted("acme", "c"));
  EXPECT_FALSE(index_->granted("globex", "a"));
  EXPECT_FALSE(index_->granted("acme", "nowhere"));
  // A grant the model refuses gives nothing (fail closed).
  put("t/acme/grants/us", {{"sites", "c"}});
  EXPECT_EQ(take()["c"].left, (Keys{kPlacementKey, kWebKey}));
  // Another tenant's grants give acme nothing, and the reverse.
  put("t/globex/grants/all", {{"allSites", true}});
  EXPECT_TRUE(take().empty());
  put("t/globex/placements/p", placement({"x"}, {{"region", "eu"}}));
  EXPECT_EQ(take().size(), 2u);  // a and b, granted to globex
  EXPECT_EQ(index_->scope_keys("a"), (Keys{kPlacementKey, "t/acme/templates/web",
                                           "t/globex/placements/p", "t/globex/templates/x"}));
  EXPECT_EQ(index_->scope_keys("b"), (Keys{"t/globex/placements/p", "t/globex/templates/x"}));
  // A fresh load agrees.
  auto loaded = PlacementIndex::attach(store_.get());
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  for (const char* name : {"a", "b", "c"}) {
    EXPECT_EQ((*loaded)->scope_keys(name), index_->scope_keys(name)) << name;
  }
}

}  // namespace
}  // namespace canopy::hub

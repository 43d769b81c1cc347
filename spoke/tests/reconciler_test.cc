#include "spoke/reconciler.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/render.h"
#include "spoke/manifests_dir_applier.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"

namespace canopy::spoke {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json deployment(const std::string& name, int replicas = 1) {
  return json{{"apiVersion", "apps/v1"},
              {"kind", "Deployment"},
              {"metadata", {{"name", name}, {"namespace", "shop"}}},
              {"spec", {{"replicas", replicas}}}};
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t mtime_ns(const fs::path& p) {
  struct stat st;
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

class ReconcilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directory(dir_.path() / "manifests");
    open_all();
    // The hub's record of the site: its labels are the site's labels.
    put("sites/tower-1", {{"name", "tower-1"}, {"labels", {{"region", "eu-west"}}}});
  }

  Durability durability_ = Durability::kNone;

  void open_all() {
    reconciler_.reset();
    applier_.reset();
    store_.reset();
    StoreOptions so;
    so.path = (dir_.path() / "store").string();
    so.durability = durability_;
    auto s = Store::open(so);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    ManifestsDirOptions mo;
    mo.dir = manifests().string();
    mo.clock = &clock_;
    auto a = ManifestsDirApplier::open(mo);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    applier_ = std::move(a).value();
    ReconcilerOptions ro;
    ro.may_prune = [this] { return may_prune_; };
    reconciler_ = std::make_unique<Reconciler>(store_.get(), "tower-1", applier_.get(), ro);
  }
  bool may_prune_ = true;  // the spoke's "scope complete" answer

  fs::path manifests() const { return dir_.path() / "manifests"; }
  fs::path file(const std::string& tenant, const std::string& name) const {
    return manifests() / model::manifest_file_name(tenant, name);
  }
  void put(const std::string& key, const json& doc) {
    auto r = store_->put_value(key, doc);
    ASSERT_TRUE(r.ok()) << key << ": " << r.status().to_string();
  }
  std::optional<json> status(const std::string& tenant, const std::string& name) {
    auto r = store_->get(model::status_key("tower-1", tenant, name));
    if (!r.ok()) return std::nullopt;
    return json::parse(*r);
  }
  void reconcile() {
    Status st = reconciler_->reconcile_once();
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  std::vector<std::string> inventory() { return applier_->inventory().value(); }

  canopy::testing::TempDir dir_;
  ManualClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ManifestsDirApplier> applier_;
  std::unique_ptr<Reconciler> reconciler_;
};

TEST_F(ReconcilerTest, AppliesAndReportsOnceThenDoesNothing) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/templates/db", deployment("db"));
  put("t/acme/placements/eu",
      {{"templates", {"web", "db"}}, {"selector", {{"matchLabels", {{"region", "eu-west"}}}}}});
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().changed, 2u);
  EXPECT_EQ(reconciler_->last_stats().unchanged, 0u);
  EXPECT_EQ(reconciler_->last_stats().status_written, 2u);

  json web = json::parse(read_file(file("acme", "web")));
  EXPECT_EQ(web["metadata"]["labels"]["app.kubernetes.io/managed-by"], "canopy");
  auto st = status("acme", "web");
  ASSERT_TRUE(st);
  EXPECT_EQ(*st,
            (json{{"template", "t/acme/templates/web"},
                  {"hash", web["metadata"]["annotations"]["canopy.io/hash"]},
                  {"outcome", "applied"},
                  {"message", "manifest " + file("acme", "web").string()},
                  {"file", model::manifest_file_name("acme", "web")},
                  // The template revision it applied, as the hub computes it.
                  {"revision", model::template_revision(*store_->get("t/acme/templates/web"))}}));

  // Nothing changed: nothing parsed, rendered, written or replicated.
  const uint64_t index = store_->last_log_index();
  const int64_t mtime = mtime_ns(file("acme", "web"));
  reconcile();
  const ReconcileStats& s = reconciler_->last_stats();
  EXPECT_EQ(store_->last_log_index(), index);
  EXPECT_EQ(s.documents_parsed, 0u);
  EXPECT_EQ(s.renders_computed, 0u);
  EXPECT_EQ(s.rendered, 2u);
  EXPECT_EQ(s.changed, 0u);
  EXPECT_EQ(s.unchanged, 2u);
  EXPECT_EQ(s.drifted, 0u);
  EXPECT_EQ(s.status_written, 0u);
  EXPECT_EQ(s.pruned, 0u);
  EXPECT_EQ(mtime_ns(file("acme", "web")), mtime);
}

TEST_F(ReconcilerTest, ARolloutHoldsANewRevisionUntilTheHubReleasesIt) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/placements/eu", {{"templates", {"web"}},
                               {"selector", {{"matchLabels", {{"region", "eu-west"}}}}},
                               {"rollout", {{"maxUnavailable", 1}}}});
  auto revision = [&] { return model::template_revision(*store_->get("t/acme/templates/web")); };
  auto release = [&](const std::string& rev) {
    put(model::release_key("tower-1", "acme", "web"), model::release_document({rev}));
  };
  // Not released: nothing applied, no status.
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().held, 1u);
  EXPECT_FALSE(fs::exists(file("acme", "web")));
  EXPECT_FALSE(status("acme", "web"));
  // Released: applied, reported at that revision.
  const std::string r1 = revision();
  release(r1);
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().held, 0u);
  ASSERT_TRUE(fs::exists(file("acme", "web")));
  EXPECT_EQ((*status("acme", "web"))["revision"], r1);
  const std::string applied_v1 = read_file(file("acme", "web"));

  // A new revision: held, the old object stays (not rewritten, not pruned)
  // and so does its status.
  json v2 = deployment("web");
  v2["spec"]["replicas"] = 5;
  put("t/acme/templates/web", v2);
  const json status_v1 = *status("acme", "web");
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().held, 1u);
  EXPECT_EQ(reconciler_->last_stats().pruned, 0u);
  EXPECT_EQ(read_file(file("acme", "web")), applied_v1);
  EXPECT_EQ(*status("acme", "web"), status_v1);
  // A release of another revision does not count.
  release("0000000000000000");
  reconcile();
  EXPECT_EQ(read_file(file("acme", "web")), applied_v1);
  // Released: the new revision is applied and reported.
  release(revision());
  reconcile();
  EXPECT_EQ(json::parse(read_file(file("acme", "web")))["spec"]["replicas"], 5);
  EXPECT_EQ((*status("acme", "web"))["revision"], revision());
  // Without a rollout policy nothing waits for a release.
  put("t/acme/placements/eu",
      {{"templates", {"web"}}, {"selector", {{"matchLabels", {{"region", "eu-west"}}}}}});
  v2["spec"]["replicas"] = 6;
  put("t/acme/templates/web", v2);
  reconcile();
  EXPECT_EQ(json::parse(read_file(file("acme", "web")))["spec"]["replicas"], 6);
}

TEST_F(ReconcilerTest, ARolloutHoldsAChangedHubOverrideUntilReleased) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/placements/eu", {{"templates", {"web"}},
                               {"selector", {{"matchLabels", {{"region", "eu-west"}}}}},
                               {"rollout", {{"maxUnavailable", 1}}}});
  auto override_doc = [](int replicas) {
    return json{{"template", "web"},
                {"sites", {"tower-1"}},
                {"patch", {{"spec", {{"replicas", replicas}}}}}};
  };
  put("t/acme/overrides/eu-size", override_doc(3));
  auto hash = [&](const std::string& key) {
    const std::string text = *store_->get(key);
    return XXH3_64bits(text.data(), text.size());
  };
  // The revision at this site: the template's with the override applying here.
  auto revision = [&] {
    return model::template_revision(hash("t/acme/templates/web"),
                                    {hash("t/acme/overrides/eu-size")});
  };
  auto release = [&](const std::string& rev) {
    put(model::release_key("tower-1", "acme", "web"), model::release_document({rev}));
  };
  auto replicas = [&] { return json::parse(read_file(file("acme", "web")))["spec"]["replicas"]; };
  EXPECT_NE(revision(), model::template_revision(*store_->get("t/acme/templates/web")));
  // A release of the template's own revision is not this site's revision.
  release(model::template_revision(*store_->get("t/acme/templates/web")));
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().held, 1u);
  EXPECT_FALSE(fs::exists(file("acme", "web")));
  release(revision());
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().held, 0u);
  EXPECT_EQ(replicas(), 3);
  EXPECT_EQ((*status("acme", "web"))["revision"], revision());

  // The override changes, the template does not: a new revision here, held
  // until released; what was applied stays, and so does its status.
  const json status_before = *status("acme", "web");
  const std::string released = revision();
  put("t/acme/overrides/eu-size", override_doc(4));
  EXPECT_NE(revision(), released);
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().held, 1u);
  EXPECT_EQ(reconciler_->last_stats().pruned, 0u);
  EXPECT_EQ(replicas(), 3);
  EXPECT_EQ(*status("acme", "web"), status_before);
  release(revision());
  reconcile();
  EXPECT_EQ(replicas(), 4);
  EXPECT_EQ((*status("acme", "web"))["revision"], revision());

  // The override no longer applies here: the template's own revision, held
  // again until released.
  json elsewhere = override_doc(4);
  elsewhere["sites"] = {"tower-2"};
  put("t/acme/overrides/eu-size", elsewhere);
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().held, 1u);
  EXPECT_EQ(replicas(), 4);
  release(model::template_revision(*store_->get("t/acme/templates/web")));
  reconcile();
  EXPECT_EQ(replicas(), 1);

  // The site's own local override is the site operator's change: not a
  // rollout's, applied at once, the revision unchanged.
  const std::string before_local = (*status("acme", "web"))["revision"];
  put(model::local_override_key("tower-1", "acme", "web"),
      {{"patch", {{"spec", {{"replicas", 7}}}}}});
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().held, 0u);
  EXPECT_EQ(replicas(), 7);
  EXPECT_EQ((*status("acme", "web"))["revision"], before_local);
}

TEST_F(ReconcilerTest, ChangeRewritesOnlyWhatChanged) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/templates/db", deployment("db"));
  put("t/acme/placements/p", {{"templates", {"web", "db"}}, {"sites", {"tower-1"}}});
  reconcile();
  const int64_t db_mtime = mtime_ns(file("acme", "db"));
  const std::string old_hash = (*status("acme", "web"))["hash"];
  const uint64_t index = store_->last_log_index();

  put("t/acme/templates/web", deployment("web", 3));
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().renders_computed, 1u);
  EXPECT_EQ(reconciler_->last_stats().changed, 1u);
  EXPECT_EQ(reconciler_->last_stats().status_written, 1u);
  EXPECT_EQ(json::parse(read_file(file("acme", "web")))["spec"]["replicas"], 3);
  EXPECT_EQ(mtime_ns(file("acme", "db")), db_mtime);
  EXPECT_NE((*status("acme", "web"))["hash"], old_hash);
  EXPECT_EQ(store_->last_log_index(), index + 2);  // the template, the status

  // A local override, set at the site, wins over hub overrides.
  put("t/acme/overrides/more",
      {{"template", "web"}, {"sites", {"tower-1"}}, {"patch", {{"spec", {{"replicas", 5}}}}}});
  put("sites/tower-1/overrides/acme/web", {{"patch", {{"spec", {{"replicas", 2}}}}}});
  reconcile();
  EXPECT_EQ(json::parse(read_file(file("acme", "web")))["spec"]["replicas"], 2);
  ASSERT_TRUE(store_->remove("sites/tower-1/overrides/acme/web").ok());
  reconcile();
  EXPECT_EQ(json::parse(read_file(file("acme", "web")))["spec"]["replicas"], 5);
}

TEST_F(ReconcilerTest, PrunesWhatIsNoLongerDesired) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/templates/db", deployment("db"));
  put("t/acme/placements/p", {{"templates", {"web"}}, {"sites", {"tower-1"}}});
  put("t/acme/placements/q", {{"templates", {"db"}}, {"sites", {"tower-1"}}});
  reconcile();
  ASSERT_EQ(inventory().size(), 2u);

  ASSERT_TRUE(store_->remove("t/acme/placements/q").ok());
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().pruned, 1u);
  EXPECT_EQ(reconciler_->last_stats().status_removed, 1u);
  EXPECT_EQ(inventory(), std::vector<std::string>{model::manifest_file_name("acme", "web")});
  EXPECT_FALSE(status("acme", "db"));
  EXPECT_TRUE(status("acme", "web"));
  // The file is a tombstone, so that k3s deletes the objects too.
  EXPECT_EQ(json::parse(read_file(file("acme", "db")))["kind"], "List");

  // A site label change moves a selector-placed template out.
  put("t/acme/placements/r",
      {{"templates", {"db"}}, {"selector", {{"matchLabels", {{"region", "eu-west"}}}}}});
  reconcile();
  EXPECT_EQ(inventory().size(), 2u);
  put("sites/tower-1", {{"name", "tower-1"}, {"labels", {{"region", "us-east"}}}});
  reconcile();
  EXPECT_EQ(inventory(), std::vector<std::string>{model::manifest_file_name("acme", "web")});
  const uint64_t index = store_->last_log_index();
  reconcile();
  EXPECT_EQ(store_->last_log_index(), index);
}

// A spoke whose store was lost or restored from an old backup refills it
// from the hub: until its session has caught up (may_prune), what it applied
// and has not received again yet must stay.
TEST_F(ReconcilerTest, NothingIsPrunedUntilTheScopeIsKnownComplete) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/templates/db", deployment("db"));
  put("t/acme/placements/p", {{"templates", {"web", "db"}}, {"sites", {"tower-1"}}});
  reconcile();
  ASSERT_EQ(inventory().size(), 2u);

  may_prune_ = false;  // a restarted spoke, its store partly refilled
  put("t/acme/placements/p", {{"templates", {"web"}}, {"sites", {"tower-1"}}});
  reconcile();
  EXPECT_TRUE(reconciler_->last_stats().prune_skipped);
  EXPECT_EQ(reconciler_->last_stats().pruned, 0u);
  EXPECT_EQ(inventory().size(), 2u);
  EXPECT_TRUE(status("acme", "db"));  // still reported: its object is still there

  may_prune_ = true;  // caught up: db really is no longer desired
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().pruned, 1u);
  EXPECT_EQ(inventory(), std::vector<std::string>{model::manifest_file_name("acme", "web")});
  EXPECT_FALSE(status("acme", "db"));
}

// A placement can reach a site in an earlier batch than its templates (a
// first sync, a refill). While the scope is not known complete, a template it
// lists that is not here yet waits: no failed status, no failure counted (the
// metrics e2e test saw three failed applies so). Once complete, it fails.
TEST_F(ReconcilerTest, ATemplateNotHereYetWaitsUntilTheScopeIsComplete) {
  may_prune_ = false;
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/placements/p", {{"templates", {"web", "db"}}, {"sites", {"tower-1"}}});
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().failed, 0u);
  EXPECT_EQ(reconciler_->last_stats().waiting, 1u);
  EXPECT_EQ(reconciler_->last_stats().changed, 1u);
  EXPECT_FALSE(status("acme", "db"));
  ASSERT_TRUE(status("acme", "web"));

  put("t/acme/templates/db", deployment("db"));  // the rest of the scope
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().failed, 0u);
  EXPECT_EQ(reconciler_->last_stats().waiting, 0u);
  ASSERT_TRUE(status("acme", "db"));
  EXPECT_EQ((*status("acme", "db"))["outcome"], "applied");

  // Complete: a template a placement lists and nobody wrote is a failure.
  may_prune_ = true;
  put("t/acme/placements/p", {{"templates", {"web", "db", "cache"}}, {"sites", {"tower-1"}}});
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().failed, 1u);
  EXPECT_EQ(reconciler_->last_stats().waiting, 0u);
  ASSERT_TRUE(status("acme", "cache"));
  EXPECT_EQ((*status("acme", "cache"))["outcome"], "failed");
}

TEST_F(ReconcilerTest, RendersByTheSiteRecordAndWithoutOneChangesNothing) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/templates/db", deployment("db"));
  put("t/acme/placements/eu",
      {{"templates", {"web"}},
       {"selector",
        {{"matchExpressions",
          {{{"key", "region"}, {"operator", "In"}, {"values", {"eu-west", "eu-north"}}},
           {{"key", "legacy"}, {"operator", "DoesNotExist"}}}}}}});
  put("t/acme/placements/us",
      {{"templates", {"db"}}, {"selector", {{"matchLabels", {{"region", "us-east"}}}}}});
  reconcile();
  EXPECT_EQ(inventory(), std::vector<std::string>{model::manifest_file_name("acme", "web")});

  // The record gains a label the expression excludes: web leaves, nothing else comes.
  put("sites/tower-1",
      {{"name", "tower-1"}, {"labels", {{"region", "eu-west"}, {"legacy", "yes"}}}});
  reconcile();
  EXPECT_TRUE(inventory().empty());

  // Back in; then the record disappears: nothing is rendered, nothing is
  // removed, and the pass says why.
  put("sites/tower-1", {{"name", "tower-1"}, {"labels", {{"region", "eu-north"}}}});
  reconcile();
  EXPECT_EQ(inventory(), std::vector<std::string>{model::manifest_file_name("acme", "web")});
  ASSERT_TRUE(store_->remove("sites/tower-1").ok());
  reconcile();
  EXPECT_TRUE(reconciler_->last_stats().prune_skipped);
  EXPECT_EQ(inventory(), std::vector<std::string>{model::manifest_file_name("acme", "web")});
  ASSERT_FALSE(reconciler_->last_failures().empty());
  EXPECT_NE(reconciler_->last_failures()[0].error.find("site record sites/tower-1"),
            std::string::npos);
}

TEST_F(ReconcilerTest, FailuresAreReportedAndKeepWhatWasApplied) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/templates/db", deployment("db"));
  put("t/acme/placements/p", {{"templates", {"web", "db", "cache"}}, {"sites", {"tower-1"}}});
  reconcile();
  auto cache = status("acme", "cache");
  ASSERT_TRUE(cache);
  EXPECT_EQ((*cache)["outcome"], "failed");
  EXPECT_NE(
      (*cache)["message"].get<std::string>().find("lists template \"cache\", which does not exist"),
      std::string::npos);
  EXPECT_EQ((*cache)["file"], "");
  const std::string web_hash = (*status("acme", "web"))["hash"];
  const std::string web_bytes = read_file(file("acme", "web"));

  // A bad override fails web; web's file stays as it was; db is untouched.
  put("t/acme/overrides/o", {{"template", "web"},
                             {"sites", {"tower-1"}},
                             {"patch", {{"metadata", {{"name", "Bad_Name"}}}}}});
  reconcile();
  auto web = status("acme", "web");
  EXPECT_EQ((*web)["outcome"], "failed");
  EXPECT_NE((*web)["message"].get<std::string>().find(
                "template t/acme/templates/web after overrides: metadata.name \"Bad_Name\""),
            std::string::npos)
      << (*web)["message"];
  EXPECT_EQ((*web)["hash"], web_hash);
  EXPECT_EQ((*web)["file"], model::manifest_file_name("acme", "web"));
  EXPECT_EQ(read_file(file("acme", "web")), web_bytes);
  EXPECT_EQ(inventory().size(), 2u);
  EXPECT_EQ((*status("acme", "db"))["outcome"], "applied");
  // Failing again the same way writes nothing.
  uint64_t index = store_->last_log_index();
  reconcile();
  EXPECT_EQ(store_->last_log_index(), index);

  // Fixed: applied again.
  put("t/acme/overrides/o",
      {{"template", "web"}, {"sites", {"tower-1"}}, {"patch", {{"spec", {{"replicas", 4}}}}}});
  reconcile();
  EXPECT_EQ((*status("acme", "web"))["outcome"], "applied");
  EXPECT_EQ(json::parse(read_file(file("acme", "web")))["spec"]["replicas"], 4);

  // A malformed placement: nothing can be said about the desired set, so
  // nothing is pruned.
  put("t/acme/placements/p", {{"templates", {"web"}}, {"sites", "tower-1"}});
  reconcile();
  EXPECT_TRUE(reconciler_->last_stats().prune_skipped);
  EXPECT_EQ(reconciler_->last_stats().global_failures, 1u);
  EXPECT_EQ(inventory().size(), 2u);
  EXPECT_TRUE(status("acme", "db"));
}

TEST_F(ReconcilerTest, ApplyFailuresAreReportedAndReturned) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/templates/db", deployment("db"));
  put("t/acme/placements/p", {{"templates", {"web", "db"}}, {"sites", {"tower-1"}}});
  fs::create_directory(file("acme", "web"));  // the file cannot be written
  Status st = reconciler_->reconcile_once();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.to_string();
  auto web = status("acme", "web");
  ASSERT_TRUE(web);
  EXPECT_EQ((*web)["outcome"], "failed");
  EXPECT_NE((*web)["message"].get<std::string>().find("manifests-dir: renaming"), std::string::npos)
      << (*web)["message"];
  EXPECT_EQ((*status("acme", "db"))["outcome"], "applied");

  // The retry after the cause is gone succeeds.
  fs::remove(file("acme", "web"));
  reconcile();
  EXPECT_EQ((*status("acme", "web"))["outcome"], "applied");
  EXPECT_TRUE(fs::is_regular_file(file("acme", "web")));
}

TEST_F(ReconcilerTest, RestartRewritesNothing) {
  put("t/acme/templates/web", deployment("web"));
  put("t/acme/placements/p", {{"templates", {"web"}}, {"sites", {"tower-1"}}});
  reconcile();
  const int64_t mtime = mtime_ns(file("acme", "web"));
  open_all();
  const uint64_t index = store_->last_log_index();
  reconcile();
  EXPECT_EQ(reconciler_->last_stats().changed, 0u);
  EXPECT_EQ(reconciler_->last_stats().status_written, 0u);
  EXPECT_EQ(store_->last_log_index(), index);
  EXPECT_EQ(mtime_ns(file("acme", "web")), mtime);
}

// A Deployment of realistic size (~2 KiB).
json big_deployment(const std::string& name) {
  json containers = json::array();
  for (int c = 0; c < 3; ++c) {
    json env = json::array();
    for (int e = 0; e < 8; ++e) {
      // (Appending, not "x" + std::to_string(): GCC 12 warns falsely on that at -O3.)
      env.push_back(
          {{"name", std::string("VAR_").append(std::to_string(e))}, {"value", "value-" + name}});
    }
    containers.push_back({{"name", std::string("c").append(std::to_string(c))},
                          {"image", "registry.example.com/shop/" + name + ":1.2.3"},
                          {"ports", {{{"containerPort", 8080 + c}}}},
                          {"env", env},
                          {"resources", {{"limits", {{"cpu", "500m"}, {"memory", "256Mi"}}}}}});
  }
  json pod = {{"metadata", {{"labels", {{"app", name}}}}}, {"spec", {{"containers", containers}}}};
  json spec = {
      {"replicas", 2}, {"selector", {{"matchLabels", {{"app", name}}}}}, {"template", pod}};
  return json{{"apiVersion", "apps/v1"},
              {"kind", "Deployment"},
              {"metadata", {{"name", name}, {"namespace", "shop"}, {"labels", {{"app", name}}}}},
              {"spec", spec}};
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// 1,000 objects in scope: cold start (every file written), warm pass
// (nothing changed), restart with the files gone (all written back), restart
// with the files in place. With the store's production durability too.
class ThousandObjectsTest : public ReconcilerTest,
                            public ::testing::WithParamInterface<Durability> {
 protected:
  void SetUp() override {
    durability_ = GetParam();
    ReconcilerTest::SetUp();
  }
};

INSTANTIATE_TEST_SUITE_P(Durability, ThousandObjectsTest,
                         ::testing::Values(Durability::kNone, Durability::kGroupCommit),
                         [](const auto& info) {
                           return info.param == Durability::kNone ? "None" : "GroupCommit";
                         });

TEST_P(ThousandObjectsTest, ColdWarmAndRestart) {
  constexpr int kObjects = 1000;
  for (int p = 0; p < 10; ++p) {
    json names = json::array();
    for (int i = 0; i < kObjects / 10; ++i) {
      std::string n = "app-" + std::to_string(p * 100 + i);
      put("t/acme/templates/" + n, big_deployment(n));
      names.push_back(n);
    }
    put("t/acme/placements/p" + std::to_string(p),
        {{"templates", names}, {"selector", {{"matchLabels", {{"region", "eu-west"}}}}}});
  }
  for (int i = 0; i < 100; ++i) {
    put("t/acme/overrides/o" + std::to_string(i), {{"template", "app-" + std::to_string(i * 10)},
                                                   {"sites", {"tower-1"}},
                                                   {"patch", {{"spec", {{"replicas", 3}}}}}});
  }

  auto t0 = std::chrono::steady_clock::now();
  reconcile();
  const double cold = ms_since(t0);
  EXPECT_EQ(reconciler_->last_stats().rendered, static_cast<size_t>(kObjects));
  EXPECT_EQ(reconciler_->last_stats().changed, static_cast<size_t>(kObjects));

  t0 = std::chrono::steady_clock::now();
  reconcile();
  const double warm = ms_since(t0);
  EXPECT_EQ(reconciler_->last_stats().changed, 0u);
  EXPECT_EQ(reconciler_->last_stats().status_written, 0u);

  // Restart: new store handle, applier and reconciler; the files are gone.
  for (const auto& e : fs::directory_iterator(manifests())) fs::remove(e.path());
  t0 = std::chrono::steady_clock::now();
  open_all();
  reconcile();
  const double restart = ms_since(t0);
  EXPECT_EQ(reconciler_->last_stats().changed, static_cast<size_t>(kObjects));
  EXPECT_EQ(reconciler_->last_stats().status_written, 0u);
  EXPECT_EQ(inventory().size(), static_cast<size_t>(kObjects));

  // Restart with the files in place: nothing written.
  t0 = std::chrono::steady_clock::now();
  open_all();
  reconcile();
  const double restart_warm = ms_since(t0);

  EXPECT_EQ(reconciler_->last_stats().changed, 0u);

  std::fprintf(stderr,
               "1000 objects, %s: cold %.1f ms, warm %.1f ms, restart (store and applier "
               "open, reconcile) without files %.1f ms, with files %.1f ms\n",
               GetParam() == Durability::kNone ? "durability none" : "group commit", cold, warm,
               restart, restart_warm);
  // No time bound here: speed is measured by bench/spoke_apply_bench.cc, and a
  // bound loose enough for sanitizer builds on a loaded machine proves nothing.
}

}  // namespace
}  // namespace canopy::spoke

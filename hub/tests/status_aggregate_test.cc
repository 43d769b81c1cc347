// StatusAggregate over a real store and placement index: every write goes
// through the Store and reaches both through their subscriptions, as at the
// hub. The randomized test checks the incremental counts against a full
// recomputation from the store after every write.
#include "hub/status_aggregate.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>

#include "model/documents.h"
#include "model/keys.h"
#include "model/render.h"
#include "tests/support/temp_dir.h"

namespace canopy::hub {
namespace {

using json = nlohmann::json;
using model::placement_key;

std::unique_ptr<Store> open_store(const std::string& path) {
  StoreOptions o;
  o.path = path;
  o.durability = Durability::kNone;
  auto s = Store::open(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

struct Counts {
  uint32_t targeted = 0, applied = 0, failed = 0, pending = 0;
  bool operator==(const Counts&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Counts& c) {
  return os << "{targeted " << c.targeted << ", applied " << c.applied << ", failed " << c.failed
            << ", pending " << c.pending << "}";
}

class StatusAggregateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    open();
    put(model::grant_key("acme", "all"), {{"allSites", true}});
  }

  void open() {
    aggregate_.reset();
    index_.reset();
    store_.reset();
    store_ = open_store(dir_.file("hub"));
    ASSERT_NE(store_, nullptr);
    auto index = PlacementIndex::attach(store_.get());
    ASSERT_TRUE(index.ok()) << index.status().to_string();
    index_ = std::move(index).value();
    auto aggregate = StatusAggregate::attach(store_.get(), index_.get());
    ASSERT_TRUE(aggregate.ok()) << aggregate.status().to_string();
    aggregate_ = std::move(aggregate).value();
  }

  void put(const std::string& key, const json& doc) {
    auto r = store_->put_value(key, doc);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }
  void site(const std::string& name, const std::string& region) {
    put("sites/" + name, {{"name", name}, {"labels", {{"region", region}}}});
  }
  void report(const std::string& site, const std::string& tmpl, const std::string& outcome) {
    put("sites/" + site + "/status/acme/" + tmpl, {{"outcome", outcome}, {"hash", "h"}});
  }
  // Site `s` applied template web of acme at revision `rev`.
  void report_applied_at(const std::string& s, const std::string& rev) {
    put("sites/" + s + "/status/acme/web",
        {{"outcome", "applied"}, {"hash", "h"}, {"revision", rev}});
  }
  v1::GetStatusResponse shop_status() {
    auto st = aggregate_->placement_status("acme", "shop", "", 10);
    EXPECT_TRUE(st.ok());
    return st.ok() ? *st : v1::GetStatusResponse();
  }
  void placement(const std::string& name, const std::vector<std::string>& templates) {
    put(placement_key("acme", name),
        {{"templates", templates}, {"selector", {{"matchLabels", {{"region", "eu"}}}}}});
  }

  Counts counts(const std::string& name = "shop") {
    auto r = aggregate_->placement_status("acme", name, "", 1000);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) return {};
    return {r->targeted(), r->applied(), r->failed(), r->pending()};
  }

  // What GetStatus computed per request before the aggregate: the store's
  // documents and the index's sites, read afresh.
  Counts recompute(const std::string& name) {
    Counts c;
    auto text = store_->get(placement_key("acme", name));
    if (!text.ok()) return c;
    std::vector<std::string> templates;
    auto p = model::parse_placement(json::parse(*text));
    if (p.ok()) templates = p->templates;
    for (const auto& s : index_->sites_for(placement_key("acme", name))) {
      ++c.targeted;
      bool failed = false, applied = true;
      for (const auto& t : templates) {
        auto st = store_->get("sites/" + s + "/status/acme/" + t);
        std::string outcome = "pending";
        if (st.ok()) outcome = json::parse(*st).value("outcome", "pending");
        failed = failed || outcome == "failed";
        applied = applied && outcome == "applied";
      }
      (failed ? c.failed : applied ? c.applied : c.pending) += 1;
    }
    return c;
  }

  canopy::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<PlacementIndex> index_;
  std::unique_ptr<StatusAggregate> aggregate_;
};

TEST_F(StatusAggregateTest, CountsFollowStatusDocuments) {
  site("a", "eu");
  site("b", "eu");
  site("c", "us");
  placement("shop", {"web", "db"});
  EXPECT_EQ(counts(), (Counts{2, 0, 0, 2}));
  report("a", "web", "applied");
  EXPECT_EQ(counts(), (Counts{2, 0, 0, 2}));
  report("a", "db", "applied");
  EXPECT_EQ(counts(), (Counts{2, 1, 0, 1}));
  report("b", "web", "failed");
  EXPECT_EQ(counts(), (Counts{2, 1, 1, 0}));
  report("c", "web", "failed");  // not targeted
  EXPECT_EQ(counts(), (Counts{2, 1, 1, 0}));
  ASSERT_TRUE(store_->remove("sites/b/status/acme/web").ok());
  EXPECT_EQ(counts(), (Counts{2, 1, 0, 1}));
}

TEST_F(StatusAggregateTest, GrantsDecideWhichSitesAreTargeted) {
  site("a", "eu");
  site("b", "eu");
  placement("shop", {"web"});
  report("a", "web", "applied");
  EXPECT_EQ(counts(), (Counts{2, 1, 0, 1}));
  put(model::grant_key("acme", "all"), {{"sites", {"a"}}});
  EXPECT_EQ(counts(), (Counts{1, 1, 0, 0}));
  ASSERT_TRUE(store_->remove(model::grant_key("acme", "all")).ok());
  EXPECT_EQ(counts(), (Counts{0, 0, 0, 0}));
  put(model::grant_key("acme", "eu"), {{"selector", {{"matchLabels", {{"region", "eu"}}}}}});
  EXPECT_EQ(counts(), (Counts{2, 1, 0, 1}));
}

TEST_F(StatusAggregateTest, AnOlderRevisionAppliedIsProgressingNotApplied) {
  site("a", "eu");
  site("b", "eu");
  placement("shop", {"web"});
  const json first = {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "web"}}}};
  put(model::template_key("acme", "web"), first);
  auto revision = [&] {
    auto text = store_->get(model::template_key("acme", "web"));
    EXPECT_TRUE(text.ok());
    return model::template_revision(*text);
  };
  const std::string r1 = revision();
  report_applied_at("a", r1);
  report_applied_at("b", r1);
  EXPECT_EQ(shop_status().applied(), 2u);
  EXPECT_EQ(shop_status().progressing(), 0u);
  // A new revision of the template: until a site reports it, it is behind.
  json second = first;
  second["data"] = {{"k", "v"}};
  put(model::template_key("acme", "web"), second);
  const std::string r2 = revision();
  ASSERT_NE(r1, r2);
  v1::GetStatusResponse s = shop_status();
  EXPECT_EQ(s.applied(), 0u);
  EXPECT_EQ(s.progressing(), 2u);
  EXPECT_EQ(s.sites(0).state(), "progressing");
  EXPECT_FALSE(s.sites(0).templates(0).current());
  EXPECT_EQ(s.sites(0).templates(0).revision(), r1);
  report_applied_at("a", r2);
  s = shop_status();
  EXPECT_EQ(s.applied(), 1u);
  EXPECT_EQ(s.progressing(), 1u);
  EXPECT_EQ(s.sites(0).state(), "applied");
  EXPECT_TRUE(s.sites(0).templates(0).current());
  // A report without a revision (an older spoke) counts as current.
  put("sites/b/status/acme/web", {{"outcome", "applied"}, {"hash", "h"}});
  EXPECT_EQ(shop_status().applied(), 2u);
}

// A hub override is part of the revision at the sites it applies to: a
// changed override leaves those sites progressing until they report it, and
// the others current.
TEST_F(StatusAggregateTest, AChangedOverrideIsANewRevisionWhereItApplies) {
  site("a", "eu");
  site("b", "eu");
  placement("shop", {"web"});
  put(model::template_key("acme", "web"),
      {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "web"}}}});
  auto hash = [&](const std::string& key) {
    auto text = store_->get(key);
    EXPECT_TRUE(text.ok());
    return text.ok() ? XXH3_64bits(text->data(), text->size()) : 0;
  };
  const std::string base = model::template_revision(hash(model::template_key("acme", "web")));
  report_applied_at("a", base);
  report_applied_at("b", base);
  EXPECT_EQ(shop_status().applied(), 2u);
  put(model::override_key("acme", "b-data"),
      {{"template", "web"}, {"sites", {"b"}}, {"patch", {{"data", {{"k", "v"}}}}}});
  v1::GetStatusResponse s = shop_status();
  EXPECT_EQ(s.applied(), 1u);
  EXPECT_EQ(s.progressing(), 1u);
  EXPECT_EQ(s.sites(0).state(), "applied");
  EXPECT_EQ(s.sites(1).state(), "progressing");
  EXPECT_FALSE(s.sites(1).templates(0).current());
  // b reports the revision the override makes there: current again.
  report_applied_at("b", model::template_revision(hash(model::template_key("acme", "web")),
                                                  {hash(model::override_key("acme", "b-data"))}));
  s = shop_status();
  EXPECT_EQ(s.applied(), 2u);
  EXPECT_EQ(s.progressing(), 0u);
  EXPECT_TRUE(s.sites(1).templates(0).current());
}

TEST_F(StatusAggregateTest, CountsFollowSitesAndPlacements) {
  site("a", "eu");
  site("b", "eu");
  placement("shop", {"web", "db"});
  report("a", "web", "applied");
  report("c", "web", "failed");
  site("c", "eu");  // joins with what it reported before
  EXPECT_EQ(counts(), (Counts{3, 0, 1, 2}));
  site("c", "us");  // leaves
  EXPECT_EQ(counts(), (Counts{2, 0, 0, 2}));
  placement("shop", {"web"});  // db no longer part of it
  EXPECT_EQ(counts(), (Counts{2, 1, 0, 1}));
  placement("shop", {});  // nothing to apply: every site is applied
  EXPECT_EQ(counts(), (Counts{2, 2, 0, 0}));
  ASSERT_TRUE(store_->remove(placement_key("acme", "shop")).ok());
  EXPECT_EQ(aggregate_->placement_status("acme", "shop", "", 10).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(aggregate_->placement_status("acme", "none", "", 10).status().code(),
            StatusCode::kNotFound);
}

TEST_F(StatusAggregateTest, RowsPageInSiteOrder) {
  for (const char* s : {"d", "b", "a", "c"}) site(s, "eu");
  placement("shop", {"web"});
  report("b", "web", "failed");
  std::vector<std::string> rows;
  std::string token;
  int pages = 0;
  do {
    auto r = aggregate_->placement_status("acme", "shop", token, 3);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->targeted(), 4u);
    for (const auto& row : r->sites()) rows.push_back(row.site() + ":" + row.state());
    token = r->next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 2);
  EXPECT_EQ(rows, (std::vector<std::string>{"a:pending", "b:failed", "c:pending", "d:pending"}));
}

TEST_F(StatusAggregateTest, LoadsWhatTheStoreHolds) {
  site("a", "eu");
  site("b", "eu");
  placement("shop", {"web"});
  report("a", "web", "applied");
  report("b", "web", "failed");
  const Counts before = counts();
  open();
  EXPECT_EQ(counts(), before);
  EXPECT_EQ(counts(), (Counts{2, 1, 1, 0}));
}

// Random writes of sites, placements and status documents; after each, every
// placement's counts equal a full recomputation. CANOPY_SEED=N replays one.
TEST_F(StatusAggregateTest, MatchesAFullRecomputation) {
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("CANOPY_SEED")) seed = std::strtoull(s, nullptr, 10);
  SCOPED_TRACE("replay with CANOPY_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&rng](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
  const std::vector<std::string> sites = {"a", "b", "c", "d", "e"};
  const std::vector<std::string> templates = {"web", "db", "cache", "Bad"};
  const std::vector<std::string> placements = {"p1", "p2", "p3"};
  const std::vector<std::string> outcomes = {"applied", "failed", "removed", ""};
  for (int step = 0; step < 400; ++step) {
    switch (rng() % 6) {
      case 0:
        site(pick(sites), rng() % 2 ? "eu" : "us");
        break;
      case 1: {
        std::vector<std::string> ts;
        for (int i = rng() % 4; i > 0; --i) ts.push_back(pick(templates));
        placement(pick(placements), ts);
        break;
      }
      case 2:
        (void)store_->remove(rng() % 2 ? placement_key("acme", pick(placements))
                                       : "sites/" + pick(sites));
        break;
      default: {
        const std::string key = "sites/" + pick(sites) + "/status/acme/" + pick(templates);
        if (rng() % 5 == 0) {
          (void)store_->remove(key);
        } else {
          put(key, {{"outcome", pick(outcomes)}});
        }
      }
    }
    for (const auto& p : placements) {
      auto r = aggregate_->placement_status("acme", p, "", 1000);
      const Counts got =
          r.ok() ? Counts{r->targeted(), r->applied(), r->failed(), r->pending()} : Counts{};
      ASSERT_EQ(got, recompute(p)) << "step " << step << ", placement " << p;
    }
  }
}

}  // namespace
}  // namespace canopy::hub

// Differential test: the hub's computed scope for each site against what that
// site's renderer selects.
//
// A seeded generator writes random catalogues into a real store — site
// records (valid and not), placements and overrides with every selector form
// (matchLabels, In, NotIn, Exists, DoesNotExist, listed sites, and malformed
// ones), templates (valid and not), local overrides — and removes documents.
// After every step, for every site it checks:
//   1. the real PlacementIndex, following the store's commits, holds exactly
//      the scope the model defines (placements of tenants granted the site
//      whose SiteChoice matches the site's record, their templates, and the
//      overrides of those templates that match it);
//   2. the site's renderer, given only the documents of that scope (all a
//      spoke holds), plans exactly the scope's templates, with no placement it
//      cannot read;
//   3. rendering from the scope alone gives the same objects (template and
//      hash) as rendering from the whole catalogue: nothing outside a site's
//      scope changes what it runs.
// CANOPY_DIFF_SEEDS (default 300) seeds of CANOPY_DIFF_STEPS (default 25)
// steps; CANOPY_DIFF_SEED=N replays one seed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "hub/placement_index.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/render.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using Keys = std::set<std::string>;

const std::vector<std::string> kSites = {"s0", "s1", "s2", "s3", "s4", "s5"};
const std::vector<std::string> kTenants = {"acme", "beta"};
const std::vector<std::string> kTemplates = {"web", "db", "cache"};
const std::vector<std::string> kLabelKeys = {"region", "tier", "legacy", "arch"};
const std::vector<std::string> kLabelValues = {"eu", "us", "shop", "tower", "yes"};

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : fallback;
}

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  size_t below(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  bool chance(int percent) { return below(100) < static_cast<size_t>(percent); }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }
  std::vector<std::string> some(const std::vector<std::string>& v, size_t max) {
    std::vector<std::string> out;
    const size_t n = below(max + 1);
    for (size_t i = 0; i < n; ++i) out.push_back(pick(v));
    return out;
  }

  json labels() {
    json out = json::object();
    for (const auto& k : kLabelKeys) {
      if (chance(55)) out[k] = pick(kLabelValues);
    }
    if (chance(4)) out["bad key"] = "x";   // refused by the model
    if (chance(4)) out["region"] = "e u";  // refused by the model
    return out;
  }

  json selector() {
    json s = json::object();
    if (chance(50)) {
      json ml = json::object();
      for (size_t i = below(3); i > 0; --i) ml[pick(kLabelKeys)] = pick(kLabelValues);
      s["matchLabels"] = ml;
    }
    if (chance(60)) {
      json exprs = json::array();
      for (size_t i = below(3); i > 0; --i) {
        static const std::vector<std::string> ops = {"In", "NotIn", "Exists", "DoesNotExist"};
        const std::string& op = pick(ops);
        json e = {{"key", pick(kLabelKeys)}, {"operator", op}};
        if (op == "In" || op == "NotIn") e["values"] = some(kLabelValues, 3);
        if (chance(5)) e["operator"] = "Within";  // refused
        exprs.push_back(e);
      }
      s["matchExpressions"] = exprs;
    }
    if (chance(3)) s["matchFields"] = json::array();  // refused
    return s;
  }

  json choice_into(json doc) {
    if (chance(40)) doc["sites"] = some(kSites, 2);
    if (chance(80)) doc["selector"] = selector();
    if (chance(3)) doc["sites"] = "s1";  // refused
    return doc;
  }

  json placement() {
    json p = {{"templates", some(kTemplates, 2)}};
    if (chance(4)) p["templates"].push_back("Bad_Name");
    if (chance(10)) p["rollout"] = {{"maxUnavailable", 1}};
    return choice_into(std::move(p));
  }

  json grant() {
    if (chance(15)) return {{"allSites", true}};
    json g = choice_into(json::object());
    if (chance(3)) g["allSites"] = true;  // with sites or a selector: refused
    return g;
  }

  json override_doc() {
    json o = {{"template", pick(kTemplates)},
              {"patch", {{"spec", {{"replicas", static_cast<int>(below(5))}}}}}};
    if (chance(4)) o["patch"] = "not an object";
    return choice_into(std::move(o));
  }

  json manifest(const std::string& name) {
    json m = {{"apiVersion", "apps/v1"},
              {"kind", "Deployment"},
              {"metadata", {{"name", name}, {"namespace", "shop"}}},
              {"spec", {{"replicas", 1}}}};
    if (chance(5)) m["metadata"]["labels"] = {{"tier", 3}};
    return m;
  }

 private:
  std::mt19937_64 rng_;
};

class World {
 public:
  explicit World(uint64_t seed) : gen_(seed) {
    StoreOptions opts;
    opts.path = dir_.file("store");
    opts.durability = Durability::kNone;
    auto s = Store::open(opts);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    auto index = hub::PlacementIndex::attach(store_.get());
    EXPECT_TRUE(index.ok()) << index.status().to_string();
    index_ = std::move(index).value();
  }

  // One random write or removal; returns what it did, for the failure report.
  std::string step() {
    const std::string tenant = gen_.pick(kTenants);
    std::string key;
    json doc;
    switch (gen_.below(8)) {
      case 0:
        key = model::site_key(gen_.pick(kSites));
        doc = {{"labels", gen_.labels()}};
        if (gen_.chance(20)) doc["address"] = "10.0.0.1";
        break;
      case 1:
      case 2:
        key = model::placement_key(tenant, gen_.chance(50) ? "p1" : "p2");
        doc = gen_.placement();
        break;
      case 3:
        key = model::override_key(tenant, gen_.chance(50) ? "o1" : "o2");
        doc = gen_.override_doc();
        break;
      case 4: {
        const std::string& t = gen_.pick(kTemplates);
        key = model::template_key(tenant, t);
        doc = gen_.manifest(t);
        break;
      }
      case 6:
        key = model::grant_key(tenant, gen_.chance(50) ? "g1" : "g2");
        doc = gen_.grant();
        break;
      case 5:
        key = model::local_override_key(gen_.pick(kSites), tenant, gen_.pick(kTemplates));
        doc = {{"patch", {{"spec", {{"paused", gen_.chance(50)}}}}}};
        break;
      default: {
        // Remove something that may exist.
        static const std::vector<std::string> kinds = {"site", "placement", "override", "template",
                                                       "grant"};
        const std::string& kind = gen_.pick(kinds);
        key = kind == "site"        ? model::site_key(gen_.pick(kSites))
              : kind == "placement" ? model::placement_key(tenant, "p1")
              : kind == "override"  ? model::override_key(tenant, "o1")
              : kind == "grant"     ? model::grant_key(tenant, "g1")
                                    : model::template_key(tenant, gen_.pick(kTemplates));
        auto r = store_->remove(key);
        EXPECT_TRUE(r.ok() || r.status().code() == StatusCode::kNotFound) << r.status().to_string();
        return "remove " + key;
      }
    }
    auto r = store_->put_value(key, doc);
    EXPECT_TRUE(r.ok()) << key << ": " << r.status().to_string();
    return "put " + key + " " + doc.dump();
  }

  std::map<std::string, json> all_docs() {
    std::map<std::string, json> out;
    std::string after;
    while (true) {
      auto page = store_->scan("", after, 1000);
      EXPECT_TRUE(page.ok());
      if (!page.ok()) return out;
      for (auto& item : page->items) out[item.key] = json::parse(item.json);
      if (page->next_after.empty()) return out;
      after = page->next_after;
    }
  }

  // What the model says a site's scope is (placement, template and override
  // keys; the site's own subtree aside).
  static Keys model_scope(const std::string& site, const std::map<std::string, json>& docs) {
    Keys scope;
    auto rec = docs.find(model::site_key(site));
    if (rec == docs.end()) return scope;
    auto record = model::parse_site(site, rec->second);
    if (!record.ok()) return scope;
    const std::set<std::string> granted = granted_tenants(*record, docs);
    for (const auto& [key, doc] : docs) {
      const model::ParsedKey k = model::parse_key(key);
      if (k.kind != model::KeyKind::kPlacement) continue;
      if (!granted.contains(std::string(k.tenant))) continue;
      auto p = model::parse_placement(doc);
      if (!p.ok() || !p->choice.matches(*record)) continue;
      scope.insert(key);
      for (const auto& t : p->templates) scope.insert(model::template_key(k.tenant, t));
    }
    for (const auto& [key, doc] : docs) {
      const model::ParsedKey k = model::parse_key(key);
      if (k.kind != model::KeyKind::kOverride) continue;
      auto o = model::parse_override(doc);
      if (!o.ok() || !o->choice.matches(*record)) continue;
      if (scope.contains(model::template_key(k.tenant, o->template_name))) scope.insert(key);
    }
    return scope;
  }

  // The tenants a grant gives the site to.
  static std::set<std::string> granted_tenants(const model::SiteRecord& site,
                                               const std::map<std::string, json>& docs) {
    std::set<std::string> out;
    for (const auto& [key, doc] : docs) {
      const model::ParsedKey k = model::parse_key(key);
      if (k.kind != model::KeyKind::kGrant) continue;
      auto g = model::parse_grant(doc);
      if (g.ok() && g->grants(site.name, site.labels)) out.insert(std::string(k.tenant));
    }
    return out;
  }

  // The site's documents among `docs`: those in `only` when given (and its
  // local overrides), else the placements of the `tenants` granted the site
  // and every other document it could read.
  static model::DesiredState desired_from(const std::string& site,
                                          const std::map<std::string, json>& docs, const Keys* only,
                                          const std::set<std::string>* tenants = nullptr) {
    model::DesiredState d;
    for (const auto& [key, doc] : docs) {
      const model::DesiredKind kind = model::desired_kind(key, site);
      if (kind == model::DesiredKind::kNone) continue;
      if (tenants != nullptr && kind == model::DesiredKind::kPlacement &&
          !tenants->contains(std::string(model::parse_key(key).tenant))) {
        continue;
      }
      if (only != nullptr && kind != model::DesiredKind::kLocalOverride && !only->contains(key)) {
        continue;
      }
      model::put_desired(&d, kind, key, doc);
    }
    return d;
  }

  // Checks every site; returns false on the first disagreement.
  bool check(std::string* why) {
    const auto docs = all_docs();
    for (const std::string& site : kSites) {
      const Keys expected = model_scope(site, docs);
      const auto keys = index_->scope_keys(site);
      const Keys indexed(keys.begin(), keys.end());
      if (indexed != expected) {
        *why = site + ": index scope " + json(indexed).dump() + " != model scope " +
               json(expected).dump();
        return false;
      }
      auto rec = docs.find(model::site_key(site));
      if (rec == docs.end()) continue;
      auto record = model::parse_site(site, rec->second);
      if (!record.ok()) continue;

      // 2. What the site renders from its scope.
      auto from_scope = model::render_site(*record, desired_from(site, docs, &indexed));
      if (!from_scope.ok()) {
        *why = site + ": render: " + from_scope.status().to_string();
        return false;
      }
      Keys planned;
      for (const auto& o : from_scope->objects) planned.insert(o.template_key);
      for (const auto& f : from_scope->failures) {
        if (f.template_name.empty()) {
          *why = site + ": the renderer cannot read " + f.template_key + ": " + f.error;
          return false;
        }
        planned.insert(f.template_key);
      }
      Keys scope_templates;
      for (const auto& k : indexed) {
        if (model::parse_key(k).kind == model::KeyKind::kTemplate) scope_templates.insert(k);
      }
      if (planned != scope_templates) {
        *why = site + ": renderer plans " + json(planned).dump() + ", scope holds templates " +
               json(scope_templates).dump();
        return false;
      }

      // 3. The same objects as from the whole catalogue.
      const std::set<std::string> granted = granted_tenants(*record, docs);
      auto from_all = model::render_site(*record, desired_from(site, docs, nullptr, &granted));
      std::map<std::string, std::string> a, b;
      for (const auto& o : from_scope->objects) a[o.template_key] = o.hash;
      for (const auto& o : from_all->objects) b[o.template_key] = o.hash;
      if (a != b) {
        *why = site + ": rendering from the scope " + json(a).dump() +
               " differs from rendering from everything " + json(b).dump();
        return false;
      }
      ++checks_;
    }
    return true;
  }

  size_t checks() const { return checks_; }

 private:
  canopy::testing::TempDir dir_;
  Generator gen_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<hub::PlacementIndex> index_;
  size_t checks_ = 0;
};

TEST(ScopeRender, HubScopeEqualsWhatEachSiteRenders) {
  const uint64_t one = env_or("CANOPY_DIFF_SEED", 0);
  const uint64_t seeds = one != 0 ? 1 : env_or("CANOPY_DIFF_SEEDS", 300);
  const uint64_t steps = env_or("CANOPY_DIFF_STEPS", 25);
  size_t checks = 0;
  for (uint64_t i = 0; i < seeds; ++i) {
    const uint64_t seed = one != 0 ? one : i + 1;
    World world(seed);
    std::vector<std::string> history;
    for (uint64_t s = 0; s < steps; ++s) {
      history.push_back(world.step());
      std::string why;
      if (!world.check(&why)) {
        std::string h;
        for (const auto& line : history) h += "  " + line + "\n";
        FAIL() << "seed " << seed << ", step " << s << ": " << why << "\nhistory:\n"
               << h << "replay: CANOPY_DIFF_SEED=" << seed
               << " ./scope_render_test --gtest_filter=ScopeRender.*";
      }
    }
    checks += world.checks();
  }
  RecordProperty("site_checks", static_cast<int>(checks));
  std::printf("%zu site checks agreed over %llu seeds\n", checks,
              static_cast<unsigned long long>(seeds));
  EXPECT_GT(checks, 0u);
}

}  // namespace
}  // namespace canopy

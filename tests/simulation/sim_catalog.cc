#include "tests/simulation/sim_catalog.h"

#include <utility>

#include "model/keys.h"

namespace canopy::sim {
namespace {

using json = nlohmann::json;

const std::vector<std::string> kTenants = {"acme", "beta"};
const std::vector<std::string> kTemplates = {"web", "db", "cache"};
const std::vector<std::string> kPlacements = {"p0", "p1", "p2"};
const std::vector<std::string> kOverrides = {"o0", "o1"};
// Label keys and the values each takes.
const std::vector<std::pair<std::string, std::vector<std::string>>> kLabels = {
    {"region", {"eu", "us"}}, {"tier", {"shop", "tower"}}, {"legacy", {"yes"}}};
const std::vector<std::string> kOperators = {"In", "NotIn", "Exists", "DoesNotExist"};

}  // namespace

SimCatalog::SimCatalog(std::mt19937_64* rng, std::vector<std::string> sites,
                       const std::string& region, const std::vector<std::string>& region_members)
    : rng_(rng), sites_(std::move(sites)) {
  if (!region.empty()) {
    for (const auto& m : region_members) region_of_[m] = region;
  }
}

SimWrite::Op SimCatalog::op(int put, int patch) {
  const int r = static_cast<int>(pick(100));
  if (r < put) return SimWrite::Op::kPut;
  if (r < put + patch) return SimWrite::Op::kPatch;
  return SimWrite::Op::kRemove;
}

json SimCatalog::labels() {
  json out = json::object();
  for (const auto& [key, values] : kLabels) {
    if (pick(3) != 0) out[key] = pick(values);
  }
  if (pick(25) == 0) out["tier"] = "Not a label value!";  // the model refuses the record
  return out;
}

json SimCatalog::selector() {
  json s = json::object();
  if (pick(2) == 0) {
    const auto& [key, values] = kLabels[pick(kLabels.size())];
    s["matchLabels"] = {{key, pick(values)}};
  }
  const int n = static_cast<int>(pick(3));
  for (int i = 0; i < n; ++i) {
    const auto& [key, values] = kLabels[pick(kLabels.size())];
    const std::string& op = pick(kOperators);
    json e = {{"key", key}, {"operator", op}};
    if (op == "In" || op == "NotIn") {
      e["values"] = json::array({pick(values)});
      if (pick(2) == 0) e["values"].push_back(pick(values));
    }
    s["matchExpressions"].push_back(std::move(e));
  }
  if (pick(20) == 0) {
    s["matchExpressions"].push_back({{"key", "tier"}, {"operator", "Maybe"}});  // refused
  }
  return s;
}

json SimCatalog::site_list() {
  json out = json::array();
  for (const auto& s : sites_) {
    if (pick(4) == 0) out.push_back(s);
  }
  if (pick(8) == 0) out.push_back("gone");  // a site that does not exist
  return out;
}

json SimCatalog::manifest(const std::string& name) {
  json m = {{"apiVersion", "v1"},
            {"kind", "ConfigMap"},
            {"metadata", {{"name", name}, {"namespace", "shop"}}},
            {"data", {{"f" + std::to_string(pick(4)), "v" + std::to_string(pick(10))}}}};
  if (pick(12) == 0) m["metadata"]["name"] = "Bad_Name";  // every site fails to render it
  return m;
}

SimWrite SimCatalog::site_record(const std::string& site) {
  json record = {{"name", site}, {"labels", labels()}};
  if (auto it = region_of_.find(site); it != region_of_.end()) record["region"] = it->second;
  return SimWrite{model::site_key(site), SimWrite::Op::kPut, std::move(record)};
}

SimWrite SimCatalog::move(const std::string& site, const std::string& region) {
  if (region.empty()) {
    region_of_.erase(site);
  } else {
    region_of_[site] = region;
  }
  return site_record(site);
}

SimWrite SimCatalog::placement() {
  json p = json::object();
  json templates = json::array();
  for (const auto& t : kTemplates) {
    if (pick(2) == 0) templates.push_back(t);
  }
  if (templates.empty() || pick(10) == 0) templates.push_back("missing");  // no such template
  p["templates"] = std::move(templates);
  switch (pick(4)) {
    case 0:
      p["sites"] = site_list();
      break;
    case 1:
      p["sites"] = site_list();
      p["selector"] = selector();
      break;
    default:
      p["selector"] = selector();
  }
  return SimWrite{model::placement_key(pick(kTenants), pick(kPlacements)), SimWrite::Op::kPut,
                  std::move(p)};
}

SimWrite SimCatalog::grant_write() {
  SimWrite w{model::grant_key(pick(kTenants), pick(2) == 0 ? "g1" : "g2"), op(70, 0), json()};
  if (w.op != SimWrite::Op::kPut) return w;
  switch (pick(4)) {
    case 0:
      w.doc = {{"allSites", true}};
      break;
    case 1:
      w.doc = {{"sites", site_list()}};
      break;
    default:
      w.doc = {{"selector", selector()}};
  }
  if (pick(15) == 0) w.doc = {{"allSites", "yes"}};  // refused: grants nothing
  return w;
}

SimWrite SimCatalog::initial_grant(const std::string& tenant) {
  return SimWrite{model::grant_key(tenant, "g0"), SimWrite::Op::kPut, json{{"allSites", true}}};
}

const std::vector<std::string>& SimCatalog::tenants() const { return kTenants; }

SimWrite SimCatalog::template_write() {
  const std::string& name = pick(kTemplates);
  SimWrite w{model::template_key(pick(kTenants), name), op(55, 30), json()};
  if (w.op == SimWrite::Op::kPut) {
    w.doc = manifest(name);
  } else if (w.op == SimWrite::Op::kPatch) {
    w.doc = {{"data",
              {{"f" + std::to_string(pick(4)),
                pick(4) == 0 ? json() : json("p" + std::to_string(pick(10)))}}}};
  }
  return w;
}

SimWrite SimCatalog::placement_write() {
  SimWrite w = placement();
  w.op = op(50, 35);
  if (w.op == SimWrite::Op::kPatch) {
    switch (pick(3)) {
      case 0:
        w.doc = {{"selector", selector()}};
        break;
      case 1:
        w.doc = {{"sites", site_list()}};
        break;
      default:
        w.doc = {{"templates", w.doc["templates"]}};
    }
  }
  return w;
}

SimWrite SimCatalog::override_write() {
  SimWrite w{model::override_key(pick(kTenants), pick(kOverrides)), op(55, 30), json()};
  if (w.op == SimWrite::Op::kPut) {
    w.doc = {{"template", pick(kTemplates)}};
    if (pick(15) != 0) w.doc["patch"] = {{"data", {{"o", std::to_string(pick(10))}}}};
    if (pick(2) == 0) w.doc["sites"] = site_list();
    if (pick(3) != 0) w.doc["selector"] = selector();
  } else if (w.op == SimWrite::Op::kPatch) {
    w.doc = pick(2) == 0 ? json{{"selector", selector()}} : json{{"template", pick(kTemplates)}};
  }
  return w;
}

SimWrite SimCatalog::site_record_write() {
  const std::string& site = pick(sites_);
  SimWrite w = site_record(site);
  w.op = op(45, 45);
  if (w.op == SimWrite::Op::kRemove) region_of_.erase(site);  // back with none, if ever
  if (w.op == SimWrite::Op::kPatch) {
    const auto& [key, values] = kLabels[pick(kLabels.size())];
    w.doc = {{"labels", {{key, pick(3) == 0 ? json() : json(pick(values))}}}};
  }
  return w;
}

SimWrite SimCatalog::root_write() {
  switch (pick(10)) {
    case 0:
    case 1:
    case 2:
      return template_write();
    case 3:
    case 4:
    case 5:
      return placement_write();
    case 6:
    case 7:
      return override_write();
    default:
      return site_record_write();
  }
}

SimWrite SimCatalog::scope_edit() {
  switch (pick(5)) {
    case 0:
    case 1:
      return site_record_write();
    case 2:
      return grant_write();
    default:
      return placement_write();
  }
}

SimWrite SimCatalog::site_write(const std::string& site) {
  const std::string& name = pick(kTemplates);
  if (pick(3) == 0) {
    SimWrite w{model::local_override_key(site, pick(kTenants), name), op(50, 30), json()};
    if (w.op != SimWrite::Op::kRemove) {
      w.doc = {{"patch", {{"data", {{"local", std::to_string(pick(10))}}}}}};
    }
    if (w.op == SimWrite::Op::kPut && pick(15) == 0) w.doc = {{"patch", 5}};  // refused
    return w;
  }
  const std::string tkey = model::template_key("acme", name);
  SimWrite w{model::status_key(site, "acme", name), op(60, 30), json()};
  if (w.op != SimWrite::Op::kRemove) {
    w.doc = {{"template", tkey},
             {"hash", std::to_string(pick(1000))},
             {"outcome", pick(3) == 0 ? "failed" : "applied"}};
  }
  return w;
}

SimWrite SimCatalog::region_write(const std::string& site) {
  SimWrite w{model::status_key(site, "beta", pick(2) == 0 ? "web" : "db"), op(60, 30), json()};
  if (w.op != SimWrite::Op::kRemove) {
    w.doc = {{"outcome", "applied"}, {"message", "m" + std::to_string(pick(10))}};
  }
  return w;
}

SimWrite SimCatalog::shared_write(const std::string& site) {
  SimWrite w{model::status_key(site, "beta", "cache"), op(50, 35), json()};
  if (w.op != SimWrite::Op::kRemove) {
    w.doc = {{"outcome", pick(2) == 0 ? "failed" : "applied"},
             {"n" + std::to_string(pick(3)), static_cast<int>(pick(9))}};
  }
  return w;
}

}  // namespace canopy::sim

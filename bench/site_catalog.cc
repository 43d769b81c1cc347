#include "bench/site_catalog.h"

#include <dirent.h>

#include <cstdio>
#include <cstring>

namespace canopy::bench {

using json = nlohmann::json;

std::string template_name(size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "app-%04zu", i);
  return buf;
}

std::string manifest_file(const std::string& name) {
  return "canopy-" + std::to_string(std::strlen(kCatalogTenant)) + "-" + kCatalogTenant + "-" +
         name + ".json";
}

json deployment(const std::string& name, size_t i, const std::string& site) {
  return json{
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata",
       {{"name", name}, {"namespace", "edge"}, {"labels", {{"app", name}, {"tier", "edge"}}}}},
      {"spec",
       {{"replicas", 1 + i % 3},
        {"selector", {{"matchLabels", {{"app", name}}}}},
        {"template",
         {{"metadata", {{"labels", {{"app", name}}}}},
          {"spec",
           {{"containers",
             json::array(
                 {{{"name", "main"},
                   {"image", "registry.example.com/edge/" + name + ":1." + std::to_string(i % 10)},
                   {"ports", json::array({{{"containerPort", 8080}}})},
                   {"env", json::array({{{"name", "SITE"}, {"value", site}},
                                        {{"name", "LOG_LEVEL"}, {"value", "info"}}})},
                   {"resources",
                    {{"requests", {{"cpu", "50m"}, {"memory", "64Mi"}}},
                     {"limits", {{"cpu", "200m"}, {"memory", "128Mi"}}}}}}})}}}}}}}};
}

StatusOr<v1::DeltaBatch> write_site_catalog(Store* hub, const std::string& site, size_t objects) {
  v1::DeltaBatch batch;
  auto add = [&](const std::string& key, const json& doc) -> Status {
    auto d = hub->put_value(key, doc);
    if (!d.ok()) return Status(d.status().code(), "writing " + key + ": " + d.status().message());
    *batch.add_deltas() = *d;
    return ok_status();
  };
  CANOPY_RETURN_IF_ERROR(
      add("sites/" + site, json{{"name", site}, {"labels", {{"region", "eu-west"}}}}));
  json names = json::array();
  for (size_t i = 0; i < objects; ++i) {
    const std::string name = template_name(i);
    names.push_back(name);
    CANOPY_RETURN_IF_ERROR(
        add(std::string("t/") + kCatalogTenant + "/templates/" + name, deployment(name, i, site)));
  }
  CANOPY_RETURN_IF_ERROR(add(std::string("t/") + kCatalogTenant + "/placements/edge",
                             json{{"templates", names}, {"sites", json::array({site})}}));
  // The tenant's grant: without one its placements place nowhere. Only the
  // hub holds grants (they are in no site's scope), so it is not in the batch.
  auto g =
      hub->put_value(std::string("t/") + kCatalogTenant + "/grants/all", json{{"allSites", true}});
  if (!g.ok()) return Status(g.status().code(), "writing the grant: " + g.status().message());
  return batch;
}

size_t count_manifests(const std::string& dir, std::set<std::string>* names) {
  size_t n = 0;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (const dirent* e = readdir(d)) {
    const std::string_view f = e->d_name;
    if (f.starts_with("canopy-") && f.ends_with(".json")) {
      ++n;
      if (names != nullptr) names->insert(std::string(f));
    }
  }
  closedir(d);
  return n;
}

}  // namespace canopy::bench

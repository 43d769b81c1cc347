// The catalogue the spoke benchmarks give one site (spoke.offline_restart,
// spoke.footprint): its record `sites/<site>` (label region=eu-west),
// `objects` small Deployments as templates `t/acme/templates/app-<i>`, and one
// placement `t/acme/placements/edge` that lists them all for the site by name
// (docs/keys.md); and counting the manifests a spoke wrote for them.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "canopy/v1/store.pb.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::bench {

inline constexpr char kCatalogTenant[] = "acme";

// "app-0007".
std::string template_name(size_t i);
// The applier's file for a template of kCatalogTenant (model/render.h).
std::string manifest_file(const std::string& template_name);
// A small Deployment (~700 bytes of JSON).
nlohmann::json deployment(const std::string& name, size_t i, const std::string& site);
// Writes the site's catalogue into `hub` as its own writes; returns them as
// deltas (to apply elsewhere as the hub's, as sync would).
StatusOr<v1::DeltaBatch> write_site_catalog(Store* hub, const std::string& site, size_t objects);
// Files of the applier in `dir` (`canopy-*.json`, not the dot-prefixed
// temporaries); their names into `names` when given.
size_t count_manifests(const std::string& dir, std::set<std::string>* names = nullptr);

}  // namespace canopy::bench

#include "spoke/bus/tenants_file_watch.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "spoke/bus/bus_config.h"

namespace canopy::spoke::bus {

StatusOr<std::unique_ptr<TenantsFileWatch>> TenantsFileWatch::start(const std::string& path,
                                                                    BusTenantSources* sources) {
  std::unique_ptr<TenantsFileWatch> w(new TenantsFileWatch(path, sources));
  const std::filesystem::path p(path);
  const std::string name = p.filename().string();
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  auto watch = DirWatch::start(
      dir, [name](std::string_view entry) { return entry == name; },
      [raw = w.get()] { raw->apply(); });
  if (!watch.ok()) return watch.status();
  w->watch_ = std::move(*watch);
  // The spec was made from the file before the watch existed: read it once
  // more, so that an edit made in between is not missed.
  w->apply();
  return w;
}

void TenantsFileWatch::apply() {
  std::lock_guard<std::mutex> lock(mu_);  // update() one at a time
  std::vector<BusTenant> tenants;
  if (Status st = load_tenants_file(path_, &tenants); !st.ok()) {
    spdlog::error("bus: {}; the bus keeps its tenants", st.message());
    return;
  }
  if (Status st = sources_->set_configured(std::move(tenants)); !st.ok()) {
    spdlog::error("bus: {} not applied: {}; the bus keeps its tenants", path_, st.to_string());
  }
}

}  // namespace canopy::spoke::bus

// TenantsFileWatch: applies edits of `bus.tenants_file` to the running bus.
//
// The file's directory is watched (DirWatch, inotify); whenever the file is
// written, replaced (an editor's rename) or removed and put back, it is read
// again (load_tenants_file) and handed to the bus's tenant sources as the
// configured tenants (device_tenants.h: merged with the store's device
// documents, applied by reload). A file that does not parse, or a spec the
// supervisor refuses, is logged with its reason and changes nothing: the bus
// keeps the tenants it has.
//
// The file is read once more when the watch starts (an edit made since the
// spec was made from it is not missed).
//
// It is the site operator's way to add or remove devices without the hub
// (devices are otherwise documents in the store, device_tenants.h).
//
// Lifecycle: destroy it before the sources and the supervisor (no update() runs
// after the destructor returns).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "spoke/bus/device_tenants.h"
#include "spoke/dir_watch.h"
#include "store/status.h"

namespace canopy::spoke::bus {

class TenantsFileWatch {
 public:
  // `sources` must outlive the watch.
  static StatusOr<std::unique_ptr<TenantsFileWatch>> start(const std::string& path,
                                                           BusTenantSources* sources);
  ~TenantsFileWatch() = default;  // watch_ goes first: no apply() after it
  TenantsFileWatch(const TenantsFileWatch&) = delete;
  TenantsFileWatch& operator=(const TenantsFileWatch&) = delete;

 private:
  TenantsFileWatch(std::string path, BusTenantSources* sources)
      : path_(std::move(path)), sources_(sources) {}
  void apply();

  const std::string path_;
  BusTenantSources* const sources_;
  std::mutex mu_;                    // serializes apply(): the watch's thread and start()
  std::unique_ptr<DirWatch> watch_;  // last member: destroyed first
};

}  // namespace canopy::spoke::bus

// TenantsFileWatch: applies edits of `bus.tenants_file` to the running bus.
//
// The file's directory is watched (DirWatch, inotify); whenever the file is
// written, replaced (an editor's rename) or removed and put back, it is read
// again (load_tenants_file) and the supervisor's spec, with its tenants
// replaced, is applied by reload (BusSupervisor::update). A file that does not
// parse, or a spec the supervisor refuses, is logged with its reason and
// changes nothing: the bus keeps the tenants it has.
//
// The file is read once more when the watch starts (an edit made since the
// spec was made from it is not missed).
//
// It is the operator's way to add or remove devices until devices are
// documents in the store, which will feed update() the same way.
//
// Lifecycle: destroy it before stopping the supervisor (no update() runs
// after the destructor returns).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "spoke/bus/supervisor.h"
#include "spoke/dir_watch.h"
#include "store/status.h"

namespace canopy::spoke::bus {

class TenantsFileWatch {
 public:
  // `bus` must outlive the watch.
  static StatusOr<std::unique_ptr<TenantsFileWatch>> start(const std::string& path,
                                                           BusSupervisor* bus);
  ~TenantsFileWatch() = default;  // watch_ goes first: no apply() after it
  TenantsFileWatch(const TenantsFileWatch&) = delete;
  TenantsFileWatch& operator=(const TenantsFileWatch&) = delete;

 private:
  TenantsFileWatch(std::string path, BusSupervisor* bus) : path_(std::move(path)), bus_(bus) {}
  void apply();

  const std::string path_;
  BusSupervisor* const bus_;
  std::mutex mu_;                    // serializes apply(): the watch's thread and start()
  std::unique_ptr<DirWatch> watch_;  // last member: destroyed first
};

}  // namespace canopy::spoke::bus

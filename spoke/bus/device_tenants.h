// The bus's tenants and devices from their two sources: the spoke's
// configuration file (`bus.tenants`, or the watched `bus.tenants_file`) and
// the device documents in the site's store (`sites/<site>/devices/<tenant>/
// <device>`, written at the hub's API and delivered in the site's scope).
//
// BusTenantSources holds the latest list of each source, merges them
// (merge_bus_tenants) and applies the result to the running bus by reload
// (BusSupervisor::update) whenever either changes. When both name the same
// device of the same tenant, the configuration file's entry wins (the site
// operator's word, as a site's local override is applied last) and the
// shadowed document is logged. A merged list the supervisor refuses is
// logged and changes nothing: the bus keeps its tenants.
//
// DeviceDocumentsWatch follows the store: every change under the site's
// `devices/` prefix wakes its thread, which (debounced) reads every device
// document, parses each with model::parse_device (one refused is logged and
// counted, and left out; the others still apply) and hands the list to the
// sources. Deleting a device at the hub removes its user from nats-server by
// reload: its connection is cut and its credential refused.
//
// Thread-safety: BusTenantSources' setters from any thread (serialized
// inside). DeviceDocumentsWatch owns a thread; destroy it before the store
// and the sources.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "model/documents.h"
#include "spoke/bus/bus_spec.h"
#include "spoke/bus/supervisor.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::spoke::bus {

// The configured tenants with the documents' devices added: a document's
// device joins its tenant (created if the configuration has none); one whose
// (tenant, id) the configuration already has is left out and its key added
// to `*shadowed` (when given). Tenants and devices come out sorted by name.
std::vector<BusTenant> merge_bus_tenants(const std::vector<BusTenant>& configured,
                                         const std::vector<model::Device>& documents,
                                         std::vector<std::string>* shadowed = nullptr);

class BusTenantSources {
 public:
  // `bus` must outlive this; `configured` is the list the bus started with.
  BusTenantSources(BusSupervisor* bus, std::vector<BusTenant> configured);

  // Replace one source and apply the merge; the error is also logged.
  Status set_configured(std::vector<BusTenant> tenants);
  Status set_documents(std::vector<model::Device> devices);

 private:
  Status apply_locked();

  BusSupervisor* const bus_;
  std::mutex mu_;
  std::vector<BusTenant> configured_;
  std::vector<model::Device> documents_;
};

struct DeviceWatchStats {
  uint64_t passes = 0;             // reads of every device document
  uint64_t refused = 0;            // documents refused by parse_device, over all passes
  size_t devices = 0;              // devices of the last pass
  uint64_t desired_published = 0;  // retained desired messages published (clears included)
  uint64_t desired_failed = 0;     // publishes that failed (retried)
};

// Where and how the spoke publishes desired twins.
struct DesiredTwinOptions {
  std::string mqtt_host;  // empty: desired twins are not published
  int mqtt_port = 0;
  std::string password;  // the spoke's bus password (its `_canopy@<tenant>` users)
};

// The MQTT topic of a device's desired twin: t/<tenant>/d/<id>/desired.
std::string desired_topic(std::string_view tenant, std::string_view device);

class DeviceDocumentsWatch {
 public:
  // Reads the documents once before it returns (applying them), then follows
  // the store. `store` and `sources` must outlive the watch.
  static StatusOr<std::unique_ptr<DeviceDocumentsWatch>> start(Store* store, std::string site,
                                                               BusTenantSources* sources,
                                                               DesiredTwinOptions desired = {});
  ~DeviceDocumentsWatch();
  DeviceDocumentsWatch(const DeviceDocumentsWatch&) = delete;
  DeviceDocumentsWatch& operator=(const DeviceDocumentsWatch&) = delete;

  DeviceWatchStats stats();
  // Whether the last pass found a valid document for (tenant, id).
  bool known(std::string_view tenant, std::string_view id);

 private:
  struct Published {
    std::string tenant;
    std::string id;
    std::string payload;
  };
  DeviceDocumentsWatch(Store* store, std::string site, BusTenantSources* sources,
                       DesiredTwinOptions desired);
  Status pass();
  void loop();
  // Publishes each of `items` (key -> what to retain; an empty payload
  // clears), tenant by tenant; records what was published in published_.
  // False if any failed.
  bool publish(const std::map<std::string, Published>& items);

  Store* const store_;
  const std::string site_;
  const std::string prefix_;  // sites/<site>/devices/
  BusTenantSources* const sources_;
  const DesiredTwinOptions desired_;
  std::map<std::string, Published> published_;  // by device key; the watch's thread only
  uint64_t listener_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool dirty_ = false;
  bool retry_ = false;  // a desired publish failed: pass again soon
  bool stopping_ = false;
  DeviceWatchStats stats_;                                            // guarded by mu_
  std::set<std::pair<std::string, std::string>, std::less<>> known_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace canopy::spoke::bus

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
// DeviceDocumentsWatch follows the store incrementally: it keeps the site's
// parsed device documents by key, and the store's commit listener hands it
// the keys that changed under the site's `devices/` prefix. For each, it
// reads and parses that one document (model::parse_device; one refused is
// logged and counted, and left out) and compares it with the one it had:
//   - only `desired` (or labels) changed: the new desired twin is published
//     at once; the bus's config is not rendered and nats-server not touched;
//   - a device came, went, or changed its credential or scope: the whole
//     list goes to the sources, which render the config and reload the bus
//     (then the device's desired is published, its account now existing).
// Changes arriving while a pass runs make the next pass together. Deleting
// a device at the hub removes its user from nats-server by reload: its
// connection is cut and its credential refused. The desired twins go out on
// one MQTT connection per tenant, kept open between passes (closed after
// kPublisherIdle without use).
//
// Thread-safety: BusTenantSources' setters from any thread (serialized
// inside). DeviceDocumentsWatch owns a thread; destroy it before the store
// and the sources.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "model/documents.h"
#include "spoke/bus/bus_spec.h"
#include "spoke/bus/mqtt_publisher.h"
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
  uint64_t passes = 0;             // passes over the changed documents (the first reads all)
  uint64_t bus_updates = 0;        // device lists handed to the bus (each renders its config)
  uint64_t refused = 0;            // documents refused by parse_device, over all passes
  size_t devices = 0;              // valid device documents held
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
  // Whether the watch holds a valid document for (tenant, id).
  bool known(std::string_view tenant, std::string_view id);

 private:
  struct Published {
    std::string tenant;
    std::string id;
    std::string payload;
  };
  struct Publisher {
    std::unique_ptr<MqttPublisher> mqtt;
    std::chrono::steady_clock::time_point used;
  };
  DeviceDocumentsWatch(Store* store, std::string site, BusTenantSources* sources,
                       DesiredTwinOptions desired);
  // Reads every device document (`keys` empty and `all`) or the given keys,
  // updates devices_, applies the list to the bus if it changed in a way
  // the bus sees, and publishes the desired twins that changed.
  Status pass(const std::set<std::string>& keys, bool all);
  // Reads one document into devices_; returns whether the bus sees the
  // change (a device came or went, or its credential or scope changed).
  bool read_one(const std::string& key, const std::optional<std::string>& json, uint64_t* refused);
  void loop();
  // Publishes each of `items` (key -> what to retain; an empty payload
  // clears), tenant by tenant; records what was published in published_.
  // False if any failed; the failed keys are added to `*failed`.
  bool publish(const std::map<std::string, Published>& items, std::set<std::string>* failed);
  void close_idle_publishers();

  Store* const store_;
  const std::string site_;
  const std::string prefix_;  // sites/<site>/devices/
  BusTenantSources* const sources_;
  const DesiredTwinOptions desired_;
  // The watch's thread only (and start(), before the thread):
  std::map<std::string, model::Device> devices_;  // valid documents, by key
  std::map<std::string, Published> published_;    // by device key
  std::map<std::string, Publisher> publishers_;   // by tenant
  uint64_t listener_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> changed_;  // keys to read again; guarded by mu_
  std::set<std::string> retry_;    // keys whose desired publish failed; guarded by mu_
  bool stopping_ = false;
  DeviceWatchStats stats_;                                            // guarded by mu_
  std::set<std::pair<std::string, std::string>, std::less<>> known_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace canopy::spoke::bus

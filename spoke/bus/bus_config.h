// BusSettings: the `bus:` section of the spoke's config file, and the BusSpec
// the spoke runs from it.
//
//   bus:
//     enabled: true
//     nats_server: /usr/sbin/nats-server   # default: nats-server from $PATH
//     dir: /var/lib/canopy/bus             # default: <data_dir>/bus
//     mqtt_host: 127.0.0.1                 # the site's address for devices on its network
//     mqtt_port: 1883
//     client_port: 4223                    # NATS, 127.0.0.1 only
//     monitor_port: 8223                   # HTTP /healthz, 127.0.0.1 only
//     leaf_port: 0                         # 0: no leaf listener
//     leaf_remote: nats-leaf://hub.example:7422   # or a list; none: no uplink
//     limits: {max_payload: 65536, tenant_max_consumers: 20000, mqtt_ack_wait_seconds: 30,
//              mqtt_consumer_memory_storage: false, ...}   # all of BusLimits
//     tenants:
//       - name: acme
//         devices:
//           - {id: pump-1, password_hash: "$2b$10$...", scope: device}
//     tenants_file: /etc/canopy/bus-tenants.yaml   # instead of tenants: {tenants: [...]}
//
// Tenants and devices here are the first source of the spec; the store's
// device documents will be another, producing the same BusTenant list. A
// tenants_file is read at start and again whenever it changes
// (tenants_file_watch.h), and applied by reload.
// Unknown keys are errors, named with their path.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

#include "spoke/bus/bus_spec.h"
#include "store/status.h"

namespace canopy::spoke::bus {

struct BusSettings {
  bool enabled = false;
  std::string nats_server = "nats-server";
  std::string tenants_file;  // when set, the tenants come from this file
  // site and spoke_password_hash are filled by make_bus_spec; dir too when empty.
  BusSpec spec;
};

// Reads the `bus:` mapping into *settings (fields absent keep their values).
Status load_bus_settings(const YAML::Node& node, BusSettings* settings);

// Reads a tenants file: a YAML mapping with one key, `tenants`, a list as in
// the `bus:` section. Errors name the file.
Status load_tenants_file(const std::string& path, std::vector<BusTenant>* tenants);

// settings.spec for `site`, with the tenants of settings.tenants_file if set,
// dir defaulting to <data_dir>/bus and a fresh
// random password for the spoke's own user: its hash in the spec, the
// password in *spoke_password (kept in memory only: a new one each start).
StatusOr<BusSpec> make_bus_spec(const BusSettings& settings, const std::string& site,
                                const std::string& data_dir, std::string* spoke_password);

}  // namespace canopy::spoke::bus

// BusSpec: what the site's device bus is, and the nats-server config that
// makes it so.
//
// The site's device bus is a real nats-server (Debian's) run by the spoke
// (see supervisor.h). This file is the pure half: a BusSpec (the site, its
// listeners, its uplink, its limits and the tenants with their devices) is
// validated and rendered into a nats-server config file. No I/O here, so every
// rule is testable without a server; docs/device-bus.md has the design.
//
// The shape of the generated config:
// - One account per tenant, "tenant-<name>", with JetStream enabled within the
//   tenant's limits (MQTT keeps sessions, retained messages and one consumer
//   per QoS 1 subscription in the account's JetStream). Each device is a user
//   of its tenant's account, named "<device>@<tenant>" (nats-server user names
//   are global, device ids are only unique within a tenant), allowed to
//   connect over MQTT only, with a bcrypt password hash.
// - Topics: MQTT topic t/<tenant>/... is NATS subject t.<tenant>.... A device
//   of scope kDevice publishes and subscribes only under its own subtree
//   t/<tenant>/d/<device>/#; a device of scope kTenant (a gateway, an app at
//   the site) under its tenant's whole tree t/<tenant>/#. Both may subscribe
//   to "$MQTT.sub.>", the deliver subjects nats-server gives QoS 1
//   subscriptions (MQTT clients cannot subscribe there themselves).
// - Each tenant account also has the spoke's MQTT user "_canopy@<tenant>"
//   (publish t.<tenant>.>), for desired twins published retained.
// - The CANOPY account holds the spoke's own user and imports each tenant's
//   t.<tenant>.> stream (each tenant exports it to CANOPY only), so the spoke
//   sees every device message of the site and no tenant sees another's.
//   CANOPY has JetStream (file only, telemetry_max_bytes) for the telemetry
//   buffer stream (telemetry_forwarder.h).
// - Uplink: one leaf node remote, bound to CANOPY, to the hub's NATS. It does
//   not depend on the tenants, so adding or removing a tenant or a device is a
//   reload: nats-server 2.9 cannot reload a change of leaf remotes. It denies
//   the raw telemetry subjects (kTelemetrySubjects): they go up through the
//   spoke's forwarder only.
// - JetStream with the domain "site-<site>", so the site's JetStream API never
//   collides with the hub's across the leaf link.
//
// Every name is a DNS-1123 label (model/names.h); every string written into
// the config is quoted and escaped (quote_conf_string), so no value can add
// config of its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/documents.h"
#include "store/status.h"

namespace canopy::spoke::bus {

// Bounds on a spec, so that a bad document cannot make a config nats-server
// chokes on. Each has a test that hits it.
inline constexpr size_t kMaxTenants = 1000;
inline constexpr size_t kMaxDevices = 100'000;  // per site, all tenants
inline constexpr size_t kMaxLeafUrls = 16;

// What a device may publish and subscribe to (see the header comment).
enum class DeviceScope { kDevice, kTenant };

// "device" or "tenant"; InvalidArgument otherwise.
StatusOr<DeviceScope> parse_device_scope(std::string_view text);
const char* device_scope_name(DeviceScope scope);

struct BusDevice {
  std::string id;  // DNS-1123 label, unique within its tenant
  // bcrypt hash of the device's password ($2a$, $2b$ or $2y$, cost 04-31):
  // what nats-server compares MQTT CONNECT passwords against. See
  // password_hash.h to make one.
  std::string password_hash;
  DeviceScope scope = DeviceScope::kDevice;
};

struct BusTenant {
  std::string name;  // DNS-1123 label, unique at the site
  std::vector<BusDevice> devices;
};

// Per-tenant and server-wide limits. Zero never means "unlimited" here: each
// is a real bound written into the config.
struct BusLimits {
  int64_t max_payload = 64 * 1024;  // bytes, one message (MQTT and NATS)
  int64_t max_connections = 100'000;
  // JetStream, the whole server.
  int64_t max_memory_store = 256LL << 20;
  int64_t max_file_store = (8LL << 30) + (256LL << 20);
  // JetStream, each tenant's account. nats-server reserves these whole, so
  // tenants x each must fit the server's limits above (32 tenants with the
  // defaults). MQTT keeps everything in file streams; memory is for consumers
  // with mqtt_consumer_memory_storage.
  int64_t tenant_max_memory = 8LL << 20;
  int64_t tenant_max_file = 256LL << 20;
  int64_t tenant_max_consumers = 20'000;  // one per QoS 1 subscription
  // MQTT: redelivery of an unacknowledged QoS 1 message, and the messages in
  // flight per subscription (nats-server caps the sum per session at 65535).
  std::chrono::seconds mqtt_ack_wait{30};
  int mqtt_max_ack_pending = 64;
  // The JetStream consumer behind each QoS 1 subscription
  // (docs/device-bus.md): kept in memory rather than in a file store each
  // (faster SUBSCRIBE and restart; what was queued for an offline device is
  // lost with a restart), and removed after this long without its device.
  bool mqtt_consumer_memory_storage = false;
  std::chrono::seconds mqtt_consumer_inactive_threshold{7 * 24 * 3600};
  // The telemetry buffer (telemetry_forwarder.h): the CANOPY account's
  // stream over every tenant's telemetry subjects, file storage, oldest
  // dropped first past either bound. Its bytes are reserved in CANOPY's
  // JetStream, so tenants x tenant_max_file + telemetry_max_bytes must fit
  // max_file_store. A telemetry message over telemetry_max_message is
  // refused by the forwarder (logged, counted), never sent to the hub.
  int64_t telemetry_max_bytes = 256LL << 20;
  std::chrono::seconds telemetry_max_age{7 * 24 * 3600};
  int64_t telemetry_max_message = 16 * 1024;
};

struct BusSpec {
  std::string site;  // DNS-1123 label: server name and JetStream domain "site-<site>"
  std::string dir;   // where the config lives; JetStream stores under dir/jetstream
  // Listeners, all on 127.0.0.1 but MQTT (mqtt_host: devices on the site's
  // network need it on the site's address). leaf_port 0: no leaf listener.
  std::string mqtt_host = "127.0.0.1";
  int client_port = 4223;
  int mqtt_port = 1883;
  int monitor_port = 8223;  // HTTP: /healthz, /varz
  int leaf_port = 0;
  // The hub's leaf node URLs (nats-leaf://, nats:// or tls://, credentials in
  // the URL if the hub wants them); empty: no uplink.
  std::vector<std::string> leaf_urls;
  // TLS of the leaf connection (a `tls { }` block in the remote): on when
  // leaf_tls_ca_file or leaf_tls_cert_file is set. The CA verifies the hub's
  // leaf certificate (nats-server checks it names the URL's host); the
  // certificate and key, the site's own (its enrollment's site.crt and
  // site.key), are presented for the hub's `verify` (mTLS). See
  // use_leaf_tls().
  std::string leaf_tls_ca_file;
  std::string leaf_tls_cert_file;
  std::string leaf_tls_key_file;
  // bcrypt hash of the password of the spoke's own user in CANOPY
  // ("canopy-spoke"); see make_bus_spec.
  std::string spoke_password_hash;
  BusLimits limits;
  std::vector<BusTenant> tenants;
};

// Sets the leaf connection's TLS files when a leaf URL is tls:// (files
// empty are left out: nats-server then uses the system's CAs, or presents
// no certificate).
void use_leaf_tls(BusSpec* spec, const std::string& ca_file, const std::string& cert_file,
                  const std::string& key_file);

// Puts an enrolled site's leaf user and password into each leaf URL that
// carries no credentials of its own (scheme://user:password@host:port), so
// that the hub's nats-server binds the leaf connection to the site's own
// account (docs/security.md). The password is the site's NATS password
// (letters and digits: nothing to escape); the config file is 0600.
void use_leaf_credentials(BusSpec* spec, const std::string& user, const std::string& password);
// `url` with any password replaced by "***", for logs.
std::string redact_url(const std::string& url);

// The names the config uses, in one place for tests and tools.
std::string jetstream_domain(const BusSpec& spec);                          // "site-<site>"
std::string tenant_account(std::string_view tenant);                        // "tenant-<tenant>"
std::string device_user(std::string_view tenant, std::string_view device);  // "<d>@<t>"
// The spoke's MQTT user in a tenant's account, "_canopy@<tenant>" ('_' is in
// no device id): it publishes the tenant's desired twins, retained, with the
// spoke's password (mqtt_publisher.h).
std::string spoke_mqtt_user(std::string_view tenant);
inline constexpr char kCanopyAccount[] = "CANOPY";
// Telemetry: a device publishes on t/<tenant>/d/<id>/telemetry[/...], NATS
// t.<tenant>.d.<id>.telemetry[.>]. These subjects do not cross the leaf link
// as they are (the remote denies them): the CANOPY stream kTelemetryStream
// keeps them and the spoke forwards them to hub subjects
// (telemetry_forwarder.h, docs/device-bus.md).
inline constexpr char kTelemetryStream[] = "TELEMETRY";
inline constexpr const char* kTelemetrySubjects[] = {"t.*.d.*.telemetry", "t.*.d.*.telemetry.>"};
inline constexpr char kSpokeUser[] = "canopy-spoke";

// Whether `hash` is a bcrypt hash nats-server accepts (one home: the device
// documents' rule, model/documents.h).
using model::is_bcrypt_hash;

// Checks everything render_nats_config relies on; InvalidArgument naming the
// field ("bus.tenants[1].devices[0].id: ...") and the reason.
Status validate_bus_spec(const BusSpec& spec);

// The nats-server config for `spec`, or the validation error.
StatusOr<std::string> render_nats_config(const BusSpec& spec);

// The parts of a spec that nats-server 2.9 cannot change by reload
// (listeners, JetStream store and domain, leaf remotes, MQTT's listener):
// empty when `a` and `b` agree on all of them, else the first that differs.
std::string restart_only_difference(const BusSpec& a, const BusSpec& b);

// `s` as a double-quoted nats-server config string: '"' and '\' escaped,
// control characters as \xHH (the config lexer's escapes).
std::string quote_conf_string(std::string_view s);

}  // namespace canopy::spoke::bus

// Subject layout of the sync protocol (see docs/sync-protocol.md).
//
//   canopy.v1.<parent>.<child>.up     child -> parent (hello, acks, the child's writes)
//   canopy.v1.<parent>.<child>.down   parent -> child (welcome, scoped changes, reconciliation)
//
// Node names are DNS-1123 labels, so every name is one NATS token. A site's NATS
// credentials can then be confined to publish `canopy.v1.*.<site>.up` and
// subscribe `canopy.v1.*.<site>.down` with nats-server's permissions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "store/status.h"

namespace canopy::sync {

inline constexpr std::string_view kSubjectRoot = "canopy.v1";

inline std::string up_subject(std::string_view parent, std::string_view child) {
  return std::string(kSubjectRoot) + "." + std::string(parent) + "." + std::string(child) + ".up";
}
inline std::string down_subject(std::string_view parent, std::string_view child) {
  return std::string(kSubjectRoot) + "." + std::string(parent) + "." + std::string(child) + ".down";
}
// Every child's up subject of `parent`.
inline std::string all_up_subjects(std::string_view parent) {
  return std::string(kSubjectRoot) + "." + std::string(parent) + ".*.up";
}

// Telemetry barriers (docs/device-bus.md): a site's telemetry forwarder
// publishes a nonce on `canopy.telemetry.v1.barrier.<site>` over its bus's
// leaf link after publishing a batch, and canopy-hub echoes it on
// `canopy.telemetry.v1.barrier.<site>.ack` (hub/telemetry_barrier.h): the echo
// means the hub's NATS has taken the batch. Plain subjects both ways, not a
// request and its _INBOX reply, so that a site's leaf account imports and
// exports only its own two subjects (docs/security.md).
inline std::string telemetry_barrier_subject(std::string_view site) {
  return "canopy.telemetry.v1.barrier." + std::string(site);
}
inline std::string telemetry_barrier_ack_subject(std::string_view site) {
  return telemetry_barrier_subject(site) + ".ack";
}
inline constexpr char kAllTelemetryBarriers[] = "canopy.telemetry.v1.barrier.*";
// The device telemetry a site forwards to the hub: tm.<tenant>.<site>.<device>[.>]
// (spoke/bus/telemetry_forwarder.h).
inline std::string site_telemetry_subjects(std::string_view site) {
  return "tm.*." + std::string(site) + ".>";
}

// Checks a node name: a DNS-1123 label (1-63 of [a-z0-9-], alphanumeric ends).
Status validate_node_name(std::string_view name);

// A list of node names as an operator writes it: "root-a,root-b" (also the
// form a YAML list is joined into). Every name valid, none twice, none empty.
StatusOr<std::vector<std::string>> parse_node_list(std::string_view text);

// The order in which `child` tries the hubs of one level (active-active,
// docs/hierarchy.md): the list rotated by a hash of the child's name, so that
// the children of a level spread evenly over its hubs, and each child always
// starts at the same hub. Deterministic (FNV-1a), the same on every machine.
std::vector<std::string> preferred_order(std::string_view child, std::vector<std::string> hubs);

}  // namespace canopy::sync

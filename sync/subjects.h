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

// Checks a node name: a DNS-1123 label (1-63 of [a-z0-9-], alphanumeric ends).
Status validate_node_name(std::string_view name);

}  // namespace canopy::sync

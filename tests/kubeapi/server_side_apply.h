// Server-side apply and field ownership over JSON objects: no I/O, no store.
//
// Stands for: kube-apiserver's field manager (k8s.io/apiserver
// pkg/endpoints/handlers/fieldmanager over structured-merge-diff). An apply
// by manager M of configuration C to live object L:
//   1. The fields of C (FieldSet, see field_set.h) become M's Apply entry.
//   2. A field in C that another entry owns and whose value in C differs from
//      L's is a conflict. Without force the apply fails with all conflicts
//      (409, reason Conflict, one cause per field, message shaped as the real
//      server's). With force, those fields leave the other entries.
//      Fields set to the value they already have become shared.
//   3. C is merged into L (field_set.h's merge_applied).
//   4. Fields M applied before and no longer applies are removed from the
//      object unless another entry owns them (or a field below them).
//   5. Entries left with no fields are dropped.
// Create and update requests (POST, merge patch) record an Update entry for
// their manager holding the fields they set, and take those fields from the
// other entries, as the real server does for changed fields.
//
// An entry is identified by manager, operation and subresource, so that a
// manager's apply to /status does not drop the fields it applied to the
// object.
//
// Leaves out: entries per apiVersion (an Update through another version
// shares the entry), the "." members the real server writes for maps an
// Update created, subresource entries, conversion of managed fields between
// versions, and the managedFields timestamp for unchanged applies (this
// server always refreshes it).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/kubeapi/field_set.h"

namespace canopy::kubeapi {

struct ManagedFieldsEntry {
  std::string manager;
  std::string operation;  // "Apply" or "Update"
  std::string api_version;
  std::string time;  // RFC 3339, seconds
  FieldSet fields;
  std::string subresource;  // "status" for writes through /status, else ""
};

std::vector<ManagedFieldsEntry> read_managed_fields(const nlohmann::json& object);
nlohmann::json managed_fields_json(const std::vector<ManagedFieldsEntry>& entries);

struct FieldConflict {
  std::string manager;  // as printed: "\"b\"" or "\"kubectl-edit\" using v1 at <time>"
  FieldPath path;
};

struct ApplyInput {
  nlohmann::json live;     // null when the object does not exist yet
  nlohmann::json applied;  // the configuration, already stripped (strip_untracked)
  std::string manager;
  std::string api_version;
  std::string time;
  bool force = false;
  std::string subresource;  // "status" for an apply to /status
};

struct ApplyOutput {
  std::vector<FieldConflict> conflicts;  // non-empty: nothing applied
  nlohmann::json object;                 // the result, managedFields included
};

ApplyOutput server_side_apply(const ApplyInput& input);

// `updated` (the whole new object) with an Update entry for `manager`
// owning every tracked field whose value differs from `previous` (all of them
// when `previous` is null), those fields taken from other entries.
nlohmann::json record_update(const nlohmann::json& previous, nlohmann::json updated,
                             const std::string& manager, const std::string& api_version,
                             const std::string& time, bool strip_status);

// `object` without what managed fields never track: apiVersion, kind,
// metadata.{name,namespace,uid,resourceVersion,generation,
// creationTimestamp,deletionTimestamp,managedFields,selfLink}, and status when
// `strip_status` (resources with a status subresource).
nlohmann::json strip_untracked(const nlohmann::json& object, bool strip_status);

// The message of a 409 for `conflicts`, worded as the real server's.
std::string conflict_message(const std::vector<FieldConflict>& conflicts);

}  // namespace canopy::kubeapi

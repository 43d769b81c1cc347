// FieldSet: the set of fields a field manager owns, in the FieldsV1 form that
// kube-apiserver writes into metadata.managedFields (structured-merge-diff's
// "f:" / "k:" / "." encoding), plus the schema knowledge the test API server
// uses to turn an object into such a set.
//
// Stands for: sigs.k8s.io/structured-merge-diff's fieldpath.Set and its
// FieldsV1 serialization. `{"f:data": {"f:a": {}}}` owns data.a;
// `{"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}}`
// owns the list item whose key is name=web (the "." member) and its image.
//
// Leaves out: the real server derives list and map semantics from each type's
// OpenAPI schema. This server has no schemas; instead
//   - lists named in list_merge_keys() (containers, initContainers,
//     ephemeralContainers, env, volumes, imagePullSecrets by "name";
//     volumeMounts by "mountPath") are associative lists keyed as the real
//     schema keys them, so a Deployment's managedFields look like the real
//     server's;
//   - every other list is atomic (owned and replaced as a whole) — among them
//     ports, whose real key (containerPort/port + defaulted protocol) depends
//     on defaulting this server does not do, and set-lists such as finalizers;
//   - a map under a field named "selector" is atomic (LabelSelector and
//     Service.spec.selector are atomic in the real schema); every other map
//     is granular, field by field.
// Value-lists ("v:") and positional list items ("i:") never appear.
//
// A FieldSet is a value type; not thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace canopy::kubeapi {

// One path: FieldsV1 keys from the root, e.g. {"f:spec", "f:replicas"}.
using FieldPath = std::vector<std::string>;

class FieldSet {
 public:
  FieldSet() = default;
  // `fields_v1` as read from a managedFields entry; non-object input gives an
  // empty set.
  static FieldSet from_fields_v1(const nlohmann::json& fields_v1);

  const nlohmann::json& fields_v1() const { return tree_; }
  bool empty() const { return tree_.empty(); }

  void insert(const FieldPath& path);
  bool contains(const FieldPath& path) const;
  // Removes `path` (not its descendants) and prunes what is left empty.
  void erase(const FieldPath& path);
  // Whether `path` or a path below it is a member.
  bool covers(const FieldPath& path) const;
  std::vector<FieldPath> members() const;

 private:
  nlohmann::json tree_ = nlohmann::json::object();
};

// Key fields of the associative list stored under `field_name`, or nullopt if
// this server treats such a list as atomic.
std::optional<std::vector<std::string>> list_merge_keys(std::string_view field_name);

// The set of fields `object` sets, with the schema hints above. The caller
// strips what managedFields never track (apiVersion, kind, metadata.name, ...).
FieldSet fields_of(const nlohmann::json& object);

// The value at `path` in `object`, or nullptr.
const nlohmann::json* value_at(const nlohmann::json& object, const FieldPath& path);
// Removes the field or list item at `path`; false if it was not there.
bool erase_at(nlohmann::json& object, const FieldPath& path);

// `applied` merged into `live`: maps field by field, associative lists item
// by item (new items appended), everything else replaced.
nlohmann::json merge_applied(const nlohmann::json& live, const nlohmann::json& applied);

// The path as the real server prints it in conflicts:
// .spec.template.spec.containers[name="web"].image
std::string path_string(const FieldPath& path);

}  // namespace canopy::kubeapi

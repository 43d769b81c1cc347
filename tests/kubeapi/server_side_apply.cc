#include "tests/kubeapi/server_side_apply.h"

#include <algorithm>
#include <map>

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

std::string manager_label(const ManagedFieldsEntry& e) {
  std::string quoted = json(e.manager).dump();
  if (!e.subresource.empty()) quoted += " with subresource " + json(e.subresource).dump();
  if (e.operation == "Update") {
    return quoted + " using " + e.api_version + (e.time.empty() ? "" : " at " + e.time);
  }
  return quoted;
}

bool same_entry(const ManagedFieldsEntry& e, const std::string& manager, const std::string& op,
                const std::string& subresource) {
  return e.manager == manager && e.operation == op && e.subresource == subresource;
}

ManagedFieldsEntry& entry_for(std::vector<ManagedFieldsEntry>& entries, const std::string& manager,
                              const std::string& op, const std::string& subresource) {
  for (auto& e : entries) {
    if (same_entry(e, manager, op, subresource)) return e;
  }
  entries.push_back(ManagedFieldsEntry{manager, op, "", "", FieldSet(), subresource});
  return entries.back();
}

void drop_empty(std::vector<ManagedFieldsEntry>& entries) {
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [](const ManagedFieldsEntry& e) { return e.fields.empty(); }),
                entries.end());
}

// Whether the member at `path` in `set` is a leaf (owns a value, not only
// the presence of a list item).
bool leaf(const FieldSet& set, const FieldPath& path) {
  const json* node = &set.fields_v1();
  for (const auto& k : path) node = &node->at(k);
  return node->empty();
}

}  // namespace

std::vector<ManagedFieldsEntry> read_managed_fields(const json& object) {
  std::vector<ManagedFieldsEntry> out;
  const json* mf = value_at(object, {"f:metadata", "f:managedFields"});
  if (mf == nullptr || !mf->is_array()) return out;
  for (const auto& e : *mf) {
    if (!e.is_object()) continue;
    out.push_back(ManagedFieldsEntry{e.value("manager", ""), e.value("operation", ""),
                                     e.value("apiVersion", ""), e.value("time", ""),
                                     FieldSet::from_fields_v1(e.value("fieldsV1", json::object())),
                                     e.value("subresource", "")});
  }
  return out;
}

json managed_fields_json(const std::vector<ManagedFieldsEntry>& entries) {
  json out = json::array();
  for (const auto& e : entries) {
    out.push_back(json{{"manager", e.manager},
                       {"operation", e.operation},
                       {"apiVersion", e.api_version},
                       {"time", e.time},
                       {"fieldsType", "FieldsV1"},
                       {"fieldsV1", e.fields.fields_v1()}});
    if (!e.subresource.empty()) out.back()["subresource"] = e.subresource;
  }
  return out;
}

json strip_untracked(const json& object, bool strip_status) {
  json out = object;
  if (!out.is_object()) return json::object();
  out.erase("apiVersion");
  out.erase("kind");
  if (strip_status) out.erase("status");
  auto md = out.find("metadata");
  if (md != out.end() && md->is_object()) {
    for (const char* k : {"name", "namespace", "uid", "resourceVersion", "generation",
                          "creationTimestamp", "deletionTimestamp", "managedFields", "selfLink"}) {
      md->erase(k);
    }
    if (md->empty()) out.erase(md);
  }
  return out;
}

ApplyOutput server_side_apply(const ApplyInput& in) {
  ApplyOutput out;
  const json live = in.live.is_null() ? json::object() : in.live;
  std::vector<ManagedFieldsEntry> entries = read_managed_fields(live);
  FieldSet applied_set = fields_of(in.applied);
  std::vector<FieldPath> applied_members = applied_set.members();

  for (auto& e : entries) {
    if (same_entry(e, in.manager, "Apply", in.subresource)) continue;
    for (const auto& path : applied_members) {
      if (!e.fields.contains(path) || !leaf(applied_set, path)) continue;
      const json* now = value_at(live, path);
      const json* want = value_at(in.applied, path);
      if (now != nullptr && want != nullptr && *now == *want) continue;
      out.conflicts.push_back(FieldConflict{manager_label(e), path});
    }
  }
  if (!out.conflicts.empty() && !in.force) return out;
  for (const auto& c : out.conflicts) {
    for (auto& e : entries) {
      if (manager_label(e) == c.manager) e.fields.erase(c.path);
    }
  }
  out.conflicts.clear();

  json merged = merge_applied(live, in.applied);
  ManagedFieldsEntry& mine = entry_for(entries, in.manager, "Apply", in.subresource);
  FieldSet previous = mine.fields;
  mine.fields = applied_set;
  mine.api_version = in.api_version;
  mine.time = in.time;
  for (const auto& path : previous.members()) {
    if (applied_set.covers(path)) continue;
    bool owned = std::any_of(entries.begin(), entries.end(),
                             [&](const ManagedFieldsEntry& e) { return e.fields.covers(path); });
    if (!owned) erase_at(merged, path);
  }
  drop_empty(entries);
  merged["metadata"]["managedFields"] = managed_fields_json(entries);
  out.object = std::move(merged);
  return out;
}

json record_update(const json& previous, json updated, const std::string& manager,
                   const std::string& api_version, const std::string& time, bool strip_status) {
  std::vector<ManagedFieldsEntry> entries =
      previous.is_null() ? std::vector<ManagedFieldsEntry>{} : read_managed_fields(previous);
  json now = strip_untracked(updated, strip_status);
  FieldSet changed;
  for (const auto& path : fields_of(now).members()) {
    const json* before = previous.is_null() ? nullptr : value_at(previous, path);
    const json* after = value_at(now, path);
    if (before == nullptr || after == nullptr || *before != *after) changed.insert(path);
  }
  // Fields that disappeared leave every entry.
  json before_tracked =
      previous.is_null() ? json::object() : strip_untracked(previous, strip_status);
  FieldSet still = fields_of(now);
  for (const auto& path : fields_of(before_tracked).members()) {
    if (!still.contains(path)) {
      for (auto& e : entries) e.fields.erase(path);
    }
  }
  for (const auto& path : changed.members()) {
    for (auto& e : entries) e.fields.erase(path);
  }
  if (!changed.empty()) {
    ManagedFieldsEntry& mine = entry_for(entries, manager, "Update", "");
    for (const auto& path : changed.members()) mine.fields.insert(path);
    mine.api_version = api_version;
    mine.time = time;
  }
  drop_empty(entries);
  updated["metadata"]["managedFields"] = managed_fields_json(entries);
  return updated;
}

std::string conflict_message(const std::vector<FieldConflict>& conflicts) {
  if (conflicts.size() == 1) {
    return "Apply failed with 1 conflict: conflict with " + conflicts[0].manager + ": " +
           path_string(conflicts[0].path);
  }
  std::map<std::string, std::vector<std::string>> by_manager;
  for (const auto& c : conflicts) by_manager[c.manager].push_back(path_string(c.path));
  std::string out = "Apply failed with " + std::to_string(conflicts.size()) + " conflicts: ";
  bool first = true;
  for (const auto& [manager, paths] : by_manager) {
    out += (first ? "" : "\n") + ("conflicts with " + manager + ":");
    first = false;
    for (const auto& p : paths) out += "\n- " + p;
  }
  return out;
}

}  // namespace canopy::kubeapi

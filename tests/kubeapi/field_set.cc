#include "tests/kubeapi/field_set.h"

#include <algorithm>

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

constexpr std::string_view kSelf = ".";

bool is_member_node(const json& node) { return node.empty() || node.contains(kSelf); }

// Drops an empty non-member child and collapses {".": {}} to {}.
void normalize_child(json& parent, const std::string& key) {
  auto it = parent.find(key);
  if (it == parent.end()) return;
  if (it->size() == 1 && it->contains(kSelf)) {
    *it = json::object();
  }
}

bool erase_rec(json& node, const FieldPath& path, size_t i) {
  auto it = node.find(path[i]);
  if (it == node.end()) return false;
  if (i + 1 == path.size()) {
    if (it->empty()) {
      node.erase(it);
    } else {
      it->erase(std::string(kSelf));
    }
    return true;
  }
  bool was_member = is_member_node(*it) && !it->empty();
  bool erased = erase_rec(*it, path, i + 1);
  if (it->empty() && !was_member) {
    node.erase(it);
  } else {
    normalize_child(node, path[i]);
  }
  return erased;
}

void members_rec(const json& node, FieldPath& path, std::vector<FieldPath>& out) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (it.key() == kSelf) continue;
    path.push_back(it.key());
    if (is_member_node(it.value())) out.push_back(path);
    members_rec(it.value(), path, out);
    path.pop_back();
  }
}

bool atomic_map(std::string_view field_name) { return field_name == "selector"; }

json item_key(const json& item, const std::vector<std::string>& keys) {
  json key = json::object();
  for (const auto& k : keys) key[k] = item.at(k);
  return key;
}

bool keyed_items(const json& list, const std::vector<std::string>& keys) {
  return std::all_of(list.begin(), list.end(), [&](const json& item) {
    return item.is_object() &&
           std::all_of(keys.begin(), keys.end(), [&](const auto& k) { return item.contains(k); });
  });
}

void fields_rec(const json& value, std::string_view field_name, FieldPath& path, FieldSet& out);

void object_fields(const json& object, FieldPath& path, FieldSet& out) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    path.push_back("f:" + it.key());
    fields_rec(it.value(), it.key(), path, out);
    path.pop_back();
  }
}

void fields_rec(const json& value, std::string_view field_name, FieldPath& path, FieldSet& out) {
  if (value.is_object() && !value.empty() && !atomic_map(field_name)) {
    object_fields(value, path, out);
    return;
  }
  auto keys = list_merge_keys(field_name);
  if (value.is_array() && keys && keyed_items(value, *keys)) {
    for (const auto& item : value) {
      path.push_back("k:" + item_key(item, *keys).dump());
      out.insert(path);
      object_fields(item, path, out);
      path.pop_back();
    }
    return;
  }
  out.insert(path);
}

// The element of `list` whose key fields equal those encoded in `k`.
json* find_item(json& list, const std::string& k) {
  if (!list.is_array()) return nullptr;
  json key = json::parse(k.substr(2), nullptr, false);
  if (!key.is_object()) return nullptr;
  for (auto& item : list) {
    if (!item.is_object()) continue;
    bool match = true;
    for (auto it = key.begin(); it != key.end() && match; ++it) {
      match = item.contains(it.key()) && item[it.key()] == it.value();
    }
    if (match) return &item;
  }
  return nullptr;
}

json merge_rec(const json& live, const json& applied, std::string_view field_name) {
  if (live.is_object() && applied.is_object() && !atomic_map(field_name)) {
    json out = live;
    for (auto it = applied.begin(); it != applied.end(); ++it) {
      auto l = live.find(it.key());
      out[it.key()] = l == live.end() ? it.value() : merge_rec(*l, it.value(), it.key());
    }
    return out;
  }
  auto keys = list_merge_keys(field_name);
  if (live.is_array() && applied.is_array() && keys && keyed_items(live, *keys) &&
      keyed_items(applied, *keys)) {
    json out = live;
    for (const auto& item : applied) {
      json* existing = find_item(out, "k:" + item_key(item, *keys).dump());
      if (existing != nullptr) {
        *existing = merge_rec(*existing, item, "");
      } else {
        out.push_back(item);
      }
    }
    return out;
  }
  return applied;
}

}  // namespace

FieldSet FieldSet::from_fields_v1(const json& fields_v1) {
  FieldSet set;
  if (fields_v1.is_object()) set.tree_ = fields_v1;
  return set;
}

void FieldSet::insert(const FieldPath& path) {
  if (path.empty()) return;
  json* node = &tree_;
  for (const auto& key : path) {
    auto it = node->find(key);
    if (it != node->end() && it->empty() && &key != &path.back()) {
      (*it)[std::string(kSelf)] = json::object();  // a member that gains children
    }
    node = &(*node)[key];
    if (node->is_null()) *node = json::object();
  }
  if (!node->empty()) (*node)[std::string(kSelf)] = json::object();
}

bool FieldSet::contains(const FieldPath& path) const {
  const json* node = &tree_;
  for (const auto& key : path) {
    auto it = node->find(key);
    if (it == node->end()) return false;
    node = &*it;
  }
  return !path.empty() && is_member_node(*node);
}

void FieldSet::erase(const FieldPath& path) {
  if (!path.empty() && contains(path)) erase_rec(tree_, path, 0);
}

bool FieldSet::covers(const FieldPath& path) const {
  const json* node = &tree_;
  for (const auto& key : path) {
    auto it = node->find(key);
    if (it == node->end()) return false;
    node = &*it;
  }
  return true;
}

std::vector<FieldPath> FieldSet::members() const {
  std::vector<FieldPath> out;
  FieldPath path;
  members_rec(tree_, path, out);
  return out;
}

std::optional<std::vector<std::string>> list_merge_keys(std::string_view field_name) {
  if (field_name == "containers" || field_name == "initContainers" ||
      field_name == "ephemeralContainers" || field_name == "env" || field_name == "volumes" ||
      field_name == "imagePullSecrets") {
    return std::vector<std::string>{"name"};
  }
  if (field_name == "volumeMounts") return std::vector<std::string>{"mountPath"};
  return std::nullopt;
}

FieldSet fields_of(const json& object) {
  FieldSet out;
  FieldPath path;
  if (object.is_object()) object_fields(object, path, out);
  return out;
}

const json* value_at(const json& object, const FieldPath& path) {
  const json* node = &object;
  for (const auto& key : path) {
    if (key.rfind("f:", 0) == 0) {
      if (!node->is_object()) return nullptr;
      auto it = node->find(key.substr(2));
      if (it == node->end()) return nullptr;
      node = &*it;
    } else if (key.rfind("k:", 0) == 0) {
      node = find_item(const_cast<json&>(*node), key);
      if (node == nullptr) return nullptr;
    } else {
      return nullptr;
    }
  }
  return node;
}

bool erase_at(json& object, const FieldPath& path) {
  if (path.empty()) return false;
  FieldPath parent_path(path.begin(), path.end() - 1);
  json* parent = const_cast<json*>(value_at(object, parent_path));
  if (parent == nullptr) return false;
  const std::string& last = path.back();
  if (last.rfind("f:", 0) == 0 && parent->is_object()) {
    return parent->erase(last.substr(2)) > 0;
  }
  json* item = last.rfind("k:", 0) == 0 ? find_item(*parent, last) : nullptr;
  if (item == nullptr) return false;
  for (auto it = parent->begin(); it != parent->end(); ++it) {
    if (&*it == item) {
      parent->erase(it);
      return true;
    }
  }
  return false;
}

json merge_applied(const json& live, const json& applied) { return merge_rec(live, applied, ""); }

std::string path_string(const FieldPath& path) {
  std::string out;
  for (const auto& key : path) {
    if (key.rfind("f:", 0) == 0) {
      out += "." + key.substr(2);
      continue;
    }
    json k = json::parse(key.substr(2), nullptr, false);
    out += "[";
    bool first = true;
    for (auto it = k.begin(); k.is_object() && it != k.end(); ++it) {
      out += (first ? "" : ",") + it.key() + "=" + it.value().dump();
      first = false;
    }
    out += "]";
  }
  return out;
}

}  // namespace canopy::kubeapi

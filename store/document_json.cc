// Document's JSON views (to_json, to_value) and diff against a target JSON
// value (declared in document.h).
#include <algorithm>
#include <nlohmann/json.hpp>

#include "store/document.h"
#include "store/document_detail.h"

namespace canopy {

using json = nlohmann::json;
using document_detail::quote;

void Document::write_json(const Node& n, Stamp clear, std::string* out) const {
  const Stamp c = std::max(clear, n.reg);
  out->push_back('{');
  bool first = true;
  const Kid* k = kids_of(n);
  for (uint32_t i = 0; i < n.nkids; ++i) {
    const Node& child = nodes_[k[i].node];
    const bool reg_live = child.reg > c;
    const bool obj_live = child.obj > c;
    if (!reg_live && !obj_live) continue;
    const bool is_object = child.obj > child.reg;
    if (!is_object && child.reg_removed) continue;
    if (!first) out->push_back(',');
    first = false;
    out->append(quote(str(child.name)));
    out->push_back(':');
    if (is_object) {
      write_json(child, c, out);
    } else {
      out->append(str(child.value));
    }
  }
  out->push_back('}');
}

std::string Document::to_json() const {
  if (!exists()) return std::string();
  std::string out;
  write_json(root(), Stamp{}, &out);
  return out;
}

json Document::node_value(const Node& n, Stamp clear) const {
  const Stamp c = std::max(clear, n.reg);
  json obj = json::object();
  const Kid* k = kids_of(n);
  for (uint32_t i = 0; i < n.nkids; ++i) {
    const Node& child = nodes_[k[i].node];
    if (!(child.reg > c) && !(child.obj > c)) continue;
    const std::string name(str(child.name));
    if (child.obj > child.reg) {
      obj[name] = node_value(child, c);
    } else if (!child.reg_removed) {
      obj[name] = json::parse(str(child.value));
    }
  }
  return obj;
}

json Document::to_value() const {
  if (!exists()) return json();
  return node_value(root(), Stamp{});
}

void Document::diff_node(const Node* n, Stamp clear, const json& target,
                         std::vector<std::string>* path, std::vector<v1::FieldOp>* ops) const {
  // What the node shows now.
  enum class Kind { kAbsent, kLeaf, kObject } kind = Kind::kAbsent;
  if (n != nullptr && (n->reg > clear || n->obj > clear)) {
    if (n->obj > n->reg) {
      kind = Kind::kObject;
    } else if (!n->reg_removed) {
      kind = Kind::kLeaf;
    }
  }
  auto add_op = [&](v1::FieldOp::Kind k) -> v1::FieldOp& {
    v1::FieldOp& op = ops->emplace_back();
    for (const auto& p : *path) op.add_path(p);
    op.set_kind(k);
    // The writer saw the register's value, or its tombstone (a key written
    // again after its removal overwrites the removal causally).
    if (kind == Kind::kLeaf ||
        (n != nullptr && n->reg_removed && n->reg > clear && n->reg > n->obj)) {
      op.mutable_prev()->set_replica(n->reg.replica);
      op.mutable_prev()->set_seq(n->reg_seq);
    }
    return op;
  };

  if (target.is_object()) {
    if (kind != Kind::kObject) {
      if (target.empty()) {
        add_op(v1::FieldOp::MAKE_OBJECT);
        return;
      }
      for (const auto& [k, v] : target.items()) {
        path->push_back(k);
        diff_node(nullptr, clear, v, path, ops);
        path->pop_back();
      }
      return;
    }
    const Stamp c = std::max(clear, n->reg);
    for (const auto& [k, v] : target.items()) {
      path->push_back(k);
      diff_node(find_child(*n, k), c, v, path, ops);
      path->pop_back();
    }
    const Kid* kids = kids_of(*n);
    for (uint32_t i = 0; i < n->nkids; ++i) {
      const Node& child = nodes_[kids[i].node];
      const std::string_view name = str(child.name);
      if (target.contains(name)) continue;
      const bool live = child.reg > c || child.obj > c;
      if (!live) continue;
      const bool is_object = child.obj > child.reg;
      if (!is_object && child.reg_removed) continue;
      v1::FieldOp& op = ops->emplace_back();
      for (const auto& p : *path) op.add_path(p);
      op.add_path(name.data(), name.size());
      op.set_kind(v1::FieldOp::REMOVE);
      if (!is_object) {
        op.mutable_prev()->set_replica(child.reg.replica);
        op.mutable_prev()->set_seq(child.reg_seq);
      }
    }
    return;
  }
  std::string value = target.dump();
  if (kind == Kind::kLeaf && str(n->value) == value) return;
  add_op(v1::FieldOp::SET).set_value(std::move(value));
}

void Document::diff(const json& target, std::vector<v1::FieldOp>* ops) const {
  std::vector<std::string> path;
  diff_node(&root(), Stamp{}, target, &path, ops);
}

}  // namespace canopy

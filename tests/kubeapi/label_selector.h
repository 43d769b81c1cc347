// Label and field selectors of list requests (?labelSelector=, ?fieldSelector=).
//
// Stands for: k8s.io/apimachinery/pkg/labels.Parse — equality (=, ==, !=),
// set (in, notin) and existence (key, !key) requirements joined by commas —
// and the field selectors every resource supports, metadata.name and
// metadata.namespace with =, == and !=.
// Leaves out: validation of label keys and values beyond the grammar, and
// per-kind field selectors (status.phase, spec.nodeName, ...), which are
// rejected as the real server rejects an unsupported field label.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "store/status.h"

namespace canopy::kubeapi {

struct Requirement {
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kNotExists };
  std::string key;
  Op op = Op::kEquals;
  std::vector<std::string> values;
};

using Selector = std::vector<Requirement>;  // all must match; empty matches all

StatusOr<Selector> parse_label_selector(const std::string& text);
StatusOr<Selector> parse_field_selector(const std::string& text);

// Whether the labels (a JSON object of strings, or null) satisfy `selector`.
bool matches(const Selector& selector, const nlohmann::json& labels);

}  // namespace canopy::kubeapi

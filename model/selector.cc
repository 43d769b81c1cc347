#include "model/selector.h"

#include <algorithm>

#include "model/names.h"

namespace canopy::model {
namespace {

using json = nlohmann::json;

bool is_absent(const json& v, std::string_view name) {
  auto it = v.find(name);
  return it == v.end() || it->is_null();
}

Status check_key(const json& k, const std::string& field) {
  if (!k.is_string()) {
    return invalid_argument(field + " must be a string, not " + std::string(k.type_name()));
  }
  const std::string& s = k.get_ref<const std::string&>();
  if (!is_label_key(s)) {
    return invalid_argument(field + " " + quote(s) + " is not " + std::string(kLabelKeyRule));
  }
  return ok_status();
}

Status check_value(const json& v, const std::string& field) {
  if (!v.is_string()) {
    return invalid_argument(field + " must be a string, not " + std::string(v.type_name()));
  }
  const std::string& s = v.get_ref<const std::string&>();
  if (!is_label_value(s)) {
    return invalid_argument(field + " " + quote(s) + " is not " + std::string(kLabelValueRule));
  }
  return ok_status();
}

StatusOr<SelectorOp> parse_op(const json& v, const std::string& field) {
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (s == "In") return SelectorOp::kIn;
    if (s == "NotIn") return SelectorOp::kNotIn;
    if (s == "Exists") return SelectorOp::kExists;
    if (s == "DoesNotExist") return SelectorOp::kDoesNotExist;
  }
  return invalid_argument(field + " " + v.dump() +
                          " is not one of In, NotIn, Exists, DoesNotExist");
}

StatusOr<Requirement> parse_requirement(const json& e, const std::string& field) {
  if (!e.is_object()) {
    return invalid_argument(field + " must be an object, not " + std::string(e.type_name()));
  }
  for (const auto& [k, v] : e.items()) {
    if (k != "key" && k != "operator" && k != "values" && !v.is_null()) {
      return invalid_argument(field + "." + k +
                              " is not a field of a requirement (key, operator, values)");
    }
  }
  Requirement r;
  if (is_absent(e, "key")) return invalid_argument(field + ".key is missing");
  CANOPY_RETURN_IF_ERROR(check_key(e["key"], field + ".key"));
  r.key = e["key"].get<std::string>();
  if (is_absent(e, "operator")) return invalid_argument(field + ".operator is missing");
  auto op = parse_op(e["operator"], field + ".operator");
  if (!op.ok()) return op.status();
  r.op = *op;
  if (!is_absent(e, "values")) {
    const json& vals = e["values"];
    if (!vals.is_array()) {
      return invalid_argument(field + ".values must be an array, not " +
                              std::string(vals.type_name()));
    }
    if (vals.size() > LabelSelector::kMaxValues) {
      return invalid_argument(field + ".values has " + std::to_string(vals.size()) +
                              " values; the limit is " + std::to_string(LabelSelector::kMaxValues));
    }
    for (size_t i = 0; i < vals.size(); ++i) {
      CANOPY_RETURN_IF_ERROR(check_value(vals[i], field + ".values[" + std::to_string(i) + "]"));
      r.values.push_back(vals[i].get<std::string>());
    }
  }
  const bool set_op = r.op == SelectorOp::kIn || r.op == SelectorOp::kNotIn;
  if (set_op && r.values.empty()) {
    return invalid_argument(field + ".values must not be empty for operator " +
                            std::string(selector_op_name(r.op)));
  }
  if (!set_op && !r.values.empty()) {
    return invalid_argument(field + ".values must be empty for operator " +
                            std::string(selector_op_name(r.op)));
  }
  std::sort(r.values.begin(), r.values.end());
  r.values.erase(std::unique(r.values.begin(), r.values.end()), r.values.end());
  return r;
}

}  // namespace

std::string_view selector_op_name(SelectorOp op) {
  switch (op) {
    case SelectorOp::kIn:
      return "In";
    case SelectorOp::kNotIn:
      return "NotIn";
    case SelectorOp::kExists:
      return "Exists";
    case SelectorOp::kDoesNotExist:
      return "DoesNotExist";
  }
  return "?";
}

bool Requirement::matches(const Labels& labels) const {
  auto it = labels.find(key);
  switch (op) {
    case SelectorOp::kIn:
      return it != labels.end() && std::binary_search(values.begin(), values.end(), it->second);
    case SelectorOp::kNotIn:
      return it == labels.end() || !std::binary_search(values.begin(), values.end(), it->second);
    case SelectorOp::kExists:
      return it != labels.end();
    case SelectorOp::kDoesNotExist:
      return it == labels.end();
  }
  return false;
}

StatusOr<LabelSelector> LabelSelector::parse(const json& v, std::string_view field_name) {
  const std::string field(field_name);
  if (!v.is_object()) {
    return invalid_argument(field + " must be an object, not " + std::string(v.type_name()));
  }
  for (const auto& [k, val] : v.items()) {
    if (k != "matchLabels" && k != "matchExpressions" && !val.is_null()) {
      return invalid_argument(field + "." + k +
                              " is not a field of a label selector (matchLabels, "
                              "matchExpressions)");
    }
  }
  LabelSelector out;
  if (!is_absent(v, "matchLabels")) {
    const json& ml = v["matchLabels"];
    const std::string f = field + ".matchLabels";
    if (!ml.is_object()) {
      return invalid_argument(f + " must be an object, not " + std::string(ml.type_name()));
    }
    for (const auto& [k, val] : ml.items()) {
      // A null value is a key removed by a merge patch: absent.
      if (val.is_null()) continue;
      CANOPY_RETURN_IF_ERROR(check_key(json(k), f + " key"));
      CANOPY_RETURN_IF_ERROR(check_value(val, f + "." + k));
      out.match_labels_.emplace(k, val.get<std::string>());
    }
  }
  if (!is_absent(v, "matchExpressions")) {
    const json& me = v["matchExpressions"];
    const std::string f = field + ".matchExpressions";
    if (!me.is_array()) {
      return invalid_argument(f + " must be an array, not " + std::string(me.type_name()));
    }
    for (size_t i = 0; i < me.size(); ++i) {
      auto r = parse_requirement(me[i], f + "[" + std::to_string(i) + "]");
      if (!r.ok()) return r.status();
      out.expressions_.push_back(std::move(r).value());
    }
  }
  if (out.match_labels_.size() + out.expressions_.size() > kMaxRequirements) {
    return invalid_argument(field + " has " +
                            std::to_string(out.match_labels_.size() + out.expressions_.size()) +
                            " requirements; the limit is " + std::to_string(kMaxRequirements));
  }
  return out;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits at commas outside parentheses; nullopt when they do not balance.
std::optional<std::vector<std::string_view>> split_requirements(std::string_view text) {
  std::vector<std::string_view> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '(') {
      if (++depth > 1) return std::nullopt;
    } else if (text[i] == ')') {
      if (--depth < 0) return std::nullopt;
    } else if (text[i] == ',' && depth == 0) {
      out.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  if (depth != 0) return std::nullopt;
  out.push_back(text.substr(start));
  return out;
}

// One requirement of the text form as the JSON form's matchExpressions entry.
std::optional<json> requirement_json(std::string_view r) {
  r = trim(r);
  if (r.empty()) return std::nullopt;
  if (r.front() == '!') {
    const std::string_view key = trim(r.substr(1));
    if (key.empty() || key.find_first_of("=!() ") != std::string_view::npos) return std::nullopt;
    return json{{"key", key}, {"operator", "DoesNotExist"}};
  }
  if (const size_t eq = r.find_first_of("=!"); eq != std::string_view::npos) {
    const bool not_equal = r[eq] == '!';
    size_t value_at = eq + 1;
    if (not_equal) {
      if (value_at >= r.size() || r[value_at] != '=') return std::nullopt;
      ++value_at;
    } else if (value_at < r.size() && r[value_at] == '=') {
      ++value_at;
    }
    const std::string_view key = trim(r.substr(0, eq));
    const std::string_view value = trim(r.substr(value_at));
    if (key.empty() || value.find_first_of("=!() ") != std::string_view::npos) return std::nullopt;
    return json{{"key", key}, {"operator", not_equal ? "NotIn" : "In"}, {"values", {value}}};
  }
  if (const size_t open = r.find('('); open != std::string_view::npos) {
    if (r.back() != ')') return std::nullopt;
    std::string_view head = trim(r.substr(0, open));
    const size_t space = head.find_last_of(" \t");
    if (space == std::string_view::npos) return std::nullopt;
    const std::string_view key = trim(head.substr(0, space));
    const std::string_view op = head.substr(space + 1);
    if (key.empty() || (op != "in" && op != "notin")) return std::nullopt;
    json values = json::array();
    std::string_view list = r.substr(open + 1, r.size() - open - 2);
    while (true) {
      const size_t comma = list.find(',');
      const std::string_view v = trim(list.substr(0, comma));
      if (v.find_first_of(" ") != std::string_view::npos) return std::nullopt;
      values.push_back(v);
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
    return json{{"key", key}, {"operator", op == "in" ? "In" : "NotIn"}, {"values", values}};
  }
  if (r.find_first_of(" ()") != std::string_view::npos) return std::nullopt;
  return json{{"key", r}, {"operator", "Exists"}};
}

}  // namespace

StatusOr<LabelSelector> LabelSelector::parse_text(std::string_view text,
                                                  std::string_view field_name) {
  const std::string field(field_name);
  if (trim(text).empty()) return LabelSelector();
  auto parts = split_requirements(text);
  if (!parts) {
    return invalid_argument(field + " " + json(std::string(text)).dump() +
                            ": parentheses do not balance");
  }
  json expressions = json::array();
  for (std::string_view part : *parts) {
    auto r = requirement_json(part);
    if (!r) {
      return invalid_argument(field + ": cannot read " + json(std::string(trim(part))).dump() +
                              " (expected k=v, k!=v, k in (a,b), k notin (a,b), k or !k)");
    }
    expressions.push_back(std::move(*r));
  }
  return parse(json{{"matchExpressions", std::move(expressions)}}, field_name);
}

bool LabelSelector::matches(const Labels& labels) const {
  if (empty()) return false;
  for (const auto& [k, v] : match_labels_) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  for (const Requirement& r : expressions_) {
    if (!r.matches(labels)) return false;
  }
  return true;
}

std::optional<std::vector<std::pair<std::string, std::string>>> LabelSelector::candidate_pairs()
    const {
  if (!match_labels_.empty()) {
    const auto& [k, v] = *match_labels_.begin();
    return std::vector<std::pair<std::string, std::string>>{{k, v}};
  }
  const Requirement* best = nullptr;
  for (const Requirement& r : expressions_) {
    if (r.op != SelectorOp::kIn) continue;
    if (best == nullptr || r.values.size() < best->values.size()) best = &r;
  }
  if (best == nullptr) return std::nullopt;
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& v : best->values) out.emplace_back(best->key, v);
  return out;
}

json LabelSelector::to_json() const {
  json out = json::object();
  if (!match_labels_.empty()) {
    out["matchLabels"] = json::object();
    for (const auto& [k, v] : match_labels_) out["matchLabels"][k] = v;
  }
  if (!expressions_.empty()) {
    out["matchExpressions"] = json::array();
    for (const Requirement& r : expressions_) {
      json e = {{"key", r.key}, {"operator", selector_op_name(r.op)}};
      if (!r.values.empty()) e["values"] = r.values;
      out["matchExpressions"].push_back(std::move(e));
    }
  }
  return out;
}

}  // namespace canopy::model

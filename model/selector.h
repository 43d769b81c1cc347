// LabelSelector: Kubernetes' label selector, the one way sites are chosen by
// their labels (placements, overrides; the hub's index, the site's renderer,
// the API and the CLI all call this type).
//
// Syntax (as Kubernetes' metav1.LabelSelector):
//   {"matchLabels": {"<key>": "<value>", ...},
//    "matchExpressions": [{"key": "<key>", "operator": "In" | "NotIn" |
//                          "Exists" | "DoesNotExist", "values": [...]}, ...]}
// In and NotIn need at least one value; Exists and DoesNotExist take none.
// Keys and values follow Kubernetes' label syntax (names.h). Any other field,
// operator or shape is refused: a selector that is half understood would
// choose sites nobody intended, and scope is the security boundary.
//
// Semantics: every requirement must hold (AND). `k In [a,b]`: the site has
// label k with value a or b. `k NotIn [a,b]`: the site has no label k, or its
// value is neither. Exists / DoesNotExist: the label is present / absent.
//
// One deliberate difference from Kubernetes: an empty selector (no
// requirement at all) selects no site. In Kubernetes it selects everything;
// here that would put a template on every site of the fleet by an omission.
// To target every site, say so: `{"key": "<k>", "operator": "Exists"}`.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/status.h"

namespace canopy::model {

using Labels = std::map<std::string, std::string, std::less<>>;

enum class SelectorOp { kIn, kNotIn, kExists, kDoesNotExist };

std::string_view selector_op_name(SelectorOp op);

struct Requirement {
  std::string key;
  SelectorOp op = SelectorOp::kExists;
  std::vector<std::string> values;  // sorted, unique; empty for Exists / DoesNotExist

  bool matches(const Labels& labels) const;
  bool operator==(const Requirement&) const = default;
};

class LabelSelector {
 public:
  // Limits: requirements and values per selector.
  static constexpr size_t kMaxRequirements = 64;
  static constexpr size_t kMaxValues = 256;

  LabelSelector() = default;

  // Parses a selector object. InvalidArgument names the field, relative to
  // `field` (e.g. "selector.matchExpressions[1].operator"). JSON nulls count as
  // absent (a CRDT merge may leave a removed field null).
  static StatusOr<LabelSelector> parse(const nlohmann::json& v,
                                       std::string_view field = "selector");
  // Parses kubectl's text form (`?labelSelector=`, `kubectl -l`): requirements
  // separated by commas, each `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
  // `k notin (a,b)`, `k` (exists) or `!k` (does not exist). `k!=v` is
  // `k NotIn [v]`. The same checks as parse(); InvalidArgument names `field`
  // and quotes the requirement it could not read. An empty text is an empty
  // selector (which matches nothing: callers treat "no filter" themselves).
  static StatusOr<LabelSelector> parse_text(std::string_view text,
                                            std::string_view field = "labelSelector");

  // True when every requirement holds; false for an empty selector.
  bool matches(const Labels& labels) const;
  bool empty() const { return match_labels_.empty() && expressions_.empty(); }

  const Labels& match_labels() const { return match_labels_; }
  const std::vector<Requirement>& expressions() const { return expressions_; }

  // Label pairs (key, value) such that every site this selector matches
  // carries at least one of them — the candidates an index need look at.
  // nullopt when no such set exists (the selector has only NotIn, Exists or
  // DoesNotExist requirements) or the selector is empty. Prefers one
  // matchLabels pair, then the In requirement with the fewest values.
  std::optional<std::vector<std::pair<std::string, std::string>>> candidate_pairs() const;

  nlohmann::json to_json() const;
  bool operator==(const LabelSelector&) const = default;

 private:
  Labels match_labels_;
  std::vector<Requirement> expressions_;
};

}  // namespace canopy::model

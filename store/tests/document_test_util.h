// Helpers shared by the Document unit tests (document_test.cc,
// document_state_test.cc, document_json_test.cc): a fixed key, applying and
// writing deltas, ops as strings.
#pragma once

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "canopy/v1/store.pb.h"
#include "store/document.h"
#include "store/tests/test_util.h"

namespace canopy::store_test {

inline constexpr char kKey[] = "t/acme/doc";

// Applies `deltas` in order to a fresh document; collects reported overwrites.
inline Document apply_all(const std::vector<v1::Delta>& deltas,
                          std::vector<Overwrite>* overwrites = nullptr) {
  Document d;
  for (const auto& delta : deltas) d.apply(delta, overwrites);
  return d;
}

// The base document {"a":1,"b":{"c":2}} written by replica 1, seq 1 at HLC 100.
inline v1::Delta base_delta() {
  return make_delta(kKey, 1, 1, 100, {set_op({"a"}, "1"), set_op({"b", "c"}, "2")});
}

inline std::string op_string(const v1::FieldOp& op) {
  std::string s;
  for (const auto& p : op.path()) s += "/" + p;
  s += " " + v1::FieldOp::Kind_Name(op.kind());
  if (op.kind() == v1::FieldOp::SET) s += " " + op.value();
  if (op.has_prev()) {
    s += " prev=" + std::to_string(op.prev().replica()) + ":" + std::to_string(op.prev().seq());
  }
  return s;
}

inline std::vector<std::string> op_strings(const std::vector<v1::FieldOp>& ops) {
  std::vector<std::string> out;
  for (const auto& op : ops) out.push_back(op_string(op));
  std::sort(out.begin(), out.end());
  return out;
}

// Writes `target` over `d` as replica `replica` would: diff, stamp, apply.
inline v1::Delta write(Document* d, const nlohmann::json& target, uint64_t replica, uint64_t seq,
                       uint64_t hlc) {
  std::vector<v1::FieldOp> ops;
  d->diff(target, &ops);
  v1::Delta delta = make_delta(kKey, replica, seq, hlc, std::move(ops));
  d->apply(delta, nullptr);
  return delta;
}

}  // namespace canopy::store_test

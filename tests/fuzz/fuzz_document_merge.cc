// Fuzzes the local write path and the merge of concurrent writes. The input is
//   <JSON document> \0 <merge patch A> \0 <merge patch B>
// (missing parts are empty objects). Replica 1 writes the document, then
// patch A on top of it; replica 2, having seen the document, writes patch B
// concurrently. The three deltas are applied in several orders, with
// duplicates, and the states joined.
//
// Invariants (a violation traps):
//   - a writer sees exactly what it wrote (diff + apply reaches the target);
//   - every delta a writer makes passes validate_delta (its peers accept it);
//   - every order of delivery, duplicates included, gives the same bytes
//     (commutative, idempotent), and so does the join of partial states
//     (associative);
//   - the merged document is canonical JSON and reloads from its state;
//   - an edit of one field never touches another: fields that only one side
//     changed hold that side's value after the merge.

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "canopy/v1/store.pb.h"
#include "store/document.h"

namespace {

using canopy::Document;
using json = nlohmann::json;
using canopy::v1::Delta;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

std::string state_bytes(const Document& d) {
  canopy::v1::NodeState s;
  d.to_proto(&s);
  return s.SerializeAsString();
}

// Writes `target` over `doc` as replica `replica`; returns the delta (no ops
// when nothing changed).
Delta write(Document* doc, const json& target, uint64_t replica, uint64_t seq, uint64_t hlc) {
  std::vector<canopy::v1::FieldOp> ops;
  doc->diff(target, &ops);
  Delta d;
  d.set_key("fuzz/doc");
  d.mutable_dot()->set_replica(replica);
  d.mutable_dot()->set_seq(seq);
  d.set_hlc(std::max(hlc, doc->max_hlc() + 1));
  for (auto& op : ops) *d.add_ops() = std::move(op);
  if (d.ops_size() == 0) return d;
  canopy::DocumentLimits limits;
  check(canopy::validate_delta(d, limits).ok());
  doc->apply(d, nullptr);
  check(doc->to_value() == target);
  return d;
}

Document apply_in_order(const std::vector<const Delta*>& order) {
  Document d;
  std::vector<canopy::Overwrite> overwrites;
  for (const Delta* delta : order) {
    if (delta->ops_size() > 0) d.apply(*delta, &overwrites);
  }
  return d;
}

std::string join(const Document& a, const Document& b) {
  canopy::v1::NodeState sb;
  b.to_proto(&sb);
  Document j = a;
  j.merge(sb);
  return state_bytes(j);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view parts[3] = {"{}", "{}", "{}"};
  size_t start = 0;
  for (int i = 0; i < 3 && start <= input.size(); ++i) {
    const size_t end = i < 2 ? input.find('\0', start) : std::string_view::npos;
    parts[i] =
        input.substr(start, end == std::string_view::npos ? input.size() - start : end - start);
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  canopy::DocumentLimits limits;
  limits.max_doc_bytes = 64 << 10;
  limits.max_depth = 16;
  auto base = canopy::parse_document(parts[0], limits);
  if (!base.ok()) return 0;
  auto patch_a = canopy::parse_document(parts[1], limits);
  auto patch_b = canopy::parse_document(parts[2], limits);
  const json pa = patch_a.ok() ? *patch_a : json::object();
  const json pb = patch_b.ok() ? *patch_b : json::object();

  Document r1, r2;
  const Delta d1 = write(&r1, *base, 1, 1, 100);
  if (d1.ops_size() > 0) r2.apply(d1, nullptr);
  const json target_a = canopy::apply_merge_patch(r1.to_value(), pa);
  const json target_b = canopy::apply_merge_patch(r2.to_value(), pb);
  const Delta d2 = write(&r1, target_a, 1, 2, 200);
  // Replica 2's clock is sometimes level with replica 1's: the id breaks the tie.
  const Delta d3 = write(&r2, target_b, 2, 1, size % 2 == 0 ? 200 : 150);

  const std::vector<std::vector<const Delta*>> orders = {
      {&d1, &d2, &d3},      {&d3, &d2, &d1},      {&d2, &d1, &d3},
      {&d1, &d3, &d2, &d1}, {&d3, &d3, &d1, &d2}, {&d2, &d3, &d1, &d2, &d3},
  };
  const Document merged = apply_in_order(orders[0]);
  const std::string bytes = state_bytes(merged);
  for (const auto& order : orders) check(state_bytes(apply_in_order(order)) == bytes);

  // Joins of partial states: commutative, associative, idempotent.
  const Document s12 = apply_in_order({&d1, &d2});
  const Document s3 = apply_in_order({&d3});
  const Document s1 = apply_in_order({&d1});
  check(join(s12, s3) == bytes);
  check(join(s3, s12) == bytes);
  check(join(merged, merged) == bytes);
  const Document s13 = apply_in_order({&d1, &d3});
  const Document s2 = apply_in_order({&d2});
  check(join(s13, s2) == bytes);
  Document left = s1;
  {
    canopy::v1::NodeState st;
    s2.to_proto(&st);
    left.merge(st);
  }
  check(join(left, s3) == join(s1, apply_in_order({&d2, &d3})));

  // The merged document is sound.
  const std::string text = merged.to_json();
  const json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  check(value.is_object());
  check(value.dump() == text);
  check(merged.to_value() == value);
  canopy::v1::NodeState st;
  merged.to_proto(&st);
  auto reloaded = Document::from_proto(st);
  check(reloaded.ok());
  check(state_bytes(*reloaded) == bytes);

  // Top-level fields that only one side changed keep that side's value.
  const json& b = *base;
  for (const auto& [k, v] : target_a.items()) {
    const bool a_changed = !b.contains(k) || b[k] != v;
    const bool b_touched =
        target_b.contains(k) != b.contains(k) || (target_b.contains(k) && target_b[k] != b[k]);
    if (a_changed && !b_touched && !v.is_object()) check(value.contains(k) && value[k] == v);
  }
  for (const auto& [k, v] : target_b.items()) {
    const bool b_changed = !b.contains(k) || b[k] != v;
    const bool a_touched =
        target_a.contains(k) != b.contains(k) || (target_a.contains(k) && target_a[k] != b[k]);
    if (b_changed && !a_touched && !v.is_object()) check(value.contains(k) && value[k] == v);
  }
  return 0;
}

// Fuzzes what a replica receives: bytes are parsed as a v1::DeltaBatch; every
// delta that validate_delta accepts is applied to a Document, which is then
// serialized, reparsed and checked. The same bytes are also tried as a
// v1::NodeState (a whole-document transfer) through Document::from_proto.
//
// Invariants (a violation traps):
//   - an existing document prints as a canonical JSON object equal to to_value();
//   - the state round-trips through bytes and from_proto to the same bytes;
//   - diff() of the document against its own value is empty;
//   - applying the deltas again, or in reverse order, gives the same state
//     (for deltas with distinct stamps, as honest replicas produce);
//   - joining the state into itself changes nothing.

#include <google/protobuf/stubs/logging.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "canopy/v1/store.pb.h"
#include "store/document.h"

namespace {

using canopy::Document;
using json = nlohmann::json;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

std::string state_bytes(const Document& d) {
  canopy::v1::NodeState s;
  d.to_proto(&s);
  return s.SerializeAsString();
}

void check_document(const Document& d) {
  const std::string text = d.to_json();
  if (d.exists()) {
    const json v = json::parse(text, nullptr, /*allow_exceptions=*/false);
    check(v.is_object());
    check(v.dump() == text);
    check(d.to_value() == v);
    std::vector<canopy::v1::FieldOp> ops;
    d.diff(v, &ops);
    check(ops.empty());
  } else {
    check(text.empty());
    check(d.to_value().is_null());
  }
  const std::string bytes = state_bytes(d);
  canopy::v1::NodeState back;
  check(back.ParseFromString(bytes));
  auto reloaded = Document::from_proto(back);
  check(reloaded.ok());
  check(state_bytes(*reloaded) == bytes);
  check(reloaded->to_json() == text);
  Document joined = d;
  joined.merge(back);
  check(state_bytes(joined) == bytes);
}

void fuzz_batch(const canopy::v1::DeltaBatch& batch) {
  canopy::DocumentLimits limits;
  limits.max_doc_bytes = 64 << 10;
  // One Document per key, as the store keeps them.
  std::vector<const canopy::v1::Delta*> valid;
  for (const auto& d : batch.deltas()) {
    if (canopy::validate_delta(d, limits).ok()) valid.push_back(&d);
  }
  std::set<std::pair<uint64_t, uint64_t>> stamps;
  bool distinct = true;
  for (const auto* d : valid) distinct &= stamps.emplace(d->hlc(), d->dot().replica()).second;

  std::vector<std::string> keys;
  for (const auto* d : valid) keys.push_back(d->key());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  for (const std::string& key : keys) {
    Document forward;
    std::vector<canopy::Overwrite> overwrites;
    for (const auto* d : valid) {
      if (d->key() == key) forward.apply(*d, &overwrites);
    }
    check_document(forward);
    const std::string bytes = state_bytes(forward);
    // Idempotent: everything again changes nothing.
    for (const auto* d : valid) {
      if (d->key() == key) forward.apply(*d, &overwrites);
    }
    check(state_bytes(forward) == bytes);
    if (!distinct) continue;
    // Commutative: the reverse order reaches the same bytes.
    Document backward;
    for (auto it = valid.rbegin(); it != valid.rend(); ++it) {
      if ((*it)->key() == key) backward.apply(**it, nullptr);
    }
    check(state_bytes(backward) == bytes);
  }
}

void fuzz_state(const canopy::v1::NodeState& state) {
  auto d = Document::from_proto(state);
  if (!d.ok()) return;
  check_document(*d);
  // Collecting every tombstone changes no visible document.
  Document copy = *d;
  copy.collect_tombstones(copy.max_hlc() + 1);
  check_document(copy);
  check(copy.to_json() == d->to_json());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field that is not UTF-8; the fuzzer makes many.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 20)) return 0;
  canopy::v1::DeltaBatch batch;
  if (batch.ParseFromArray(data, static_cast<int>(size))) fuzz_batch(batch);
  canopy::v1::NodeState state;
  if (state.ParseFromArray(data, static_cast<int>(size))) fuzz_state(state);
  return 0;
}

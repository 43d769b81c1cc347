// Seeded generator of a Kubernetes-like change stream for Canopy's benchmarks.
//
// The stream models what a hub sees from operators and controllers: documents that look like
// Deployment, ConfigMap and Service manifests (compact JSON, 1 KiB to 10 KiB each) under keys
// such as `t/acme/template/apps/Deployment/shop/web-123`, then a mix of edits to them.
//
// Layout of the vector returned by generate_workload():
//   - the first `initial_docs` entries are kCreate: the initial population;
//   - then `changes` entries drawn independently: 70% kPatch, 20% kCreate, 10% kRemove
//     (a removal drawn while no document is live becomes a creation).
// So the stream holds initial_docs + changes entries in all.
//
// Invariants: a kCreate always names a key never used before in the stream (keys are not reused
// after removal); a kPatch and a kRemove always name a live document. A kPatch is a JSON merge
// patch (RFC 7386) that changes 1 to 3 fields of the document (a replica count, an image tag, an
// annotation, a label, a data entry, a port list...); `null` in a patch removes that field. As in
// RFC 7386, an array in a patch replaces the whole array. The same seed and options give the same
// stream, byte for byte, on every platform.
//
// File format (write_workload / read_workload): JSON lines, one change per line, in stream order:
//   {"op":"create","key":"...","doc":{...}}
//   {"op":"patch","key":"...","patch":{...}}
//   {"op":"remove","key":"..."}
#ifndef CANOPY_BENCH_WORKLOAD_H_
#define CANOPY_BENCH_WORKLOAD_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace canopy::bench {

struct Change {
  enum Kind { kCreate, kPatch, kRemove };
  Kind kind = kCreate;
  std::string key;
  // Compact JSON text: the whole document for kCreate, a merge patch object for kPatch, empty for
  // kRemove.
  std::string json;

  friend bool operator==(const Change&, const Change&) = default;
};

struct WorkloadOptions {
  uint64_t seed = 1;
  size_t initial_docs = 1000;  // creations at the head of the stream
  size_t changes = 20000;      // mixed changes after the initial population
};

// Smallest and largest created document, in bytes of compact JSON.
inline constexpr size_t kMinDocBytes = 1024;
inline constexpr size_t kMaxDocBytes = 10 * 1024;

std::vector<Change> generate_workload(const WorkloadOptions& options);

// Writes `changes` to `path` as JSON lines. On failure returns false and sets *error (if given).
bool write_workload(const std::string& path, const std::vector<Change>& changes,
                    std::string* error);

// Reads a JSON-lines workload from `path` into *changes (replacing its contents). Blank lines are
// skipped. On failure returns false, sets *error (if given) and leaves *changes unspecified.
bool read_workload(const std::string& path, std::vector<Change>* changes, std::string* error);

// "create", "patch" or "remove".
const char* kind_name(Change::Kind kind);

}  // namespace canopy::bench

#endif  // CANOPY_BENCH_WORKLOAD_H_

// VersionVector: which dots (replica, seq) a replica has applied.
//
// For each origin replica it keeps the contiguous prefix 1..n and, above it,
// the seqs that arrived out of order (so deltas can be applied in any order
// without buffering). When the gap fills, the extras fold into the prefix.
// Two replicas that applied the same set of dots hold equal vectors.
//
// Partial replication: a child sees only the dots in its scope, so its vector
// has gaps that never fill; sync therefore positions a child by its parent's
// log index, not by this vector (see sync/session.h). The vector serves
// duplicate detection and full-scope (hub-to-hub) catch-up.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "canopy/v1/store.pb.h"

namespace canopy {

struct DotRef {
  uint64_t replica = 0;
  uint64_t seq = 0;
};

class VersionVector {
 public:
  bool contains(uint64_t replica, uint64_t seq) const;
  // Adds one dot; returns false when it was already there.
  bool add(uint64_t replica, uint64_t seq);
  // Adds every dot of `other`.
  void merge(const VersionVector& other);
  // The highest seq n such that 1..n are all present.
  uint64_t contiguous(uint64_t replica) const;
  // Number of origin replicas present.
  size_t size() const { return entries_.size(); }

  v1::VersionVector to_proto() const;
  // The entry of one replica (false when absent), without the others.
  bool entry_to_proto(uint64_t replica, v1::VersionVector::Entry* out) const;
  static VersionVector from_proto(const v1::VersionVector& proto);

  bool operator==(const VersionVector& other) const = default;

  // What a batch of adds changed, to put back if the batch fails: the
  // entries of the replicas it touched, as they were (a copy of the whole
  // vector would cost a hub one entry per site on every write).
  class Undo;

 private:
  struct Entry {
    uint64_t contiguous = 0;
    std::set<uint64_t> extra;
    bool operator==(const Entry&) const = default;
  };
  std::map<uint64_t, Entry> entries_;
};

class VersionVector::Undo {
 public:
  // Call before adding to `replica`'s entry of `vv`.
  void note(const VersionVector& vv, uint64_t replica);
  void apply(VersionVector* vv);

 private:
  std::vector<std::pair<uint64_t, std::optional<Entry>>> saved_;
};

}  // namespace canopy

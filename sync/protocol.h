// The version of the sync protocol (docs/sync-protocol.md) that this build
// speaks, carried in every SyncEnvelope. Peers of another version are refused
// with a logged reason, never half-understood.
//
//   1  reconciliation by ranges of fingerprints (Fingerprints, ReconcileReply)
//   2  reconciliation by sketch (Sketch, SketchReply, Changes.reconciled),
//      acks riding on sequenced messages (SyncEnvelope.acked)
//   3  the short form of a position in Changes (index alone), acks without a
//      position (the parent knows what each acked message carried)
#pragma once

#include <cstdint>

#include "canopy/v1/sync.pb.h"

namespace canopy::sync {

inline constexpr uint32_t kProtocolVersion = 3;

// Whether a Changes message without a position makes the child forget the
// one it holds: documents or deltas came, or documents went, outside the
// log's order, so what it holds no longer matches any position until the
// parent sends a new one. Deltas count too: a reconciliation started within
// a session streams what commits meanwhile without a position, and a child
// that kept its old one would resume from it after a break while holding a
// key its scope has lost since (the scope can change back to the version
// the position names, and then nothing drops the key: simulation seed 3028
// with CANOPY_SIM_REGION_FAILOVER).
inline bool unpositions(const v1::Changes& c) {
  if (c.has_position() || c.index() != 0) return false;
  return c.drop_size() > 0 || c.covered_size() > 0 || c.reconciled() || c.entries_size() > 0;
}

}  // namespace canopy::sync

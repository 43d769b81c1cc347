// The version of the sync protocol (docs/sync-protocol.md) that this build
// speaks, carried in every SyncEnvelope. Peers of another version are refused
// with a logged reason, never half-understood.
//
//   1  reconciliation by ranges of fingerprints (Fingerprints, ReconcileReply)
//   2  reconciliation by sketch (Sketch, SketchReply, Changes.reconciled),
//      acks riding on sequenced messages (SyncEnvelope.acked)
#pragma once

#include <cstdint>

namespace canopy::sync {

inline constexpr uint32_t kProtocolVersion = 2;

}  // namespace canopy::sync

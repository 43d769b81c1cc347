// ParentSync::Session: the parent's state of one child's session, and the
// local keys of what a child sent up, shared by the files that implement
// ParentSync (parent.cc, parent_sessions.cc, parent_reconcile.cc).
// Private to them: include nowhere else.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sync/engine/parent.h"
#include "sync/engine/sketch.h"
#include "sync/subjects.h"

namespace canopy::sync {

inline std::string up_position_key(const std::string& child) { return "sync/up/" + child; }
// Our last log index when we dropped a key in the child's scope: a session
// from a position at or below it reconciles instead of resuming (the
// position claims what we lost).
inline std::string reconcile_marker_key(const std::string& child) {
  return "sync/reconcile/" + child;
}
// "<seq> <hlc>" of the child's latest own write we applied.
inline std::string up_seq_key(const std::string& child) { return "sync/upseq/" + child; }
// The child's writes we refused that it has not acked being told of (a
// v1::Changes holding only `refused`). Kept with the up position that skips
// past them: a session lost before the refusal arrived would otherwise
// resume past the write, and the child would keep it forever.
inline std::string refused_key(const std::string& child) { return "sync/refused/" + child; }

struct ParentSync::Session {
  Session(std::string c, const std::string& parent, const ParentOptions& o)
      : down(o.window, o.rto_ms), child(std::move(c)), subject(down_subject(parent, child)) {}

  // What tick() reads of every session, every tick, first: together they
  // span few cache lines.
  uint64_t last_seen_ms = 0;
  bool away = false;  // silent longer than away_after_ms (see ParentOptions)
  Mode mode = Mode::kWaiting;
  // Waiting, out of line, until then: a read of our store failed while
  // serving it (ParentSync::retry_later). 0: not so.
  uint64_t retry_at_ms = 0;
  bool busy = false;  // in ParentSync::busy_ (visited every tick)
  uint64_t last_position_ms = 0;
  uint64_t reported_index = 0;
  SendChannel down;
  // Committed changes queued for it while live (or reconciling), shared with
  // the other sessions that send them.
  std::vector<OutgoingPtr> pending;
  // A scope change was handled since `pending` was last empty: its entries
  // must be checked against the scope again before they go out.
  bool scope_moved = false;

  std::string child;
  std::string subject;  // where its messages go (down_subject)
  uint64_t replica = 0;
  uint64_t session = 0;
  uint64_t opening = 0;               // Welcome.opening: this opening of the session
  Mode wanted_mode = Mode::kCatchup;  // what to start when a slot frees
  bool holds_slot = false;
  RecvChannel up;
  uint64_t sent_index = 0;  // our log position covered by what was sent
  bool ack_due = false;     // applied a sequenced message of the child's, not yet acked
  uint64_t round = 0;       // reconciliations in this session
  // While reconciling: our in-scope documents as of its start, coded.
  struct Sketch {
    SketchEncoder encoder;
    std::vector<std::pair<uint64_t, std::string>> keys;  // (id, key) sorted by id
    size_t sent = 0;                                     // symbols sent
  };
  std::unique_ptr<Sketch> sketch;
  uint64_t acked_index = 0;
  uint64_t acked_hlc = 0;
  // What each unacked sequenced message carried (0: nothing of the kind),
  // which its ack then confirms as held by the child.
  struct Carried {
    uint64_t hlc = 0;    // the greatest HLC of its deltas
    uint64_t index = 0;  // the log index its position names
  };
  // (seq, what it carried), oldest first: seqs only grow. A vector, emptied
  // of its memory once all is acked, like SendChannel's.
  std::vector<std::pair<uint64_t, Carried>> carried;
  // Refused writes not yet acked (as kept under refused_key): key -> newest
  // refused stamp; and the seq of the last message that told of them.
  std::map<std::string, uint64_t> refused;
  uint64_t refused_seq = 0;
  // The position the child holds once it has applied everything sent in
  // this session (epoch 0: none, or not known to us). A position of the
  // same epoch and scope version then goes in its short form (the index).
  v1::LogPosition child_position;
  std::map<std::string, std::string> labels;
  // The scope version this session has announced: positions carry it while
  // it is the provider's current one (0 otherwise; see set_position). It
  // moves only when the scope change itself is sent, so a child never
  // persists a version whose documents it has not received.
  uint64_t scope_version = 0;
  // The provider's version of this child's scope as last asked, and the
  // provider's generation() just before (0: not asked, or no generation).
  uint64_t provider_version = 0;
  uint64_t provider_generation = 0;
};

// (Here, not in parent.cc: tick() calls it for every session it visits.)
inline bool ParentSync::heard_lately(const Session* s, uint64_t now) const {
  return now <= s->last_seen_ms + opts_.away_after_ms;
}

}  // namespace canopy::sync

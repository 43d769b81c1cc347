// ParentSync: the parent side of every sync session of one replica.
//
// A state machine without I/O (STYLE.md: pure core, I/O at the edge): the
// runtime feeds it messages from the children (`on_message`), the replica's
// committed changes (`on_commit`), scope changes from the parent's own logic
// (`on_scope_change`) and ticks. It reads the store through a StoreView and
// never writes it: each step's writes (the children's changes, their
// positions) and messages come out of `take_ready` (ready.h); the runtime
// persists the writes, reports the outcome to `advance`, and only then
// publishes the messages. A child's message is acked only once what it
// carried is persisted: if persisting fails, the session's receive position
// goes back and the child resends. `flush` ends a batch of inputs: live
// changes go out batched per session, with the acks owed.
// The simulation drives the same object over the in-memory bus.
//
// Per child session:
//   down  the parent's change log, filtered by the child's scope, streamed in
//         sequenced `Changes` messages that carry the child's new position
//         (log epoch, index, scope version); the child persists it and acks;
//   up    the child's own writes, checked against `writable_by` (anything
//         else is refused and logged, never merged) and applied; the parent
//         persists the child's up position under local meta `sync/up/<child>`.
// Modes of the down stream:
//   catch-up   the child's position lies in the log: read the log from it;
//   reconcile  it does not (trimmed, another epoch, another scope version):
//              the child decodes the difference between its documents and
//              ours in scope from a rateless sketch (sketch.h) and asks for the
//              documents that differ, which are sent whole;
//   live       caught up: each committed change in scope is pushed at once.
// Catch-up and reconcile hold one of `max_concurrent_catchups` slots; sessions
// beyond that wait their turn, so a storm of returning sites cannot exhaust
// the parent. Live sessions cost no slot.
//
// Why a log position and not the child's version vector: a child holds only
// the dots in its scope, so its vector has permanent gaps, and "the vector
// covers this dot" says nothing about keys that entered the scope later. The
// parent's log index is gap-free for the child: everything in scope up to the
// position has been applied, under the scope of `scope_version`. A change of
// scope while connected ships entering keys whole and drops leaving ones
// in-band; a position with an old scope version, an old epoch (the parent was
// restored or recreated) or a trimmed index triggers reconciliation. Between
// the scope provider's change and the engine's sending of it, positions name
// no scope version: the stream is already filtered by a scope not announced.
//
// REQUIRES: external synchronization (the runtime's single thread).
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "canopy/v1/sync.pb.h"
#include "store/decode_scratch.h"
#include "store/store.h"
#include "sync/engine/channel.h"
#include "sync/engine/env.h"
#include "sync/engine/ready.h"
#include "sync/engine/store_view.h"
#include "sync/protocol.h"
#include "sync/scope.h"
#include "sync/transport.h"

namespace canopy::sync {

struct ParentOptions {
  size_t max_concurrent_catchups = 32;
  size_t window = 16;  // sequenced messages in flight per session
  uint64_t rto_ms = 1000;
  // A child silent this long (it heartbeats every 2 s) is away: nothing more
  // is sent or resent to it, and committed changes are not queued for it.
  // When it speaks again the session resumes where its acks left it: the
  // unacked messages are resent and what it missed is read from the log.
  uint64_t away_after_ms = 10'000;
  // Silence after which a session is forgotten (the child then says hello
  // again). Edge links drop for minutes; an away session costs what an idle
  // one does, plus the messages it had in flight (at most `window`).
  uint64_t session_timeout_ms = 600'000;
  uint64_t idle_position_ms = 5'000;  // how often an idle live child learns the log moved
  // Symbols in the first batch of a reconciliation's sketch (each later
  // batch doubles what was sent). A difference of d documents takes about
  // 2.8 d symbols (two ids per document that changed). 8 decode one changed
  // document at once 98 % of the time (4: 86 %; a second round 12 %, a third
  // 1.7 %, each a round trip and twice the symbols of the one before), for
  // ~56 bytes more than 4: docs/sync-protocol.md.
  size_t sketch_first_symbols = 8;
  // Larger messages are refused on receipt. What we send is batched under
  // the transport's payload limit instead (set_payload_limit).
  size_t max_message_bytes = 64 << 20;
  size_t max_pending_entries = 10'000;  // live backlog before a session falls back to catch-up
  size_t log_read_limit = 512;          // entries per log read during catch-up
  // After a failed read of our store, a session's catch-up or reconciliation
  // starts over this much later (holding no slot meanwhile).
  uint64_t read_retry_ms = 1'000;
  // How often tick() visits every session: for the away and expiry checks
  // and the idle position (seconds apart). A session with messages in
  // flight, a catch-up or a retry due is visited at every tick.
  uint64_t idle_sweep_ms = 500;
  // This hub's own parents (a regional hub's: the root's hubs), told to each
  // child in the welcome: a child whose parents fall silent tries them, and
  // they redirect it to the hub that serves it (docs/hierarchy.md).
  std::vector<std::string> ancestors;
};

struct ChildInfo {
  std::string name;
  uint64_t replica_id = 0;
  std::string mode;  // waiting | catch-up | reconcile | live
  bool connected = false;
  uint64_t last_seen_ms = 0;
  uint64_t acked_index = 0;  // the child's acknowledged position in our log
  size_t unacked = 0;        // our sequenced messages it has not acked yet
  std::map<std::string, std::string> labels;
};

// What the hub's presence reads of each session every second: children()
// without its copies (labels, modes).
struct ChildLiveness {
  std::string name;
  bool connected = false;
  uint64_t last_seen_ms = 0;
};

struct ParentStats {
  uint64_t refused_messages = 0;  // garbage, wrong addressee, stale session
  uint64_t refused_writes = 0;    // child writes outside its writable scope
  uint64_t unserved_hellos = 0;   // hellos of children this parent does not serve
  // Children sent elsewhere: an unserved hello answered with the hub that
  // serves the child, or a session ended because the child moved (sent to
  // this hub's own parent).
  uint64_t redirects = 0;
  // Messages on the subjects of a child the admit hook refuses (a revoked
  // site); counted in refused_messages too.
  uint64_t refused_not_admitted = 0;
  uint64_t reconciliations = 0;
  uint64_t catchups = 0;
  uint64_t bytes_sent = 0;
  uint64_t documents_sent = 0;  // whole documents (reconciliation, scope entry)
  uint64_t sketch_symbols_sent = 0;
  uint64_t deltas_sent = 0;    // log entries with a delta in sequenced Changes (not resends)
  uint64_t read_failures = 0;  // failed reads of our store while serving a session
};

class ParentSync {
 public:
  using HelloHook = std::function<void(const std::string& child, const v1::Hello& hello)>;
  using AdmitHook = std::function<bool(const std::string& child)>;

  // Reads `store` (not owned) through a view; or reads `view` (not owned).
  ParentSync(std::string name, Store* store, ScopeProvider* scope, Env env, ParentOptions options);
  ParentSync(std::string name, StoreView* view, ScopeProvider* scope, Env env,
             ParentOptions options);
  ~ParentSync();

  const std::string& name() const { return name_; }
  // The subject pattern the runtime subscribes for this engine.
  std::string subscription() const;
  // Called when a child says hello (the hub records its labels).
  void set_hello_hook(HelloHook hook) { hello_hook_ = std::move(hook); }
  // Asked for every message once its subject and envelope agree: a child it
  // refuses (a revoked site) is refused and counted, and its session dropped.
  void set_admit_hook(AdmitHook hook) { admit_hook_ = std::move(hook); }

  void on_message(const Message& message);
  void on_commit(const v1::LogEntry& entry);
  void on_scope_change(const ScopeChange& change);
  // Committed changes were not delivered (the runtime's queue was full):
  // sessions that relied on on_commit read the log instead.
  void on_commits_lost();
  // A scope change of `child` was not delivered: its session reconciles.
  void on_scope_lost(const std::string& child);
  void tick();
  // Ends a batch of inputs: pumps the sessions with new live changes and
  // queues the acks owed. Its messages come out of the next take_ready.
  void flush() {
    while (flush_some(SIZE_MAX)) {
    }
  }
  // flush() in parts: pumps at most `max_sessions` of them and returns true
  // while some remain (call again, after taking the Ready if you like: a
  // change to many children then goes out while the rest is built). No other
  // input may come between the parts.
  bool flush_some(size_t max_sessions);
  // What the inputs since the last call produced. After taking a Ready with
  // writes, the caller persists them and calls advance() before the next
  // input.
  Ready take_ready();
  // The outcome of persisting the last Ready's writes.
  void advance(const Status& persisted);
  // The transport's current payload limit (it is known only once connected);
  // batches are built to fit under it.
  void set_payload_limit(size_t bytes) { payload_limit_ = bytes; }

  std::vector<ChildInfo> children() const;
  std::vector<ChildLiveness> liveness() const;  // sorted by name
  const ParentStats& stats() const { return stats_; }
  size_t session_count() const { return sessions_.size(); }
  // Smallest HLC every live child has acknowledged (0 when unknown): the
  // frontier below which tombstones in their scopes are stable.
  uint64_t acknowledged_hlc() const;

 private:
  struct Session;
  enum class Mode { kWaiting, kCatchup, kReconcile, kLive };
  // A log entry on its way down, encoded once: a committed change goes to
  // every session whose scope holds it, and each of their envelopes embeds
  // these same bytes (only the envelope's header and position differ).
  struct Outgoing {
    explicit Outgoing(v1::LogEntry e);
    v1::LogEntry entry;
    std::string bytes;  // entry.SerializeAsString()
    uint64_t hlc = 0;   // its delta's HLC (0: a whole state)
  };
  using OutgoingPtr = std::shared_ptr<const Outgoing>;

  void handle_hello(const std::string& child, const v1::SyncEnvelope& env);
  // Where a child this hub does not serve should say hello: the hub below
  // that serves it (ScopeProvider::redirect_for: the first of them in
  // session with us and not away, else the first), else this hub's own
  // parent, which knows more (empty at a root that knows nothing of it).
  std::string redirect_target(const std::string& child);

 public:
  // What dropping `keys` from our store (our child engine's work, about to
  // be persisted) makes of our children's positions, to persist before the
  // drop in its batch: the up positions of the children holding them are
  // forgotten, their next sessions from a position up to now reconcile, and
  // their live sessions reconcile once the drop is persisted: call
  // `drops_persisted` then (a reconciliation started before would compare
  // documents about to go, and the child would take them as held here).
  std::vector<Write> drop_marks(const std::vector<std::string>& keys);
  void drops_persisted() { grant_slots(); }

 private:
  // The child fell silent (away_after_ms), or spoke again.
  void go_away(Session* s);
  void resume(Session* s);
  void handle_ack(Session* s, const v1::Ack& ack);
  // The refusals kept for the child (Session::refused), and telling it of them.
  static v1::Changes refusals(const Session& s);
  void send_refusals(Session* s);
  // Queues the writes of the child's changes; `owner` keeps `env` alive.
  void handle_changes(Session* s, const v1::SyncEnvelope& env, std::shared_ptr<const void> owner);
  void handle_sketch_reply(Session* s, const v1::SketchReply& reply);
  void send_sketch(Session* s, size_t n);
  // (key, id) of every document in the child's scope (Store::doc_hashes).
  StatusOr<std::vector<std::pair<std::string, uint64_t>>> scope_hashes(const std::string& child);
  void send_documents(Session* s, const std::vector<std::string>& keys);
  // Sends every document in the child's scope, then ends the
  // reconciliation.
  void send_whole(Session* s);
  // Every document in the child's scope, in key order: the scope's listing
  // when the provider gives one (ScopeProvider::list_scope), else all we
  // hold, filtered.
  StatusOr<std::vector<v1::DocState>> scope_states(const std::string& child);
  // Moves documents from (*docs)[i] on into `c` while they fit under the
  // batch limit (at least one); returns the index of the first left out.
  size_t add_documents(std::vector<v1::DocState>* docs, size_t i, v1::Changes* c);
  void refuse(const std::string& why, const Message& m);
  void send_control(const std::string& child, uint64_t session, v1::SyncEnvelope env);
  // Sends `env` with sequence number, acks and position bookkeeping. The
  // entries in `encoded` are part of its Changes, ahead of any in `env`
  // (which then holds none): their bytes go into the message as they are.
  void send_sequenced(Session* s, v1::SyncEnvelope env, const OutgoingPtr* encoded = nullptr,
                      size_t encoded_count = 0);
  void pump(Session* s);
  void pump_catchup(Session* s);
  void pump_live(Session* s);
  void start_down(Session* s, Mode mode);
  void start_reconcile(Session* s);
  void finish_reconcile(Session* s);
  void grant_slots();
  void release_slot(Session* s);
  void drop_session(const std::string& child);
  // Stops the session's down stream and (if `queue`) queues it for a slot,
  // to start `mode`.
  void fall_back(Session* s, Mode mode, bool queue = true);
  // A read of our store failed while serving `s`: give its slot up and
  // start `mode` over in read_retry_ms (not at once, which would fail again).
  void retry_later(Session* s, Mode mode);
  // `s` has messages in flight, a catch-up, or a retry due: tick() visits
  // it every tick until it has none.
  void note_busy(Session* s);
  // Heard from within away_after_ms: what ChildInfo and ChildLiveness call
  // connected; tick() marks a session away once it is not.
  bool heard_lately(const Session* s, uint64_t now) const;
  // Whether `e` goes to the child: not an echo, and in its scope.
  bool wanted(const Session* s, const v1::LogEntry& e) const;
  // Whether `e` is the child's own write, which is not sent back to it.
  static bool echo(const Session* s, const v1::LogEntry& e);
  // `c` takes the child to our log position `index` (send_sequenced may
  // shorten it); the session notes what it last reported, and when.
  void set_position(Session* s, v1::Changes* c, uint64_t index);
  // Splits `entries` into Changes messages under the payload limit.
  void send_entries(Session* s, const std::vector<OutgoingPtr>& entries, bool with_position,
                    uint64_t final_index);

  // A decoding arena for one received message. Its first block is scratch_
  // unless a Ready not yet persisted still holds the arena that used it.
  std::shared_ptr<google::protobuf::Arena> decode_arena();

  std::string name_;
  std::unique_ptr<StoreView> owned_view_;
  StoreView* store_;
  ScopeProvider* scope_;
  Env env_;
  ParentOptions opts_;
  HelloHook hello_hook_;
  AdmitHook admit_hook_;
  std::map<std::string, std::unique_ptr<Session>> sessions_;
  std::deque<std::string> waiting_;
  // Sessions with pending live changes, by child; kept sorted and unique
  // when appended in order (a fan-out), else sorted when flushed.
  std::vector<std::string> dirty_;
  bool dirty_sorted_ = true;
  size_t dirty_done_ = 0;  // pumped by flush_some so far
  void mark_dirty(const std::string& child);
  // sessions_ again, for the paths that visit every session or many: in
  // order as a vector (tick), and by name in a hash table (a change's
  // fan-out). Rebuilt by tick() after sessions come or go; until then
  // find_session() reads sessions_.
  std::vector<Session*> sweep_;
  // Sessions tick() visits at every tick until they are idle again (see
  // note_busy); the others every idle_sweep_ms (next_sweep_ms_).
  std::vector<Session*> busy_;
  uint64_t next_sweep_ms_ = 0;
  std::unordered_map<std::string_view, Session*> by_name_;
  bool index_stale_ = true;
  std::vector<OutgoingPtr> batch_scratch_;  // send_entries' (not reentrant)
  Session* find_session(const std::string& child);
  // Calls f(child, its session or nullptr) for each of `children`, in order.
  // The callback must not add or remove sessions.
  template <typename F>
  void for_sessions(const std::string* first, const std::string* last, F f);
  void refresh_index();
  std::set<std::string> acks_due_;  // sessions that may owe the child an ack
  size_t slots_in_use_ = 0;
  uint64_t sessions_opened_ = 0;  // Session::opening
  uint64_t last_commit_index_ = 0;
  std::vector<Message> outbox_;
  std::vector<Write> writes_;
  // The last Ready carried writes and advance() has not been called yet: no
  // input may come before it (what it would read may not be on disk).
  bool awaiting_advance_ = false;
  // Receive positions taken by messages whose writes are not yet persisted:
  // (child, session, position before), restored if persisting fails.
  struct Unpersisted {
    std::string child;
    uint64_t session;
    RecvChannel before;
  };
  std::vector<Unpersisted> unpersisted_;
  DecodeScratch scratch_;  // for decoding each received message
  std::weak_ptr<google::protobuf::Arena> scratch_user_;
  size_t payload_limit_ = 1 << 20;
  size_t batch_limit() const {
    const size_t cap = std::min(payload_limit_, opts_.max_message_bytes);
    return cap > 8192 ? cap - 4096 : cap / 2;  // room for the envelope
  }
  std::map<std::string, uint64_t> last_reset_ms_;
  ParentStats stats_;
};

}  // namespace canopy::sync

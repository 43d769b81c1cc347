// ChildSync: the child side of a sync session with one parent.
//
// Like ParentSync, a state machine without I/O: it reads the store through a
// StoreView, and its writes (the parent's changes, its position) come out of
// `take_ready` with the messages, to be persisted before those are sent
// (ready.h). If persisting fails, the child starts a new session from what
// is on disk. The child says hello with its
// persisted position in the parent's log (local meta `sync/down/<parent>`),
// applies the parent's sequenced messages strictly in order, persists each new
// position after applying, and acks. It streams its own writes (log entries
// that did not come from the parent) up, from the position the parent reports
// in its welcome; when its own log no longer reaches back that far it sends
// the whole documents that carry its writes instead.
//
// Hello is retried with jittered exponential backoff until a welcome arrives;
// a reset from the parent (it restarted and lost the session) starts over.
// While the bus is down nothing is lost: the store keeps working locally and
// the session resumes, or reopens, when the bus returns.
//
// Failover (active-active parents, docs/hierarchy.md): a child may be given
// other parents of the same level (ChildOptions::fallback_parents). It then
// asks for an answer on each heartbeat (Ack.ping), and when its parent has
// been silent for `failover_after_ms` while the bus is up (a hub that died
// leaves NATS carrying our messages to no one), or a hello went unanswered
// that long, it says hello to the next parent in the list. Its position in
// each parent's log is kept apart (`sync/down/<parent>`): a session with a new
// parent reconciles by sketch (only the difference is sent). The position in
// the parent it leaves is forgotten: what the next one makes it drop would
// make that position claim keys it no longer holds.
//
// Documents that carry the child's own writes are never dropped by a scope
// change or reconciliation: they must flow up first.
//
// REQUIRES: external synchronization (the runtime's single thread).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "canopy/v1/sync.pb.h"
#include "store/decode_scratch.h"
#include "store/store.h"
#include "sync/engine/channel.h"
#include "sync/engine/env.h"
#include "sync/engine/ready.h"
#include "sync/engine/sketch_receiver.h"
#include "sync/engine/store_view.h"
#include "sync/transport.h"

namespace canopy::sync {

struct ChildOptions {
  std::map<std::string, std::string> labels;  // sent in hello
  std::string software_version;
  uint64_t hello_backoff_min_ms = 200;
  uint64_t hello_backoff_max_ms = 30'000;
  uint64_t heartbeat_ms = 2'000;
  // After how long a silence the parent forgets a session
  // (ParentOptions::session_timeout_ms): after an outage this long, the
  // child says hello at once on reconnecting. The parent's welcome
  // announces its own; this holds until the first welcome.
  uint64_t parent_session_timeout_ms = 600'000;
  size_t window = 16;
  uint64_t rto_ms = 1000;
  // Delayed acks, as TCP's: what was applied is acked with our next
  // sequenced message, once `ack_every` messages are unacked, when the
  // parent resent one, or at the first tick `ack_delay_ms` after the oldest
  // unacked one; 0 acks at the end of every batch. A change to many
  // children then reaches them all before their acks come back to compete
  // with it for the parent's and the bus's CPU (sync.fanout). Well under
  // the parent's rto_ms: an ack this late is not a loss.
  uint64_t ack_delay_ms = 100;
  uint64_t ack_every = 8;
  // Larger messages are refused on receipt. What we send is batched under
  // the transport's payload limit instead (set_payload_limit).
  size_t max_message_bytes = 64 << 20;
  size_t log_read_limit = 512;
  // Other parents of the same level, tried in order after the first when
  // it falls silent (see above). Empty: no failover, no pings.
  std::vector<std::string> fallback_parents;
  // Silence after which the child fails over; 0: three heartbeats. With
  // fallbacks, heartbeats are at most 1 s apart (so 3 s by default).
  uint64_t failover_after_ms = 0;
  // Moves (docs/hierarchy.md): subscribe every hub's down subject for this
  // child (canopy.v1.*.<name>.down, what a site's NATS permissions allow),
  // keep the ancestors a welcome names (persisted), fail over to them when
  // every parent falls silent, and follow a hub's Redirect to the hub that
  // serves this child now. canopy-spoke sets it: a site with one parent then
  // follows its move to another region by itself.
  bool follow_redirects = false;
  // A session with a peer hub below a parent (a region's hubs,
  // docs/hierarchy.md): the keys this child may not write to the peer came
  // from the parent above, which alone decides whether they stay. Such a
  // key is never dropped here, whatever the peer holds or refuses; what may
  // be written flows both ways as usual.
  bool keep_unwritable = false;
  // Anti-entropy: this long after the last reconciliation ended (or a
  // session opened without one), reconcile again: a hello without a
  // position, which compares every document of the scope. 0: never.
  // canopy-hub sets it on its session with a peer hub: what the log stream
  // cannot repair — a child restored from an old backup reusing a seq that
  // two hubs of one level saw for two different writes, each discarding the
  // other's as a duplicate — only a comparison of documents finds.
  uint64_t reconcile_every_ms = 0;
};

struct ChildStats {
  uint64_t refused_messages = 0;
  uint64_t hellos = 0;
  uint64_t resets = 0;
  uint64_t applied_messages = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t documents_received = 0;
  uint64_t dropped_keys = 0;
  uint64_t deltas_sent = 0;  // log entries with a delta in sequenced Changes (not resends)
  uint64_t failovers = 0;    // sessions moved to another parent
  uint64_t other_parent_messages = 0;  // from a parent of ours we are not in session with
  uint64_t redirects = 0;              // redirects to another hub, followed
  uint64_t anti_entropy_rounds = 0;    // reconciliations started by reconcile_every_ms
};

class ChildSync {
 public:
  // Reads `store` (not owned) through a view; or reads `view` (not owned).
  ChildSync(std::string name, std::string parent, Store* store, Env env, ChildOptions options);
  ChildSync(std::string name, std::string parent, StoreView* view, Env env, ChildOptions options);

  const std::string& name() const { return name_; }
  // The parent of the current session (or of the next hello).
  const std::string& parent() const { return parent_; }
  // Every parent it may sync with: the first, then the fallbacks.
  const std::vector<std::string>& parents() const { return parents_; }
  // The local meta name under which the position in `parent`'s log is kept.
  static std::string down_position_key(const std::string& parent);
  // The subjects to subscribe: each parent's down subject for this child.
  std::vector<std::string> subscriptions() const;

  // Starts (or restarts) the session: a hello goes out on the next tick.
  void start();
  void on_message(const Message& message);
  void on_commit(const v1::LogEntry& entry);
  // Committed changes were not delivered (the runtime's queue was full).
  void on_commits_lost() { pump_up(); }
  void on_connection(bool connected);
  void tick();
  // The earliest time at which tick() has something to do (0: at once;
  // UINT64_MAX: nothing until an input comes). Before it, tick() changes
  // nothing and sends nothing, so a runtime driving many engines may tick
  // each only when it is due.
  uint64_t next_tick_ms() const;
  // Ends a batch of inputs: queues the ack owed for what was applied.
  void flush();
  // What the inputs since the last call produced (see ParentSync::take_ready).
  Ready take_ready();
  // The outcome of persisting the last Ready's writes.
  void advance(const Status& persisted);
  // The transport's current payload limit (it is known only once connected);
  // batches are built to fit under it.
  void set_payload_limit(size_t bytes) { payload_limit_ = bytes; }

  // True once a welcome was received and the session is open.
  bool active() const { return state_ == State::kActive; }
  // True when active, nothing of ours awaits an ack, and the parent sent a
  // position (no reconciliation running).
  bool in_sync() const;
  const ChildStats& stats() const { return stats_; }
  v1::LogPosition down_position() const { return down_; }

 private:
  enum class State { kIdle, kHello, kActive };

  void send_hello();
  bool failover_enabled() const { return hubs_.size() > 1; }
  uint64_t heartbeat_ms() const {
    // With somewhere to fail over to, a parent's death is noticed within
    // three heartbeats: at most a second apart (docs/hierarchy.md).
    return failover_enabled() ? std::min<uint64_t>(opts_.heartbeat_ms, 1000) : opts_.heartbeat_ms;
  }
  uint64_t failover_after_ms() const {
    return opts_.failover_after_ms != 0 ? opts_.failover_after_ms : 3 * heartbeat_ms();
  }
  // When the current parent counts as silent (UINT64_MAX: never).
  uint64_t failover_due_ms() const;
  // How long the current hub is given: failover_after_ms, doubled after each
  // round of the whole list of hubs without a welcome (at most 16 times), so
  // that sites whose every hub is down (a dead region and a root that sends
  // them back to it) do not keep hammering the hubs that are up.
  uint64_t failover_wait_ms() const;
  // Moves to the next parent (then the ancestors): its saved position, a new hello.
  void fail_over(const char* why);
  // Says hello to `to` instead of the current parent.
  void switch_parent(const std::string& to);
  // A hub we said hello to names the one that serves us.
  void follow_redirect(const std::string& to, const Message& m);
  // The ancestors a welcome named: kept, and persisted when they changed.
  void learn_ancestors(const v1::Welcome& w);
  bool knows_hub(const std::string& hub) const;
  // Recomputes hubs_ after parents_ or ancestors_ changed.
  void update_hubs();
  void load_down_position();
  void load_ancestors();
  void load_forgotten();
  Write save_forgotten();
  void load_up_whole();
  // Whether documents wait to go up whole (up_docs_pending_ or _unacked_).
  bool up_whole_awaited() const { return !up_docs_pending_.empty() || !up_docs_unacked_.empty(); }
  void send_control(v1::SyncEnvelope env);
  void send_sequenced(v1::SyncEnvelope env);
  void send_ack(bool gap);
  // We told the parent we applied through `seq` (an ack, or riding on a
  // sequenced message): nothing is owed until the next one.
  void acked(uint64_t seq);
  // When the delayed ack of what we applied is due (see flush()); UINT64_MAX
  // when nothing is owed, it is not yet timed, or the connection is down.
  uint64_t delayed_ack_due_ms() const;
  void refuse(const std::string& why, const Message& m);
  void handle_welcome(const v1::SyncEnvelope& env);
  // Takes the up stream from the parent's position `up` (restored: from
  // nothing) and starts it.
  void open_up(const v1::LogPosition& up, bool restored);
  // The parent acked our sequenced messages through `seq` (alone, or riding
  // on one of its own): resend what it reports missing.
  void handle_up_ack(uint64_t seq, bool gap);
  // Queues the writes of the parent's changes; `owner` keeps `c` alive.
  // False if they cannot be applied (nothing queued).
  bool apply_changes(const v1::Changes& c, const std::shared_ptr<const void>& owner);
  std::shared_ptr<google::protobuf::Arena> decode_arena();  // as ParentSync's
  void answer_sketch(const v1::Sketch& k);
  void pump_up();
  // Sends `entries` (whole documents) up, in messages under the batch limit.
  void send_whole_up(std::vector<v1::LogEntry> entries);
  // A log entry of a key we forgot, logged before we forgot it.
  bool forgotten(const v1::LogEntry& e) const;
  bool carries_own_writes(const v1::NodeState& s) const;
  // True for documents that must never be dropped here: they lie under a
  // prefix we may write (they flow up instead), or, until the parent has
  // told us those prefixes, carry our own writes. Once it has, our writes
  // elsewhere could never flow up (a regional hub's about a site that has
  // left it): they are dropped with the rest.
  bool keep(const v1::DocState& d) const;
  // Whether the parent lets us write `key` (its welcome's prefixes).
  bool may_write(std::string_view key) const;
  std::string restored_key() const;

  std::string name_;
  std::string parent_;
  std::vector<std::string> parents_;
  size_t parent_index_ = 0;
  std::vector<std::string> ancestors_;  // follow_redirects: the parent's parents
  // The order failover tries: parents_, then the ancestors not among them.
  std::vector<std::string> hubs_;
  int redirects_since_welcome_ = 0;  // since a welcome or failover: a loop is not followed
  uint32_t silent_rounds_ = 0;       // failovers since the last welcome
  uint64_t last_heard_ms_ = 0;       // last message of the current session from the parent
  uint64_t last_reconciled_ms_ = 0;  // when the session last was in step (reconcile_every_ms)
  uint64_t anti_entropy_due_ms() const;
  uint64_t hello_since_ms_ = 0;  // when the current parent was first greeted
  std::unique_ptr<StoreView> owned_view_;
  StoreView* store_;
  Env env_;
  ChildOptions opts_;
  State state_ = State::kIdle;
  uint64_t session_ = 0;
  uint64_t parent_replica_ = 0;
  uint64_t next_hello_ms_ = 0;
  uint64_t backoff_ms_ = 0;
  uint32_t persist_failures_ = 0;  // in a row: each delays the next hello more
  uint64_t last_heartbeat_ms_ = 0;
  SendChannel up_;
  RecvChannel down_recv_;
  v1::LogPosition down_;  // persisted position in the parent's log
  bool reconciling_ = false;
  std::unique_ptr<SketchReceiver> sketch_;  // a reconciliation in progress
  uint64_t up_sent_ = 0;                    // our log index covered by what was sent up
  uint64_t up_reported_ = 0;                // the last such index reported to the parent
  bool up_full_pending_ = false;
  bool up_full_after_restore_ = false;
  std::vector<std::string> writable_prefixes_;
  bool writable_known_ = false;  // writable_prefixes_ came from this session's parent
  // Documents the parent lacks or must judge again (a reconciliation found
  // them, or it refused older writes of them): sent up whole by pump_up.
  std::set<std::string> up_docs_pending_;
  uint64_t welcome_opening_ = 0;  // Welcome.opening of the session we are in
  // Those sent in this session and not yet all acknowledged: a new session
  // (the parent lost this one, a failed write there) sends them again, as
  // nothing in our log would (a document a reconciliation found).
  std::set<std::string> up_docs_unacked_;
  // Both sets live in memory only, and a position saved meanwhile does not
  // cover them (a reconciliation kept our write of a key outside our scope
  // for the parent to judge, and moved on). So while either holds a key, the
  // store says so (kUpWholeKey), written before the position: a restart then
  // forgets its position and reconciles, which finds them again (simulation
  // seed 30746 with moves and active-active roots, under a batching of scope
  // changes that moved a crash into that window).
  bool up_whole_marked_ = false;
  static constexpr std::string_view kUpWholeKey = "sync/up-whole";  // "1": marked
  // Keys we forgot because a parent refused our writes of them, with our
  // log's last index then: what our log holds of them up to there is not
  // sent up again (to another hub, or in a new session). Those documents
  // are gone here; a parent that accepted them, now that our scope took the
  // key back, would hold what we lack, and it sends no child its own
  // writes back. Later entries of the key (a member's, relayed) go up as
  // usual. Persisted with the drop (kForgottenKey), at most kForgottenMax.
  std::map<std::string, uint64_t> forgotten_;
  // The replica ids of the hubs that welcomed us (since this start): what
  // our log holds from them is not ours to send to another.
  std::set<uint64_t> hub_replicas_;
  bool connected_ = true;
  uint64_t parent_session_timeout_ms_ = 0;  // as the last welcome announced
  uint64_t last_sent_ms_ = 0;               // when a message last went out on a live connection
  bool ack_due_ = false;                    // applied a sequenced message, not yet acked
  bool ack_now_ = false;                    // the parent resent one: ack at the next flush
  uint64_t ack_due_since_ms_ = 0;           // when the oldest unacked one was applied
  uint64_t acked_sent_ = 0;                 // the last seq we acked
  std::vector<Message> outbox_;
  std::vector<Write> writes_;
  // The last Ready carried writes and advance() has not been called yet: no
  // input may come before it (what it would read may not be on disk).
  bool awaiting_advance_ = false;
  // A welcome found us restored: the up stream opens from the renewed log
  // once the writes that renew it are persisted.
  std::optional<v1::LogPosition> open_up_after_persist_;
  DecodeScratch scratch_;  // for decoding each received message
  std::weak_ptr<google::protobuf::Arena> scratch_user_;
  size_t payload_limit_ = 1 << 20;
  size_t batch_limit() const {
    const size_t cap = std::min(payload_limit_, opts_.max_message_bytes);
    return cap > 8192 ? cap - 4096 : cap / 2;  // room for the envelope
  }
  ChildStats stats_;
};

}  // namespace canopy::sync

// SyncNode: wires one replica's store and sync engines to a transport.
//
// Inbound messages (transport thread) and committed changes (store writer
// threads) are queued; run_once() hands them to the engines on the caller's
// thread. After each input it takes the engine's Ready (ready.h), persists
// its writes into the store and reports the outcome to the engine, so that
// the next input reads what the last one wrote; the messages of a Ready are
// published, at the end of run_once, only if its writes were persisted. The
// simulation calls run_once() itself; daemons run it on a SyncRuntime
// thread. A node may hold both engines: a regional hub is a child of its
// parent and a parent of its sites. It persists into a Store, or into any
// Persistence (ready.h): the benchmarks' light spokes keep theirs in memory.
//
// Every queue is bounded (NodeLimits). At the bound:
//   inbox         the oldest message is dropped and counted: sync recovers
//                 lost messages by acks and retransmission;
//   commits       no more are queued; the engines are told that commits were
//                 lost, and read the log instead (a live parent session falls
//                 back to catch-up; the child's up stream reads its log anyway);
//   scope changes no more are queued; the children whose changes were lost
//                 are remembered (one entry per child), and their sessions
//                 reconcile their whole scope;
//   connection    the oldest event is dropped: the newest, the current state,
//   events        is always kept.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "sync/engine/child.h"
#include "sync/engine/parent.h"
#include "sync/transport.h"

namespace canopy::sync {

struct NodeLimits {
  static constexpr size_t kMaxInbox = 10'000;
  static constexpr size_t kMaxCommits = 100'000;
  // One placement change can move every site of a fleet at once (100,000
  // sites is the design point); a queued ScopeChange is ~100 bytes (its key
  // lists are shared), so the bound holds such a change whole in ~10 MB
  // instead of making the sites past the bound reconcile in full.
  static constexpr size_t kMaxScopeChanges = 100'000;
  static constexpr size_t kMaxConnectionEvents = 64;
  size_t max_inbox = kMaxInbox;
  size_t max_commits = kMaxCommits;
  size_t max_scope_changes = kMaxScopeChanges;
  size_t max_connection_events = kMaxConnectionEvents;
};

struct NodeStats {
  uint64_t dropped_messages = 0;    // inbox full
  uint64_t lost_commits = 0;        // commit queue full
  uint64_t lost_scope_changes = 0;  // scope change queue full
  // Scope changes a later reconciling change of the same child superseded
  // in one batch (coalesce_scope_changes).
  uint64_t coalesced_scope_changes = 0;
  uint64_t dropped_connection_events = 0;
  uint64_t persist_failures = 0;  // Readies whose writes failed (their messages dropped)
  uint64_t publish_failures = 0;
  uint64_t messages_received = 0;  // queued from the transport (dropped ones included)
  uint64_t bytes_received = 0;
  uint64_t messages_published = 0;  // handed to the transport without error
  uint64_t bytes_published = 0;
  uint64_t deltas_persisted = 0;     // peers' deltas in persisted writes (new or not)
  uint64_t documents_persisted = 0;  // peers' whole documents in persisted writes
};

// Drops from `changes` every change of a child that a later reconciling
// change of the same child supersedes; keeps the order of the rest. Returns
// how many it dropped.
size_t coalesce_scope_changes(std::deque<ScopeChange>* changes);

class SyncNode {
 public:
  SyncNode(Store* store, Transport* transport, NodeLimits limits = {});
  // Persists into `persistence` (not owned) instead of a Store.
  SyncNode(Persistence* persistence, Transport* transport, NodeLimits limits = {});
  ~SyncNode();
  SyncNode(const SyncNode&) = delete;
  SyncNode& operator=(const SyncNode&) = delete;

  void set_parent_engine(std::unique_ptr<ParentSync> engine) { parent_ = std::move(engine); }
  void set_child_engine(std::unique_ptr<ChildSync> engine) { child_ = std::move(engine); }
  ParentSync* parent() { return parent_.get(); }
  ChildSync* child() { return child_.get(); }

  // Subscribes the engines' subjects and the store; starts the child's hello.
  Status attach();
  // Queues a scope change for the parent engine (thread-safe; the hub's
  // placement index calls it from the store's commit listener).
  void enqueue_scope_change(ScopeChange change);
  // Processes what is queued; with `tick`, runs the engines' timers too.
  // Returns true if anything was processed.
  bool run_once(bool tick);
  // When run_once(true) next has timer work (0: at once); an idle tick
  // before it does nothing. A parent engine is always due (its sessions'
  // timers are not tracked one by one). REQUIRES: the thread of run_once.
  uint64_t next_tick_ms() const;
  // Blocks until something is queued or `timeout_ms` passed.
  void wait(uint64_t timeout_ms);
  // Wakes wait() (used to stop a runtime).
  void wake();

  uint64_t publish_failures() const { return stats().publish_failures; }
  NodeStats stats() const;

  // Queues an inbound message, as the transport's subscription does
  // (thread-safe).
  void enqueue_message(Message message);

 private:
  void publish(std::vector<Message> messages);
  // Adds the peers' deltas and documents among `writes` to the stats.
  void count_persisted(const std::vector<Write>& writes);
  // Takes the engine's Ready, persists its writes, reports to the engine and
  // keeps the messages for publishing; repeats while the engine has more.
  template <typename Engine>
  void step(Engine* engine, std::vector<Message>* out);

  std::unique_ptr<Persistence> owned_persistence_;
  Persistence* persistence_;
  Transport* transport_;
  std::unique_ptr<ParentSync> parent_;
  std::unique_ptr<ChildSync> child_;
  std::vector<uint64_t> subscriptions_;
  uint64_t listener_ = 0;
  bool attached_ = false;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Message> inbox_;
  std::deque<v1::LogEntry> commits_;
  std::deque<ScopeChange> scope_changes_;
  std::deque<bool> connection_events_;
  bool commits_lost_ = false;
  std::set<std::string> scopes_lost_;  // children whose scope changes were not queued
  // run_once's batch, swapped with the queues above: kept between calls so
  // that a run (a tick of 10,000 simulated children, ten times a second)
  // allocates nothing when nothing came (a std::deque allocates when built).
  // Touched only by run_once's caller.
  std::deque<Message> inbox_batch_;
  std::deque<v1::LogEntry> commits_batch_;
  std::deque<ScopeChange> scopes_batch_;
  std::deque<bool> conns_batch_;
  size_t payload_ = 0;  // the transport's max_payload when last read (run_once)
  bool woken_ = false;
  NodeLimits limits_;
  NodeStats stats_;  // guarded by mu_
};

// Runs a SyncNode on its own thread, ticking every `tick_ms`. Given the
// engines' clock, it sleeps through ticks that have nothing to do instead
// (next_tick_ms(): a child with nothing in flight wakes for its heartbeat,
// not 20 times a second; a parent is always due, so a hub ticks as before),
// waking at once for anything queued.
class SyncRuntime {
 public:
  SyncRuntime(SyncNode* node, uint64_t tick_ms = 50, Clock* clock = nullptr);
  ~SyncRuntime();
  void start();
  void stop();
  // Runs `fn` on the runtime thread (with exclusive access to the engines)
  // and waits for it.
  void call(const std::function<void()>& fn);

 private:
  SyncNode* node_;
  uint64_t tick_ms_;
  Clock* clock_;
  std::thread thread_;
  std::mutex mu_;
  bool stop_ = false;
};

}  // namespace canopy::sync

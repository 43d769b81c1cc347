// SyncNode: wires one replica's store and sync engines to a transport.
//
// Inbound messages (transport thread) and committed changes (store writer
// threads) are queued; run_once() hands them to the engines on the caller's
// thread and publishes what the engines produced. The simulation calls
// run_once() itself; daemons run it on a SyncRuntime thread. A node may hold
// both engines: a regional hub is a child of its parent and a parent of its
// sites.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "sync/engine/child.h"
#include "sync/engine/parent.h"
#include "sync/transport.h"

namespace canopy::sync {

class SyncNode {
 public:
  SyncNode(Store* store, Transport* transport);
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
  // Blocks until something is queued or `timeout_ms` passed.
  void wait(uint64_t timeout_ms);
  // Wakes wait() (used to stop a runtime).
  void wake();

  uint64_t publish_failures() const { return publish_failures_; }

 private:
  void publish(std::vector<Message> messages);

  Store* store_;
  Transport* transport_;
  std::unique_ptr<ParentSync> parent_;
  std::unique_ptr<ChildSync> child_;
  std::vector<uint64_t> subscriptions_;
  uint64_t listener_ = 0;
  bool attached_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Message> inbox_;
  std::deque<v1::LogEntry> commits_;
  std::deque<ScopeChange> scope_changes_;
  std::deque<bool> connection_events_;
  bool woken_ = false;
  uint64_t publish_failures_ = 0;
};

// Runs a SyncNode on its own thread, ticking every `tick_ms`.
class SyncRuntime {
 public:
  SyncRuntime(SyncNode* node, uint64_t tick_ms = 50);
  ~SyncRuntime();
  void start();
  void stop();
  // Runs `fn` on the runtime thread (with exclusive access to the engines)
  // and waits for it.
  void call(const std::function<void()>& fn);

 private:
  SyncNode* node_;
  uint64_t tick_ms_;
  std::thread thread_;
  std::mutex mu_;
  bool stop_ = false;
};

}  // namespace canopy::sync

#include "sync/engine/node.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <type_traits>
#include <unordered_set>

namespace canopy::sync {

// The longest a runtime given a clock sleeps without being due: a bound on
// what a missed wake-up could cost.
constexpr uint64_t kMaxIdleWaitMs = 1000;

SyncNode::SyncNode(Store* store, Transport* transport, NodeLimits limits)
    : owned_persistence_(std::make_unique<StorePersistence>(store)),
      persistence_(owned_persistence_.get()),
      transport_(transport),
      limits_(limits) {}

SyncNode::SyncNode(Persistence* persistence, Transport* transport, NodeLimits limits)
    : persistence_(persistence), transport_(transport), limits_(limits) {}

SyncNode::~SyncNode() {
  for (uint64_t id : subscriptions_) transport_->unsubscribe(id);
  if (listener_ != 0) persistence_->unsubscribe(listener_);
}

Status SyncNode::attach() {
  if (attached_) return ok_status();
  auto on_message = [this](Message& m) { enqueue_message(std::move(m)); };
  if (parent_) {
    auto id = transport_->subscribe(parent_->subscription(), on_message);
    if (!id.ok()) return id.status();
    subscriptions_.push_back(*id);
  }
  if (child_) {
    for (const auto& subject : child_->subscriptions()) {
      auto id = transport_->subscribe(subject, on_message);
      if (!id.ok()) return id.status();
      subscriptions_.push_back(*id);
    }
    child_->start();
  }
  transport_->on_state_change([this](bool connected) {
    {
      std::lock_guard lock(mu_);
      if (connection_events_.size() >= limits_.max_connection_events) {
        connection_events_.pop_front();
        ++stats_.dropped_connection_events;
      }
      connection_events_.push_back(connected);
    }
    cv_.notify_one();
  });
  // Runs under the store's lock: copy and return.
  listener_ = persistence_->subscribe([this](const v1::LogEntry& e) {
    {
      std::lock_guard lock(mu_);
      if (commits_.size() >= limits_.max_commits) {
        commits_lost_ = true;
        ++stats_.lost_commits;
      } else {
        commits_.push_back(e);
      }
    }
    cv_.notify_one();
  });
  attached_ = true;
  return ok_status();
}

void SyncNode::enqueue_message(Message message) {
  {
    std::lock_guard lock(mu_);
    ++stats_.messages_received;
    stats_.bytes_received += message.data.size();
    if (inbox_.size() >= limits_.max_inbox) {
      inbox_.pop_front();
      ++stats_.dropped_messages;
    }
    inbox_.push_back(std::move(message));
  }
  cv_.notify_one();
}

void SyncNode::enqueue_scope_change(ScopeChange change) {
  {
    std::lock_guard lock(mu_);
    if (scope_changes_.size() >= limits_.max_scope_changes) {
      scopes_lost_.insert(change.child);
      ++stats_.lost_scope_changes;
    } else {
      scope_changes_.push_back(std::move(change));
    }
  }
  cv_.notify_one();
}

NodeStats SyncNode::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void SyncNode::publish(std::vector<Message> messages) {
  uint64_t published = 0, bytes = 0;
  for (const Message& m : messages) {
    Status st = transport_->publish(m.subject, m.data);
    if (st.ok()) {
      ++published;
      bytes += m.data.size();
    }
    // Lost messages are recovered by acks and retransmission; count them, and
    // say why unless it is the plain outage case (now and then).
    if (!st.ok()) {
      uint64_t failures = 0;
      {
        std::lock_guard lock(mu_);
        failures = stats_.publish_failures++;
      }
      if (failures % 1000 == 0 && st.code() != StatusCode::kUnavailable) {
        spdlog::warn("sync: publishing {} bytes on {} failed: {}", m.data.size(), m.subject,
                     st.to_string());
      }
    }
  }
  if (published > 0) {
    std::lock_guard lock(mu_);
    stats_.messages_published += published;
    stats_.bytes_published += bytes;
  }
}

void SyncNode::count_persisted(const std::vector<Write>& writes) {
  uint64_t deltas = 0, documents = 0;
  for (const Write& w : writes) {
    if (w.kind == Write::Kind::kApplyDeltas) deltas += w.deltas.size();
    if (w.kind == Write::Kind::kApplyStates) documents += w.docs.size();
  }
  if (deltas == 0 && documents == 0) return;
  std::lock_guard lock(mu_);
  stats_.deltas_persisted += deltas;
  stats_.documents_persisted += documents;
}

namespace {
constexpr size_t kFlushPart = 500;  // sessions pumped before their messages go out
}  // namespace

size_t coalesce_scope_changes(std::deque<ScopeChange>* changes) {
  // A reconciling change covers the child's whole scope (what it may write
  // too, and its version as it is when handled): what was queued for the
  // same child before it says nothing more. A commit that moves a thousand
  // sites into one region queues a reconciling change of the region (and of
  // each hub's peers) per site; one reconciliation does for all of them.
  if (changes->size() < 2) return 0;
  std::unordered_set<std::string_view> reconciled;
  std::vector<bool> keep(changes->size(), true);
  size_t dropped = 0;
  for (size_t i = changes->size(); i-- > 0;) {
    const ScopeChange& c = (*changes)[i];
    if (reconciled.contains(c.child)) {
      keep[i] = false;
      ++dropped;
    } else if (c.reconcile) {
      reconciled.insert(c.child);
    }
  }
  if (dropped == 0) return 0;
  std::deque<ScopeChange> kept;
  for (size_t i = 0; i < changes->size(); ++i) {
    if (keep[i]) kept.push_back(std::move((*changes)[i]));
  }
  changes->swap(kept);
  return dropped;
}

template <typename Engine>
void SyncNode::step(Engine* engine, std::vector<Message>* out) {
  // advance() may produce more (work that reads what was just persisted);
  // it never loops on itself, so two rounds are the most seen.
  for (int round = 0;; ++round) {
    CANOPY_CHECK(round < 8);
    Ready ready = engine->take_ready();
    if (ready.empty()) return;
    [[maybe_unused]] bool dropped = false;
    if constexpr (std::is_same_v<Engine, ChildSync>) {
      if (parent_) {
        // Keys our parent took away: what that makes of our own children's
        // positions goes first in the same batch, so that no crash keeps the
        // drop without it.
        std::vector<Write> marks;
        for (const Write& w : ready.writes) {
          if (w.kind != Write::Kind::kDrop) continue;
          dropped = true;
          auto more = parent_->drop_marks(w.keys);
          marks.insert(marks.end(), std::make_move_iterator(more.begin()),
                       std::make_move_iterator(more.end()));
        }
        if (!marks.empty()) {
          marks.insert(marks.end(), std::make_move_iterator(ready.writes.begin()),
                       std::make_move_iterator(ready.writes.end()));
          ready.writes = std::move(marks);
        }
      }
    }
    Status st = persistence_->persist(ready.writes);
    engine->advance(st);
    if (!st.ok()) {
      std::lock_guard lock(mu_);
      ++stats_.persist_failures;
      continue;  // what it would have sent (acks among it) stays unsent
    }
    count_persisted(ready.writes);
    if constexpr (std::is_same_v<Engine, ChildSync>) {
      if (parent_ && dropped) parent_->drops_persisted();
    }
    out->insert(out->end(), std::make_move_iterator(ready.messages.begin()),
                std::make_move_iterator(ready.messages.end()));
  }
}

bool SyncNode::run_once(bool tick) {
  std::deque<Message>& inbox = inbox_batch_;
  std::deque<v1::LogEntry>& commits = commits_batch_;
  std::deque<ScopeChange>& scopes = scopes_batch_;
  std::deque<bool>& conns = conns_batch_;
  bool commits_lost = false;
  std::set<std::string> scopes_lost;
  {
    std::lock_guard lock(mu_);
    inbox.swap(inbox_);
    commits.swap(commits_);
    scopes.swap(scope_changes_);
    conns.swap(connection_events_);
    std::swap(commits_lost, commits_lost_);
    scopes_lost.swap(scopes_lost_);
    woken_ = false;
  }
  const bool any = !inbox.empty() || !commits.empty() || !scopes.empty() || !conns.empty() ||
                   commits_lost || !scopes_lost.empty();
  if (const size_t coalesced = coalesce_scope_changes(&scopes); coalesced > 0) {
    std::lock_guard lock(mu_);
    stats_.coalesced_scope_changes += coalesced;
  }
  // The transport's limit is read when something came (NATS.c takes the
  // connection's lock for it), not at every idle tick: a tick's resends fit
  // the limit last read.
  if (any || payload_ == 0) {
    payload_ = transport_->max_payload();
    if (parent_) parent_->set_payload_limit(payload_);
    if (child_) child_->set_payload_limit(payload_);
  }
  std::vector<Message> parent_out, child_out;
  auto step_all = [&] {
    if (parent_) step(parent_.get(), &parent_out);
    if (child_) step(child_.get(), &child_out);
  };
  for (bool c : conns) {
    if (child_) child_->on_connection(c);
  }
  // Commits before scope changes: a scope change is computed after the commit
  // that caused it, and its documents are read from the store as they are now.
  for (const auto& e : commits) {
    if (parent_) parent_->on_commit(e);
    if (child_) child_->on_commit(e);
  }
  if (commits_lost) {
    if (parent_) parent_->on_commits_lost();
    if (child_) child_->on_commits_lost();
  }
  for (const auto& sc : scopes) {
    if (parent_) parent_->on_scope_change(sc);
  }
  for (const auto& child : scopes_lost) {
    if (parent_) parent_->on_scope_lost(child);
  }
  step_all();
  const std::string parent_subscription = parent_ ? parent_->subscription() : std::string();
  for (const auto& m : inbox) {
    if (parent_ && subject_matches(parent_subscription, m.subject)) {
      parent_->on_message(m);
    } else if (child_) {
      child_->on_message(m);
    }
    step_all();  // the next message reads what this one wrote
  }
  if (tick) {
    if (parent_) parent_->tick();
    if (child_) child_->tick();
  }
  if (parent_) {
    // A change for many children goes out in parts, each published as soon
    // as it is built (its Ready persisted: it has no writes), so that the
    // first children have it while the rest is being built.
    while (parent_->flush_some(kFlushPart)) {
      step(parent_.get(), &parent_out);
      publish(std::move(parent_out));
      parent_out.clear();
    }
  }
  if (child_) child_->flush();
  step_all();
  publish(std::move(parent_out));
  publish(std::move(child_out));
  inbox.clear();  // what the batch held goes now; the deques' first blocks stay
  commits.clear();
  scopes.clear();
  conns.clear();
  return any;
}

uint64_t SyncNode::next_tick_ms() const {
  if (parent_) return 0;
  return child_ ? child_->next_tick_ms() : UINT64_MAX;
}

void SyncNode::wait(uint64_t timeout_ms) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [this] {
    return woken_ || !inbox_.empty() || !commits_.empty() || !scope_changes_.empty() ||
           !connection_events_.empty();
  });
}

void SyncNode::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_one();
}

SyncRuntime::SyncRuntime(SyncNode* node, uint64_t tick_ms, Clock* clock)
    : node_(node), tick_ms_(tick_ms), clock_(clock) {}

SyncRuntime::~SyncRuntime() { stop(); }

void SyncRuntime::start() {
  thread_ = std::thread([this] {
    auto last_tick = std::chrono::steady_clock::now();
    for (;;) {
      uint64_t timeout = tick_ms_;
      {
        std::lock_guard lock(mu_);
        if (stop_) return;
        if (clock_ != nullptr) {
          const uint64_t due = node_->next_tick_ms(), now = clock_->now_ms();
          if (due > now + tick_ms_) timeout = std::min(due - now, kMaxIdleWaitMs);
        }
      }
      node_->wait(timeout);
      std::lock_guard lock(mu_);
      if (stop_) return;
      const auto now = std::chrono::steady_clock::now();
      const bool tick = now - last_tick >= std::chrono::milliseconds(tick_ms_);
      if (tick) last_tick = now;
      node_->run_once(tick);
    }
  });
}

void SyncRuntime::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  node_->wake();
  if (thread_.joinable()) thread_.join();
}

void SyncRuntime::call(const std::function<void()>& fn) {
  std::lock_guard lock(mu_);
  fn();
  node_->run_once(false);
}

}  // namespace canopy::sync

// Local writes: their limits, their staging, and the group commit that
// combines concurrent writers into one RocksDB batch and one fsync (a leader
// commits the writes queued behind it; a blocking writer waits for the
// outcome, an asynchronous one is completed by the sync thread once durable).
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <mutex>
#include <nlohmann/json.hpp>

#include "store/doc_merge.h"
#include "store/store.h"
#include "store/store_impl.h"

namespace canopy {

using namespace store_internal;

namespace {

// Nesting of objects and arrays, as parse_document counts it.
size_t json_depth(const json& j) {
  if (!j.is_object() && !j.is_array()) return 0;
  size_t d = 0;
  for (const auto& v : j) d = std::max(d, json_depth(v));
  return d + 1;
}

}  // namespace

Status Store::Impl::check_local_limits(const std::string& key, const json& target) const {
  const size_t bytes = target.dump().size();
  if (bytes > opts_.limits.max_doc_bytes) {
    return invalid_argument("document " + key + " of " + std::to_string(bytes) +
                            " bytes exceeds the limit of " +
                            std::to_string(opts_.limits.max_doc_bytes));
  }
  // The same depth limit as parse_document: a deeper document could be
  // written but never loaded again (Document::from_proto refuses it).
  if (json_depth(target) > opts_.limits.max_depth) {
    return invalid_argument("document " + key + " nests deeper than " +
                            std::to_string(opts_.limits.max_depth));
  }
  return ok_status();
}

StatusOr<v1::Delta> Store::Impl::stage_local(const std::string& key,
                                             const std::optional<json>& target_in,
                                             const json* merge_patch, rocksdb::WriteBatch* b,
                                             std::vector<v1::LogEntry>* entries,
                                             uint64_t if_version) {
  auto loaded = load(key);
  if (!loaded.ok()) return loaded.status();
  Document* doc = *loaded;
  if (if_version != 0 && (doc->exists() || target_in.has_value() || merge_patch != nullptr)) {
    // A delete of a document that does not exist is NotFound below, whatever
    // the version said.
    const uint64_t at = doc->max_hlc();
    if (at != if_version) {
      return Status(StatusCode::kAborted, "version " + std::to_string(if_version) +
                                              " is stale: it is at version " + std::to_string(at) +
                                              (doc->exists() ? "" : " (deleted)"));
    }
  }
  std::optional<json> patched;
  if (merge_patch != nullptr) {
    patched = apply_merge_patch(doc->exists() ? doc->to_value() : json::object(), *merge_patch);
    CANOPY_RETURN_IF_ERROR(check_local_limits(key, *patched));
  }
  const std::optional<json>& target = merge_patch != nullptr ? patched : target_in;

  v1::Delta delta;
  delta.set_key(key);
  if (target.has_value()) {
    std::vector<v1::FieldOp> ops;
    doc->diff(*target, &ops);
    for (auto& op : ops) *delta.add_ops() = std::move(op);
  } else {
    if (!doc->exists()) return not_found("document " + key + " does not exist");
    delta.add_ops()->set_kind(v1::FieldOp::REMOVE);
  }
  if (delta.ops_size() == 0) return delta;

  // Stamp above everything this write saw in the document, so that a causal
  // overwrite always wins, even over a value stamped by a clock running ahead.
  const uint64_t clock_stamp = hlc_.tick(clock_->now_ms());
  uint64_t stamp = clock_stamp;
  const uint64_t seen = doc->max_hlc();
  if (seen >= stamp) stamp = seen + 1;
  const uint64_t seq = meta_.next_seq();
  meta_.set_next_seq(seq + 1);
  delta.mutable_dot()->set_replica(meta_.replica_id());
  delta.mutable_dot()->set_seq(seq);
  delta.set_hlc(stamp);
  // What this write had seen of the document, and the clock reading that
  // skew is judged on when the stamp followed one from elsewhere.
  doc->causal_context(meta_.replica_id(), &delta);
  if (stamp != clock_stamp) delta.set_clock_hlc(clock_stamp);
  doc->apply(delta, nullptr);
  cache_.update(key);
  vv_.add(meta_.replica_id(), seq);
  stage_delta(b, delta, /*source=*/0, entries);
  return delta;
}

StatusOr<v1::Delta> Store::Impl::write_local(std::string_view key_view,
                                             const std::optional<json>& target,
                                             const json* merge_patch, uint64_t if_version) {
  const std::string key(key_view);
  CANOPY_RETURN_IF_ERROR(check_before_lock(key, target, merge_patch));
  LocalWrite w(key, target, merge_patch, if_version);
  std::vector<LocalWrite*> group;
  {
    std::unique_lock q(combine_mu_);
    if (combining_) {
      combine_queue_.push_back(&w);
      w.cv.wait(q, [&] { return w.state != LocalWrite::State::kQueued; });
      if (w.state == LocalWrite::State::kDone) return std::move(w.result);
    }
    group = lead_with(&w);
  }
  if (commit_group(group)) lead_orphans();
  return std::move(w.result);
}

Status Store::Impl::check_before_lock(const std::string& key, const std::optional<json>& target,
                                      const json* merge_patch) const {
  CANOPY_RETURN_IF_ERROR(validate_key(key, opts_.limits.max_key_bytes));
  // A whole target is checked before the lock is taken (writers wait for
  // nobody's serialization); a patched one exists only under the lock.
  if (merge_patch == nullptr && target.has_value()) {
    CANOPY_RETURN_IF_ERROR(check_local_limits(key, *target));
  }
  return ok_status();
}

std::vector<Store::Impl::LocalWrite*> Store::Impl::lead_with(LocalWrite* w) {
  // This write, then every write queued meanwhile.
  combining_ = true;
  std::vector<LocalWrite*> group{w};
  group.insert(group.end(), combine_queue_.begin(), combine_queue_.end());
  combine_queue_.clear();
  return group;
}

void Store::Impl::write_local_async(std::string key, std::optional<json> target,
                                    uint64_t if_version, Store::WriteDone done) {
  if (Status valid = check_before_lock(key, target, nullptr); !valid.ok()) {
    done(valid);
    return;
  }
  auto* a = new AsyncWrite(std::move(key), std::move(target), if_version, std::move(done));
  std::vector<LocalWrite*> group;
  {
    std::lock_guard q(combine_mu_);
    if (combining_) {
      // The leader staging now, or the next one, takes it.
      combine_queue_.push_back(&a->write);
      return;
    }
    group = lead_with(&a->write);
  }
  if (commit_group(group)) lead_orphans();
}

void Store::Impl::complete(const std::vector<LocalWrite*>& writes) {
  // Taken before the blocking writers are woken: each may return (and its
  // LocalWrite end) as soon as it is.
  std::vector<AsyncWrite*> async;
  {
    std::lock_guard q(combine_mu_);
    for (LocalWrite* w : writes) {
      if (w->async != nullptr) {
        async.push_back(w->async);
        continue;
      }
      w->state = LocalWrite::State::kDone;
      w->cv.notify_one();
    }
  }
  for (AsyncWrite* a : async) {
    std::unique_ptr<AsyncWrite> owned(a);
    owned->done(std::move(owned->write.result));
  }
}

void Store::Impl::sync_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    syncer_cv_.wait(lock, [&] { return stopping_ || !async_pending_.empty(); });
    if (async_pending_.empty()) return;  // stopping, and nothing left
    const uint64_t want = async_pending_.back().first;
    // Fsyncs, or waits for the fsync another writer is making.
    const Status st = wait_durable(lock, want);
    const uint64_t covered = st.ok() ? durable_ticket_ : want;
    std::vector<LocalWrite*> done;
    while (!async_pending_.empty() && async_pending_.front().first <= covered) {
      LocalWrite* w = async_pending_.front().second;
      if (!st.ok() && w->result.ok()) w->result = st;
      done.push_back(w);
      async_pending_.pop_front();
    }
    lock.unlock();
    complete(done);
    lock.lock();
  }
}

bool Store::Impl::commit_group(const std::vector<LocalWrite*>& group) {
  // Hands the lead to the first blocking writer queued (the next group
  // stages while this one waits for its fsync; it takes every write queued),
  // or ends the leading. Asynchronous writes have no thread to lead with:
  // when only they are queued, this thread leads them next (`orphans`), once
  // its own group is committed, unless a new writer takes them first.
  bool orphans = false;
  auto hand_on = [&] {
    std::lock_guard q(combine_mu_);
    auto next = std::find_if(combine_queue_.begin(), combine_queue_.end(),
                             [](const LocalWrite* w) { return w->async == nullptr; });
    if (next == combine_queue_.end()) {
      combining_ = false;
      orphans = !combine_queue_.empty();
      return;
    }
    LocalWrite* leader = *next;
    combine_queue_.erase(next);
    leader->state = LocalWrite::State::kLead;
    leader->cv.notify_one();  // under the lock: it cannot return before this ends
  };
  // A blocking leader waits for the fsync itself; an asynchronous one
  // leaves the group to the syncer.
  const bool leader_waits = group.front()->async == nullptr;
  // Completes the group's writes (their results are set), but for a blocking
  // leader, which returns by itself.
  auto finish = [&] {
    complete(leader_waits ? std::vector<LocalWrite*>(group.begin() + 1, group.end()) : group);
  };
  std::unique_lock lock(mu_);
  // Every document the group stages stays cached until it commits: a second
  // write to a key sees the first.
  cache_.make_room(group.size());
  Saved saved = save();
  VersionVector::Undo vv_undo;
  vv_undo.note(vv_, meta_.replica_id());
  rocksdb::WriteBatch& b = reusable_batch();
  std::vector<v1::LogEntry> entries;
  std::vector<LocalWrite*> staged;
  for (LocalWrite* g : group) {
    g->result = stage_local(g->key, g->target, g->merge_patch, &b, &entries, g->if_version);
    if (g->result.ok() && g->result->ops_size() > 0) staged.push_back(g);
  }
  if (staged.empty()) {
    lock.unlock();
    hand_on();
    finish();
    return orphans;
  }
  std::vector<const std::string*> keys;
  for (LocalWrite* g : staged) keys.push_back(&g->key);
  bool handed_on = false;
  uint64_t ticket = 0;
  Status st = commit_local(
      lock, &b, std::move(saved), vv_undo, std::move(entries), keys,
      [&] {
        hand_on();  // mu_ held: the next leader stages once this one releases it
        handed_on = true;
      },
      /*wait=*/false, &ticket);
  if (!handed_on) hand_on();
  if (st.ok() && opts_.durability == Durability::kGroupCommit) {
    if (!leader_waits) {
      // Committed, not yet durable: the syncer completes the group (no-ops
      // too, whose result holds only if the commit does) once an fsync
      // covers it. mu_ is still held: tickets enter in commit order.
      for (LocalWrite* g : group) async_pending_.emplace_back(ticket, g);
      if (!syncer_.joinable()) syncer_ = std::thread([this] { sync_loop(); });
      lock.unlock();
      syncer_cv_.notify_one();
      return orphans;
    }
    if (orphans) {
      // Asynchronous writes queued behind this group: commit them before
      // waiting, so that the fsync may cover them too.
      lock.unlock();
      lead_orphans();
      orphans = false;
      lock.lock();
    }
    st = wait_durable(lock, ticket);
  }
  if (!st.ok()) {
    // Every write of the group fails, a no-op among them too: it may have
    // been one only after another write of its key that is now undone.
    for (LocalWrite* g : group) {
      if (g->result.ok()) g->result = st;
    }
  }
  lock.unlock();
  finish();
  return orphans;
}

void Store::Impl::lead_orphans() {
  for (;;) {
    std::vector<LocalWrite*> group;
    {
      std::lock_guard q(combine_mu_);
      if (combining_ || combine_queue_.empty()) return;  // another leader has them
      combining_ = true;
      group.swap(combine_queue_);
    }
    // The group's front is asynchronous (a blocking writer would have been
    // handed the lead), so this does not wait for a disk.
    if (!commit_group(group)) return;
  }
}

Status Store::Impl::commit_local(std::unique_lock<std::mutex>& lock, rocksdb::WriteBatch* b,
                                 Saved saved, VersionVector::Undo& vv_undo,
                                 std::vector<v1::LogEntry> entries,
                                 const std::vector<const std::string*>& keys,
                                 const std::function<void()>& committed, bool wait,
                                 uint64_t* ticket_out) {
  stage_vv(b, meta_.replica_id());
  stage_meta(b);
  if (Status st = commit(b); !st.ok()) {
    for (const std::string* k : keys) cache_.erase(*k);
    restore(std::move(saved));
    vv_undo.apply(&vv_);
    return st;
  }
  const uint64_t ticket = ++written_ticket_;
  if (ticket_out != nullptr) *ticket_out = ticket;
  publish(ticket, std::move(entries));
  if (committed) committed();
  return wait ? wait_durable(lock, ticket) : ok_status();
}

}  // namespace canopy

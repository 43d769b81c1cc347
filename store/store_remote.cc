// The store's side of replication: merging remote deltas (apply_remote),
// whole document states (apply_states), and dropping keys a parent took
// away (drop), each in one write batch with its log entries.
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "store/doc_merge.h"
#include "store/hlc.h"
#include "store/store.h"
#include "store/store_impl.h"

namespace canopy {

using namespace store_internal;

StatusOr<ApplyResult> Store::Impl::apply_remote(std::span<const v1::Delta* const> batch,
                                                uint64_t source) {
  ApplyResult result;
  for (const v1::Delta* d : batch) {
    Status st = validate_delta(*d, opts_.limits);
    if (!st.ok()) {
      std::lock_guard lock(mu_);
      ++stats_.refused_deltas;
      return st;
    }
  }
  std::unique_lock lock(mu_);
  const uint64_t now = clock_->now_ms();
  // Every document of the batch stays staged in the cache until the commit.
  cache_.make_room(batch.size());
  Saved saved = save();
  rocksdb::WriteBatch& b = reusable_batch();
  std::vector<v1::LogEntry> entries;
  std::vector<std::string> touched;
  std::vector<Overwrite> overwrites;
  std::map<uint64_t, bool> vv_dirty;
  // The version vector entries and top dots this batch changes, as they
  // were before: a failed commit puts them back (restore() does the rest).
  std::vector<std::pair<uint64_t, TopDot>> old_tops;
  VersionVector::Undo vv_undo;
  const auto undo_seen = [&] {
    vv_undo.apply(&vv_);
    for (auto it = old_tops.rbegin(); it != old_tops.rend(); ++it) top_[it->first] = it->second;
  };
  for (const v1::Delta* dp : batch) {
    const v1::Delta& d = *dp;
    const bool seen = vv_.contains(d.dot().replica(), d.dot().seq());
    if (seen && !was_dropped(d.key())) {
      ++result.duplicates;
      continue;
    }
    // The clock does not follow a stamp beyond the allowed skew. The skew is
    // blamed on the delta's writer only when the writer's own clock reading
    // lies beyond it: a writer whose stamp followed a runaway stamp it saw in
    // the document (clock_hlc below hlc) is not the one whose clock ran ahead.
    hlc_.observe(d.hlc(), now, opts_.max_clock_skew_ms);
    const uint64_t writer_clock = d.clock_hlc() != 0 ? d.clock_hlc() : d.hlc();
    const bool skewed = hlc_physical_ms(writer_clock) > now + opts_.max_clock_skew_ms;
    if (skewed) {
      ++result.skewed;
      ++stats_.skewed_deltas;
      spdlog::warn("delta {}:{} for {} is stamped by a clock {} ms ahead of the local clock",
                   d.dot().replica(), d.dot().seq(), d.key(), hlc_physical_ms(writer_clock) - now);
    }
    auto loaded = load(d.key());
    if (!loaded.ok()) {
      // Nothing of this batch is committed: forget what was staged in memory.
      for (const auto& k : touched) cache_.erase(k);
      restore(std::move(saved));
      undo_seen();
      return loaded.status();
    }
    overwrites.clear();
    (*loaded)->apply(d, &overwrites);
    cache_.update(d.key());
    for (const Overwrite& o : overwrites) {
      const bool winner_is_new =
          o.winner.replica == d.dot().replica() && o.winner_seq == d.dot().seq();
      stage_conflict(&b, d.key(), o,
                     skewed && winner_is_new ? v1::ConflictRecord::CLOCK_SKEW
                                             : v1::ConflictRecord::CONCURRENT);
      ++result.conflicts;
    }
    if (seen) {
      ++stats_.reapplied_deltas;
    } else {
      vv_undo.note(vv_, d.dot().replica());
      vv_.add(d.dot().replica(), d.dot().seq());
      vv_dirty[d.dot().replica()] = true;
      TopDot& top = top_[d.dot().replica()];
      if (d.dot().seq() > top.seq) {
        old_tops.emplace_back(d.dot().replica(), top);
        top = TopDot{d.dot().seq(), d.hlc()};
      }
    }
    if (d.dot().replica() == meta_.replica_id() && d.dot().seq() >= meta_.next_seq()) {
      meta_.set_next_seq(d.dot().seq() + 1);
    }
    stage_delta(&b, d, source, &entries);
    touched.push_back(d.key());
    ++result.applied;
  }
  if (result.applied == 0) return result;
  for (const auto& [r, dirty] : vv_dirty) {
    stage_vv(&b, r);
    const TopDot& top = top_[r];
    b.Put(meta_cf(), std::string(kTopPrefix) + be64(r), be64(top.seq) + be64(top.hlc))
        .PermitUncheckedError();
  }
  stage_meta(&b);
  Status st = commit(&b);
  if (!st.ok()) {
    for (const auto& k : touched) cache_.erase(k);
    restore(std::move(saved));
    undo_seen();
    return st;
  }
  const uint64_t ticket = ++written_ticket_;
  publish(ticket, std::move(entries));
  CANOPY_RETURN_IF_ERROR(wait_durable(lock, ticket));
  return result;
}

Status Store::Impl::apply_states(const std::vector<v1::DocState>& docs_in, uint64_t source) {
  for (const auto& d : docs_in) {
    CANOPY_RETURN_IF_ERROR(validate_key(d.key(), opts_.limits.max_key_bytes));
    auto parsed = Document::from_proto(d.root(), opts_.limits.max_depth);
    if (!parsed.ok()) {
      return invalid_argument("state of " + d.key() + ": " + parsed.status().message());
    }
    // The same limit as a local write or a remote delta: what the document shows.
    const size_t bytes = parsed->to_json().size();
    if (bytes > opts_.limits.max_doc_bytes) {
      return invalid_argument("state of " + d.key() + ": the document's " + std::to_string(bytes) +
                              " bytes exceed the limit of " +
                              std::to_string(opts_.limits.max_doc_bytes));
    }
  }
  std::unique_lock lock(mu_);
  cache_.make_room(docs_in.size());
  Saved saved = save();
  rocksdb::WriteBatch b;
  std::vector<v1::LogEntry> entries;
  for (const auto& d : docs_in) {
    auto loaded = load(d.key());
    if (!loaded.ok()) {
      for (const auto& e : entries) cache_.erase(e.doc().key());
      restore(std::move(saved));
      return loaded.status();
    }
    Document* doc = *loaded;
    v1::NodeState before;
    doc->to_proto(&before);
    doc->merge(d.root());
    cache_.update(d.key());
    v1::NodeState after;
    doc->to_proto(&after);
    if (before.SerializeAsString() == after.SerializeAsString()) continue;
    hlc_.observe(doc->max_hlc(), clock_->now_ms(), opts_.max_clock_skew_ms);
    stage_doc_change(&b, d.key(), kStateOperand, d.root());
    v1::LogEntry& e = entries.emplace_back();
    e.mutable_doc()->set_key(d.key());
    *e.mutable_doc()->mutable_root() = std::move(after);
    e.set_source(source);
    stage_log(&b, &e);
  }
  if (entries.empty()) return ok_status();
  stage_meta(&b);
  Status st = commit(&b);
  if (!st.ok()) {
    for (const auto& e : entries) cache_.erase(e.doc().key());
    restore(std::move(saved));
    return st;
  }
  const uint64_t ticket = ++written_ticket_;
  publish(ticket, std::move(entries));
  return wait_durable(lock, ticket);
}

bool Store::Impl::was_dropped(const std::string& key) {
  if (!dropped_any_) return false;
  std::string ignored;
  return db_->Get(rocksdb::ReadOptions(), meta_cf(), std::string(kDroppedPrefix) + key, &ignored)
      .ok();
}

Status Store::Impl::drop(const std::vector<std::string>& keys) {
  std::unique_lock lock(mu_);
  rocksdb::WriteBatch b;
  std::vector<v1::LogEntry> dropped(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    b.Delete(docs(), keys[i]).PermitUncheckedError();
    b.Put(meta_cf(), std::string(kDroppedPrefix) + keys[i], "").PermitUncheckedError();
    cache_.erase(keys[i]);
    dropped[i].mutable_doc()->set_key(keys[i]);  // index 0: not in the log
  }
  CANOPY_RETURN_IF_ERROR(commit(&b, /*adds_data=*/false));
  dropped_any_ = dropped_any_ || !keys.empty();
  const uint64_t ticket = ++written_ticket_;
  notify(dropped);
  return wait_durable(lock, ticket);
}

StatusOr<Durability> parse_durability(std::string_view name) {
  if (name == "sync") return Durability::kSync;
  if (name == "group") return Durability::kGroupCommit;
  return invalid_argument("durability \"" + std::string(name) + "\" must be \"sync\" or \"group\"");
}

// --- Store: forwards to Impl.

}  // namespace canopy

// Store::Impl, the store's state and its RocksDB layout, shared by the files
// that implement it: store.cc (open, local and remote writes, reads),
// store_log.cc (the replication log: reading, trimming, tombstones) and
// store_digest.cc (document hashes, fingerprints and states for
// anti-entropy). Internal to store/.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "store/doc_cache.h"
#include "store/hlc.h"
#include "store/store.h"

namespace canopy {
namespace store_internal {

// Keys in the meta column family.
constexpr char kMetaKey[] = "meta";
constexpr char kVvPrefix[] = "vv/";
constexpr char kTrimmedPrefix[] = "trimmed/";
constexpr char kLocalPrefix[] = "local/";
// Documents this replica dropped (Store::drop): the key, an empty value.
constexpr char kDroppedPrefix[] = "dropped/";
// Per origin replica, its highest seq applied here and that delta's HLC.
constexpr char kTopPrefix[] = "top/";

inline std::string be64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}

inline uint64_t from_be64(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < s.size(); ++i) v = (v << 8) | static_cast<unsigned char>(s[i]);
  return v;
}

inline Status from_rocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return ok_status();
  if (s.IsNotFound()) return not_found(std::string(what) + ": " + s.ToString());
  if (s.IsCorruption()) return data_loss(std::string(what) + ": " + s.ToString());
  if (s.IsIOError()) return unavailable(std::string(what) + ": " + s.ToString());
  return internal_error(std::string(what) + ": " + s.ToString());
}

inline const std::string& entry_key(const v1::LogEntry& e) {
  return e.has_delta() ? e.delta().key() : e.doc().key();
}

// A nonzero value from `random`, or from std::random_device when it is empty.
inline uint64_t random_u64(const std::function<uint64_t()>& random) {
  uint64_t v = 0;
  if (random) {
    while (v == 0) v = random();
    return v;
  }
  std::random_device rd;
  while (v == 0) v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return v;
}

}  // namespace store_internal

using json = nlohmann::json;

class Store::Impl {
 public:
  explicit Impl(const StoreOptions& o)
      : opts_(o),
        clock_(o.clock != nullptr ? o.clock : SystemClock::instance()),
        cache_(o.doc_cache_entries, o.doc_cache_bytes) {}

  ~Impl() {
    // Pending asynchronous writes are completed first (the syncer drains).
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    syncer_cv_.notify_all();
    if (syncer_.joinable()) syncer_.join();
    if (db_ != nullptr) {
      for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
      db_->Close().PermitUncheckedError();
      delete db_;
    }
  }

  Status open();

  // Writes `target` (nullopt: deletes the document). With `merge_patch`, the
  // target is the current document with the patch applied, computed under the
  // lock so that concurrent writes to other fields are not reverted.
  // `if_version`: see Store::put_value.
  StatusOr<v1::Delta> write_local(std::string_view key, const std::optional<json>& target,
                                  const json* merge_patch = nullptr, uint64_t if_version = 0);
  // The same without waiting (Store::put_value_async): `done` is called once
  // the write is durable or failed.
  void write_local_async(std::string key, std::optional<json> target, uint64_t if_version,
                         Store::WriteDone done);
  std::vector<StatusOr<v1::Delta>> put_values(
      const std::vector<std::pair<std::string, json>>& docs);
  // The size and depth limits a locally written document must keep.
  Status check_local_limits(const std::string& key, const json& target) const;
  // REQUIRES: mu_ held. One local write's part of a commit: loads the
  // document, diffs, stamps and applies the delta (to the cached document,
  // and its dot to vv_), and stages its operand and log entry into `b`. A
  // delta without ops changed nothing and staged nothing. The caller stages
  // vv_ and meta_ once, commits, and on failure erases the key from the
  // cache and restores what it saved.
  StatusOr<v1::Delta> stage_local(const std::string& key, const std::optional<json>& target,
                                  const json* merge_patch, rocksdb::WriteBatch* b,
                                  std::vector<v1::LogEntry>* entries, uint64_t if_version = 0);
  StatusOr<v1::Delta> patch(std::string_view key, std::string_view text);
  StatusOr<std::string> get(std::string_view key);
  StatusOr<ScanPage> scan(std::string_view prefix, std::string_view after, size_t limit);
  std::vector<v1::ConflictRecord> conflicts(std::string_view key);
  std::vector<v1::ConflictRecord> conflicts_in(std::string_view prefix, std::string_view after,
                                               size_t limit, std::string* next);
  StatusOr<ApplyResult> apply_remote(std::span<const v1::Delta* const> batch, uint64_t source);
  Status apply_states(const std::vector<v1::DocState>& docs, uint64_t source);
  Status drop(const std::vector<std::string>& keys);
  StatusOr<std::vector<v1::Delta>> missing_since(const VersionVector& peer, const KeyFilter& f,
                                                 size_t limit, bool* complete);
  StatusOr<LogRead> log_since(uint64_t epoch, uint64_t after, const KeyFilter& f, size_t limit);
  StatusOr<std::optional<uint64_t>> own_delta_hlc(uint64_t seq) {
    std::lock_guard lock(mu_);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), log()));
    const uint64_t me = meta_.replica_id();
    for (it->SeekToLast(); it->Valid(); it->Prev()) {
      v1::LogEntry e;
      if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return data_loss("log entry is corrupt");
      }
      if (!e.has_delta() || e.delta().dot().replica() != me) continue;
      if (e.delta().dot().seq() == seq) return std::optional<uint64_t>(e.delta().hlc());
      // Our own seqs grow along the log; only a restore makes them go back.
      if (e.delta().dot().seq() < seq) break;
    }
    return std::optional<uint64_t>();
  }
  StatusOr<std::vector<std::pair<std::string, uint64_t>>> hashes_of(
      const std::vector<std::string>& keys);
  StatusOr<std::vector<std::pair<std::string, uint64_t>>> hashes(std::string_view first,
                                                                 std::string_view last,
                                                                 const KeyFilter& f);
  StatusOr<std::vector<v1::DocState>> states(std::string_view first, std::string_view last,
                                             const KeyFilter& f, size_t limit);
  StatusOr<std::optional<v1::DocState>> state(std::string_view key);
  Status trim_log(uint64_t up_to);
  Status trim_log_older_than(uint64_t retention_ms);
  StatusOr<size_t> collect_tombstones(uint64_t stable_hlc);
  Status compact();

  Status put_local(std::string_view name, std::string_view value) {
    std::unique_lock lock(mu_);
    rocksdb::WriteBatch b;
    b.Put(meta_cf(), std::string(store_internal::kLocalPrefix) + std::string(name),
          rocksdb::Slice(value.data(), value.size()))
        .PermitUncheckedError();
    CANOPY_RETURN_IF_ERROR(commit(&b));
    return wait_durable(lock, ++written_ticket_);
  }
  StatusOr<std::optional<std::string>> get_local(std::string_view name) {
    std::string raw;
    rocksdb::Status s =
        db_->Get(rocksdb::ReadOptions(), meta_cf(),
                 std::string(store_internal::kLocalPrefix) + std::string(name), &raw);
    if (s.IsNotFound()) return std::optional<std::string>();
    CANOPY_RETURN_IF_ERROR(store_internal::from_rocks(s, "reading local metadata"));
    return std::optional<std::string>(std::move(raw));
  }

  uint64_t subscribe(Listener l) {
    std::lock_guard lock(mu_);
    listeners_.emplace_back(++next_listener_, std::move(l));
    return next_listener_;
  }
  void unsubscribe(uint64_t id) {
    std::lock_guard lock(mu_);
    std::erase_if(listeners_, [&](const auto& p) { return p.first == id; });
  }

  Status reserve_seqs_through(uint64_t seq) {
    std::unique_lock lock(mu_);
    if (meta_.next_seq() > seq) return ok_status();
    meta_.set_next_seq(seq + 1);
    rocksdb::WriteBatch b;
    stage_meta(&b);
    CANOPY_RETURN_IF_ERROR(commit(&b));
    return wait_durable(lock, ++written_ticket_);
  }

  const DocumentLimits& limits() const { return opts_.limits; }
  Status renew_log_epoch() {
    std::unique_lock lock(mu_);
    uint64_t e = meta_.log_epoch();
    while (e == meta_.log_epoch()) e = store_internal::random_u64(opts_.random);
    meta_.set_log_epoch(e);
    rocksdb::WriteBatch b;
    stage_meta(&b);
    CANOPY_RETURN_IF_ERROR(commit(&b));
    return wait_durable(lock, ++written_ticket_);
  }

  uint64_t replica_id() const { return meta_.replica_id(); }
  uint64_t log_epoch() const { return meta_.log_epoch(); }
  uint64_t now_ms() const { return clock_->now_ms(); }
  uint64_t last_log_index() {
    std::lock_guard lock(mu_);
    return meta_.next_log_index() - 1;
  }
  uint64_t first_log_index() {
    std::lock_guard lock(mu_);
    return meta_.log_first_index();
  }
  VersionVector version_vector() {
    std::lock_guard lock(mu_);
    return vv_;
  }
  uint64_t contiguous_seq(uint64_t replica) {
    std::lock_guard lock(mu_);
    return vv_.contiguous(replica);
  }
  TopDot top_dot(uint64_t replica) {
    std::lock_guard lock(mu_);
    auto it = top_.find(replica);
    return it == top_.end() ? TopDot{} : it->second;
  }
  StoreStats stats() {
    std::lock_guard lock(mu_);
    StoreStats out = stats_;
    out.write_failures = write_failures_;
    return out;
  }
  Status write_health() const {
    if (writes_failing_.load(std::memory_order_acquire)) {
      std::lock_guard lock(health_mu_);
      return unavailable(write_error_);
    }
    if (below_reserve_.load(std::memory_order_acquire)) {
      std::lock_guard lock(health_mu_);
      return unavailable(reserve_error_);
    }
    return ok_status();
  }
  // db_ and handles_ do not change after open, and RocksDB's properties are
  // thread-safe: no lock.
  StoreDiskUsage disk_usage();
  StoreCacheUsage cache_usage() {
    std::lock_guard lock(mu_);
    return {cache_.size(), cache_.bytes(), cache_.clears()};
  }

 private:
  rocksdb::ColumnFamilyHandle* docs() { return handles_[1]; }
  rocksdb::ColumnFamilyHandle* log() { return handles_[2]; }
  rocksdb::ColumnFamilyHandle* conflicts_cf() { return handles_[3]; }
  rocksdb::ColumnFamilyHandle* meta_cf() { return handles_[0]; }

  // REQUIRES: mu_ held. The document of `key` (empty when absent), from the
  // cache or from disk (then cached). Never evicts, so the pointers a batch
  // holds stay valid: a batch calls cache_.make_room before its first load.
  StatusOr<Document*> load(const std::string& key);
  // REQUIRES: mu_ held.
  // Replaces the stored state of `key` by `d` (or deletes it when empty).
  void stage_doc(rocksdb::WriteBatch* b, const std::string& key, const Document& d);
  // Adds a change to the stored state of `key` (doc_merge.h).
  void stage_doc_change(rocksdb::WriteBatch* b, const std::string& key, char tag,
                        const google::protobuf::MessageLite& change);
  void stage_log(rocksdb::WriteBatch* b, v1::LogEntry* e);
  // Stages an applied delta: its merge operand and its log entry, from one
  // encoding of the delta. With subscribers, appends the entry they are
  // handed (once durable) to `entries`. Returns the entry's index.
  uint64_t stage_delta(rocksdb::WriteBatch* b, const v1::Delta& d, uint64_t source,
                       std::vector<v1::LogEntry>* entries);
  void stage_meta(rocksdb::WriteBatch* b);
  void stage_vv(rocksdb::WriteBatch* b, uint64_t replica);
  void stage_conflict(rocksdb::WriteBatch* b, const std::string& key, const Overwrite& o,
                      v1::ConflictRecord::Reason reason);
  // Writes `b`; with kGroupCommit the caller then waits in wait_durable().
  // A batch that adds data is refused while the disk is below the reserve,
  // or when it would take the disk below it (check_reserve); one that frees
  // space (a trim, a drop) is not.
  Status commit(rocksdb::WriteBatch* b, bool adds_data = true);
  // `adding`: the bytes the write adds (its batch, which the write-ahead log
  // takes at once).
  Status check_reserve(uint64_t adding);
  // Records the outcome of a write to RocksDB (see write_health). REQUIRES: mu_ held.
  void note_write(const rocksdb::Status& s, std::string_view what);
  Status wait_durable(std::unique_lock<std::mutex>& lock, uint64_t ticket);
  void notify(const std::vector<v1::LogEntry>& entries);
  // REQUIRES: mu_ held. Hands committed entries to the listeners once they are
  // durable: at once, or with kGroupCommit when an fsync covers `ticket`, so
  // that no peer learns of a write (and its dot) that a crash could still undo.
  void publish(uint64_t ticket, std::vector<v1::LogEntry> entries);
  void publish_durable();

  // What a failed write restores (its staged documents are dropped from the
  // cache separately), so that a refused or failed call leaves no trace.
  // What a write puts back if its commit fails (with a VersionVector::Undo
  // for the version vector).
  struct Saved {
    v1::ReplicaMeta meta;
    Hlc hlc;
    StoreStats stats;
  };
  Saved save() const { return Saved{meta_, hlc_, stats_}; }
  void restore(Saved saved) {
    meta_ = std::move(saved.meta);
    hlc_ = saved.hlc;
    stats_ = saved.stats;
  }
  // The end of a local write of one or more documents (commit_group,
  // put_values), mu_ held by `lock`: commits what `b` stages for `keys`
  // (logged as `entries`) with the version vector and meta, publishes it,
  // runs `committed` (if any; mu_ still held) and, with `wait`, waits until
  // it is durable. `*ticket` (if given) is the commit's group-commit ticket.
  // When the commit fails, the in-memory state goes back to `saved` and
  // `vv_undo`, and the keys leave the cache.
  Status commit_local(std::unique_lock<std::mutex>& lock, rocksdb::WriteBatch* b, Saved saved,
                      VersionVector::Undo& vv_undo, std::vector<v1::LogEntry> entries,
                      const std::vector<const std::string*>& keys,
                      const std::function<void()>& committed, bool wait = true,
                      uint64_t* ticket = nullptr);

  // REQUIRES: mu_ held. An empty write batch that keeps its buffer from one
  // write to the next (a write's batch is dead once committed).
  rocksdb::WriteBatch& reusable_batch() {
    if (batch_.GetDataSize() > (size_t{4} << 20)) {
      batch_ = rocksdb::WriteBatch();  // do not keep a huge buffer
    } else {
      batch_.Clear();
    }
    return batch_;
  }

  StoreOptions opts_;
  Clock* clock_;
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;

  std::mutex mu_;
  std::mutex trim_mu_;  // serializes trim_log (taken before mu_)
  v1::ReplicaMeta meta_;
  Hlc hlc_;
  VersionVector vv_;
  std::map<uint64_t, uint64_t> trimmed_;  // origin -> greatest seq trimmed from the log
  // Whether any document was ever dropped here (a kDroppedPrefix key
  // exists): until then a duplicate dot needs no lookup.
  bool dropped_any_ = false;
  std::unordered_map<uint64_t, TopDot> top_;  // see Store::top_dot
  bool was_dropped(const std::string& key);
  DocCache cache_;
  // Tombstone collection's work list (collect_tombstones): the keys staged
  // since their last pass, and those whose document still held a tombstone
  // at it. Keys are noted from the start of the first pass that reads every
  // document (gc_tracking_); the list is complete once such a pass has
  // ended (gc_scanned_). Guarded by mu_.
  // Past kMaxGcKeys keys (~10 MB) the list is dropped and the next pass
  // reads every document again, as sequential a read as any.
  static constexpr size_t kMaxGcKeys = 100'000;
  std::unordered_set<std::string> gc_keys_;
  bool gc_tracking_ = false;
  bool gc_scanned_ = false;
  void gc_note(const std::string& key) {
    if (!gc_tracking_) return;
    if (gc_keys_.size() >= kMaxGcKeys) {
      gc_forget();
      return;
    }
    gc_keys_.insert(key);
  }
  void gc_forget() {
    gc_keys_.clear();
    gc_tracking_ = false;
    gc_scanned_ = false;
  }
  std::mutex gc_pass_mu_;  // one tombstone pass at a time (taken before mu_)
  rocksdb::WriteBatch batch_;
  std::string operand_;  // stage_delta's encoding buffer, kept between writes
  std::vector<std::pair<uint64_t, Listener>> listeners_;
  uint64_t next_listener_ = 0;
  StoreStats stats_;

  // Local writes combine (write_local): a writer queues its write, and one of
  // the writers waiting, the leader, stages every queued write into one write
  // batch under mu_, commits it, hands the lead on, then waits for the fsync
  // that covers it and wakes the group. Each write keeps its own delta, dot
  // and log entry; many concurrent writers cost one lock hand-off, one batch
  // and one fsync per group instead of one each. Lock order: mu_, then
  // combine_mu_ (the leader stages with combine_mu_ released).
  struct AsyncWrite;
  struct LocalWrite {
    LocalWrite(const std::string& k, const std::optional<json>& t, const json* p, uint64_t v)
        : key(k), target(t), merge_patch(p), if_version(v) {}
    const std::string& key;
    const std::optional<json>& target;
    const json* merge_patch;
    uint64_t if_version;
    // Set for an asynchronous write (which owns key and target); a blocking
    // write's thread waits on `cv` instead.
    AsyncWrite* async = nullptr;
    StatusOr<v1::Delta> result = v1::Delta();
    // Under combine_mu_: queued, then told to lead, or done (result set:
    // durable, or failed). Each writer waits on its own condition, so a
    // group's end wakes its writers and nobody else.
    enum class State { kQueued, kLead, kDone } state = State::kQueued;
    std::condition_variable cv;
  };
  // An asynchronous write: what it writes, and whom it tells.
  struct AsyncWrite {
    AsyncWrite(std::string k, std::optional<json> t, uint64_t v, Store::WriteDone d)
        : key(std::move(k)),
          target(std::move(t)),
          write(key, target, nullptr, v),
          done(std::move(d)) {
      write.async = this;
    }
    std::string key;
    std::optional<json> target;
    LocalWrite write;
    Store::WriteDone done;
  };
  // What a local write is refused for before it takes any lock: its key, and
  // the limits of a whole target.
  Status check_before_lock(const std::string& key, const std::optional<json>& target,
                           const json* merge_patch) const;
  // REQUIRES: combine_mu_ held, no leader. Makes `w`'s thread the leader of
  // `w` and every write queued.
  std::vector<LocalWrite*> lead_with(LocalWrite* w);
  // Stages and commits `group`, led by group.front(). A blocking leader
  // waits for the fsync and completes the group; an asynchronous one leaves
  // the group to the syncer (with group commit), so no thread of the
  // caller's waits for a disk. Returns whether asynchronous writes were left
  // queued without a leader: the caller then leads them (lead_orphans).
  bool commit_group(const std::vector<LocalWrite*>& group);
  // Leads queued asynchronous writes while no other writer does.
  void lead_orphans();
  // Completes writes whose results are set: wakes the blocking ones and then
  // calls the asynchronous ones' `done`, with no lock held (neither mu_ nor
  // combine_mu_ may be held by the caller).
  void complete(const std::vector<LocalWrite*>& writes);
  // The syncer's thread (started by the first asynchronous write that needs
  // an fsync): fsyncs for the writes in `async_pending_` (or waits for
  // another thread's fsync) and completes them.
  void sync_loop();
  std::mutex combine_mu_;
  std::vector<LocalWrite*> combine_queue_;  // waiting for a leader
  bool combining_ = false;                  // a leader is staging its group

  // Committed writes of asynchronous groups waiting for the fsync that covers
  // their ticket (under mu_), in ticket order.
  std::deque<std::pair<uint64_t, LocalWrite*>> async_pending_;
  std::condition_variable syncer_cv_;
  std::thread syncer_;
  bool stopping_ = false;

  // The disk refused a write (set by note_write), and none succeeded since.
  // While set, no fsync of the write-ahead log is made: RocksDB's log writer
  // may hold the failed write's error, and syncing it then aborts the
  // process (Debian's librocksdb is built with its assertions). A write
  // RocksDB accepts again (it recovered: a new log) clears it.
  std::atomic<bool> writes_failing_{false};
  mutable std::mutex health_mu_;  // guards write_error_
  std::string write_error_;       // the failure's first error, as write_health says it
  uint64_t writes_failing_since_ms_ = 0;
  uint64_t write_failures_ = 0;  // (not in stats_: a failed write restores that)
  // The disk reserve (StoreOptions::disk_reserve_bytes; 0: none), looked
  // at before every commit that adds data.
  uint64_t reserve_bytes_ = 0;
  std::atomic<bool> below_reserve_{false};
  std::string reserve_error_;  // guarded by health_mu_

  // Group commit.
  std::condition_variable durable_cv_;
  uint64_t written_ticket_ = 0;
  uint64_t durable_ticket_ = 0;
  bool syncing_ = false;
  // Committed entries waiting for the fsync that covers their ticket.
  std::deque<std::pair<uint64_t, std::vector<v1::LogEntry>>> unpublished_;
};

}  // namespace canopy

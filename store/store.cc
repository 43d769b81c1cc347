#include "store/store.h"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/options_util.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_map>

#include "store/doc_merge.h"
#include "store/hlc.h"

namespace canopy {
namespace {

using json = nlohmann::json;

constexpr char kMetaKey[] = "meta";
constexpr char kVvPrefix[] = "vv/";
constexpr char kTrimmedPrefix[] = "trimmed/";
constexpr char kLocalPrefix[] = "local/";

std::string be64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}

uint64_t from_be64(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < s.size(); ++i) v = (v << 8) | static_cast<unsigned char>(s[i]);
  return v;
}

Status from_rocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return ok_status();
  if (s.IsNotFound()) return not_found(std::string(what) + ": " + s.ToString());
  if (s.IsCorruption()) return data_loss(std::string(what) + ": " + s.ToString());
  if (s.IsIOError()) return unavailable(std::string(what) + ": " + s.ToString());
  return internal_error(std::string(what) + ": " + s.ToString());
}

const std::string& entry_key(const v1::LogEntry& e) {
  return e.has_delta() ? e.delta().key() : e.doc().key();
}

// Nesting of objects and arrays, as parse_document counts it.
size_t json_depth(const json& j) {
  if (!j.is_object() && !j.is_array()) return 0;
  size_t d = 0;
  for (const auto& v : j) d = std::max(d, json_depth(v));
  return d + 1;
}

// A nonzero value from `random`, or from std::random_device when it is empty.
uint64_t random_u64(const std::function<uint64_t()>& random) {
  uint64_t v = 0;
  if (random) {
    while (v == 0) v = random();
    return v;
  }
  std::random_device rd;
  while (v == 0) v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return v;
}

}  // namespace

class Store::Impl {
 public:
  explicit Impl(const StoreOptions& o)
      : opts_(o), clock_(o.clock != nullptr ? o.clock : SystemClock::instance()) {}

  ~Impl() {
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
  StatusOr<v1::Delta> write_local(std::string_view key, const std::optional<json>& target,
                                  const json* merge_patch = nullptr);
  StatusOr<v1::Delta> patch(std::string_view key, std::string_view text);
  StatusOr<std::string> get(std::string_view key);
  StatusOr<ScanPage> scan(std::string_view prefix, std::string_view after, size_t limit);
  std::vector<v1::ConflictRecord> conflicts(std::string_view key);
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
    b.Put(meta_cf(), std::string(kLocalPrefix) + std::string(name),
          rocksdb::Slice(value.data(), value.size()))
        .PermitUncheckedError();
    CANOPY_RETURN_IF_ERROR(commit(&b));
    return wait_durable(lock, ++written_ticket_);
  }
  StatusOr<std::optional<std::string>> get_local(std::string_view name) {
    std::string raw;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_cf(),
                                 std::string(kLocalPrefix) + std::string(name), &raw);
    if (s.IsNotFound()) return std::optional<std::string>();
    CANOPY_RETURN_IF_ERROR(from_rocks(s, "reading local metadata"));
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
    while (e == meta_.log_epoch()) e = random_u64(opts_.random);
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
  StoreStats stats() {
    std::lock_guard lock(mu_);
    return stats_;
  }

 private:
  rocksdb::ColumnFamilyHandle* docs() { return handles_[1]; }
  rocksdb::ColumnFamilyHandle* log() { return handles_[2]; }
  rocksdb::ColumnFamilyHandle* conflicts_cf() { return handles_[3]; }
  rocksdb::ColumnFamilyHandle* meta_cf() { return handles_[0]; }

  // REQUIRES: mu_ held. Returns the cached document for `key` (empty when absent).
  // With `may_evict` a full cache is cleared first, which invalidates pointers
  // returned before: a call that keeps several documents staged in the cache
  // makes room once up front and loads with `may_evict` false.
  StatusOr<Document*> load(const std::string& key, bool may_evict = true);
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
  Status commit(rocksdb::WriteBatch* b);
  Status wait_durable(std::unique_lock<std::mutex>& lock, uint64_t ticket);
  void notify(const std::vector<v1::LogEntry>& entries);
  // REQUIRES: mu_ held. Hands committed entries to the listeners once they are
  // durable: at once, or with kGroupCommit when an fsync covers `ticket`, so
  // that no peer learns of a write (and its dot) that a crash could still undo.
  void publish(uint64_t ticket, std::vector<v1::LogEntry> entries);
  void publish_durable();

  // What a failed write restores (its staged documents are dropped from the
  // cache separately), so that a refused or failed call leaves no trace.
  struct Saved {
    v1::ReplicaMeta meta;
    Hlc hlc;
    VersionVector vv;
    StoreStats stats;
  };
  Saved save() const { return Saved{meta_, hlc_, vv_, stats_}; }
  void restore(Saved saved) {
    meta_ = std::move(saved.meta);
    hlc_ = saved.hlc;
    vv_ = std::move(saved.vv);
    stats_ = saved.stats;
  }

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
  std::unordered_map<std::string, Document> cache_;
  rocksdb::WriteBatch batch_;
  std::string operand_;  // stage_delta's encoding buffer, kept between writes
  std::vector<std::pair<uint64_t, Listener>> listeners_;
  uint64_t next_listener_ = 0;
  StoreStats stats_;

  // Group commit.
  std::condition_variable durable_cv_;
  uint64_t written_ticket_ = 0;
  uint64_t durable_ticket_ = 0;
  bool syncing_ = false;
  // Committed entries waiting for the fsync that covers their ticket.
  std::deque<std::pair<uint64_t, std::vector<v1::LogEntry>>> unpublished_;
};

Status Store::Impl::open() {
  if (opts_.env == nullptr) {
    std::error_code ec;
    std::filesystem::create_directories(opts_.path, ec);
    if (ec) return unavailable("store directory " + opts_.path + ": " + ec.message());
  }

  rocksdb::Options options;
  if (opts_.env != nullptr) options.env = opts_.env;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  auto supported = rocksdb::GetSupportedCompressions();
  auto has = [&](rocksdb::CompressionType t) {
    return std::find(supported.begin(), supported.end(), t) != supported.end();
  };
  options.IncreaseParallelism(2);
  // No periodic stats threads; the WAL already holds what a flush at close
  // would write, so closing (and crash-restart tests) stays fast.
  options.stats_dump_period_sec = 0;
  options.stats_persist_period_sec = 0;
  options.avoid_flush_during_shutdown = true;
  options.keep_log_file_num = 3;
  // No preallocation: RocksDB would reserve write_buffer_size * 1.1 (70 MB)
  // for every WAL and 4 MB for the MANIFEST with fallocate, so each store,
  // however small, held 75 MB of disk (a site's SD card; the fan-out bench's
  // 1,000 spoke stores filled 73 GB).
  options.allow_fallocate = false;
  rocksdb::ColumnFamilyOptions cf;
  cf.compression = has(rocksdb::kLZ4Compression)      ? rocksdb::kLZ4Compression
                   : has(rocksdb::kSnappyCompression) ? rocksdb::kSnappyCompression
                                                      : rocksdb::kNoCompression;
  if (has(rocksdb::kZSTD)) cf.bottommost_compression = rocksdb::kZSTD;
  // Writes add their change to a document as a merge operand (doc_merge.h),
  // folded on reads, flushes and compactions. (No max_successive_merges: it
  // costs a memtable lookup per write, and reads of hot documents are served
  // from the cache.)
  rocksdb::ColumnFamilyOptions docs_cf = cf;
  docs_cf.merge_operator = make_doc_merge_operator(opts_.limits.max_depth);
  // Creating a document looks it up first: bloom filters answer "absent"
  // without reading table blocks, in the tables and in the memtable.
  rocksdb::BlockBasedTableOptions docs_table;
  docs_table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  docs_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(docs_table));
  docs_cf.memtable_prefix_bloom_size_ratio = 0.02;
  docs_cf.memtable_whole_key_filtering = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, cf},
      {"docs", docs_cf},
      {"log", cf},
      {"conflicts", cf},
  };
  rocksdb::DBOptions dbo(options);
  rocksdb::Status s = rocksdb::DB::Open(dbo, opts_.path, cfs, &handles_, &db_);
  if (!s.ok()) return from_rocks(s, "opening store " + opts_.path);

  std::string raw;
  s = db_->Get(rocksdb::ReadOptions(), meta_cf(), kMetaKey, &raw);
  if (s.IsNotFound()) {
    meta_.set_replica_id(opts_.replica_id != 0 ? opts_.replica_id : random_u64(opts_.random));
    meta_.set_next_seq(1);
    meta_.set_next_log_index(1);
    meta_.set_log_first_index(1);
    meta_.set_log_epoch(random_u64(opts_.random));
    rocksdb::WriteBatch b;
    stage_meta(&b);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    CANOPY_RETURN_IF_ERROR(from_rocks(db_->Write(wo, &b), "initialising store"));
  } else if (!s.ok()) {
    return from_rocks(s, "reading store metadata");
  } else if (!meta_.ParseFromString(raw) || meta_.replica_id() == 0) {
    return data_loss("store " + opts_.path + ": metadata is corrupt");
  }
  if (opts_.replica_id != 0 && opts_.replica_id != meta_.replica_id()) {
    return failed_precondition("store " + opts_.path + " belongs to replica " +
                               std::to_string(meta_.replica_id()) + ", not " +
                               std::to_string(opts_.replica_id));
  }
  hlc_ = Hlc(meta_.hlc());

  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf()));
  for (it->Seek(kVvPrefix); it->Valid() && it->key().starts_with(kVvPrefix); it->Next()) {
    v1::VersionVector::Entry e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return data_loss("store " + opts_.path + ": version vector entry is corrupt");
    }
    v1::VersionVector one;
    *one.add_entries() = e;
    vv_.merge(VersionVector::from_proto(one));
  }
  for (it->Seek(kTrimmedPrefix); it->Valid() && it->key().starts_with(kTrimmedPrefix); it->Next()) {
    trimmed_[from_be64(it->key().ToStringView().substr(sizeof(kTrimmedPrefix) - 1))] =
        from_be64(it->value().ToStringView());
  }
  // Our own dots may have come back from peers after a restore from an old
  // backup: never hand out a seq that was used before.
  const uint64_t own = vv_.contiguous(meta_.replica_id());
  if (meta_.next_seq() <= own) meta_.set_next_seq(own + 1);
  return it->status().ok() ? ok_status() : from_rocks(it->status(), "reading store metadata");
}

StatusOr<Document*> Store::Impl::load(const std::string& key, bool may_evict) {
  auto it = cache_.find(key);
  if (it != cache_.end()) return &it->second;
  if (may_evict && cache_.size() >= opts_.doc_cache_entries) cache_.clear();
  std::string raw;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), docs(), key, &raw);
  Document d;
  if (s.ok()) {
    v1::DocState st;
    if (!st.ParseFromString(raw)) return data_loss("document " + key + ": stored state is corrupt");
    auto parsed = Document::from_proto(st.root(), opts_.limits.max_depth);
    if (!parsed.ok()) return data_loss("document " + key + ": " + parsed.status().message());
    d = std::move(parsed).value();
  } else if (!s.IsNotFound()) {
    return from_rocks(s, "reading document " + key);
  }
  return &cache_.emplace(key, std::move(d)).first->second;
}

void Store::Impl::stage_doc(rocksdb::WriteBatch* b, const std::string& key, const Document& d) {
  if (d.empty()) {
    b->Delete(docs(), key).PermitUncheckedError();
    return;
  }
  v1::DocState st;
  st.set_key(key);
  d.to_proto(st.mutable_root());
  b->Put(docs(), key, st.SerializeAsString()).PermitUncheckedError();
}

void Store::Impl::stage_doc_change(rocksdb::WriteBatch* b, const std::string& key, char tag,
                                   const google::protobuf::MessageLite& change) {
  std::string operand(1, tag);
  change.AppendToString(&operand);
  b->Merge(docs(), key, operand).PermitUncheckedError();
}

void Store::Impl::stage_log(rocksdb::WriteBatch* b, v1::LogEntry* e) {
  const uint64_t index = meta_.next_log_index();
  meta_.set_next_log_index(index + 1);
  e->set_index(index);
  b->Put(log(), be64(index), e->SerializeAsString()).PermitUncheckedError();
}

uint64_t Store::Impl::stage_delta(rocksdb::WriteBatch* b, const v1::Delta& d, uint64_t source,
                                  std::vector<v1::LogEntry>* entries) {
  const uint64_t index = meta_.next_log_index();
  meta_.set_next_log_index(index + 1);
  operand_.assign(1, kDeltaOperand);
  d.AppendToString(&operand_);
  b->Merge(docs(), d.key(), operand_).PermitUncheckedError();
  const std::string_view delta_bytes = std::string_view(operand_).substr(1);
  // LogEntry{index = 1, delta = 2, source = 4} written as protobuf does.
  std::string v;
  v.reserve(delta_bytes.size() + 32);
  auto varint = [&v](uint64_t x) {
    while (x >= 0x80) {
      v.push_back(static_cast<char>((x & 0x7f) | 0x80));
      x >>= 7;
    }
    v.push_back(static_cast<char>(x));
  };
  v.push_back(0x08);
  varint(index);
  v.push_back(0x12);
  varint(delta_bytes.size());
  v.append(delta_bytes);
  if (source != 0) {
    v.push_back(0x21);
    for (int i = 0; i < 8; ++i) v.push_back(static_cast<char>((source >> (8 * i)) & 0xff));
  }
  b->Put(log(), be64(index), v).PermitUncheckedError();
  if (!listeners_.empty()) {
    v1::LogEntry& e = entries->emplace_back();
    *e.mutable_delta() = d;
    e.set_index(index);
    e.set_source(source);
  }
  return index;
}

void Store::Impl::stage_meta(rocksdb::WriteBatch* b) {
  meta_.set_hlc(hlc_.last());
  b->Put(meta_cf(), kMetaKey, meta_.SerializeAsString()).PermitUncheckedError();
}

void Store::Impl::stage_vv(rocksdb::WriteBatch* b, uint64_t replica) {
  v1::VersionVector one = vv_.to_proto();
  for (const auto& e : one.entries()) {
    if (e.replica() == replica) {
      b->Put(meta_cf(), std::string(kVvPrefix) + be64(replica), e.SerializeAsString())
          .PermitUncheckedError();
      return;
    }
  }
}

void Store::Impl::stage_conflict(rocksdb::WriteBatch* b, const std::string& key, const Overwrite& o,
                                 v1::ConflictRecord::Reason reason) {
  v1::ConflictRecord r;
  r.set_key(key);
  for (const auto& p : o.path) r.add_path(p);
  r.mutable_loser()->set_replica(o.loser.replica);
  r.mutable_loser()->set_seq(o.loser_seq);
  r.set_loser_hlc(o.loser.hlc);
  r.set_loser_removed(o.loser_removed);
  r.set_loser_value(o.loser_value);
  r.mutable_winner()->set_replica(o.winner.replica);
  r.mutable_winner()->set_seq(o.winner_seq);
  r.set_winner_hlc(o.winner.hlc);
  r.set_reason(reason);
  r.set_recorded_at_hlc(hlc_.last());
  std::string ck = key;
  ck.push_back('\0');
  ck += be64(o.winner.replica) + be64(o.winner_seq) + be64(o.loser.replica) + be64(o.loser_seq);
  for (const auto& p : o.path) {
    ck.push_back('\x1f');
    ck += p;
  }
  b->Put(conflicts_cf(), ck, r.SerializeAsString()).PermitUncheckedError();
  ++stats_.conflicts;
}

Status Store::Impl::commit(rocksdb::WriteBatch* b) {
  rocksdb::WriteOptions wo;
  wo.sync = opts_.durability == Durability::kSync;
  wo.disableWAL = false;
  return from_rocks(db_->Write(wo, b), "committing write batch");
}

Status Store::Impl::wait_durable(std::unique_lock<std::mutex>& lock, uint64_t ticket) {
  if (opts_.durability != Durability::kGroupCommit) return ok_status();
  while (durable_ticket_ < ticket) {
    if (syncing_) {
      durable_cv_.wait(lock);
      continue;
    }
    // Become the leader: one fsync covers every write made so far.
    syncing_ = true;
    const uint64_t target = written_ticket_;
    lock.unlock();
    rocksdb::Status s = db_->SyncWAL();
    lock.lock();
    syncing_ = false;
    if (s.ok()) {
      durable_ticket_ = std::max(durable_ticket_, target);
      publish_durable();
    }
    durable_cv_.notify_all();
    if (!s.ok()) return from_rocks(s, "syncing the write-ahead log");
  }
  return ok_status();
}

void Store::Impl::notify(const std::vector<v1::LogEntry>& entries) {
  for (const auto& e : entries) {
    for (auto& [id, l] : listeners_) l(e);
  }
}

void Store::Impl::publish(uint64_t ticket, std::vector<v1::LogEntry> entries) {
  if (opts_.durability != Durability::kGroupCommit) {
    notify(entries);
    return;
  }
  unpublished_.emplace_back(ticket, std::move(entries));
}

void Store::Impl::publish_durable() {
  // In ticket order, which is commit (log index) order.
  while (!unpublished_.empty() && unpublished_.front().first <= durable_ticket_) {
    notify(unpublished_.front().second);
    unpublished_.pop_front();
  }
}

StatusOr<v1::Delta> Store::Impl::write_local(std::string_view key_view,
                                             const std::optional<json>& target_in,
                                             const json* merge_patch) {
  const std::string key(key_view);
  CANOPY_RETURN_IF_ERROR(validate_key(key, opts_.limits.max_key_bytes));
  std::unique_lock lock(mu_);
  auto loaded = load(key);
  if (!loaded.ok()) return loaded.status();
  Document* doc = *loaded;
  std::optional<json> patched;
  if (merge_patch != nullptr) {
    patched = apply_merge_patch(doc->exists() ? doc->to_value() : json::object(), *merge_patch);
  }
  const std::optional<json>& target = merge_patch != nullptr ? patched : target_in;

  v1::Delta delta;
  delta.set_key(key);
  if (target.has_value()) {
    const size_t bytes = target->dump().size();
    if (bytes > opts_.limits.max_doc_bytes) {
      return invalid_argument("document " + key + " of " + std::to_string(bytes) +
                              " bytes exceeds the limit of " +
                              std::to_string(opts_.limits.max_doc_bytes));
    }
    // The same depth limit as parse_document: a deeper document could be
    // written but never loaded again (Document::from_proto refuses it).
    if (json_depth(*target) > opts_.limits.max_depth) {
      return invalid_argument("document " + key + " nests deeper than " +
                              std::to_string(opts_.limits.max_depth));
    }
    std::vector<v1::FieldOp> ops;
    doc->diff(*target, &ops);
    for (auto& op : ops) *delta.add_ops() = std::move(op);
  } else {
    if (!doc->exists()) return not_found("document " + key + " does not exist");
    delta.add_ops()->set_kind(v1::FieldOp::REMOVE);
  }
  if (delta.ops_size() == 0) return delta;

  Saved saved = save();
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
  vv_.add(meta_.replica_id(), seq);

  rocksdb::WriteBatch& b = reusable_batch();
  std::vector<v1::LogEntry> entries;
  stage_delta(&b, delta, /*source=*/0, &entries);
  stage_vv(&b, meta_.replica_id());
  stage_meta(&b);
  Status st = commit(&b);
  if (!st.ok()) {
    cache_.erase(key);
    restore(std::move(saved));
    return st;
  }
  const uint64_t ticket = ++written_ticket_;
  publish(ticket, std::move(entries));
  CANOPY_RETURN_IF_ERROR(wait_durable(lock, ticket));
  return delta;
}

StatusOr<v1::Delta> Store::Impl::patch(std::string_view key, std::string_view text) {
  auto patch = parse_document(text, opts_.limits);
  if (!patch.ok()) {
    return invalid_argument("merge patch for " + std::string(key) + ": " +
                            patch.status().message());
  }
  // Read, patch and write under one lock: a patch read outside it would write
  // back stale values of fields that a concurrent writer changed meanwhile.
  return write_local(key, std::nullopt, &*patch);
}

StatusOr<std::string> Store::Impl::get(std::string_view key) {
  CANOPY_RETURN_IF_ERROR(validate_key(key, opts_.limits.max_key_bytes));
  std::lock_guard lock(mu_);
  auto loaded = load(std::string(key));
  if (!loaded.ok()) return loaded.status();
  if (!(*loaded)->exists()) return not_found("document " + std::string(key) + " does not exist");
  return (*loaded)->to_json();
}

StatusOr<ScanPage> Store::Impl::scan(std::string_view prefix, std::string_view after,
                                     size_t limit) {
  ScanPage page;
  if (limit == 0) return page;
  std::lock_guard lock(mu_);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), docs()));
  std::string start = std::max(std::string(prefix), std::string(after));
  for (it->Seek(start); it->Valid(); it->Next()) {
    const std::string_view k = it->key().ToStringView();
    if (!k.starts_with(prefix)) break;
    if (!after.empty() && k <= after) continue;
    std::string json_text;
    auto cached = cache_.find(std::string(k));
    if (cached != cache_.end()) {
      json_text = cached->second.to_json();
    } else {
      v1::DocState st;
      if (!st.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return data_loss("document " + std::string(k) + ": stored state is corrupt");
      }
      auto d = Document::from_proto(st.root(), opts_.limits.max_depth);
      if (!d.ok()) return data_loss("document " + std::string(k) + ": " + d.status().message());
      json_text = d->to_json();
    }
    if (json_text.empty()) continue;  // deleted
    if (page.items.size() == limit) {
      page.next_after = page.items.back().key;
      break;
    }
    page.items.push_back({std::string(k), std::move(json_text)});
  }
  if (!it->status().ok()) return from_rocks(it->status(), "scanning documents");
  return page;
}

std::vector<v1::ConflictRecord> Store::Impl::conflicts(std::string_view key) {
  std::vector<v1::ConflictRecord> out;
  std::lock_guard lock(mu_);
  std::string prefix(key);
  prefix.push_back('\0');
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), conflicts_cf()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    v1::ConflictRecord r;
    if (r.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      out.push_back(std::move(r));
    }
  }
  return out;
}

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
  if (cache_.size() + batch.size() > opts_.doc_cache_entries) {
    cache_.clear();
  }
  Saved saved = save();
  rocksdb::WriteBatch& b = reusable_batch();
  std::vector<v1::LogEntry> entries;
  std::vector<std::string> touched;
  std::vector<Overwrite> overwrites;
  std::map<uint64_t, bool> vv_dirty;
  for (const v1::Delta* dp : batch) {
    const v1::Delta& d = *dp;
    if (vv_.contains(d.dot().replica(), d.dot().seq())) {
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
    auto loaded = load(d.key(), /*may_evict=*/false);
    if (!loaded.ok()) {
      // Nothing of this batch is committed: forget what was staged in memory.
      for (const auto& k : touched) cache_.erase(k);
      restore(std::move(saved));
      return loaded.status();
    }
    overwrites.clear();
    (*loaded)->apply(d, &overwrites);
    for (const Overwrite& o : overwrites) {
      const bool winner_is_new =
          o.winner.replica == d.dot().replica() && o.winner_seq == d.dot().seq();
      stage_conflict(&b, d.key(), o,
                     skewed && winner_is_new ? v1::ConflictRecord::CLOCK_SKEW
                                             : v1::ConflictRecord::CONCURRENT);
      ++result.conflicts;
    }
    vv_.add(d.dot().replica(), d.dot().seq());
    vv_dirty[d.dot().replica()] = true;
    if (d.dot().replica() == meta_.replica_id() && d.dot().seq() >= meta_.next_seq()) {
      meta_.set_next_seq(d.dot().seq() + 1);
    }
    stage_delta(&b, d, source, &entries);
    touched.push_back(d.key());
    ++result.applied;
  }
  if (result.applied == 0) return result;
  for (const auto& [r, dirty] : vv_dirty) stage_vv(&b, r);
  stage_meta(&b);
  Status st = commit(&b);
  if (!st.ok()) {
    for (const auto& k : touched) cache_.erase(k);
    restore(std::move(saved));
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

Status Store::Impl::drop(const std::vector<std::string>& keys) {
  std::unique_lock lock(mu_);
  rocksdb::WriteBatch b;
  std::vector<v1::LogEntry> dropped(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    b.Delete(docs(), keys[i]).PermitUncheckedError();
    cache_.erase(keys[i]);
    dropped[i].mutable_doc()->set_key(keys[i]);  // index 0: not in the log
  }
  CANOPY_RETURN_IF_ERROR(commit(&b));
  const uint64_t ticket = ++written_ticket_;
  notify(dropped);
  return wait_durable(lock, ticket);
}

StatusOr<std::vector<v1::Delta>> Store::Impl::missing_since(const VersionVector& peer,
                                                            const KeyFilter& f, size_t limit,
                                                            bool* complete) {
  std::lock_guard lock(mu_);
  *complete = true;
  for (const auto& [origin, seq] : trimmed_) {
    if (peer.contiguous(origin) < seq) *complete = false;
  }
  std::vector<v1::Delta> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), log()));
  for (it->SeekToFirst(); it->Valid() && out.size() < limit; it->Next()) {
    v1::LogEntry e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return data_loss("log entry " + std::to_string(from_be64(it->key().ToStringView())) +
                       " is corrupt");
    }
    if (!e.has_delta()) continue;
    const auto& dot = e.delta().dot();
    if (peer.contains(dot.replica(), dot.seq())) continue;
    if (f && !f(e.delta().key())) continue;
    out.push_back(std::move(*e.mutable_delta()));
  }
  return out;
}

StatusOr<LogRead> Store::Impl::log_since(uint64_t epoch, uint64_t after, const KeyFilter& f,
                                         size_t limit) {
  std::lock_guard lock(mu_);
  LogRead r;
  const uint64_t last = meta_.next_log_index() - 1;
  r.last_index = after;
  if (epoch != meta_.log_epoch() || after > last || after + 1 < meta_.log_first_index()) {
    r.complete = false;
    r.last_index = last;
    return r;
  }
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), log()));
  for (it->Seek(be64(after + 1)); it->Valid(); it->Next()) {
    v1::LogEntry e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return data_loss("log entry " + std::to_string(from_be64(it->key().ToStringView())) +
                       " is corrupt");
    }
    if (!f || f(entry_key(e))) {
      if (r.entries.size() == limit) break;
      r.entries.push_back(std::move(e));
    }
    r.last_index = from_be64(it->key().ToStringView());
  }
  if (!it->Valid()) r.last_index = std::max(r.last_index, last);
  return r;
}

uint64_t Store::doc_id(std::string_view key, std::string_view state) {
  return XXH3_64bits_withSeed(key.data(), key.size(), XXH3_64bits(state.data(), state.size()));
}

StatusOr<std::vector<std::pair<std::string, uint64_t>>> Store::Impl::hashes_of(
    const std::vector<std::string>& keys) {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, uint64_t>> out;
  out.reserve(keys.size());
  // One iterator, seeking forward through the sorted keys: neighbouring keys
  // share blocks, and no key costs a fresh lookup from the top.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), docs()));
  for (const std::string& key : keys) {
    if (!it->Valid() || it->key().ToStringView() < key) {
      it->Seek(rocksdb::Slice(key.data(), key.size()));
    }
    if (!it->Valid()) break;
    if (it->key().ToStringView() != key) continue;
    const std::string_view v = it->value().ToStringView();
    out.emplace_back(key, doc_id(key, v));
  }
  if (!it->status().ok()) return from_rocks(it->status(), "fingerprinting");
  return out;
}

StatusOr<std::vector<std::pair<std::string, uint64_t>>> Store::Impl::hashes(std::string_view first,
                                                                            std::string_view last,
                                                                            const KeyFilter& f) {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, uint64_t>> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), docs()));
  for (it->Seek(rocksdb::Slice(first.data(), first.size())); it->Valid(); it->Next()) {
    const std::string_view k = it->key().ToStringView();
    if (k > last) break;
    if (f && !f(k)) continue;
    const std::string_view v = it->value().ToStringView();
    out.emplace_back(std::string(k), doc_id(k, v));
  }
  if (!it->status().ok()) return from_rocks(it->status(), "fingerprinting");
  return out;
}

StatusOr<std::vector<v1::DocState>> Store::Impl::states(std::string_view first,
                                                        std::string_view last, const KeyFilter& f,
                                                        size_t limit) {
  std::lock_guard lock(mu_);
  std::vector<v1::DocState> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), docs()));
  for (it->Seek(rocksdb::Slice(first.data(), first.size())); it->Valid() && out.size() < limit;
       it->Next()) {
    const std::string_view k = it->key().ToStringView();
    if (k > last) break;
    if (f && !f(k)) continue;
    v1::DocState& st = out.emplace_back();
    if (!st.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return data_loss("document " + std::string(k) + ": stored state is corrupt");
    }
  }
  return out;
}

StatusOr<std::optional<v1::DocState>> Store::Impl::state(std::string_view key) {
  std::lock_guard lock(mu_);
  std::string raw;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), docs(), rocksdb::Slice(key.data(), key.size()), &raw);
  if (s.IsNotFound()) return std::optional<v1::DocState>();
  CANOPY_RETURN_IF_ERROR(from_rocks(s, "reading document state"));
  v1::DocState st;
  if (!st.ParseFromString(raw)) return data_loss("document " + std::string(key) + ": corrupt");
  return std::optional<v1::DocState>(std::move(st));
}

Status Store::Impl::trim_log(uint64_t up_to) {
  // One trim at a time; the entries it reads are written once and only a
  // trim deletes them, so they are read without the store's lock, which
  // writers need (a million entries take seconds to read).
  std::lock_guard trim_lock(trim_mu_);
  uint64_t first = 0;
  {
    std::lock_guard lock(mu_);
    first = meta_.log_first_index();
    up_to = std::min(up_to, meta_.next_log_index() - 1);
  }
  if (up_to < first) return ok_status();
  std::map<uint64_t, uint64_t> max_seq;  // origin -> greatest seq in the trimmed entries
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), log()));
    for (it->Seek(be64(first)); it->Valid() && from_be64(it->key().ToStringView()) <= up_to;
         it->Next()) {
      v1::LogEntry e;
      if (e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())) &&
          e.has_delta()) {
        uint64_t& m = max_seq[e.delta().dot().replica()];
        m = std::max(m, e.delta().dot().seq());
      }
    }
    if (!it->status().ok()) return from_rocks(it->status(), "reading the log to trim");
  }
  std::unique_lock lock(mu_);
  rocksdb::WriteBatch b;
  std::map<uint64_t, uint64_t> changed;
  for (const auto& [origin, seq] : max_seq) {
    uint64_t& m = trimmed_[origin];
    if (seq > m) {
      m = seq;
      changed[origin] = m;
    }
  }
  for (const auto& [origin, seq] : changed) {
    b.Put(meta_cf(), std::string(kTrimmedPrefix) + be64(origin), be64(seq)).PermitUncheckedError();
  }
  b.DeleteRange(log(), be64(first), be64(up_to + 1)).PermitUncheckedError();
  meta_.set_log_first_index(up_to + 1);
  stage_meta(&b);
  CANOPY_RETURN_IF_ERROR(commit(&b));
  return wait_durable(lock, ++written_ticket_);
}

Status Store::Impl::trim_log_older_than(uint64_t retention_ms) {
  uint64_t up_to = 0;
  {
    std::lock_guard lock(mu_);
    const uint64_t now = clock_->now_ms();
    if (now <= retention_ms) return ok_status();
    const uint64_t horizon = hlc_from_ms(now - retention_ms);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), log()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      v1::LogEntry e;
      if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) break;
      const uint64_t stamp = e.has_delta() ? e.delta().hlc() : 0;
      if (e.has_delta() && stamp >= horizon) break;
      up_to = e.index();
    }
  }
  return trim_log(up_to);
}

StatusOr<size_t> Store::Impl::collect_tombstones(uint64_t stable_hlc) {
  std::unique_lock lock(mu_);
  size_t dropped = 0;
  rocksdb::WriteBatch b;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), docs()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string k = it->key().ToString();
    auto loaded = load(k);
    if (!loaded.ok()) return loaded.status();
    const size_t n = (*loaded)->collect_tombstones(stable_hlc);
    if (n == 0) continue;
    dropped += n;
    stage_doc(&b, k, **loaded);
    if ((*loaded)->empty()) cache_.erase(k);
  }
  if (dropped == 0) return dropped;
  CANOPY_RETURN_IF_ERROR(commit(&b));
  CANOPY_RETURN_IF_ERROR(wait_durable(lock, ++written_ticket_));
  return dropped;
}

Status Store::Impl::compact() {
  std::lock_guard lock(mu_);
  for (auto* h : handles_) {
    CANOPY_RETURN_IF_ERROR(from_rocks(db_->Flush(rocksdb::FlushOptions(), h), "flush"));
    rocksdb::CompactRangeOptions co;
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    CANOPY_RETURN_IF_ERROR(from_rocks(db_->CompactRange(co, h, nullptr, nullptr), "compaction"));
  }
  return ok_status();
}

void Store::expire_older_than(uint64_t retention_ms) {
  if (Status s = trim_log_older_than(retention_ms); !s.ok()) {
    spdlog::warn("store: trimming the log: {}", s.to_string());
  }
  const uint64_t now = impl_->now_ms();
  if (now <= retention_ms) return;
  auto n = collect_tombstones(hlc_from_ms(now - retention_ms));
  if (!n.ok()) {
    spdlog::warn("store: collecting tombstones: {}", n.status().to_string());
  } else if (*n > 0) {
    spdlog::info("store: collected {} tombstones", *n);
  }
}

StatusOr<Durability> parse_durability(std::string_view name) {
  if (name == "sync") return Durability::kSync;
  if (name == "group") return Durability::kGroupCommit;
  return invalid_argument("durability \"" + std::string(name) + "\" must be \"sync\" or \"group\"");
}

// --- Store: forwards to Impl.

StatusOr<std::unique_ptr<Store>> Store::open(const StoreOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  CANOPY_RETURN_IF_ERROR(impl->open());
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

uint64_t Store::replica_id() const { return impl_->replica_id(); }
uint64_t Store::log_epoch() const { return impl_->log_epoch(); }

StatusOr<v1::Delta> Store::put(std::string_view key, std::string_view json_text) {
  auto doc = parse_document(json_text, impl_->limits());
  if (!doc.ok())
    return invalid_argument("document " + std::string(key) + ": " + doc.status().message());
  return impl_->write_local(key, *doc);
}

StatusOr<v1::Delta> Store::put_value(std::string_view key, const nlohmann::json& doc) {
  if (!doc.is_object()) {
    return invalid_argument("document " + std::string(key) + " must be a JSON object");
  }
  return impl_->write_local(key, doc);
}

StatusOr<v1::Delta> Store::patch(std::string_view key, std::string_view text) {
  return impl_->patch(key, text);
}

StatusOr<v1::Delta> Store::remove(std::string_view key) {
  return impl_->write_local(key, std::nullopt);
}

StatusOr<std::string> Store::get(std::string_view key) { return impl_->get(key); }

StatusOr<ScanPage> Store::scan(std::string_view prefix, std::string_view start_after,
                               size_t limit) {
  return impl_->scan(prefix, start_after, limit);
}

std::vector<v1::ConflictRecord> Store::conflicts(std::string_view key) {
  return impl_->conflicts(key);
}

StatusOr<ApplyResult> Store::apply_remote(const v1::DeltaBatch& batch, uint64_t source) {
  std::vector<const v1::Delta*> deltas;
  deltas.reserve(static_cast<size_t>(batch.deltas_size()));
  for (const auto& d : batch.deltas()) deltas.push_back(&d);
  return impl_->apply_remote(deltas, source);
}

StatusOr<ApplyResult> Store::apply_remote(std::span<const v1::Delta* const> deltas,
                                          uint64_t source) {
  return impl_->apply_remote(deltas, source);
}

Status Store::apply_states(const std::vector<v1::DocState>& docs, uint64_t source) {
  return impl_->apply_states(docs, source);
}

Status Store::drop(const std::vector<std::string>& keys) { return impl_->drop(keys); }

VersionVector Store::version_vector() { return impl_->version_vector(); }
Status Store::reserve_seqs_through(uint64_t seq) { return impl_->reserve_seqs_through(seq); }
Status Store::renew_log_epoch() { return impl_->renew_log_epoch(); }

StatusOr<std::vector<v1::Delta>> Store::missing_since(const VersionVector& peer,
                                                      const KeyFilter& filter, size_t limit,
                                                      bool* complete) {
  return impl_->missing_since(peer, filter, limit, complete);
}

StatusOr<LogRead> Store::log_since(uint64_t epoch, uint64_t after_index, const KeyFilter& filter,
                                   size_t limit) {
  return impl_->log_since(epoch, after_index, filter, limit);
}

uint64_t Store::last_log_index() { return impl_->last_log_index(); }
uint64_t Store::first_log_index() { return impl_->first_log_index(); }
StatusOr<std::optional<uint64_t>> Store::own_delta_hlc(uint64_t seq) {
  return impl_->own_delta_hlc(seq);
}

StatusOr<v1::RangeFingerprint> Store::fingerprint(std::string_view first, std::string_view last,
                                                  const KeyFilter& filter) {
  auto hs = doc_hashes(first, last, filter);
  if (!hs.ok()) return hs.status();
  v1::RangeFingerprint fp;
  fp.set_first(std::string(first));
  fp.set_last(std::string(last));
  uint64_t sum = 0;
  for (const auto& [k, h] : *hs) sum += h;
  fp.set_count(hs->size());
  fp.set_hash(sum);
  return fp;
}

StatusOr<std::vector<std::pair<std::string, uint64_t>>> Store::doc_hashes(std::string_view first,
                                                                          std::string_view last,
                                                                          const KeyFilter& filter) {
  return impl_->hashes(first, last, filter);
}

StatusOr<std::vector<std::pair<std::string, uint64_t>>> Store::doc_hashes_of(
    std::vector<std::string> keys) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return impl_->hashes_of(keys);
}

StatusOr<std::vector<v1::RangeFingerprint>> Store::split_fingerprints(std::string_view first,
                                                                      std::string_view last,
                                                                      const KeyFilter& filter,
                                                                      size_t parts) {
  auto hs = doc_hashes(first, last, filter);
  if (!hs.ok()) return hs.status();
  std::vector<v1::RangeFingerprint> out;
  if (parts == 0) parts = 1;
  const size_t n = hs->size();
  const size_t per = std::max<size_t>(1, (n + parts - 1) / parts);
  for (size_t i = 0; i < n; i += per) {
    const size_t end = std::min(n, i + per);
    v1::RangeFingerprint& fp = out.emplace_back();
    // Ranges tile [first, last]: the first starts at `first`, the last ends at `last`.
    // The smallest key above the previous range's last (keys hold no NUL).
    fp.set_first(i == 0 ? std::string(first) : (*hs)[i - 1].first + std::string(1, '\0'));
    fp.set_last(end == n ? std::string(last) : (*hs)[end - 1].first);
    uint64_t sum = 0;
    for (size_t j = i; j < end; ++j) sum += (*hs)[j].second;
    fp.set_count(end - i);
    fp.set_hash(sum);
  }
  if (out.empty()) {
    v1::RangeFingerprint& fp = out.emplace_back();
    fp.set_first(std::string(first));
    fp.set_last(std::string(last));
  }
  return out;
}

StatusOr<std::vector<v1::DocState>> Store::states(std::string_view first, std::string_view last,
                                                  const KeyFilter& filter, size_t limit) {
  return impl_->states(first, last, filter, limit);
}

StatusOr<std::optional<v1::DocState>> Store::state(std::string_view key) {
  return impl_->state(key);
}

Status Store::trim_log(uint64_t up_to_index) { return impl_->trim_log(up_to_index); }
Status Store::trim_log_older_than(uint64_t retention_ms) {
  return impl_->trim_log_older_than(retention_ms);
}
StatusOr<size_t> Store::collect_tombstones(uint64_t stable_hlc) {
  return impl_->collect_tombstones(stable_hlc);
}

uint64_t Store::subscribe(Listener listener) { return impl_->subscribe(std::move(listener)); }
void Store::unsubscribe(uint64_t id) { impl_->unsubscribe(id); }
Status Store::put_local(std::string_view name, std::string_view value) {
  return impl_->put_local(name, value);
}
StatusOr<std::optional<std::string>> Store::get_local(std::string_view name) {
  return impl_->get_local(name);
}
StoreStats Store::stats() { return impl_->stats(); }
Status Store::compact() { return impl_->compact(); }

}  // namespace canopy

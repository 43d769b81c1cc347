#include "store/store.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/options_util.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <xxhash.h>

#include <algorithm>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_map>

#include "store/doc_merge.h"
#include "store/hlc.h"
#include "store/store_impl.h"

namespace canopy {

using namespace store_internal;

namespace {

// RocksDB's own log, into the daemon's (prefixed "rocksdb <path>:"): its
// warnings reach the operator where the rest is, and no LOG file grows beside
// the data. On a full disk that file would also be fatal: Debian's
// librocksdb is built with its assertions, and its second write after a
// failed one aborts the process. Its informational lines are trace.
class RocksLog final : public rocksdb::Logger {
 public:
  explicit RocksLog(std::string path)
      : rocksdb::Logger(spdlog::should_log(spdlog::level::trace) ? rocksdb::INFO_LEVEL
                                                                 : rocksdb::WARN_LEVEL),
        path_(std::move(path)) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override { Logv(rocksdb::INFO_LEVEL, format, ap); }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    spdlog::level::level_enum to = spdlog::level::trace;
    if (level == rocksdb::WARN_LEVEL) to = spdlog::level::warn;
    if (level == rocksdb::ERROR_LEVEL || level == rocksdb::FATAL_LEVEL) to = spdlog::level::err;
    if (!spdlog::should_log(to)) return;
    char line[1024];
    const int n = std::vsnprintf(line, sizeof line, format, ap);
    if (n < 0) return;
    std::string_view text(line, std::min<size_t>(static_cast<size_t>(n), sizeof line - 1));
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    spdlog::log(to, "rocksdb {}: {}", path_, text);
  }

 private:
  std::string path_;
};

// A document is written whole only as a JSON object.
Status require_object(std::string_view key, const json& doc) {
  if (doc.is_object()) return ok_status();
  return invalid_argument("document " + std::string(key) + " must be a JSON object");
}

}  // namespace

Status Store::Impl::open() {
  if (opts_.env == nullptr) {
    std::error_code ec;
    std::filesystem::create_directories(opts_.path, ec);
    if (ec) return unavailable("store directory " + opts_.path + ": " + ec.message());
  }

  rocksdb::Options options;
  if (opts_.env != nullptr) options.env = opts_.env;
  options.info_log = std::make_shared<RocksLog>(opts_.path);
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  options.max_file_opening_threads = opts_.file_opening_threads;
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
  // No preallocation: RocksDB would reserve write_buffer_size * 1.1 (70 MB)
  // for every WAL and 4 MB for the MANIFEST with fallocate, so each store,
  // however small, held 75 MB of disk (a site's SD card; the fan-out bench's
  // 1,000 spoke stores filled 73 GB).
  options.allow_fallocate = false;
  rocksdb::ColumnFamilyOptions cf;
  std::shared_ptr<rocksdb::Cache> block_cache;
  if (opts_.block_cache_bytes > 0) {
    block_cache = rocksdb::NewLRUCache(opts_.block_cache_bytes);
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = block_cache;
    cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  }
  if (opts_.write_buffer_bytes > 0) {
    cf.write_buffer_size = opts_.write_buffer_bytes;
    cf.arena_block_size = std::min<size_t>(opts_.write_buffer_bytes / 8, 64 << 10);
    options.db_write_buffer_size = 2 * opts_.write_buffer_bytes;
  }
  if (opts_.env == nullptr) {
    reserve_bytes_ = opts_.disk_reserve_bytes == StoreOptions::kDiskReserveAuto
                         ? cf.write_buffer_size + (4 << 20)
                         : opts_.disk_reserve_bytes;
  }
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
  docs_table.block_cache = block_cache;
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
  // Put back from a backup (the operator's restore leaves the marker): the
  // replica's seqs up to the present may have reached peers that this copy
  // never heard of, and no peer can be relied on to say so (an active-active
  // level where the site's last writes went to the other hub). Writing on
  // under the old id would reuse those dots, and a peer holding the old write
  // would discard the new one as a duplicate. So the store becomes a new
  // replica: its documents keep their dots (the old id is retired), its own
  // writes start a fresh id, and a new log epoch voids every position held
  // in its log.
  rocksdb::Env* env = opts_.env != nullptr ? opts_.env : rocksdb::Env::Default();
  const std::string marker = opts_.path + "/" + kRestoredMarker;
  const bool restored = env->FileExists(marker).ok();
  if (restored) {
    const uint64_t old_id = meta_.replica_id();
    uint64_t id = old_id;
    while (id == old_id || id == 0) id = random_u64(opts_.random);
    uint64_t epoch = meta_.log_epoch();
    while (epoch == meta_.log_epoch()) epoch = random_u64(opts_.random);
    meta_.set_replica_id(id);
    meta_.set_next_seq(1);
    meta_.set_log_epoch(epoch);
    rocksdb::WriteBatch b;
    stage_meta(&b);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    CANOPY_RETURN_IF_ERROR(from_rocks(db_->Write(wo, &b), "renewing the replica id"));
    // Only once the new id is durable: a crash before this takes yet another.
    CANOPY_RETURN_IF_ERROR(from_rocks(env->DeleteFile(marker), "removing " + marker));
    spdlog::warn("store {}: restored from a backup ({} found): replica {:016x} is now {:016x}",
                 opts_.path, kRestoredMarker, old_id, id);
  } else if (opts_.replica_id != 0 && opts_.replica_id != meta_.replica_id()) {
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
  for (it->Seek(kTopPrefix); it->Valid() && it->key().starts_with(kTopPrefix); it->Next()) {
    const std::string_view v = it->value().ToStringView();
    if (it->key().size() != sizeof(kTopPrefix) - 1 + 8 || v.size() != 16) {
      return data_loss("store " + opts_.path + ": top dot entry is corrupt");
    }
    top_[from_be64(it->key().ToStringView().substr(sizeof(kTopPrefix) - 1))] =
        TopDot{from_be64(v.substr(0, 8)), from_be64(v.substr(8))};
  }
  it->Seek(kDroppedPrefix);
  dropped_any_ = it->Valid() && it->key().starts_with(kDroppedPrefix);
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

StatusOr<Document*> Store::Impl::load(const std::string& key) {
  if (Document* cached = cache_.find(key)) return cached;
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
  return cache_.insert(key, std::move(d));
}

void Store::Impl::stage_doc(rocksdb::WriteBatch* b, const std::string& key, const Document& d) {
  gc_note(key);
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
  gc_note(key);
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
  gc_note(d.key());
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
  // One replica's entry: a hub's vector has one per site.
  v1::VersionVector::Entry e;
  if (!vv_.entry_to_proto(replica, &e)) return;
  b->Put(meta_cf(), std::string(kVvPrefix) + be64(replica), e.SerializeAsString())
      .PermitUncheckedError();
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

Status Store::Impl::commit(rocksdb::WriteBatch* b, bool adds_data) {
  if (adds_data) CANOPY_RETURN_IF_ERROR(check_reserve(b->GetDataSize()));
  rocksdb::WriteOptions wo;
  wo.sync = opts_.durability == Durability::kSync;
  wo.disableWAL = false;
  const rocksdb::Status s = db_->Write(wo, b);
  note_write(s, "committing write batch");
  return from_rocks(s, "committing write batch");
}

namespace {
std::string mebibytes(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}
}  // namespace

Status Store::Impl::check_reserve(uint64_t adding) {
  if (reserve_bytes_ == 0) return ok_status();
  // At every commit (a statvfs is a fraction of a commit's cost): another
  // process may fill the disk between two writes.
  const bool below = below_reserve_.load(std::memory_order_relaxed);
  struct statvfs fs {};
  if (::statvfs(opts_.path.c_str(), &fs) != 0) return ok_status();  // RocksDB will say
  const uint64_t free = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (free >= reserve_bytes_) {
    if (below) {
      below_reserve_.store(false, std::memory_order_release);
      spdlog::info("store {}: writes work again: the disk has {} free, above the reserve",
                   opts_.path, mebibytes(free));
    }
    if (free - reserve_bytes_ >= adding) return ok_status();
    // Room above the reserve, but not for this write (a large batch: a
    // reconciliation's documents, many writes combined): it alone is
    // refused, and the store stays writable for smaller ones.
    ++write_failures_;
    return unavailable("the store cannot take this write: it adds " + mebibytes(adding) +
                       " and the disk holding " + opts_.path + " has " + mebibytes(free) +
                       " free, so it would go below the store's reserve of " +
                       mebibytes(reserve_bytes_) + " (smaller writes still work)");
  }
  ++write_failures_;
  const std::string why = "the store cannot write: the disk holding " + opts_.path + " has " +
                          mebibytes(free) + " free, below the store's reserve of " +
                          mebibytes(reserve_bytes_) +
                          "; writes are refused until it has room (reads still work)";
  if (!below) {
    {
      std::lock_guard lock(health_mu_);
      reserve_error_ = why;
    }
    below_reserve_.store(true, std::memory_order_release);
    spdlog::error("{}", why);
  }
  return unavailable(why);
}

void Store::Impl::note_write(const rocksdb::Status& s, std::string_view what) {
  const bool failing = writes_failing_.load(std::memory_order_relaxed);
  if (s.ok()) {
    if (!failing) return;
    writes_failing_.store(false, std::memory_order_release);
    spdlog::info("store {}: writes work again, {} s after the disk first refused one", opts_.path,
                 (clock_->now_ms() - writes_failing_since_ms_) / 1000);
    return;
  }
  ++write_failures_;
  if (failing) return;
  {
    std::lock_guard lock(health_mu_);
    write_error_ = "the store cannot write: " + std::string(what) + ": " + s.ToString();
  }
  writes_failing_since_ms_ = clock_->now_ms();
  writes_failing_.store(true, std::memory_order_release);
  spdlog::error(
      "store {}: {}: {}; writes fail until RocksDB recovers, by itself once the disk "
      "has room",
      opts_.path, what, s.ToString());
}

Status Store::Impl::wait_durable(std::unique_lock<std::mutex>& lock, uint64_t ticket) {
  if (opts_.durability != Durability::kGroupCommit) return ok_status();
  while (durable_ticket_ < ticket) {
    if (syncing_) {
      durable_cv_.wait(lock);
      continue;
    }
    // Not while the disk refuses writes (see writes_failing_): the write
    // stays undurable, and is reported so; it is covered by the first fsync
    // after RocksDB recovered.
    if (writes_failing_.load(std::memory_order_relaxed)) {
      Status failing = write_health();
      return failing.ok() ? unavailable("the store cannot write") : failing;
    }
    // Become the leader: one fsync covers every write made so far.
    syncing_ = true;
    const uint64_t target = written_ticket_;
    lock.unlock();
    rocksdb::Status s = db_->SyncWAL();
    lock.lock();
    syncing_ = false;
    if (!s.ok()) note_write(s, "syncing the write-ahead log");
    if (s.ok()) {
      durable_ticket_ = std::max(durable_ticket_, target);
      CANOPY_CHECK(durable_ticket_ <= written_ticket_);
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
  // Listeners see commits in log order: tickets are taken under the lock, in
  // commit order, and published in ticket order.
  CANOPY_CHECK(unpublished_.empty() || unpublished_.back().first < ticket);
  unpublished_.emplace_back(ticket, std::move(entries));
}

void Store::Impl::publish_durable() {
  // In ticket order, which is commit (log index) order.
  while (!unpublished_.empty() && unpublished_.front().first <= durable_ticket_) {
    notify(unpublished_.front().second);
    unpublished_.pop_front();
  }
}

std::vector<StatusOr<v1::Delta>> Store::Impl::put_values(
    const std::vector<std::pair<std::string, json>>& docs) {
  std::vector<StatusOr<v1::Delta>> results(docs.size(), StatusOr<v1::Delta>(v1::Delta()));
  std::vector<bool> valid(docs.size(), false);
  for (size_t i = 0; i < docs.size(); ++i) {
    const auto& [key, doc] = docs[i];
    Status st = validate_key(key, opts_.limits.max_key_bytes);
    if (st.ok()) st = require_object(key, doc);
    if (st.ok()) st = check_local_limits(key, doc);
    if (!st.ok()) {
      results[i] = st;
      continue;
    }
    valid[i] = true;
  }
  std::unique_lock lock(mu_);
  cache_.make_room(docs.size());  // staged documents stay until the commit
  Saved saved = save();
  VersionVector::Undo vv_undo;
  vv_undo.note(vv_, meta_.replica_id());
  rocksdb::WriteBatch& b = reusable_batch();
  std::vector<v1::LogEntry> entries;
  std::vector<const std::string*> staged;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (!valid[i]) continue;
    results[i] = stage_local(docs[i].first, docs[i].second, nullptr, &b, &entries);
    if (results[i].ok() && results[i]->ops_size() > 0) staged.push_back(&docs[i].first);
  }
  if (staged.empty()) return results;
  const Status st =
      commit_local(lock, &b, std::move(saved), vv_undo, std::move(entries), staged, nullptr);
  if (!st.ok()) {
    for (auto& r : results) {
      if (r.ok()) r = st;  // a no-op too (see commit_group)
    }
  }
  return results;
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
  cache_.make_room(1);
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
    if (const Document* cached = cache_.find(std::string(k))) {
      json_text = cached->to_json();
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

std::vector<v1::ConflictRecord> Store::Impl::conflicts_in(std::string_view prefix,
                                                          std::string_view after, size_t limit,
                                                          std::string* next) {
  std::vector<v1::ConflictRecord> out;
  std::string last;  // the position of the last record taken
  next->clear();
  std::lock_guard lock(mu_);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), conflicts_cf()));
  if (after.empty()) {
    it->Seek(rocksdb::Slice(prefix.data(), prefix.size()));
  } else {
    it->Seek(rocksdb::Slice(after.data(), after.size()));
    if (it->Valid() && it->key() == rocksdb::Slice(after.data(), after.size())) it->Next();
  }
  for (; it->Valid() && it->key().starts_with(rocksdb::Slice(prefix.data(), prefix.size()));
       it->Next()) {
    if (out.size() == limit) {
      *next = last;
      break;
    }
    v1::ConflictRecord r;
    if (r.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      out.push_back(std::move(r));
      last.assign(it->key().data(), it->key().size());
    }
  }
  return out;
}

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

StatusOr<v1::Delta> Store::put_value(std::string_view key, const nlohmann::json& doc,
                                     uint64_t if_version) {
  CANOPY_RETURN_IF_ERROR(require_object(key, doc));
  return impl_->write_local(key, doc, nullptr, if_version);
}

void Store::put_value_async(std::string key, nlohmann::json doc, uint64_t if_version,
                            WriteDone done) {
  if (Status st = require_object(key, doc); !st.ok()) {
    done(st);
    return;
  }
  impl_->write_local_async(std::move(key), std::move(doc), if_version, std::move(done));
}

void Store::remove_async(std::string key, uint64_t if_version, WriteDone done) {
  impl_->write_local_async(std::move(key), std::nullopt, if_version, std::move(done));
}

std::vector<StatusOr<v1::Delta>> Store::put_values(
    const std::vector<std::pair<std::string, nlohmann::json>>& docs) {
  return impl_->put_values(docs);
}

StatusOr<v1::Delta> Store::patch(std::string_view key, std::string_view text) {
  return impl_->patch(key, text);
}

StatusOr<v1::Delta> Store::remove(std::string_view key, uint64_t if_version) {
  return impl_->write_local(key, std::nullopt, nullptr, if_version);
}

StatusOr<std::string> Store::get(std::string_view key) { return impl_->get(key); }

StatusOr<ScanPage> Store::scan(std::string_view prefix, std::string_view start_after,
                               size_t limit) {
  return impl_->scan(prefix, start_after, limit);
}

std::vector<v1::ConflictRecord> Store::conflicts(std::string_view key) {
  return impl_->conflicts(key);
}

std::vector<v1::ConflictRecord> Store::conflicts_in(std::string_view prefix, std::string_view after,
                                                    size_t limit, std::string* next) {
  return impl_->conflicts_in(prefix, after, limit, next);
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
uint64_t Store::contiguous_seq(uint64_t replica) { return impl_->contiguous_seq(replica); }
TopDot Store::top_dot(uint64_t replica) { return impl_->top_dot(replica); }
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
StoreDiskUsage Store::disk_usage() { return impl_->disk_usage(); }
Status Store::write_health() const { return impl_->write_health(); }
StoreCacheUsage Store::cache_usage() { return impl_->cache_usage(); }

StoreDiskUsage Store::Impl::disk_usage() {
  StoreDiskUsage u;
  auto add = [this](rocksdb::ColumnFamilyHandle* h, const std::string& property, uint64_t* sum) {
    uint64_t v = 0;
    if (db_->GetIntProperty(h, property, &v)) *sum += v;
  };
  for (auto* h : handles_) {
    add(h, rocksdb::DB::Properties::kEstimateLiveDataSize, &u.live_data_bytes);
    add(h, rocksdb::DB::Properties::kLiveSstFilesSize, &u.sst_bytes);
    add(h, rocksdb::DB::Properties::kCurSizeAllMemTables, &u.memtable_bytes);
  }
  return u;
}
Status Store::compact() { return impl_->compact(); }

}  // namespace canopy

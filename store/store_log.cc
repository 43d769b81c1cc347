// The store's replication log: reading it (missing_since, log_since),
// trimming it, and collecting tombstones that every replica has seen.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "store/hlc.h"
#include "store/store.h"
#include "store/store_impl.h"

namespace canopy {

using namespace store_internal;

namespace {

// The value of the last length-delimited field of the message `b` whose
// number is `a` or `b2` (the last occurrence is what a parser keeps);
// nullopt when there is none or the bytes are not well-formed.
std::optional<std::string_view> last_bytes_field(std::string_view b, uint32_t a, uint32_t b2) {
  using google::protobuf::internal::WireFormatLite;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(b.data()),
                                            static_cast<int>(b.size()));
  std::optional<std::string_view> out;
  while (const uint32_t tag = in.ReadTag()) {
    const uint32_t field = WireFormatLite::GetTagFieldNumber(tag);
    if (WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED ||
        (field != a && field != b2)) {
      if (!WireFormatLite::SkipField(&in, tag)) return std::nullopt;
      continue;
    }
    uint32_t n = 0;
    if (!in.ReadVarint32(&n)) return std::nullopt;
    const int at = in.CurrentPosition();
    if (!in.Skip(static_cast<int>(n))) return std::nullopt;
    out = b.substr(static_cast<size_t>(at), n);
  }
  // ReadTag answers 0 at the end, and on a malformed tag.
  if (!in.ConsumedEntireMessage()) return std::nullopt;
  return out;
}

// A serialized LogEntry's key (field 1 of its Delta, field 2, or of its
// DocState, field 3), read without decoding the entry: a catch-up filters
// a log mostly of other children's documents. nullopt: decode it whole.
std::optional<std::string_view> peek_entry_key(std::string_view entry) {
  auto change = last_bytes_field(entry, 2, 3);
  if (!change) return std::nullopt;
  return last_bytes_field(*change, 1, 1);
}

}  // namespace

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
  // Stopped by a read error, the answer would claim to be complete.
  if (!it->status().ok()) return from_rocks(it->status(), "reading the log");
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
  // A reader at the log's end (the common resume) needs no iterator: over a
  // large log whose files are cold, creating one costs milliseconds.
  if (after == last) return r;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), log()));
  for (it->Seek(be64(after + 1)); it->Valid(); it->Next()) {
    if (f) {
      const auto key = peek_entry_key(it->value().ToStringView());
      if (key && !f(*key)) {
        r.last_index = from_be64(it->key().ToStringView());
        continue;
      }
    }
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
  // An iterator also stops at a read error: that is not the log's end.
  if (!it->status().ok()) return from_rocks(it->status(), "reading the log");
  if (!it->Valid()) r.last_index = std::max(r.last_index, last);
  return r;
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
  CANOPY_RETURN_IF_ERROR(commit(&b, /*adds_data=*/false));
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
  // The documents to read: every one at the first pass since opening (what
  // an earlier process left is not known), then only the work list. A
  // document nobody wrote since a pass that left it without tombstones has
  // nothing to collect: tombstones come only from writes. So a pass costs
  // what changed, not what is stored (a root of 100,000 sites read every
  // document each minute, 1.1-1.8 s of CPU under this lock).
  //
  // A pass reads in chunks (StoreOptions::tombstone_chunk_docs), letting
  // writers in between them. What they write is noted on the work list for
  // the next pass: the list this pass reads is taken off it at the start,
  // and what this pass leaves holding a tombstone goes back at the end. A
  // failed pass puts back everything it took.
  std::lock_guard pass(gc_pass_mu_);
  std::unique_lock lock(mu_);
  const bool full = !gc_scanned_;
  std::vector<std::string> keys;  // the work list's pass: what it reads
  if (full) {
    gc_keys_.clear();
    gc_tracking_ = true;
  } else {
    keys.assign(gc_keys_.begin(), gc_keys_.end());
    gc_keys_.clear();
    std::sort(keys.begin(), keys.end());
  }
  std::unordered_set<std::string> remaining;  // still holding a tombstone
  size_t dropped = 0;
  uint64_t ticket = 0;  // of the last chunk that dropped something
  rocksdb::WriteBatch b;
  auto visit = [&](const std::string& k) -> Status {
    // Each document is visited once and staged whole: what leaves the cache
    // is on its way to disk.
    cache_.make_room(1);
    auto loaded = load(k);
    if (!loaded.ok()) return loaded.status();
    // Read as it is now: a note a writer left for it is answered.
    gc_keys_.erase(k);
    ++stats_.tombstone_documents_read;
    const size_t n = (*loaded)->collect_tombstones(stable_hlc);
    if ((*loaded)->has_tombstones()) remaining.insert(k);
    if (n == 0) return ok_status();
    cache_.update(k);
    dropped += n;
    stage_doc(&b, k, **loaded);
    gc_keys_.erase(k);  // our own write: what it left is in `remaining`
    // A dropped document's deltas are applied again when they come back
    // (Store::drop); not once deletions in it are collected: an old delta
    // would bring back what they deleted.
    if (dropped_any_) {
      b.Delete(meta_cf(), std::string(store_internal::kDroppedPrefix) + k).PermitUncheckedError();
    }
    if ((*loaded)->empty()) cache_.erase(k);
    return ok_status();
  };
  // Commits what the chunk staged (under mu_, as every write).
  auto end_chunk = [&]() -> Status {
    if (b.Count() == 0) return ok_status();
    if (Status st = commit(&b, /*adds_data=*/false); !st.ok()) {
      cache_.clear();  // it holds what the disk refused
      return st;
    }
    b.Clear();
    ticket = ++written_ticket_;
    return ok_status();
  };
  auto between_chunks = [&] {
    lock.unlock();
    if (opts_.between_tombstone_chunks) opts_.between_tombstone_chunks();
    // A mutex hands itself to no one: relocking at once, this thread got it
    // back before a woken writer ran (a writer waited out a whole pass of
    // 100,000 documents, 1.5 s). A pause lets the writers in.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    lock.lock();
  };
  const size_t chunk = std::max<size_t>(1, opts_.tombstone_chunk_docs);
  auto run = [&]() -> Status {
    if (!full) {
      for (size_t i = 0; i < keys.size(); ++i) {
        if (i != 0 && i % chunk == 0) {
          CANOPY_RETURN_IF_ERROR(end_chunk());
          between_chunks();
        }
        CANOPY_RETURN_IF_ERROR(visit(keys[i]));
      }
      return end_chunk();
    }
    std::string after;  // the last key read; the next chunk starts past it
    for (bool first = true;; first = false) {
      if (!first) between_chunks();
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), docs()));
      if (first) {
        it->SeekToFirst();
      } else {
        it->Seek(after);
        if (it->Valid() && it->key() == rocksdb::Slice(after)) it->Next();
      }
      size_t n = 0;
      for (; it->Valid() && n < chunk; it->Next(), ++n) {
        after = it->key().ToString();
        CANOPY_RETURN_IF_ERROR(visit(after));
      }
      CANOPY_RETURN_IF_ERROR(from_rocks(it->status(), "listing documents"));
      CANOPY_RETURN_IF_ERROR(end_chunk());
      if (!it->Valid()) return ok_status();
    }
  };
  if (Status st = run(); !st.ok()) {
    if (full) {
      gc_forget();  // the next pass reads everything again
    } else if (gc_tracking_) {
      for (auto& k : keys) gc_note(k);
      for (const auto& k : remaining) gc_note(k);
    }
    return st;
  }
  // Writers may have overflowed the list meanwhile (gc_note): then the next
  // pass reads everything.
  if (gc_tracking_) {
    for (const auto& k : remaining) gc_note(k);
    if (gc_tracking_) gc_scanned_ = true;
  }
  if (ticket == 0) return dropped;
  CANOPY_RETURN_IF_ERROR(wait_durable(lock, ticket));
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

}  // namespace canopy

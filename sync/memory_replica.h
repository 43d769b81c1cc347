// MemoryReplica: a replica's documents and sync metadata in memory, for the
// light simulated spokes of the benchmarks.
//
// It is both what a child engine reads (StoreView) and what its SyncNode
// persists into (Persistence): the real ChildSync runs on it, exactly as on a
// Store, but nothing reaches a disk and nothing is opened per replica, so that
// one process can hold 10,000 of them (a RocksDB instance holds several file
// descriptors and its own memtables and caches).
//
// Scope: a replica that never writes documents of its own, as a spoke whose
// only writes would be status documents. Its log is therefore empty (first
// index 1, last index 0) and it calls no commit listeners: a Store logs the
// parent's changes too, but a child skips those when it streams its log up.
// Everything else behaves as the Store does for the same calls: deltas are
// validated (validate_delta) and whole states parsed before anything is
// applied, documents merge with the same CRDT code (canopy::Document), a
// document left with no entry at all is erased, and the hashes that set
// reconciliation compares are Store::doc_id of the same serialized state.
//
// Thread-safe: one mutex (the engine's thread writes, observers may read).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/document.h"
#include "sync/engine/ready.h"
#include "sync/engine/store_view.h"

namespace canopy::sync {

class MemoryReplica final : public StoreView, public Persistence {
 public:
  // Called after a document changed, with its key and new state, under the
  // replica's lock; `delta` is the delta applied, or null for a whole state.
  using ApplyObserver =
      std::function<void(const std::string& key, const Document& doc, const v1::Delta* delta)>;

  // `replica_id` and `log_epoch` must not be 0.
  MemoryReplica(uint64_t replica_id, uint64_t log_epoch, DocumentLimits limits = {});

  void set_observer(ApplyObserver observer);
  // Installs documents as if received earlier (a warm start); no observer call.
  Status install(const std::vector<v1::DocState>& docs);
  size_t document_count() const;

  // StoreView.
  uint64_t replica_id() override { return replica_id_; }
  uint64_t log_epoch() override;
  uint64_t first_log_index() override { return 1; }
  uint64_t last_log_index() override { return 0; }
  VersionVector version_vector() override { return {}; }
  StatusOr<std::optional<std::string>> get_local(std::string_view name) override;
  StatusOr<std::optional<uint64_t>> own_delta_hlc(uint64_t seq) override;
  StatusOr<LogRead> log_since(uint64_t epoch, uint64_t after_index, const KeyFilter& filter,
                              size_t limit) override;
  StatusOr<Hashes> doc_hashes(std::string_view first, std::string_view last,
                              const KeyFilter& filter) override;
  StatusOr<Hashes> doc_hashes_of(std::vector<std::string> keys) override;
  StatusOr<std::vector<v1::DocState>> states(std::string_view first, std::string_view last,
                                             const KeyFilter& filter, size_t limit) override;
  StatusOr<std::optional<v1::DocState>> state(std::string_view key) override;

  // Persistence.
  Status persist(const std::vector<Write>& writes) override;
  uint64_t subscribe(CommitListener listener) override;
  void unsubscribe(uint64_t id) override;

 private:
  Status apply_deltas(const Write& w);
  Status apply_states(const std::vector<v1::DocState>& docs);
  v1::DocState state_of(const std::string& key, const Document& doc) const;
  // Erases the document at `it` if nothing is left of it.
  void settle(std::map<std::string, Document, std::less<>>::iterator it);

  const uint64_t replica_id_;
  const DocumentLimits limits_;
  mutable std::mutex mu_;
  uint64_t log_epoch_;
  std::map<std::string, Document, std::less<>> docs_;
  std::map<std::string, std::string, std::less<>> local_;
  ApplyObserver observer_;
};

}  // namespace canopy::sync

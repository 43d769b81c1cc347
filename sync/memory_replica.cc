#include "sync/memory_replica.h"

#include <algorithm>

#include "store/status.h"

namespace canopy::sync {

MemoryReplica::MemoryReplica(uint64_t replica_id, uint64_t log_epoch, DocumentLimits limits)
    : replica_id_(replica_id), limits_(limits), log_epoch_(log_epoch) {
  CANOPY_CHECK(replica_id != 0 && log_epoch != 0);
}

void MemoryReplica::set_observer(ApplyObserver observer) {
  std::lock_guard lock(mu_);
  observer_ = std::move(observer);
}

Status MemoryReplica::install(const std::vector<v1::DocState>& docs) {
  ApplyObserver saved;
  {
    std::lock_guard lock(mu_);
    saved.swap(observer_);
  }
  Status st = apply_states(docs);
  std::lock_guard lock(mu_);
  observer_.swap(saved);
  return st;
}

size_t MemoryReplica::document_count() const {
  std::lock_guard lock(mu_);
  return docs_.size();
}

uint64_t MemoryReplica::log_epoch() {
  std::lock_guard lock(mu_);
  return log_epoch_;
}

StatusOr<std::optional<std::string>> MemoryReplica::get_local(std::string_view name) {
  std::lock_guard lock(mu_);
  auto it = local_.find(name);
  if (it == local_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

StatusOr<std::optional<uint64_t>> MemoryReplica::own_delta_hlc(uint64_t /*seq*/) {
  return std::optional<uint64_t>();  // it writes nothing of its own
}

StatusOr<LogRead> MemoryReplica::log_since(uint64_t epoch, uint64_t after_index,
                                           const KeyFilter& /*filter*/, size_t /*limit*/) {
  std::lock_guard lock(mu_);
  LogRead read;
  // As a Store's empty log: complete from its start, in its own epoch.
  read.complete = epoch == log_epoch_ && after_index == 0;
  return read;
}

v1::DocState MemoryReplica::state_of(const std::string& key, const Document& doc) const {
  v1::DocState st;
  st.set_key(key);
  doc.to_proto(st.mutable_root());
  return st;
}

StatusOr<StoreView::Hashes> MemoryReplica::doc_hashes(std::string_view first, std::string_view last,
                                                      const KeyFilter& filter) {
  std::lock_guard lock(mu_);
  Hashes out;
  for (auto it = docs_.lower_bound(first); it != docs_.end() && it->first <= last; ++it) {
    if (filter && !filter(it->first)) continue;
    out.emplace_back(it->first,
                     Store::doc_id(it->first, state_of(it->first, it->second).SerializeAsString()));
  }
  return out;
}

StatusOr<StoreView::Hashes> MemoryReplica::doc_hashes_of(std::vector<std::string> keys) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  std::lock_guard lock(mu_);
  Hashes out;
  for (const std::string& k : keys) {
    auto it = docs_.find(k);
    if (it == docs_.end()) continue;
    out.emplace_back(k, Store::doc_id(k, state_of(k, it->second).SerializeAsString()));
  }
  return out;
}

StatusOr<std::vector<v1::DocState>> MemoryReplica::states(std::string_view first,
                                                          std::string_view last,
                                                          const KeyFilter& filter, size_t limit) {
  std::lock_guard lock(mu_);
  std::vector<v1::DocState> out;
  for (auto it = docs_.lower_bound(first);
       it != docs_.end() && it->first <= last && out.size() < limit; ++it) {
    if (filter && !filter(it->first)) continue;
    out.push_back(state_of(it->first, it->second));
  }
  return out;
}

StatusOr<std::optional<v1::DocState>> MemoryReplica::state(std::string_view key) {
  std::lock_guard lock(mu_);
  auto it = docs_.find(key);
  if (it == docs_.end()) return std::optional<v1::DocState>();
  return std::optional<v1::DocState>(state_of(it->first, it->second));
}

void MemoryReplica::settle(std::map<std::string, Document, std::less<>>::iterator it) {
  if (it->second.empty()) docs_.erase(it);  // a Store keeps no empty document
}

Status MemoryReplica::apply_deltas(const Write& w) {
  // Validated whole first: one bad delta refuses the write, as in the Store.
  for (const v1::Delta* d : w.deltas) {
    CANOPY_RETURN_IF_ERROR(validate_delta(*d, limits_));
  }
  std::lock_guard lock(mu_);
  std::vector<Overwrite> overwrites;
  for (const v1::Delta* d : w.deltas) {
    auto it = docs_.try_emplace(d->key()).first;
    overwrites.clear();
    it->second.apply(*d, &overwrites);
    if (observer_) observer_(it->first, it->second, d);
    settle(it);
  }
  return ok_status();
}

Status MemoryReplica::apply_states(const std::vector<v1::DocState>& docs) {
  for (const v1::DocState& d : docs) {
    auto parsed = Document::from_proto(d.root(), limits_.max_depth);
    if (!parsed.ok()) {
      return invalid_argument("state of " + d.key() + ": " + parsed.status().message());
    }
  }
  std::lock_guard lock(mu_);
  for (const v1::DocState& d : docs) {
    auto it = docs_.try_emplace(d.key()).first;
    it->second.merge(d.root());
    if (observer_) observer_(it->first, it->second, nullptr);
    settle(it);
  }
  return ok_status();
}

Status MemoryReplica::persist(const std::vector<Write>& writes) {
  for (const Write& w : writes) {
    switch (w.kind) {
      case Write::Kind::kApplyDeltas:
        CANOPY_RETURN_IF_ERROR(apply_deltas(w));
        break;
      case Write::Kind::kApplyStates:
        CANOPY_RETURN_IF_ERROR(apply_states(w.docs));
        break;
      case Write::Kind::kDrop: {
        std::lock_guard lock(mu_);
        for (const std::string& k : w.keys) {
          auto it = docs_.find(k);
          if (it != docs_.end()) docs_.erase(it);
        }
        break;
      }
      case Write::Kind::kPutLocal: {
        std::lock_guard lock(mu_);
        local_.insert_or_assign(w.name, w.value);
        break;
      }
      case Write::Kind::kReserveSeqs:
        break;  // no writes of its own: no seqs to reserve
      case Write::Kind::kRenewLogEpoch: {
        std::lock_guard lock(mu_);
        ++log_epoch_;
        break;
      }
    }
  }
  return ok_status();
}

uint64_t MemoryReplica::subscribe(CommitListener /*listener*/) {
  return 1;  // nothing is ever committed to its (empty) log
}

void MemoryReplica::unsubscribe(uint64_t /*id*/) {}

}  // namespace canopy::sync

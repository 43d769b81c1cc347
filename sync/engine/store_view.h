// StoreView: what the sync engines read of their replica's store.
//
// The engines never write the store themselves: they return writes in their
// Ready (ready.h), which the node persists before it sends anything. They read
// through this interface, so that a step can be run against any store and the
// reads are visible in one place. Reads see the store as the node last
// persisted it: within one step an engine does not read back its own writes
// (those take effect when the node persists the step's Ready; work that must
// see them runs in `advance`).
//
// StoreReader is the view of a real Store. REQUIRES: external synchronization
// of the engine that reads (the Store itself is thread-safe).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/store.h"

namespace canopy::sync {

class StoreView {
 public:
  using Hashes = std::vector<std::pair<std::string, uint64_t>>;

  virtual ~StoreView() = default;
  virtual uint64_t replica_id() = 0;
  virtual uint64_t log_epoch() = 0;
  virtual uint64_t first_log_index() = 0;
  virtual uint64_t last_log_index() = 0;
  virtual VersionVector version_vector() = 0;
  // version_vector().contiguous(replica); a view may answer without a copy.
  virtual uint64_t contiguous_seq(uint64_t replica) { return version_vector().contiguous(replica); }
  // Store::top_dot; a view that does not track it answers none.
  virtual TopDot top_dot(uint64_t /*replica*/) { return TopDot{}; }
  virtual StatusOr<std::optional<std::string>> get_local(std::string_view name) = 0;
  virtual StatusOr<std::optional<uint64_t>> own_delta_hlc(uint64_t seq) = 0;
  virtual StatusOr<LogRead> log_since(uint64_t epoch, uint64_t after_index, const KeyFilter& filter,
                                      size_t limit) = 0;
  virtual StatusOr<Hashes> doc_hashes(std::string_view first, std::string_view last,
                                      const KeyFilter& filter) = 0;
  virtual StatusOr<Hashes> doc_hashes_of(std::vector<std::string> keys) = 0;
  virtual StatusOr<std::vector<v1::DocState>> states(std::string_view first, std::string_view last,
                                                     const KeyFilter& filter, size_t limit) = 0;
  virtual StatusOr<std::optional<v1::DocState>> state(std::string_view key) = 0;
};

// The view of a Store (see Store for what each read returns).
class StoreReader final : public StoreView {
 public:
  explicit StoreReader(Store* store) : store_(store) {}

  uint64_t replica_id() override { return store_->replica_id(); }
  uint64_t log_epoch() override { return store_->log_epoch(); }
  uint64_t first_log_index() override { return store_->first_log_index(); }
  uint64_t last_log_index() override { return store_->last_log_index(); }
  VersionVector version_vector() override { return store_->version_vector(); }
  uint64_t contiguous_seq(uint64_t replica) override { return store_->contiguous_seq(replica); }
  TopDot top_dot(uint64_t replica) override { return store_->top_dot(replica); }
  StatusOr<std::optional<std::string>> get_local(std::string_view name) override {
    return store_->get_local(name);
  }
  StatusOr<std::optional<uint64_t>> own_delta_hlc(uint64_t seq) override {
    return store_->own_delta_hlc(seq);
  }
  StatusOr<LogRead> log_since(uint64_t epoch, uint64_t after_index, const KeyFilter& filter,
                              size_t limit) override {
    return store_->log_since(epoch, after_index, filter, limit);
  }
  StatusOr<Hashes> doc_hashes(std::string_view first, std::string_view last,
                              const KeyFilter& filter) override {
    return store_->doc_hashes(first, last, filter);
  }
  StatusOr<Hashes> doc_hashes_of(std::vector<std::string> keys) override {
    return store_->doc_hashes_of(std::move(keys));
  }
  StatusOr<std::vector<v1::DocState>> states(std::string_view first, std::string_view last,
                                             const KeyFilter& filter, size_t limit) override {
    return store_->states(first, last, filter, limit);
  }
  StatusOr<std::optional<v1::DocState>> state(std::string_view key) override {
    return store_->state(key);
  }

 private:
  Store* store_;
};

}  // namespace canopy::sync

// What anti-entropy compares: per-document hashes, range fingerprints and
// whole document states.
#include <rocksdb/db.h>
#include <xxhash.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "store/store.h"
#include "store/store_impl.h"

namespace canopy {

using namespace store_internal;

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
  // An iterator also stops at a read error: a partial scope is not the scope.
  if (!it->status().ok()) return from_rocks(it->status(), "reading document states");
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

}  // namespace canopy

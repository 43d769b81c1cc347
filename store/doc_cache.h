// DocCache: the store's decoded documents, kept in memory between writes.
//
// Bounded in documents and in bytes (Document::memory_bytes, plus the key
// and the map's own entry). A bound is checked only where a batch begins
// (`make_room`): the documents a batch stages stay in the cache until it
// commits, so a second write to a key in one batch sees the first. When a
// batch would pass a bound the cache is emptied whole; a document is read
// back from disk when next needed.
//
// Sizes change as documents do: the store calls `update` after it changes a
// cached document, so `bytes()` is what the documents hold now.
//
// REQUIRES: external synchronization (the store's mutex).
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>

#include "store/document.h"

namespace canopy {

class DocCache {
 public:
  DocCache(size_t max_entries, size_t max_bytes)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}

  // The cached document of `key`, or nullptr.
  Document* find(const std::string& key) {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second.doc;
  }
  // Caches `doc` under `key` (in place of what it held).
  Document* insert(const std::string& key, Document doc) {
    Entry& e = map_.try_emplace(key).first->second;
    e.doc = std::move(doc);
    account(key, &e);
    return &e.doc;
  }
  // Accounts for `key`'s document as it is now, after a change.
  void update(const std::string& key) {
    if (auto it = map_.find(key); it != map_.end()) account(key, &it->second);
  }
  void erase(const std::string& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    bytes_ -= it->second.bytes;
    map_.erase(it);
  }
  void clear() {
    map_.clear();
    bytes_ = 0;
  }
  // Before a batch that may load `incoming` more documents: empties the
  // cache if they would pass the bound on entries, or if the bytes already
  // have.
  void make_room(size_t incoming) {
    if (map_.size() + incoming <= max_entries_ && bytes_ <= max_bytes_) return;
    clear();
    ++clears_;
  }

  size_t size() const { return map_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t clears() const { return clears_; }

 private:
  struct Entry {
    Document doc;
    size_t bytes = 0;
  };
  // Sets the entry's size to its document's now (with the key, the entry
  // and the map node around them), and the total with it.
  void account(const std::string& key, Entry* e) {
    bytes_ -= e->bytes;
    e->bytes = e->doc.memory_bytes() + key.capacity() + sizeof(Entry) + sizeof(std::string) + 32;
    bytes_ += e->bytes;
  }

  size_t max_entries_;
  size_t max_bytes_;
  std::unordered_map<std::string, Entry> map_;
  size_t bytes_ = 0;
  uint64_t clears_ = 0;
};

}  // namespace canopy

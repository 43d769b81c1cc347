// Document: the CRDT state of one JSON document, and the pure merge rules.
//
// State. Every node of the tree has
//   - a register `reg` (stamp, dot seq, value or tombstone): the last-writer-wins
//     value when the node is a scalar or an array, or its removal;
//   - a stamp `obj`: the latest write that made the node an object (a write to
//     any descendant, or an explicit empty object);
//   - children by key.
// Merging two states is the join of a semilattice: registers take the greater
// stamp (HLC, then replica id), `obj` takes the max, children merge by key. The
// join is commutative, associative and idempotent by construction, so any
// delivery order, duplicates included, reaches the same state.
//
// Visibility, with C the clear stamp inherited from the ancestors (the max of
// their register stamps; 0 at the root):
//   - entries with a stamp <= C are as if absent (written before an ancestor
//     was replaced or removed: "only fields written after that stamp survive");
//   - the node is a scalar/array if reg > obj, absent if reg is a tombstone
//     that is > obj, an object if obj > reg;
//   - an object's children are seen with C' = max(C, reg).
// Deleting a document is a tombstone in the root register. Entries that can
// never be visible again (stamp <= C) are pruned when the state is serialized,
// which keeps the serialized bytes a function of the joined state.
//
// Conflicts. Each op carries `prev`, the dot the writer saw at the field. When
// an op lands on a visible register holding another dot, neither writer saw the
// other: the loser is reported so the store keeps a conflict record. The
// register keeps its writer's `prev`, so that the write it overwrote, arriving
// after it, is known as seen rather than concurrent. (Only the direct
// predecessor is known: an older write two overwrites back that arrives last
// is still reported.)
//
// Values of registers are kept as canonical JSON text and never parsed during
// a merge. REQUIRES: external synchronization.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "canopy/v1/store.pb.h"
#include "store/status.h"

namespace canopy {

// Total order of writes: HLC first, replica id breaks ties.
struct Stamp {
  uint64_t hlc = 0;
  uint64_t replica = 0;
  auto operator<=>(const Stamp&) const = default;
  bool zero() const { return hlc == 0 && replica == 0; }
};

// Limits on what a document may look like. Named here, enforced by the store.
struct DocumentLimits {
  size_t max_doc_bytes = 1 << 20;  // canonical JSON of one document
  size_t max_depth = 64;           // nesting of objects
  size_t max_key_bytes = 512;      // store key
};

// What happened at one field when an op landed on a register that held a
// visible value written by someone else.
struct Overwrite {
  std::vector<std::string> path;
  bool concurrent = false;  // neither writer saw the other
  // The losing write.
  Stamp loser;
  uint64_t loser_seq = 0;
  bool loser_removed = false;
  std::string loser_value;
  // The winning write.
  Stamp winner;
  uint64_t winner_seq = 0;
};

// A map kept as a vector sorted by key: documents have few keys per object,
// so one allocation per object beats one per key (std::map), and iteration is
// in key order, which canonical output needs.
template <typename V>
class SortedMap {
 public:
  using value_type = std::pair<std::string, V>;
  using iterator = typename std::vector<value_type>::iterator;
  using const_iterator = typename std::vector<value_type>::const_iterator;

  // Declared here and defaulted below the class: V (a Document::Node) holds a
  // SortedMap<V> and is incomplete here, and implicit members would make
  // clang instantiate std::pair<std::string, V> while V is still incomplete.
  SortedMap();
  SortedMap(const SortedMap&);
  SortedMap(SortedMap&&) noexcept;
  SortedMap& operator=(const SortedMap&);
  SortedMap& operator=(SortedMap&&) noexcept;
  ~SortedMap();

  iterator begin() { return items_.begin(); }
  iterator end() { return items_.end(); }
  const_iterator begin() const { return items_.begin(); }
  const_iterator end() const { return items_.end(); }
  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }

  iterator find(std::string_view key) {
    auto it = lower(key);
    return it != items_.end() && it->first == key ? it : items_.end();
  }
  const_iterator find(std::string_view key) const {
    auto it = std::lower_bound(items_.begin(), items_.end(), key,
                               [](const value_type& e, std::string_view k) { return e.first < k; });
    return it != items_.end() && it->first == key ? it : items_.end();
  }
  // Inserts `value` under `key` unless present; returns the entry.
  std::pair<iterator, bool> emplace(std::string_view key, V value) {
    auto it = lower(key);
    if (it != items_.end() && it->first == key) return {it, false};
    return {items_.emplace(it, std::string(key), std::move(value)), true};
  }
  // The entry under `key`, inserted (default-constructed) when missing. One
  // search, none when `key` sorts last (ops of a delta come in key order).
  V& get_or_insert(std::string_view key) {
    if (items_.empty() || items_.back().first < key) {
      if (items_.empty()) items_.reserve(4);
      return items_.emplace_back(std::string(key), V{}).second;
    }
    auto it = lower(key);
    if (it != items_.end() && it->first == key) return it->second;
    return items_.emplace(it, std::string(key), V{})->second;
  }
  // Appends; REQUIRES: `key` sorts after every present key.
  void push_back_sorted(std::string key, V value) {
    items_.emplace_back(std::move(key), std::move(value));
  }
  iterator erase(iterator it) { return items_.erase(it); }

 private:
  iterator lower(std::string_view key) {
    return std::lower_bound(items_.begin(), items_.end(), key,
                            [](const value_type& e, std::string_view k) { return e.first < k; });
  }
  std::vector<value_type> items_;
};

template <typename V>
SortedMap<V>::SortedMap() = default;
template <typename V>
SortedMap<V>::SortedMap(const SortedMap&) = default;
template <typename V>
SortedMap<V>::SortedMap(SortedMap&&) noexcept = default;
template <typename V>
SortedMap<V>& SortedMap<V>::operator=(const SortedMap&) = default;
template <typename V>
SortedMap<V>& SortedMap<V>::operator=(SortedMap&&) noexcept = default;
template <typename V>
SortedMap<V>::~SortedMap() = default;

class Document {
 public:
  Document() = default;

  // Applies every op of `delta` (already validated). Appends an Overwrite for
  // each concurrent overwrite, and for every overwrite of a visible value when
  // `report_all` is set.
  void apply(const v1::Delta& delta, std::vector<Overwrite>* overwrites, bool report_all = false);

  // Joins a whole state (from a transfer) into this one.
  void merge(const v1::NodeState& state);

  // True when the document is visible (exists and is not deleted).
  bool exists() const;
  // Canonical JSON of the visible document (sorted keys, no spaces); empty
  // string when it does not exist.
  std::string to_json() const;
  // The visible document as a JSON value (null when it does not exist).
  nlohmann::json to_value() const;

  // Ops that turn the visible document into `target` (a JSON object). Each op
  // records the dot it overwrites in `prev`.
  void diff(const nlohmann::json& target, std::vector<v1::FieldOp>* ops) const;

  // Serialized state, pruned of entries that can never be visible again.
  void to_proto(v1::NodeState* out) const;
  static StatusOr<Document> from_proto(const v1::NodeState& state, size_t max_depth = 64);

  // Greatest HLC of any entry (a local write must be stamped above it).
  uint64_t max_hlc() const;
  // True when no entry is left at all (the key can be erased from storage).
  bool empty() const;
  // Drops tombstones (and what they dominate) stamped below `stable_hlc`.
  // Returns how many tombstones were dropped.
  size_t collect_tombstones(uint64_t stable_hlc);

 private:
  struct Dot {
    uint64_t replica = 0;
    uint64_t seq = 0;
  };
  struct Node {
    Stamp reg;
    uint64_t reg_seq = 0;
    // The dot the register's writer saw there (FieldOp.prev): an older write
    // with this dot arriving late was overwritten causally, not concurrently.
    Dot reg_prev;
    bool reg_removed = false;
    std::string reg_value;
    Stamp obj;
    SortedMap<Node> children;
  };

  static void join(Node* into, const v1::NodeState& from);
  static void write_json(const Node& n, Stamp clear, std::string* out);
  static nlohmann::json node_value(const Node& n, Stamp clear);
  static bool serialize(const Node& n, Stamp clear, v1::NodeState* out);
  static void diff_node(const Node* n, Stamp clear, const nlohmann::json& target,
                        std::vector<std::string>* path, std::vector<v1::FieldOp>* ops);
  static uint64_t node_max_hlc(const Node& n);
  static size_t collect(Node* n, Stamp clear, uint64_t stable_hlc);
  static bool node_empty(const Node& n);
  static Status from_proto_node(const v1::NodeState& s, size_t depth, size_t max_depth, Node* out);

  Node root_;
};

// Checks a store key: 1..max bytes of [A-Za-z0-9._-/:~@+=], no "//" and no
// leading or trailing '/'.
Status validate_key(std::string_view key, size_t max_key_bytes = 512);

// Checks a delta received from elsewhere before it may touch any state: key,
// dot, stamp, op kinds, paths and values (SET values must be a JSON scalar or
// array in canonical form).
Status validate_delta(const v1::Delta& delta, const DocumentLimits& limits);

// True when `v` is exactly what nlohmann::json's dump() writes for a JSON
// scalar or array (the form of every register value). Checked in one pass
// without building a value; only floats and other rare shapes take a full
// parse-and-dump round trip.
bool canonical_json_value(std::string_view v);

// Parses `text` as a JSON document; it must be an object, within limits.
StatusOr<nlohmann::json> parse_document(std::string_view text, const DocumentLimits& limits);

// RFC 7386 JSON merge patch: returns `target` with `patch` applied.
nlohmann::json apply_merge_patch(const nlohmann::json& target, const nlohmann::json& patch);

}  // namespace canopy

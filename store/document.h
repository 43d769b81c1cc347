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
// Removal does not resurrect. A REMOVE op writes only its own register: it
// raises no ancestor's `obj`. Removing a key of a document that a concurrent
// delete removed leaves the document deleted, whichever stamp is greater
// (only a write of a value, or an explicit object, brings a document back).
//
// Causal context. A write w has *seen* a write l to the same document when
// w's replica had applied l, or had applied a write of that document that
// had seen l, before writing w; a replica's own earlier writes are seen.
// The document state keeps its context `seen_` (per replica, the highest seq
// of its writes to the document that the state has seen: the join of the
// dots and contexts of every write applied, a max per replica, so part of
// the semilattice); a local write sends it, less its own replica, as
// Delta.seen. Seqs of one replica are ordered by its own history, so "seq <=
// the listed max" is exactly "seen". Each register keeps its write's context.
// Invariant: the context covers the dot of every register in the document
// (a state stored without one has it rebuilt from its registers on load).
// So an incoming write whose Delta.seen covers the document's context had
// seen every write there, and apply() skips looking for writes it lost:
// always so for a document with one writer, which costs nothing more.
// Cost on the wire: one Dot (about 14 bytes) per *other* replica that wrote
// the document, nothing for a document with one writer.
//
// Conflicts. A register write l (SET, REMOVE, a document delete) is
// *superseded* by a write w with a greater stamp at its path, at an ancestor
// (w's register replaces or removes the subtree) or below it (a SET below
// makes l's node an object). Once superseded, always superseded. When a
// write becomes superseded and the winner — the greatest write superseding
// it — has not seen it, the loser is reported as an Overwrite: when the
// incoming op supersedes visible registers (the op's own register, the
// registers of a subtree it replaces, an ancestor's register it turns into an
// object), and when the incoming op is itself superseded on arrival (winner:
// the greatest of the register at its path, the ancestor register that
// clears it, the newest write below it). Causally ordered writes are never
// reported: a local write is stamped above everything in its document, so a
// write that saw l always has the greater stamp, and lists l in its context.
// (Each node keeps the dot and context of the write that set its `obj`, the
// newest SET below it, to judge the last case.)
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
#include "store/merge_patch.h"
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
  // Entries of a delta's causal context: replicas that wrote one document.
  size_t max_context_entries = 1024;
};

// A write superseded by one that had not seen it (see "Conflicts" above).
struct Overwrite {
  std::vector<std::string> path;  // the losing write's path
  // The losing write.
  Stamp loser;
  uint64_t loser_seq = 0;
  bool loser_removed = false;
  std::string loser_value;
  // The winning write.
  Stamp winner;
  uint64_t winner_seq = 0;
};

// Storage of documents' nodes, child lists and bytes: blocks in size classes
// (four per power of two, up to 1 MiB), carved from large slabs and kept on
// free lists once released, for reuse by any document. Documents are big,
// grow in steps and are short-lived in a cache; taking their blocks from the
// general heap would split and scatter the free chunks that small, frequent
// allocations (decoded messages) reuse. Thread-safe. The memory is kept for
// reuse, not returned to the system.
void* document_storage_allocate(size_t bytes);
void document_storage_release(void* p, size_t bytes) noexcept;

template <typename T>
struct DocumentAllocator {
  using value_type = T;
  DocumentAllocator() = default;
  template <typename U>
  DocumentAllocator(const DocumentAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(document_storage_allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { document_storage_release(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const DocumentAllocator<U>&) const noexcept {
    return true;
  }
};

class Document {
 public:
  Document() = default;

  // Applies every op of `delta` (already validated). Appends an Overwrite for
  // each write superseded by one that had not seen it.
  void apply(const v1::Delta& delta, std::vector<Overwrite>* overwrites);

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
  // The causal context of a local write by `writer`: fills `delta->seen`.
  void causal_context(uint64_t writer, v1::Delta* delta) const;

  // Serialized state, pruned of entries that can never be visible again.
  void to_proto(v1::NodeState* out) const;
  static StatusOr<Document> from_proto(const v1::NodeState& state, size_t max_depth = 64);

  // Greatest HLC of any entry (a local write must be stamped above it).
  uint64_t max_hlc() const;
  // True when no entry is left at all (the key can be erased from storage).
  bool empty() const;
  // Bytes this document holds in memory (its own and its storage blocks').
  size_t memory_bytes() const;
  // Drops tombstones (and what they dominate) stamped below `stable_hlc`.
  // Returns how many tombstones were dropped.
  size_t collect_tombstones(uint64_t stable_hlc);
  // True when a deletion is still kept as a tombstone (one that
  // collect_tombstones has not dropped yet: newer than its stable stamp).
  bool has_tombstones() const;

 private:
  struct Dot {
    uint64_t replica = 0;
    uint64_t seq = 0;
  };
  // A run of bytes_: a field name or a register value.
  struct Span {
    uint32_t off = 0;
    uint32_t len = 0;
  };
  // Nodes live in one vector and refer to each other by index, their names
  // and values in one byte buffer, their children's entries in one vector:
  // a document is three allocations, not a few per field, and a walk down a
  // path stays within them.
  struct Node {
    Stamp reg;
    Stamp obj;
    uint64_t reg_seq = 0;
    // The seq of the dot the register's writer saw there (FieldOp.prev; 0:
    // none): an older write with this dot arriving late was overwritten
    // causally, not concurrently. Its replica is the writer's own, or when
    // `prev_foreign` the one in the node's Causal entry.
    uint64_t prev_seq = 0;
    // The seq of the write that set `obj` (obj.replica is its replica): the
    // newest SET below the node, or an explicit object, which wins over a
    // write at the node or above it that arrives after it.
    uint64_t obj_seq = 0;
    Span value;  // the register's value (canonical JSON)
    Span name;   // the key under the parent (empty for the root)
    // Children: kids_[kids, kids + nkids), sorted by name, room for kids_cap.
    uint32_t kids = 0;
    uint32_t nkids = 0;
    uint32_t kids_cap = 0;
    bool reg_removed = false;
    bool prev_foreign = false;
  };
  // What a node's writes knew of other replicas' writes, kept out of Node
  // (which every walk reads) in causal_, at the node's index. A document
  // written by one replica needs none of it and has no causal_ at all: a
  // write's own replica's earlier writes are seen without being listed.
  struct Causal {
    uint64_t prev_replica = 0;  // the replica of the register's prev when prev_foreign
    // The causal contexts of the register's write and of the write that set
    // `obj`: packed (replica, seq) pairs, 16 bytes each, sorted by replica.
    Span reg_ctx;
    Span obj_ctx;
  };
  // Every walk reads nodes: they stay as small as before documents kept
  // causal contexts.
  static_assert(sizeof(Node) <= 88);
  // A child entry. `prefix` is the name's first 8 bytes (big-endian,
  // zero-padded) and `len` its length, which settle most comparisons without
  // reading the name.
  struct Kid {
    uint64_t prefix = 0;
    uint32_t node = 0;
    uint32_t len = 0;
  };

  std::string_view str(Span s) const { return {bytes_.data() + s.off, s.len}; }
  Span put(std::string_view s);
  void set_value(Node* n, std::string_view v);
  const Node& root() const;
  const Kid* kids_of(const Node& n) const { return kids_.data() + n.kids; }
  // <0, 0, >0 as the kid's name sorts before, equal to, after `key`, whose
  // prefix is `key_prefix` (inline: it runs at every step of every search).
  int compare(const Kid& k, std::string_view key, uint64_t key_prefix) const {
    if (k.prefix != key_prefix) return k.prefix < key_prefix ? -1 : 1;
    if (k.len <= 8 || key.size() <= 8) {
      // The prefixes agree and one name lies within its prefix: that one
      // (padded with zeros that the other holds as bytes) is a prefix of the
      // other, so the shorter sorts first.
      return k.len == key.size() ? 0 : (k.len < key.size() ? -1 : 1);
    }
    return compare_names(k, key);
  }
  int compare_names(const Kid& k, std::string_view key) const;
  // The child of `parent` named `key`: nullptr if absent / inserted if absent.
  const Node* find_child(const Node& parent, std::string_view key) const;
  uint32_t get_or_insert(uint32_t parent, std::string_view key);
  uint32_t new_node(std::string_view name);
  void insert_kid(uint32_t parent, uint32_t pos, const Kid& kid);
  void maybe_compact();
  void copy_node(const Document& from, const Node& n, uint32_t into);

  void join(uint32_t into, const v1::NodeState& from);
  // Causal fields of node `i` (an empty entry when causal_ does not reach it).
  const Causal& causal(uint32_t i) const {
    static const Causal kNone;
    return i < causal_.size() ? causal_[i] : kNone;
  }
  Causal& causal_at(uint32_t i);
  Dot reg_prev(uint32_t i) const;
  // Records what the write now in node `i`'s register (reg set) saw: its prev
  // and context. Likewise for the write that set `obj`.
  void set_reg_causal(uint32_t i, Dot prev, Span ctx);
  void set_obj_causal(uint32_t i, uint64_t seq, Span ctx);
  // Causal contexts.
  void see(uint64_t replica, uint64_t seq);
  // Adds the dots of the registers at and below `n` to the context.
  void see_registers(const Node& n);
  // True when a write by `writer` with context `seen` had seen every write
  // this document's context lists (so every register's write).
  bool seen_by(uint64_t writer, const google::protobuf::RepeatedPtrField<v1::Dot>& seen) const;
  Span put_context(const google::protobuf::RepeatedPtrField<v1::Dot>& seen);
  // True when the write that set `ctx` (from `writer`, having seen `prev` at
  // its field) had seen the write (replica, seq).
  bool has_seen(uint64_t writer, Dot prev, Span ctx, uint64_t replica, uint64_t seq) const;
  void context_to_proto(Span ctx, google::protobuf::RepeatedPtrField<v1::Dot>* out) const;
  // Conflict reports (see "Conflicts" above).
  struct Incoming;
  void report_loser(const Node& loser, const std::vector<std::string>& path, const Incoming& in,
                    std::vector<Overwrite>* out) const;
  // Reports the registers below `n` that show and are older than the incoming write.
  void report_subtree(const Node& n, Stamp clear, std::vector<std::string>* path,
                      const Incoming& in, std::vector<Overwrite>* out) const;
  void write_json(const Node& n, Stamp clear, std::string* out) const;
  nlohmann::json node_value(const Node& n, Stamp clear) const;
  bool serialize(const Node& n, Stamp clear, v1::NodeState* out) const;
  void diff_node(const Node* n, Stamp clear, const nlohmann::json& target,
                 std::vector<std::string>* path, std::vector<v1::FieldOp>* ops) const;
  uint64_t node_max_hlc(const Node& n) const;
  size_t collect(uint32_t index, Stamp clear, uint64_t stable_hlc);
  static bool node_empty(const Node& n);
  Status from_proto_node(const v1::NodeState& s, size_t depth, size_t max_depth, uint32_t out);

  std::vector<Node, DocumentAllocator<Node>>
      nodes_;  // nodes_[0] is the root; empty for an empty document
  std::vector<Kid, DocumentAllocator<Kid>> kids_;
  std::basic_string<char, std::char_traits<char>, DocumentAllocator<char>> bytes_;
  // Empty, or one entry per node up to some index (see Causal).
  std::vector<Causal, DocumentAllocator<Causal>> causal_;
  // The document's causal context, sorted by replica.
  std::vector<Dot> seen_;
  // Space no longer referred to (overwritten values, dropped entries,
  // relocated child lists), reclaimed by maybe_compact().
  size_t garbage_bytes_ = 0;
  size_t garbage_kids_ = 0;
  size_t garbage_nodes_ = 0;
};

// Checks a store key: 1..max bytes of [A-Za-z0-9._-/:~@+=], no "//" and no
// leading or trailing '/'.
Status validate_key(std::string_view key, size_t max_key_bytes = 512);

// Checks a delta received from elsewhere before it may touch any state: key,
// dot, stamp, op kinds, paths and values (SET values must be a JSON scalar or
// array in canonical form).
Status validate_delta(const v1::Delta& delta, const DocumentLimits& limits);

// Parses `text` as a JSON document; it must be an object, within limits.
StatusOr<nlohmann::json> parse_document(std::string_view text, const DocumentLimits& limits);

}  // namespace canopy

// Rateless set reconciliation: which 64-bit ids one side holds and the other
// does not, in bytes proportional to the size of the difference, not of the
// sets.
//
// Each side's set is coded into a stream of symbols (an invertible Bloom
// lookup table without a fixed size): symbol i holds the count, the XOR of the
// ids and the XOR of the ids' check words of the items that map to i. Every
// item maps to symbol 0 and then to a sparse pseudo-random sequence of later
// indexes, drawn from the id itself so that both sides agree without talking:
// the chance that an item maps to index i is 1 / (1 + i/2). The receiver
// subtracts its own symbols from the sender's; what is left codes only the
// difference, and "peeling" recovers it: a cell with count +-1 whose check
// word matches its id holds exactly one item, which is then removed from every
// other cell it maps to. Once symbol 0 is empty, the whole difference is
// known. A difference of d items decodes from about 1.4 d symbols (more, in
// relative terms, for very small d); the sender streams symbols in growing
// batches until the receiver says it decoded.
//
// The scheme follows the rateless IBLT of Yang, Gilad and Alizadeh, "Practical
// Rateless Set Reconciliation" (SIGCOMM 2024); the mapping's gap sampling is
// derived in sketch.cc.
//
// Use in sync: ids are hashes of (key, document state), so a document that
// differs shows up as one id on each side (docs/sync-protocol.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_set>
#include <vector>

namespace canopy::sync {

struct SketchSymbol {
  int64_t count = 0;
  uint64_t id = 0;     // XOR of the ids
  uint32_t check = 0;  // XOR of the ids' check words

  bool empty() const { return count == 0 && id == 0 && check == 0; }
};

// The check word of an id: tells a cell holding one item from a mixture.
uint32_t sketch_check(uint64_t id);

// Codes a set of ids into symbols, as many as asked for.
class SketchEncoder {
 public:
  SketchEncoder() = default;
  explicit SketchEncoder(std::span<const uint64_t> ids);

  void add(uint64_t id);
  size_t items() const { return items_.size(); }
  // Extends the stream to at least `n` symbols; returns all of them.
  const std::vector<SketchSymbol>& extend(size_t n);
  const std::vector<SketchSymbol>& symbols() const { return symbols_; }

 private:
  struct Item {
    uint64_t id;
    uint32_t check;
    uint64_t rng;
    uint64_t next;  // the next index it maps to (not yet coded)
  };
  std::vector<Item> items_;
  std::vector<SketchSymbol> symbols_;
};

// Decodes the difference between a peer's set (whose symbols arrive in order)
// and the local one.
class SketchDecoder {
 public:
  explicit SketchDecoder(std::span<const uint64_t> local_ids);

  // Adds the peer's symbols with indexes size() .. size() + n - 1.
  void add(std::span<const SketchSymbol> remote);
  size_t size() const { return cells_.size(); }
  size_t local_items() const { return local_.items(); }
  // The difference is completely known: what was peeled explains every
  // symbol received.
  bool decoded() const { return decoded_; }
  // The symbols contradict each other (an id peeled twice): the peer's stream
  // is not a sketch of any set, or a hash collided. Reconcile another way.
  bool failed() const { return failed_; }
  const std::vector<uint64_t>& remote_only() const { return remote_only_; }
  const std::vector<uint64_t>& local_only() const { return local_only_; }

 private:
  struct Peeled {
    uint64_t id;
    uint32_t check;
    int64_t sign;  // +1: only the peer holds it; -1: only we do
    uint64_t rng;
    uint64_t next;
  };
  void peel();
  void remove(Peeled* p);

  SketchEncoder local_;
  std::vector<SketchSymbol> cells_;  // peer minus local, minus what was peeled
  std::vector<Peeled> peeled_;
  std::vector<uint64_t> remote_only_;
  std::vector<uint64_t> local_only_;
  std::vector<size_t> queue_;
  std::unordered_set<uint64_t> seen_;  // peeled ids
  bool failed_ = false;
  bool decoded_ = false;
};

}  // namespace canopy::sync

#include "sync/engine/sketch.h"

#include <algorithm>
#include <cmath>

// Both sides of a session must map ids to the same indexes, on every
// platform of a fleet: the mapping's arithmetic must stay exactly rounded.
#if defined(__FAST_MATH__)
#error "sketch.cc must not be built with -ffast-math (the symbol mapping must be exact)"
#endif

namespace canopy::sync {
namespace {

// splitmix64: a small generator of good quality, seeded by the id.
uint64_t next_random(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kNever = UINT64_MAX;

// The index an item maps to after `current`. The item maps to index t with
// probability p(t) = 1 / (1 + t/2) = 2 / (t + 2), independently per index, so
//   P(next > j | current i) = prod_{t=i+1..j} (1 - p(t)) = prod t / (t + 2)
//                           = (i+1)(i+2) / ((j+1)(j+2)) ~ ((i+1.5) / (j+1.5))^2.
// Sampling by inversion with u uniform in (0, 1]: j + 1.5 = (i + 1.5) / sqrt(u),
// so the gap is ceil((i + 1.5) * (1 / sqrt(u) - 1)), at least 1. Only IEEE
// operations that are exactly rounded (sqrt, *, /, ceil), so both sides of a
// session compute the same sequence.
uint64_t next_index(uint64_t current, uint64_t* rng) {
  const uint64_t r = next_random(rng) >> 32;
  const double u = (static_cast<double>(r) + 1.0) / 4294967296.0;
  const double gap = std::ceil((static_cast<double>(current) + 1.5) * (1.0 / std::sqrt(u) - 1.0));
  if (!(gap < 1e15)) return kNever;
  return current + std::max<uint64_t>(1, static_cast<uint64_t>(gap));
}

void toggle(SketchSymbol* s, int64_t sign, uint64_t id, uint32_t check) {
  s->count += sign;
  s->id ^= id;
  s->check ^= check;
}

}  // namespace

uint32_t sketch_check(uint64_t id) {
  uint64_t z = id ^ 0x6a09e667f3bcc909ULL;
  z = (z ^ (z >> 33)) * 0xff51afd7ed558ccdULL;
  z = (z ^ (z >> 33)) * 0xc4ceb9fe1a85ec53ULL;
  return static_cast<uint32_t>((z ^ (z >> 33)) >> 32);
}

SketchEncoder::SketchEncoder(std::span<const uint64_t> ids) {
  items_.reserve(ids.size());
  for (uint64_t id : ids) add(id);
}

void SketchEncoder::add(uint64_t id) {
  Item item{id, sketch_check(id), id, 0};
  while (item.next < symbols_.size()) {
    toggle(&symbols_[item.next], 1, item.id, item.check);
    item.next = next_index(item.next, &item.rng);
  }
  items_.push_back(item);
}

const std::vector<SketchSymbol>& SketchEncoder::extend(size_t n) {
  if (n <= symbols_.size()) return symbols_;
  symbols_.resize(n);
  for (Item& item : items_) {
    while (item.next < n) {
      toggle(&symbols_[item.next], 1, item.id, item.check);
      item.next = next_index(item.next, &item.rng);
    }
  }
  return symbols_;
}

SketchDecoder::SketchDecoder(std::span<const uint64_t> local_ids) : local_(local_ids) {}

void SketchDecoder::add(std::span<const SketchSymbol> remote) {
  const size_t from = cells_.size();
  const size_t to = from + remote.size();
  const std::vector<SketchSymbol>& mine = local_.extend(to);
  cells_.resize(to);
  for (size_t i = from; i < to; ++i) {
    const SketchSymbol& r = remote[i - from];
    cells_[i] = SketchSymbol{r.count - mine[i].count, r.id ^ mine[i].id, r.check ^ mine[i].check};
  }
  // What was peeled already leaves the new cells too.
  for (Peeled& p : peeled_) {
    while (p.next < to) {
      toggle(&cells_[p.next], -p.sign, p.id, p.check);
      p.next = next_index(p.next, &p.rng);
    }
  }
  for (size_t i = from; i < to; ++i) queue_.push_back(i);
  peel();
  // Symbol 0 holds every item, so it empties only when everything was
  // peeled; then every other cell must be empty too.
  decoded_ =
      !failed_ && !cells_.empty() && cells_[0].empty() &&
      std::all_of(cells_.begin(), cells_.end(), [](const SketchSymbol& c) { return c.empty(); });
}

void SketchDecoder::peel() {
  while (!queue_.empty() && !failed_) {
    const size_t i = queue_.back();
    queue_.pop_back();
    const SketchSymbol c = cells_[i];
    if ((c.count != 1 && c.count != -1) || c.check != sketch_check(c.id)) continue;
    // One item, unless the check word matched by chance: the item must also
    // map to this cell.
    Peeled p{c.id, c.check, c.count, c.id, 0};
    while (p.next < i) p.next = next_index(p.next, &p.rng);
    if (p.next != i) continue;
    if (!seen_.insert(p.id).second) {
      failed_ = true;
      return;
    }
    p.rng = p.id;
    p.next = 0;
    remove(&p);
    (p.sign > 0 ? remote_only_ : local_only_).push_back(p.id);
    peeled_.push_back(p);
  }
}

void SketchDecoder::remove(Peeled* p) {
  while (p->next < cells_.size()) {
    SketchSymbol& c = cells_[p->next];
    toggle(&c, -p->sign, p->id, p->check);
    if (c.count == 1 || c.count == -1) queue_.push_back(p->next);
    p->next = next_index(p->next, &p->rng);
  }
}

}  // namespace canopy::sync

#include "store/version_vector.h"

namespace canopy {

bool VersionVector::contains(uint64_t replica, uint64_t seq) const {
  auto it = entries_.find(replica);
  if (it == entries_.end()) return false;
  return seq <= it->second.contiguous || it->second.extra.count(seq) > 0;
}

bool VersionVector::add(uint64_t replica, uint64_t seq) {
  if (seq == 0) return false;
  Entry& e = entries_[replica];
  if (seq <= e.contiguous) return false;
  if (seq == e.contiguous + 1) {
    e.contiguous = seq;
    auto it = e.extra.begin();
    while (it != e.extra.end() && *it == e.contiguous + 1) {
      e.contiguous = *it;
      it = e.extra.erase(it);
    }
    return true;
  }
  return e.extra.insert(seq).second;
}

void VersionVector::merge(const VersionVector& other) {
  for (const auto& [replica, e] : other.entries_) {
    Entry& mine = entries_[replica];
    if (e.contiguous > mine.contiguous) {
      mine.contiguous = e.contiguous;
      mine.extra.erase(mine.extra.begin(), mine.extra.upper_bound(e.contiguous));
    }
    for (uint64_t s : e.extra) add(replica, s);
    // Fold any extras that the new prefix made contiguous.
    auto it = mine.extra.begin();
    while (it != mine.extra.end() && *it == mine.contiguous + 1) {
      mine.contiguous = *it;
      it = mine.extra.erase(it);
    }
  }
}

uint64_t VersionVector::contiguous(uint64_t replica) const {
  auto it = entries_.find(replica);
  return it == entries_.end() ? 0 : it->second.contiguous;
}

v1::VersionVector VersionVector::to_proto() const {
  v1::VersionVector out;
  for (const auto& [replica, e] : entries_) {
    auto* pe = out.add_entries();
    pe->set_replica(replica);
    pe->set_contiguous(e.contiguous);
    for (uint64_t s : e.extra) pe->add_extra(s);
  }
  return out;
}

bool VersionVector::entry_to_proto(uint64_t replica, v1::VersionVector::Entry* out) const {
  auto it = entries_.find(replica);
  if (it == entries_.end()) return false;
  out->Clear();
  out->set_replica(replica);
  out->set_contiguous(it->second.contiguous);
  for (uint64_t s : it->second.extra) out->add_extra(s);
  return true;
}

void VersionVector::Undo::note(const VersionVector& vv, uint64_t replica) {
  for (const auto& [r, e] : saved_) {
    if (r == replica) return;
  }
  auto it = vv.entries_.find(replica);
  saved_.emplace_back(replica,
                      it == vv.entries_.end() ? std::nullopt : std::optional<Entry>(it->second));
}

void VersionVector::Undo::apply(VersionVector* vv) {
  for (auto& [r, e] : saved_) {
    if (e.has_value()) {
      vv->entries_[r] = std::move(*e);
    } else {
      vv->entries_.erase(r);
    }
  }
  saved_.clear();
}

VersionVector VersionVector::from_proto(const v1::VersionVector& proto) {
  VersionVector vv;
  for (const auto& pe : proto.entries()) {
    Entry& e = vv.entries_[pe.replica()];
    if (pe.contiguous() > e.contiguous) e.contiguous = pe.contiguous();
    for (uint64_t s : pe.extra()) {
      if (s > e.contiguous) e.extra.insert(s);
    }
  }
  return vv;
}

}  // namespace canopy

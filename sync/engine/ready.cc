#include "sync/engine/ready.h"

#include <span>

namespace canopy::sync {

Write Write::apply_deltas(std::vector<const v1::Delta*> deltas, std::shared_ptr<const void> owner,
                          uint64_t source) {
  Write w;
  w.kind = Kind::kApplyDeltas;
  w.deltas = std::move(deltas);
  w.owner = std::move(owner);
  w.source = source;
  return w;
}

Write Write::apply_states(std::vector<v1::DocState> docs, uint64_t source) {
  Write w;
  w.kind = Kind::kApplyStates;
  w.docs = std::move(docs);
  w.source = source;
  return w;
}

Write Write::drop(std::vector<std::string> keys) {
  Write w;
  w.kind = Kind::kDrop;
  w.keys = std::move(keys);
  return w;
}

Write Write::put_local(std::string name, std::string value) {
  Write w;
  w.kind = Kind::kPutLocal;
  w.name = std::move(name);
  w.value = std::move(value);
  return w;
}

Write Write::reserve_seqs_through(uint64_t seq) {
  Write w;
  w.kind = Kind::kReserveSeqs;
  w.seq = seq;
  return w;
}

Write Write::renew_log_epoch() {
  Write w;
  w.kind = Kind::kRenewLogEpoch;
  return w;
}

Status persist(Store* store, const std::vector<Write>& writes) {
  for (const Write& w : writes) {
    Status st = ok_status();
    switch (w.kind) {
      case Write::Kind::kApplyDeltas: {
        auto r = store->apply_remote(std::span<const v1::Delta* const>(w.deltas), w.source);
        if (!r.ok()) st = r.status();
        break;
      }
      case Write::Kind::kApplyStates:
        st = store->apply_states(w.docs, w.source);
        break;
      case Write::Kind::kDrop:
        st = store->drop(w.keys);
        break;
      case Write::Kind::kPutLocal:
        st = store->put_local(w.name, w.value);
        break;
      case Write::Kind::kReserveSeqs:
        st = store->reserve_seqs_through(w.seq);
        break;
      case Write::Kind::kRenewLogEpoch:
        st = store->renew_log_epoch();
        break;
    }
    if (!st.ok()) return st;
  }
  return ok_status();
}

}  // namespace canopy::sync

// Ready: what one step of a sync engine asks of the node (etcd raft's Ready).
//
// An engine's inputs (a message, a committed change, a scope change, a tick)
// change only its memory. What must reach the disk is returned as `writes`,
// what must reach the peers as `messages`. The node persists the writes, in
// order, and only then sends the messages: an ack, or a position the child
// reports, never goes out for something that is not on disk. The node then
// tells the engine how persisting went (`advance`): on success the engine runs
// the work that reads what was written; on failure it falls back to what is on
// disk, and the messages of that Ready are dropped (sync tolerates loss: what
// they carried is resent or re-derived).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "canopy/v1/store.pb.h"
#include "store/store.h"
#include "sync/transport.h"

namespace canopy::sync {

// One write to the replica's store.
struct Write {
  enum class Kind {
    kApplyDeltas,    // Store::apply_remote(deltas, source)
    kApplyStates,    // Store::apply_states(docs, source)
    kDrop,           // Store::drop(keys)
    kPutLocal,       // Store::put_local(name, value)
    kReserveSeqs,    // Store::reserve_seqs_through(seq)
    kRenewLogEpoch,  // Store::renew_log_epoch()
  };
  Kind kind = Kind::kPutLocal;
  uint64_t source = 0;                   // the peer's replica id (apply)
  std::vector<const v1::Delta*> deltas;  // kApplyDeltas: owned by `owner`
  std::shared_ptr<const void> owner;     // keeps `deltas` alive (a decoded message)
  std::vector<v1::DocState> docs;        // kApplyStates
  std::vector<std::string> keys;         // kDrop
  std::string name;                      // kPutLocal
  std::string value;                     // kPutLocal
  uint64_t seq = 0;                      // kReserveSeqs

  static Write apply_deltas(std::vector<const v1::Delta*> deltas, std::shared_ptr<const void> owner,
                            uint64_t source);
  static Write apply_states(std::vector<v1::DocState> docs, uint64_t source);
  static Write drop(std::vector<std::string> keys);
  static Write put_local(std::string name, std::string value);
  static Write reserve_seqs_through(uint64_t seq);
  static Write renew_log_epoch();
};

struct Ready {
  std::vector<Write> writes;      // to persist, in order, before any message is sent
  std::vector<Message> messages;  // to send once `writes` are persisted
  bool empty() const { return writes.empty() && messages.empty(); }
};

// Persists `writes` in order; stops at the first failure and returns it.
// (Each write is atomic; a failure leaves the earlier ones persisted, which
// the engines allow for: every write is idempotent, and a position is written
// after the data it covers.)
Status persist(Store* store, const std::vector<Write>& writes);

// Where a SyncNode persists its engines' writes, and whose commits it hears:
// a Store (StorePersistence) or, for the light simulated spokes of the
// benchmarks, memory (MemoryReplica, sync/memory_replica.h).
class Persistence {
 public:
  using CommitListener = std::function<void(const v1::LogEntry&)>;
  virtual ~Persistence() = default;
  // As persist() above.
  virtual Status persist(const std::vector<Write>& writes) = 0;
  // Calls `listener` with each entry committed to the replica's log, under
  // the replica's lock (copy and return). Returns an id for unsubscribe.
  virtual uint64_t subscribe(CommitListener listener) = 0;
  virtual void unsubscribe(uint64_t id) = 0;
};

class StorePersistence final : public Persistence {
 public:
  explicit StorePersistence(Store* store) : store_(store) {}
  Status persist(const std::vector<Write>& writes) override {
    return sync::persist(store_, writes);
  }
  uint64_t subscribe(CommitListener listener) override {
    return store_->subscribe(std::move(listener));
  }
  void unsubscribe(uint64_t id) override { store_->unsubscribe(id); }

 private:
  Store* store_;
};

}  // namespace canopy::sync

// Store: one replica's CRDT document store, persisted in RocksDB.
//
// A replica holds JSON documents under string keys (see document.h for the
// merge rules). Every local write becomes a delta (key, dot, HLC, field ops);
// every change the replica applies, local or remote, is appended to its change
// log under a local log index, a total order that sync uses to position peers.
//
// Persistence: column families `docs` (key -> DocState), `log` (big-endian
// index -> LogEntry), `conflicts` (key \0 dot -> ConflictRecord) and the
// default family for metadata (replica id, HLC, next seq/index, version
// vector). The document state, the log entry, the version vector and the
// metadata of one write commit in one RocksDB write batch; the state change
// is the write's delta itself, a merge operand that RocksDB folds into the
// stored DocState (doc_merge.h), so a small change to a large document does
// not rewrite the document.
//
// Files, one concept each: store.cc (opening, local and remote writes,
// reads), store_log.cc (the change log: reading, trimming, tombstones),
// store_digest.cc (hashes, fingerprints and states for anti-entropy),
// store_impl.h (the state they share); document.{h,cc} (the CRDT node and
// its merge rules), merge_patch.* (RFC 7386), canonical_json.* and utf8.*
// (the forms values and names must have), document_storage.cc (the pooled
// memory of documents), doc_merge.* (RocksDB's merge operator).
//
// Conflict records (column family `conflicts`, per replica, not replicated):
// a record for every write lost to a write that had not seen it — the same
// field written concurrently, a concurrent delete of the document, a
// concurrent replacement of an ancestor (`{"a":5}` against `{"a":{"x":2}}`,
// either way round) — and none for writes one after another, also when the
// later writer saw the earlier one only through a third replica. Each delta
// carries its writer's causal context (Delta.seen) to tell; document.h has
// the exact rule. A record's reason is CLOCK_SKEW only when the winner's own
// writer's clock ran ahead (Delta.clock_hlc): a writer whose stamp merely
// followed a runaway stamp it had seen is not blamed.
//
// Removal after delete: removing a key never brings a deleted document back.
// A key removal racing a delete of its document leaves the document deleted,
// whichever is stamped later; only writing a value (or an empty object) does
// recreate a deleted document, with just the fields written after the delete.
//
// Durability (StoreOptions::durability):
//   kSync         every write batch is fsynced before the call returns;
//   kGroupCommit  writers append without fsync and then wait for one shared
//                 fsync that covers every write made so far (one leader syncs,
//                 the others ride along) — same guarantee, fewer fsyncs;
//   kNone         no fsync (tests and benchmarks of the in-memory path only).
// A write that returned OK survives a crash at any instant, except with kNone.
//
// Thread-safety: all methods are safe to call from any thread. Listeners run
// on a writing thread, in log order, once the change is durable (with
// kGroupCommit: after the fsync that covers it, possibly on the thread that
// led that fsync), before the write returns, with the store's lock held: they
// must not call back into the store, only copy what they need.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "canopy/v1/store.pb.h"
#include "store/clock.h"
#include "store/document.h"
#include "store/status.h"
#include "store/version_vector.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace canopy {

enum class Durability { kSync, kGroupCommit, kNone };

// "sync" or "group", as daemons' configs and flags spell it.
StatusOr<Durability> parse_durability(std::string_view name);

// A file of this name in a store's directory says the directory was put back
// from a backup (or copied from another store): the next open takes a new
// replica id and log epoch, then removes the file. An operator's restore is
// "copy the backup into place, then create this file" (docs/hierarchy.md,
// "Restoring a store from a backup"); without it, a restored replica whose
// last writes reached only a peer its parent cannot see would reuse their
// seqs.
inline constexpr char kRestoredMarker[] = "CANOPY-RESTORED";

struct StoreOptions {
  std::string path;  // RocksDB directory; created when missing
  Durability durability = Durability::kGroupCommit;
  DocumentLimits limits;
  // A remote stamp further ahead than this of the local wall clock is a skew:
  // it is still applied (nothing is dropped) and the local clock does not
  // follow it. When the writer's own clock reading lies that far ahead, the
  // delta is counted and logged, and the records of writes it won over say
  // CLOCK_SKEW.
  uint64_t max_clock_skew_ms = 60'000;
  // Replica id for a new store; 0 draws a random one. An existing store keeps
  // its own (a mismatch is an error), except when kRestoredMarker makes it
  // draw a new one (this is then ignored).
  uint64_t replica_id = 0;
  // Free space the store keeps on its disk. While the filesystem holding
  // `path` has less, commits that add data are refused (UNAVAILABLE, and
  // write_health says why) and reads, log trims and drops still work; the
  // first write after it has more is accepted. It leaves RocksDB room to
  // flush its memtables and write its manifest, so that filling the disk
  // does not reach RocksDB's own failure paths: those recover only once the
  // free space exceeds the largest write buffer (64 MiB by default), or not
  // at all (a failed manifest write), and Debian's librocksdb, built with
  // its assertions, can abort in them. kDiskReserveAuto: the largest write
  // buffer plus 4 MiB; 0: none. Not checked with a custom `env`.
  static constexpr uint64_t kDiskReserveAuto = ~uint64_t{0};
  uint64_t disk_reserve_bytes = kDiskReserveAuto;
  // Decoded documents kept in memory, at most this many and about this
  // many bytes (store/doc_cache.h).
  size_t doc_cache_entries = 100'000;
  size_t doc_cache_bytes = size_t{64} << 20;
  Clock* clock = nullptr;  // nullptr: the system clock
  // Uniform 64-bit values for the replica id and log epochs this store draws;
  // empty: std::random_device. The simulation passes a seeded generator, so
  // that a seed replays a run exactly.
  std::function<uint64_t()> random;
  // The RocksDB environment the store's files live in; nullptr: the local
  // disk. The simulation passes an in-memory one that injects storage faults
  // (`path` then names a directory inside it). Not owned; must outlive the store.
  rocksdb::Env* env = nullptr;
  // Threads RocksDB starts to open table files when the store opens
  // (max_file_opening_threads); 1 opens them on the calling thread. The
  // simulation, which opens thousands of small stores, starts none.
  int file_opening_threads = 16;
  // Memory RocksDB may hold, for a small store on a small machine (the
  // spoke's); 0 keeps RocksDB's defaults (a block cache per column family,
  // 64 MB memtables). block_cache_bytes is one cache shared by the column
  // families; write_buffer_bytes bounds each memtable, and all of them
  // together at twice that (a store that fills them flushes to table files,
  // which are read through the page cache).
  size_t block_cache_bytes = 0;
  size_t write_buffer_bytes = 0;
  // Tombstone collection (collect_tombstones) reads this many documents per
  // hold of the store's lock, then lets waiting writers in: a first pass
  // over 100,000 documents took ~1.2 s, all of it under the lock.
  size_t tombstone_chunk_docs = 1000;
  // Tests: runs between two chunks of a tombstone pass, without the store's
  // lock (a write made there lands in the middle of the pass).
  std::function<void()> between_tombstone_chunks;
};

// Which keys a replication call covers.
using KeyFilter = std::function<bool(std::string_view key)>;
// Bounds of a range that holds every key: keys are printable ASCII
// (validate_key), all above "" and below DEL.
inline constexpr std::string_view kKeyMin = "";
inline constexpr std::string_view kKeyMax = "\x7f";

struct ApplyResult {
  size_t applied = 0;     // deltas that changed something new
  size_t duplicates = 0;  // deltas whose dot this replica already had
  size_t conflicts = 0;   // conflict records written
  size_t skewed = 0;      // deltas whose writer's clock ran beyond the allowed skew
};

struct ScanItem {
  std::string key;
  std::string json;  // canonical
};

struct ScanPage {
  std::vector<ScanItem> items;
  std::string next_after;  // pass as `start_after` for the next page; empty at the end
};

struct LogRead {
  std::vector<v1::LogEntry> entries;
  // False when the log no longer reaches back to `after_index + 1` (it was
  // trimmed, or it belongs to another epoch): the caller must reconcile.
  bool complete = true;
  uint64_t last_index = 0;  // the log's last index when read
};

struct StoreStats {
  uint64_t skewed_deltas = 0;
  uint64_t refused_deltas = 0;
  uint64_t conflicts = 0;
  // Deltas whose dot was seen before, applied again because their document
  // had been dropped since (a delta re-delivered to rebuild it).
  uint64_t reapplied_deltas = 0;
  // Commits the disk refused (a full disk, an I/O error): see write_health.
  uint64_t write_failures = 0;
  // Documents read by tombstone collection (collect_tombstones), in total:
  // every document at the first pass after opening, then only those
  // written since their last pass or still holding a tombstone.
  uint64_t tombstone_documents_read = 0;
};

// A replica's highest dot applied here (seq 0: none), with its delta's HLC.
struct TopDot {
  uint64_t seq = 0;
  uint64_t hlc = 0;
};

// The store's size as RocksDB estimates it, summed over its column families.
struct StoreDiskUsage {
  uint64_t live_data_bytes = 0;  // rocksdb.estimate-live-data-size
  uint64_t sst_bytes = 0;        // rocksdb.live-sst-files-size: the current version's files
  uint64_t memtable_bytes = 0;   // rocksdb.cur-size-all-mem-tables
};

// The decoded documents the store keeps in memory (StoreOptions::doc_cache_*).
struct StoreCacheUsage {
  size_t documents = 0;
  size_t bytes = 0;
  uint64_t clears = 0;  // times it was emptied for a bound
};

class Store {
 public:
  using Listener = std::function<void(const v1::LogEntry& entry)>;

  static StatusOr<std::unique_ptr<Store>> open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  uint64_t replica_id() const;
  // Random id of this store's log, drawn when the store was created. A peer
  // positioned in another epoch (a store restored or recreated) reconciles.
  uint64_t log_epoch() const;

  // --- Writes. Each returns the delta it committed; a write that changes
  // nothing commits nothing and returns a delta without ops (dot seq 0).
  StatusOr<v1::Delta> put(std::string_view key, std::string_view json_text);
  // With `if_version` nonzero the write is made only if the document is at
  // that version (its greatest stamp, Document::max_hlc; a deleted document
  // keeps its tombstone's), checked atomically with the write on this store.
  // Otherwise Aborted: "version N is stale: it is at version M" (and
  // " (deleted)" when it is).
  StatusOr<v1::Delta> put_value(std::string_view key, const nlohmann::json& doc,
                                uint64_t if_version = 0);
  // Writes each document as put_value would, in one commit: one write batch
  // and, with group commit, one fsync for all. Each gets its own delta (its
  // own dot and log entry), as separate writes would. results[i] is docs[i]'s:
  // a refused document (a bad key, not an object, over the limits) fails
  // alone; a failed commit fails every document it held and changes nothing.
  std::vector<StatusOr<v1::Delta>> put_values(
      const std::vector<std::pair<std::string, nlohmann::json>>& docs);
  StatusOr<v1::Delta> patch(std::string_view key, std::string_view merge_patch_text);
  // NotFound when the document does not exist; `if_version` as for put_value
  // (checked once the document is known to exist).
  StatusOr<v1::Delta> remove(std::string_view key, uint64_t if_version = 0);

  // The same writes without a thread waiting for them: `done` is called once
  // the write is durable (with group commit: once an fsync covers it) or has
  // failed, with what the blocking call would have returned. It may be
  // called before the call returns (a refused write, or no group commit), on
  // the calling thread, or later on the store's own syncing thread; it must
  // not block for long and must not destroy the store. Concurrent writes,
  // blocking or not, combine into the same commits and fsyncs. The store's
  // destructor waits for every pending `done`.
  using WriteDone = std::function<void(StatusOr<v1::Delta>)>;
  void put_value_async(std::string key, nlohmann::json doc, uint64_t if_version, WriteDone done);
  void remove_async(std::string key, uint64_t if_version, WriteDone done);

  // --- Reads.
  // Canonical JSON; NotFound when absent or deleted.
  StatusOr<std::string> get(std::string_view key);
  // Documents whose key starts with `prefix`, in key order, after `start_after`.
  StatusOr<ScanPage> scan(std::string_view prefix, std::string_view start_after, size_t limit);
  std::vector<v1::ConflictRecord> conflicts(std::string_view key);
  // Conflict records of the documents whose key starts with `prefix`, in key
  // order, at most `limit`, after the position `after` (empty: from the
  // start). `*next` is the position after the last one returned, empty when
  // there are no more. Positions are opaque bytes.
  std::vector<v1::ConflictRecord> conflicts_in(std::string_view prefix, std::string_view after,
                                               size_t limit, std::string* next);

  // --- Replication.
  // Applies remote deltas (validated first: one bad delta refuses the whole
  // batch and changes nothing). `source` is the peer's replica id.
  StatusOr<ApplyResult> apply_remote(const v1::DeltaBatch& batch, uint64_t source);
  // The same for deltas held elsewhere (e.g. inside a received sync message),
  // without copying them into a batch.
  StatusOr<ApplyResult> apply_remote(std::span<const v1::Delta* const> deltas, uint64_t source);
  // Joins whole document states (a key entering scope, reconciliation).
  Status apply_states(const std::vector<v1::DocState>& docs, uint64_t source);
  // Forgets documents locally, without tombstones (keys that left the scope,
  // or that a parent does not hold). Listeners see each as an entry with
  // index 0 and an empty document: a local change that is not in the log
  // and is not replicated. The dots the documents held stay in the version
  // vector, but a dropped key is remembered: a delta for it whose dot was
  // seen before is applied again rather than discarded as a duplicate, so a
  // parent that sends it again (it lacked the document when the drop
  // happened, and learned it since) rebuilds what was dropped.
  Status drop(const std::vector<std::string>& keys);
  VersionVector version_vector();
  // version_vector().contiguous(replica), without copying the vector.
  uint64_t contiguous_seq(uint64_t replica);
  // The highest seq of `replica`'s that a remote delta brought here, and
  // that delta's HLC, by whatever path it came (a hub of an active-active
  // level learns its peers' children's writes). A child restored from an old
  // backup that writes again reuses seqs: comparing this with its own write
  // of that seq tells it so (sync/engine/child.cc).
  TopDot top_dot(uint64_t replica);
  // Makes the next local write use a seq above `seq` (a replica restored from
  // an old backup must never reuse a dot its peers already hold).
  Status reserve_seqs_through(uint64_t seq);
  // Draws a new log epoch: positions that peers hold in this log become
  // unusable (they reconcile or resend whole). For a replica found to be
  // restored from an old backup, whose log indexes were reused.
  Status renew_log_epoch();
  // Deltas still in the log whose dot `peer` lacks, for keys passing `filter`.
  // `complete` is false when the log was trimmed past what the peer lacks.
  StatusOr<std::vector<v1::Delta>> missing_since(const VersionVector& peer, const KeyFilter& filter,
                                                 size_t limit, bool* complete);
  // Log entries after `after_index` (in `epoch`), for keys passing `filter`.
  StatusOr<LogRead> log_since(uint64_t epoch, uint64_t after_index, const KeyFilter& filter,
                              size_t limit);
  uint64_t last_log_index();
  // The HLC of this replica's own write with dot seq `seq`, if the log still
  // holds it. Reads the log backwards (recent writes are found at once).
  StatusOr<std::optional<uint64_t>> own_delta_hlc(uint64_t seq);
  uint64_t first_log_index();
  // Fingerprint of the keys in [first, last] passing `filter`: count and an
  // order-independent hash of (key, state bytes).
  StatusOr<v1::RangeFingerprint> fingerprint(std::string_view first, std::string_view last,
                                             const KeyFilter& filter);
  // Splits the keys passing `filter` in [first, last] into up to `parts` ranges
  // of near-equal counts and fingerprints each.
  StatusOr<std::vector<v1::RangeFingerprint>> split_fingerprints(std::string_view first,
                                                                 std::string_view last,
                                                                 const KeyFilter& filter,
                                                                 size_t parts);
  // For each document in [first, last] passing `filter`, in key order: its key
  // and the hash of (key, state bytes) that `fingerprint` sums. Two replicas
  // hold a document identically exactly when (up to hash collisions) these
  // agree; sync's set reconciliation works on them.
  // That hash: XXH3 of the key seeded with XXH3 of the serialized state.
  static uint64_t doc_id(std::string_view key, std::string_view state_bytes);
  StatusOr<std::vector<std::pair<std::string, uint64_t>>> doc_hashes(std::string_view first,
                                                                     std::string_view last,
                                                                     const KeyFilter& filter);
  // The same for the documents among `keys` (in key order; keys without a
  // document are left out): for a caller that knows the keys it wants, at a
  // cost that does not grow with everything else the store holds.
  StatusOr<std::vector<std::pair<std::string, uint64_t>>> doc_hashes_of(
      std::vector<std::string> keys);
  // Whole state of documents in [first, last] passing `filter` (tombstoned
  // ones included, so that deletions reconcile too).
  StatusOr<std::vector<v1::DocState>> states(std::string_view first, std::string_view last,
                                             const KeyFilter& filter, size_t limit);
  StatusOr<std::optional<v1::DocState>> state(std::string_view key);

  // --- Housekeeping.
  // Drops log entries with index <= `up_to_index`.
  Status trim_log(uint64_t up_to_index);
  // Drops log entries older than `retention_ms` by their HLC.
  Status trim_log_older_than(uint64_t retention_ms);
  // Collects tombstones stamped below `stable_hlc` (every replica in scope has
  // acknowledged past it). Returns how many were dropped. The first call
  // after opening reads every document; later ones only the documents
  // written since their last call and those still holding a tombstone
  // (StoreStats::tombstone_documents_read counts what was read). It reads in
  // chunks (StoreOptions::tombstone_chunk_docs) and lets writers in between
  // them; what they write goes to the next call.
  StatusOr<size_t> collect_tombstones(uint64_t stable_hlc);
  // A daemon's periodic housekeeping: trims the log and collects the
  // tombstones older than `retention_ms` by the store's clock. Failures are
  // logged (the next round tries again).
  void expire_older_than(uint64_t retention_ms);

  // --- Subscription to committed changes.
  uint64_t subscribe(Listener listener);
  void unsubscribe(uint64_t id);

  // --- Local, unreplicated metadata (sync positions and the like).
  Status put_local(std::string_view name, std::string_view value);
  // Empty optional when unset.
  StatusOr<std::optional<std::string>> get_local(std::string_view name);

  StoreStats stats();
  // OK while the store can write. After the disk refused a write (a full
  // disk), UNAVAILABLE with that first error until a write succeeds again:
  // RocksDB recovers by itself once the disk has room (docs/metrics.md, "A full
  // disk"), and the writes meanwhile fail at once, losing nothing accepted.
  // Takes no lock of the store (for health checks and metrics).
  Status write_health() const;
  // Reads RocksDB's properties; takes no lock of the store (cheap, for
  // metrics).
  StoreDiskUsage disk_usage();
  StoreCacheUsage cache_usage();
  // Forces a flush of memtables and a full compaction (for space measurement).
  Status compact();

  class Impl;

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace canopy

// The RocksDB merge operator of the `docs` column family.
//
// A write does not rewrite the whole state of the document it touches: it
// adds the change itself as a merge operand under the document's key, in the
// same write batch as the log entry, the version vector and the metadata.
// RocksDB folds the operands into the stored DocState when the document is
// read, flushed or compacted, by the same join the in-memory Document does.
// The join is commutative, associative and idempotent, so folding in any
// grouping gives the state the writer held in memory, and the serialized
// state (pruned, canonical) is byte for byte the same as if it had been
// written whole.
//
// An operand is one tag byte and a protobuf message:
//   kDeltaOperand  v1::Delta      (a local or remote write)
//   kStateOperand  v1::NodeState  (a whole state joined in, e.g. a transfer)
// A whole state that replaces what was there (tombstone collection) is a Put.
#pragma once

#include <rocksdb/merge_operator.h>

#include <memory>

namespace canopy {

inline constexpr char kDeltaOperand = 'd';
inline constexpr char kStateOperand = 's';

// `max_depth`: the nesting limit a stored state is checked against when read.
std::shared_ptr<rocksdb::MergeOperator> make_doc_merge_operator(size_t max_depth);

}  // namespace canopy

// DecodeScratch: memory for decoding one received protobuf message at a time.
//
// A protobuf arena takes its first block from here instead of the heap, so
// that the message objects of a decoded batch (thousands of deltas, each with
// its operations) come from memory already held rather than from fresh heap
// blocks per message; they are all released at once when the arena goes.
// (Strings longer than the small-string buffer still live on the heap: that
// is how protobuf 3.21 places std::string fields.) One arena at a time: the
// sync engines decode each message into an arena of their own scratch and
// drop it before the next; the store benchmarks decode the same way.
#pragma once

#include <google/protobuf/arena.h>

#include <cstddef>
#include <memory>

namespace canopy {

class DecodeScratch {
 public:
  // Not zeroed: pages the decoding never reaches are never touched, so an
  // engine that receives only small messages holds only what they used.
  explicit DecodeScratch(size_t bytes = size_t{1} << 20)
      : block_(std::make_unique_for_overwrite<char[]>(bytes)), bytes_(bytes) {}
  DecodeScratch(const DecodeScratch&) = delete;
  DecodeScratch& operator=(const DecodeScratch&) = delete;

  // Options for an arena whose first block is this scratch. REQUIRES: no
  // other arena made from these options is still alive.
  google::protobuf::ArenaOptions arena_options() {
    google::protobuf::ArenaOptions o;
    o.initial_block = block_.get();
    o.initial_block_size = bytes_;
    return o;
  }

 private:
  std::unique_ptr<char[]> block_;
  size_t bytes_;
};

}  // namespace canopy

// Hybrid logical clock (Kulkarni et al.): physical milliseconds in the upper 48
// bits, a logical counter in the lower 16. Stamps compare as plain integers;
// ties between replicas break by replica id (see Stamp in document.h).
//
// The clock never goes backwards: a tick is greater than every stamp it issued
// or observed. A remote stamp further ahead of the local wall clock than the
// allowed skew is not adopted (so one runaway clock cannot drag every replica
// into the future); the caller records the skew instead. REQUIRES: external
// synchronization.
#pragma once

#include <cstdint>

namespace canopy {

constexpr int kHlcLogicalBits = 16;

inline uint64_t hlc_physical_ms(uint64_t hlc) { return hlc >> kHlcLogicalBits; }
inline uint64_t hlc_from_ms(uint64_t ms) { return ms << kHlcLogicalBits; }

class Hlc {
 public:
  explicit Hlc(uint64_t last = 0) : last_(last) {}

  // A new stamp for a local event at wall time `wall_ms`.
  uint64_t tick(uint64_t wall_ms);

  // Takes a remote stamp into account. Returns false, and leaves the clock
  // alone, when `remote` lies more than `max_skew_ms` beyond `wall_ms`.
  bool observe(uint64_t remote, uint64_t wall_ms, uint64_t max_skew_ms);

  uint64_t last() const { return last_; }

 private:
  uint64_t last_;
};

}  // namespace canopy

#include "store/hlc.h"

#include <chrono>

#include "store/clock.h"

namespace canopy {

uint64_t SystemClock::now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

SystemClock* SystemClock::instance() {
  static SystemClock clock;
  return &clock;
}

uint64_t Hlc::tick(uint64_t wall_ms) {
  const uint64_t wall = hlc_from_ms(wall_ms);
  last_ = wall > last_ ? wall : last_ + 1;
  return last_;
}

bool Hlc::observe(uint64_t remote, uint64_t wall_ms, uint64_t max_skew_ms) {
  if (hlc_physical_ms(remote) > wall_ms + max_skew_ms) return false;
  if (remote > last_) last_ = remote;
  return true;
}

}  // namespace canopy

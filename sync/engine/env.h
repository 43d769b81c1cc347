// Env: time and randomness for the sync engines, injected so that the
// simulation replaces both and a seed replays a run.
#pragma once

#include <cstdint>
#include <functional>

#include "store/clock.h"

namespace canopy::sync {

struct Env {
  Clock* clock = nullptr;
  std::function<uint64_t()> random;  // uniform 64-bit values
};

}  // namespace canopy::sync

// wait_until: poll a condition until it holds or a deadline passes.
//
// For tests that wait on another process or thread (a server accepting
// connections, a replica converging). The condition is evaluated at once, then
// every `interval` until `timeout` has passed on the steady clock, and once more
// at the deadline so that a condition that became true during the last sleep
// is not reported as a timeout. Returns whether it held. The condition runs on
// the calling thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <thread>

namespace canopy::testing {

inline bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                       std::chrono::milliseconds interval = std::chrono::milliseconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(interval, deadline - now));
  }
}

}  // namespace canopy::testing

// Clock: where time enters the store and sync logic.
//
// Logic never reads the system clock directly; it asks a Clock, so that tests
// and the simulation substitute a manual one and a seed replays a run.
#pragma once

#include <atomic>
#include <cstdint>

namespace canopy {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock milliseconds since the Unix epoch.
  virtual uint64_t now_ms() = 0;
};

// The real clock (std::chrono::system_clock). Thread-safe.
class SystemClock final : public Clock {
 public:
  uint64_t now_ms() override;
  static SystemClock* instance();
};

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(uint64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  uint64_t now_ms() override { return now_.load(); }
  void set_ms(uint64_t ms) { now_.store(ms); }
  void advance_ms(uint64_t ms) { now_.fetch_add(ms); }

 private:
  std::atomic<uint64_t> now_;
};

}  // namespace canopy

// ReportCoalescer: the leading-edge coalescing of reported twins
// (docs/device-bus.md, *Twins*), without I/O so that it can be tested alone.
//
// A device's report after a quiet period (no write of its twin in the last
// `interval`) is due at once: the spoke writes it as soon as it arrives.
// Reports arriving within `interval` of the device's last write are merged
// (per field, the latest value wins) and due when that interval ends, so a
// device's twin is written at most once an interval whatever its devices
// send (writes of one device are at least `interval` apart), and the latest
// value of every field is written no later than `interval` after it arrived.
// A device that is quiet for an interval is forgotten (memory follows the
// devices reporting now, not every device that ever reported).
//
// Thread-safety: none; TwinReports guards it with its mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace canopy::spoke::bus {

class ReportCoalescer {
 public:
  using Clock = std::chrono::steady_clock;
  using Device = std::pair<std::string, std::string>;  // (tenant, id)
  // field -> (value, atMs), latest wins.
  using Fields = std::map<std::string, std::pair<nlohmann::json, uint64_t>>;
  struct Due {
    Device device;
    Fields fields;
  };

  explicit ReportCoalescer(std::chrono::milliseconds interval) : interval_(interval) {}

  // Adds one accepted report of `device` (its fields, reported at `at_ms`).
  // True when the device had nothing pending: its due
  // time (now, after a quiet interval, else the end of its interval) may be
  // earlier than any other, and the caller wakes its writer to look again.
  bool add(const Device& device, nlohmann::json fields, uint64_t at_ms);

  // Takes the devices whose fields are due at `now` (their write is counted
  // as done at `now`: the next one waits an interval), earliest due first.
  std::vector<Due> take_due(Clock::time_point now);
  // Takes every pending device, due or not (the spoke stopping).
  std::vector<Due> take_all();
  // When the earliest pending device is due; nullopt when nothing is pending.
  std::optional<Clock::time_point> next_due() const;

  size_t pending() const { return due_.size(); }
  // Devices remembered (pending, or written within the last interval).
  size_t tracked() const { return devices_.size(); }

 private:
  struct State {
    std::optional<Clock::time_point> last_write;
    Fields fields;  // empty: nothing pending
  };
  Clock::time_point due_at(const State& s) const;

  // Every operation costs O(log n) in the devices tracked (or O(k log n) for
  // k devices taken), never a walk over all of them: a site's writer wakes
  // for each quiet device's report.
  const std::chrono::milliseconds interval_;
  std::map<Device, State> devices_;
  // Devices with fields pending, by when they are due (fixed while pending).
  std::set<std::pair<Clock::time_point, Device>> due_;
  // Writes in time order, to forget devices quiet for an interval since.
  std::deque<std::pair<Clock::time_point, Device>> written_;
};

}  // namespace canopy::spoke::bus

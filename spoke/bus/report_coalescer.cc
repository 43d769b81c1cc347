#include "spoke/bus/report_coalescer.h"

namespace canopy::spoke::bus {

ReportCoalescer::Clock::time_point ReportCoalescer::due_at(const State& s) const {
  if (!s.last_write) return Clock::time_point::min();
  return *s.last_write + interval_;
}

bool ReportCoalescer::add(const Device& device, nlohmann::json fields, uint64_t at_ms) {
  State& s = devices_[device];
  const bool was_empty = s.fields.empty();
  for (auto& [name, value] : fields.items()) s.fields[name] = {std::move(value), at_ms};
  return was_empty && !s.fields.empty();
}

std::vector<ReportCoalescer::Due> ReportCoalescer::take_due(Clock::time_point now) {
  std::vector<Due> out;
  for (auto it = devices_.begin(); it != devices_.end();) {
    State& s = it->second;
    const bool due = due_at(s) <= now;
    if (due && !s.fields.empty()) {
      out.push_back({it->first, std::move(s.fields)});
      s.fields.clear();
      s.last_write = now;
      ++it;
    } else if (due) {
      // Quiet for a whole interval: its next report is due at once anyway.
      it = devices_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<ReportCoalescer::Due> ReportCoalescer::take_all() {
  std::vector<Due> out;
  for (auto& [device, s] : devices_) {
    if (!s.fields.empty()) out.push_back({device, std::move(s.fields)});
  }
  devices_.clear();
  return out;
}

std::optional<ReportCoalescer::Clock::time_point> ReportCoalescer::next_due() const {
  std::optional<Clock::time_point> next;
  for (const auto& [device, s] : devices_) {
    if (s.fields.empty()) continue;
    const auto at = due_at(s);
    if (!next || at < *next) next = at;
  }
  return next;
}

size_t ReportCoalescer::pending() const {
  size_t n = 0;
  for (const auto& [device, s] : devices_) n += s.fields.empty() ? 0 : 1;
  return n;
}

}  // namespace canopy::spoke::bus

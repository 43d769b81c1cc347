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
  if (!was_empty || s.fields.empty()) return false;
  due_.emplace(due_at(s), device);
  return true;
}

std::vector<ReportCoalescer::Due> ReportCoalescer::take_due(Clock::time_point now) {
  std::vector<Due> out;
  while (!due_.empty() && due_.begin()->first <= now) {
    auto node = due_.extract(due_.begin());
    const Device& device = node.value().second;
    State& s = devices_.at(device);
    out.push_back({device, std::move(s.fields)});
    s.fields.clear();
    s.last_write = now;
    written_.emplace_back(now, device);
  }
  // Forget the devices quiet for a whole interval since their last write:
  // their next report is due at once anyway.
  while (!written_.empty() && written_.front().first + interval_ <= now) {
    auto it = devices_.find(written_.front().second);
    if (it != devices_.end() && it->second.fields.empty() &&
        it->second.last_write == written_.front().first) {
      devices_.erase(it);
    }
    written_.pop_front();
  }
  return out;
}

std::vector<ReportCoalescer::Due> ReportCoalescer::take_all() {
  std::vector<Due> out;
  for (const auto& [at, device] : due_) {
    out.push_back({device, std::move(devices_.at(device).fields)});
  }
  devices_.clear();
  due_.clear();
  written_.clear();
  return out;
}

std::optional<ReportCoalescer::Clock::time_point> ReportCoalescer::next_due() const {
  if (due_.empty()) return std::nullopt;
  return due_.begin()->first;
}

}  // namespace canopy::spoke::bus

// How a benchmark reports: each figure one JSON line on stdout
// ({"bench", "metric", "value", "target"}), anything else on stderr, and a
// failure ends the run with a message naming the benchmark.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

namespace canopy::bench {

// A whole number prints without a fraction, anything else rounded to three
// decimals.
inline void emit_figure(const std::string& bench, const std::string& metric, double value,
                        const std::string& target = "") {
  nlohmann::json j = {{"bench", bench}, {"metric", metric}};
  if (value == std::floor(value) && std::fabs(value) < 9.0e15) {
    j["value"] = static_cast<int64_t>(value);
  } else {
    j["value"] = std::round(value * 1000.0) / 1000.0;
  }
  if (!target.empty()) j["target"] = target;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// Ends the process at once (_Exit: a benchmark may have threads running).
[[noreturn]] inline void fail_bench(const std::string& bench, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", bench.c_str(), what.c_str());
  std::fflush(nullptr);
  std::_Exit(1);
}

}  // namespace canopy::bench

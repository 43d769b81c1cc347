// How a benchmark reports: each figure one JSON line on stdout
// ({"bench", "metric", "value", "target"}), anything else on stderr, and a
// failure ends the run with a message naming the benchmark.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

namespace canopy::bench {

inline void emit_figure(const std::string& bench, const std::string& metric, double value,
                        const std::string& target = "") {
  nlohmann::json j = {{"bench", bench}, {"metric", metric}, {"value", value}};
  if (!target.empty()) j["target"] = target;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

[[noreturn]] inline void fail_bench(const std::string& bench, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", bench.c_str(), what.c_str());
  std::exit(1);
}

}  // namespace canopy::bench

// The workload generator's internals (workload.h declares what it offers): its
// seeded randomness, the live documents, and the Generator, which makes
// documents in workload_create.cc and patches in workload_patch.cc.
// Internal to the workload generator.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "workload.h"
#include "workload_vocabulary.h"

namespace canopy::bench::workload_internal {

// ---------------------------------------------------------------------------------------------
// Randomness. std::mt19937_64 is fully specified by the standard; the distributions below are
// our own so that a seed gives the same stream with every standard library.

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  uint64_t next() { return engine_(); }

  // Uniform in [0, n), n > 0 (rejection sampling, no modulo bias).
  size_t below(size_t n) {
    const uint64_t bound = static_cast<uint64_t>(n);
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;
    do {
      x = engine_();
    } while (x >= limit);
    return static_cast<size_t>(x % bound);
  }

  // Uniform in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(below(static_cast<size_t>(hi - lo + 1)));
  }

  // Uniform in [0, 1).
  double unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  bool chance(double p) { return unit() < p; }

  template <typename Container>
  const auto& pick(const Container& c) {
    return c[below(std::size(c))];
  }

  // Index drawn with the given relative weights.
  size_t weighted(std::initializer_list<unsigned> weights) {
    unsigned total = 0;
    for (unsigned w : weights) total += w;
    size_t r = below(total);
    size_t i = 0;
    for (unsigned w : weights) {
      if (r < w) return i;
      r -= w;
      ++i;
    }
    return weights.size() - 1;
  }

  std::string hex(size_t len) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s(len, '0');
    for (char& c : s) c = kDigits[below(16)];
    return s;
  }

 private:
  std::mt19937_64 engine_;
};

// ---------------------------------------------------------------------------------------------
// The generator.

struct LiveDoc {
  std::string key;
  DocKind kind;
  std::string tenant;
  std::string ns;
  std::string app;
  std::string name;
  Json doc;
};

class Generator {
 public:
  explicit Generator(const WorkloadOptions& options) : options_(options), rng_(options.seed) {}

  std::vector<Change> run();

 private:
  // Simulated wall clock: starts at 2024-03-04T08:00:00Z and moves 1-20 s per change.
  void tick() { now_ += rng_.range(1, 20); }
  std::string now() const { return rfc3339(now_); }

  // Creation (workload_create.cc).
  Change create();
  std::string version();
  std::string image(const std::string& repo);
  std::string cpu();
  std::string memory();
  Json labels(const LiveDoc& d, const std::string& ver);
  Json metadata(const LiveDoc& d, const std::string& ver);
  std::pair<std::string, Json> padding_annotation(const LiveDoc& d, size_t n);
  void pad_annotations(const LiveDoc& d, Json& annotations, size_t* size, size_t target);
  Json env_var(const LiveDoc& d, const EnvTemplate& t);
  std::string env_value(const LiveDoc& d, std::string_view name);
  Json container(const LiveDoc& d, const std::string& name, const std::string& repo, bool main);
  Json deployment(const LiveDoc& d);
  static std::string upper(std::string s);
  std::string config_file(const LiveDoc& d, const std::string& name, size_t bytes);
  Json config_map(const LiveDoc& d);
  Json service_port(const std::string& name, int64_t port, const std::string& target);
  Json service(const LiveDoc& d);

  // Patches (workload_patch.cc).
  Json mutation(const LiveDoc& d, const Json& doc);
  static Json at_path(std::initializer_list<const char*> path, Json leaf);
  Json replicas(const Json& doc);
  Json containers_patch(Json containers);
  Json image_tag(const Json& doc);
  Json env_change(const LiveDoc& d, const Json& doc);
  Json resources(const Json& doc);
  Json restart(const Json&);
  Json annotation(const LiveDoc& d, const Json& doc);
  Json label(const Json& doc);
  std::string data_key(const Json& doc);
  Json data_update(const Json& doc);
  Json data_add(const Json&);
  Json data_remove(const Json& doc);
  Json ports(const Json& doc);
  Json session_affinity(const Json& doc);
  Change patch();
  Change remove();

  WorkloadOptions options_;
  Rng rng_;
  int64_t now_ = 1709539200;  // 2024-03-04T08:00:00Z
  uint64_t next_id_ = 1;
  std::vector<LiveDoc> live_;
};

}  // namespace canopy::bench::workload_internal

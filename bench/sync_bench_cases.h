// canopy_sync_bench's cases in files of their own (see sync_bench.cc for
// what each measures).
#pragma once

#include <cmath>
#include <string>

#include "bench/sync_bench_fleet.h"

namespace canopy::bench_sync {

// Which kind of child a figure used (stderr).
inline const char* kind_name(bool real) {
  return real ? "REAL children (ChildSync + SyncNode + own RocksDB Store, kGroupCommit)"
              : "LIGHT children (ChildSync + SyncNode on an in-memory MemoryReplica)";
}
inline double round1(double v) { return std::round(v * 10) / 10; }
// a / b to two decimals (0 when b is not positive).
inline double ratio(double a, double b) { return b > 0 ? std::round(a / b * 100) / 100 : 0; }

// hier.failover (sync_bench_hier.cc).
void case_failover(const Options& opt, const std::string& url);
// hier.fanout and hier.scale (sync_bench_hier.cc).
void case_hier(const Options& opt, const std::string& url);

}  // namespace canopy::bench_sync

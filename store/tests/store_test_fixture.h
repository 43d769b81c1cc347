// The fixture and helpers shared by the Store tests (store_test.cc,
// store_log_test.cc, store_housekeeping_test.cc): stores on real RocksDB
// directories under one temporary directory, with a manual clock.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "canopy/v1/store.pb.h"
#include "store/clock.h"
#include "store/store.h"
#include "store/tests/test_util.h"

namespace canopy::store_test {

inline constexpr uint64_t kStart = 1'700'000'000'000;

inline v1::DeltaBatch batch_of(const std::vector<v1::Delta>& deltas) {
  v1::DeltaBatch b;
  for (const auto& d : deltas) *b.add_deltas() = d;
  return b;
}

// Every document of a store, key -> canonical JSON.
inline std::map<std::string, std::string> all_docs(Store& s) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : snapshot(s).docs) out[k] = v;
  return out;
}

class StoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> open(const std::string& name, uint64_t replica,
                              Durability durability = Durability::kNone) {
    return open_store(dir_.sub(name), &clock_, durability, replica);
  }

  TempDir dir_;
  ManualClock clock_{kStart};
};

}  // namespace canopy::store_test

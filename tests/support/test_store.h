// A store opened the way unit tests want it: in a TempDir, without fsync.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "store/store.h"
#include "tests/support/temp_dir.h"

namespace canopy {

// A store in `dir`/`name` without fsync (a test's), on `clock` (nullptr: the
// system clock), with replica id `id` (0: drawn) and `random` for its ids and
// epochs, when given. Fails the test (and returns null) if it cannot open.
inline std::unique_ptr<Store> open_test_store(testing::TempDir& dir, const std::string& name,
                                              uint64_t id = 0, Clock* clock = nullptr,
                                              std::function<uint64_t()> random = {}) {
  StoreOptions o;
  o.path = dir.file(name);
  o.durability = Durability::kNone;
  o.clock = clock;
  o.replica_id = id;
  if (random) o.random = std::move(random);
  auto s = Store::open(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

}  // namespace canopy

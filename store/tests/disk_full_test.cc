// A full disk under a real store: a tmpfs mounted for the test (root may
// mount; where it may not, the test says so and is skipped), filled by a
// file, then emptied. The store must refuse writes clearly meanwhile, lose
// nothing it accepted, not abort (Debian's librocksdb keeps its assertions: a
// sync of the failed write-ahead log, or a second write to its LOG file,
// aborts), and write again by itself once the disk has room: at once when
// its reserve refused them, and through RocksDB's own recovery when there is
// no reserve and RocksDB met the full disk itself.
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "store/clock.h"
#include "store/store.h"
#include "store/tests/test_util.h"
#include "tests/support/small_disk.h"

namespace canopy {
namespace {

using store_test::open_store;
using store_test::TempDir;
using json = nlohmann::json;

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mnt_ = dir_.sub("fs");
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0700), 0) << std::strerror(errno);
    // RocksDB recovers once the free space exceeds its largest write buffer
    // (64 MiB by default, the hub's): room for that and the data.
    if (std::string why = disk_.mount(mnt_, "96m"); !why.empty()) GTEST_SKIP() << why;
  }
  void TearDown() override { store_.reset(); }

  void open(uint64_t reserve = StoreOptions::kDiskReserveAuto) {
    store_ = open_store(mnt_ + "/store", SystemClock::instance(), Durability::kGroupCommit, 0,
                        [&](StoreOptions* o) { o->disk_reserve_bytes = reserve; });
    ASSERT_NE(store_, nullptr);
  }
  // Writes a document of 100 KB; one the store accepts goes in `accepted`.
  Status write(int i) {
    const std::string key = "t/acme/templates/c" + std::to_string(i);
    auto r = store_->put_value(key, {{"data", {{"value", std::string(100'000, 'x')}, {"i", i}}}});
    if (r.ok()) accepted.push_back(key);
    return r.status();
  }

  std::vector<std::string> accepted;
  TempDir dir_;
  std::string mnt_;
  testing::SmallDisk disk_;
  std::unique_ptr<Store> store_;
};

// Without a reserve RocksDB meets the full disk itself.
TEST_F(DiskFullTest, WritesFailClearlyLoseNothingAndResumeOnceTheDiskHasRoom) {
  ASSERT_NO_FATAL_FAILURE(open(/*reserve=*/0));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(write(i).ok());
  ASSERT_TRUE(store_->write_health().ok());

  ASSERT_EQ(disk_.fill(0), "");
  Status refused = ok_status();
  int i = 5;
  for (; i < 200 && refused.ok(); ++i) refused = write(i);
  ASSERT_FALSE(refused.ok()) << "a full disk accepted every write";
  EXPECT_EQ(refused.code(), StatusCode::kUnavailable) << refused.to_string();
  EXPECT_NE(refused.message().find("No space left on device"), std::string::npos)
      << refused.to_string();
  const Status health = store_->write_health();
  EXPECT_EQ(health.code(), StatusCode::kUnavailable);
  EXPECT_NE(health.message().find("cannot write"), std::string::npos) << health.to_string();
  EXPECT_GE(store_->stats().write_failures, 1u);

  // Writes keep failing, at once and without aborting; what was accepted is
  // all there.
  for (int k = 0; k < 20; ++k) EXPECT_FALSE(write(1000 + k).ok());
  for (const std::string& key : accepted) EXPECT_TRUE(store_->get(key).ok()) << key;

  ASSERT_EQ(disk_.empty(), "");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  Status again = write(2000);
  while (!again.ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    again = write(2000);
  }
  ASSERT_TRUE(again.ok()) << "no write succeeded within 60 s of freeing the disk: "
                          << again.to_string();
  EXPECT_TRUE(store_->write_health().ok()) << store_->write_health().to_string();
  for (int k = 0; k < 5; ++k) ASSERT_TRUE(write(3000 + k).ok());

  // Reopened, the store holds every write it accepted.
  store_.reset();
  ASSERT_NO_FATAL_FAILURE(open(0));
  for (const std::string& key : accepted) EXPECT_TRUE(store_->get(key).ok()) << key;
  EXPECT_EQ(accepted.size(), 11u) << "5 before the disk filled, 6 after it had room";
}

// With the reserve (the default: the largest write buffer, 64 MiB here, and
// 4 MiB), writes are refused before RocksDB runs out of room, reads and log
// trims go on, and the first write after the disk has room is accepted.
TEST_F(DiskFullTest, TheReserveRefusesWritesBeforeTheDiskIsFullAndLetsThemThroughAtOnce) {
  ASSERT_NO_FATAL_FAILURE(open());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(write(i).ok());
  // Leave 60 MiB: room on the disk, but less than the reserve.
  ASSERT_EQ(disk_.fill(60 << 20), "");
  const uint64_t failures = store_->stats().write_failures;
  // The free space is looked at before every commit: the next write is refused.
  const Status refused = write(5);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(accepted.size(), 5u);
  EXPECT_EQ(refused.code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.message().find("below the store's reserve of 68.0 MiB"), std::string::npos)
      << refused.to_string();
  EXPECT_NE(refused.message().find(" MiB free, below"), std::string::npos) << refused.to_string();
  EXPECT_EQ(store_->write_health().message(), refused.message());
  EXPECT_EQ(store_->stats().write_failures, failures + 1);
  for (const std::string& key : accepted) EXPECT_TRUE(store_->get(key).ok()) << key;
  // What frees space still works.
  CANOPY_ASSERT_OK(store_->trim_log(store_->last_log_index()));

  ASSERT_EQ(disk_.empty(), "");
  ASSERT_TRUE(write(100).ok());  // the first write after: no recovery to wait for
  EXPECT_TRUE(store_->write_health().ok()) << store_->write_health().to_string();
  store_.reset();
  ASSERT_NO_FATAL_FAILURE(open());
  for (const std::string& key : accepted) EXPECT_TRUE(store_->get(key).ok()) << key;
}

// A write that would take the disk below the reserve is refused even while
// the disk is above it: a batch of many documents (a reconciliation's, many
// writers' combined) must not reach RocksDB's own full-disk path. It alone is
// refused: the store stays writable for smaller writes.
TEST_F(DiskFullTest, AWriteThatWouldGoBelowTheReserveIsRefusedAlone) {
  ASSERT_NO_FATAL_FAILURE(open());
  ASSERT_TRUE(write(0).ok());
  // Leave the reserve (68 MiB) and 2 MiB more.
  ASSERT_EQ(disk_.fill(70 << 20), "");
  std::vector<std::pair<std::string, json>> large;
  for (int i = 0; i < 8; ++i) {
    large.emplace_back("t/acme/templates/large" + std::to_string(i),
                       json{{"data", {{"value", std::string(500'000, 'y')}}}});
  }
  const uint64_t failures = store_->stats().write_failures;
  auto results = store_->put_values(large);
  ASSERT_EQ(results.size(), large.size());
  for (const auto& r : results) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(r.status().message().find("would go below the store's reserve of 68.0 MiB"),
              std::string::npos)
        << r.status().to_string();
  }
  EXPECT_EQ(store_->stats().write_failures, failures + 1);
  EXPECT_TRUE(store_->write_health().ok()) << store_->write_health().to_string();
  for (const auto& [key, doc] : large) {
    EXPECT_EQ(store_->get(key).status().code(), StatusCode::kNotFound) << key;
  }
  // A small write still fits above the reserve.
  ASSERT_TRUE(write(1).ok());

  ASSERT_EQ(disk_.empty(), "");
  for (const auto& r : store_->put_values(large)) EXPECT_TRUE(r.ok()) << r.status().to_string();
  for (const std::string& key : accepted) EXPECT_TRUE(store_->get(key).ok()) << key;
}

}  // namespace
}  // namespace canopy

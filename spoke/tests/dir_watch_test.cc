// DirWatch on a real directory: entries passing the filter wake it, others do
// not; the directory deleted and created again is watched again.
#include "spoke/dir_watch.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace canopy::spoke {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using canopy::testing::wait_until;

class DirWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("manifests");
    fs::create_directory(path_);
    auto w = DirWatch::start(
        path_, [](std::string_view name) { return name.starts_with("canopy-"); },
        [this] { ++calls_; }, 50ms);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    watch_ = std::move(w).value();
    ASSERT_TRUE(watch_->watching());
  }

  // Waits until the count moves past `before`.
  bool woken(int before) {
    return wait_until([&] { return calls_.load() > before; }, 5000ms, 5ms);
  }

  canopy::testing::TempDir dir_;
  std::string path_;
  std::atomic<int> calls_{0};
  std::unique_ptr<DirWatch> watch_;
};

TEST_F(DirWatchTest, OursWakeItOthersDoNot) {
  std::ofstream(path_ + "/other.yaml") << "x";
  std::ofstream(path_ + "/.canopy-tmp-1") << "x";
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(calls_.load(), 0) << "a file that is not ours woke the watch";

  int before = calls_.load();
  std::ofstream(path_ + "/canopy-4-acme-web.json") << "{}";
  EXPECT_TRUE(woken(before)) << "creating a file of ours";

  std::this_thread::sleep_for(50ms);
  before = calls_.load();
  std::ofstream(path_ + "/canopy-4-acme-web.json", std::ios::app) << " ";
  EXPECT_TRUE(woken(before)) << "editing a file of ours";

  std::this_thread::sleep_for(50ms);
  before = calls_.load();
  fs::remove(path_ + "/canopy-4-acme-web.json");
  EXPECT_TRUE(woken(before)) << "deleting a file of ours";

  // Renamed over from a temporary file, as the applier writes.
  std::this_thread::sleep_for(50ms);
  before = calls_.load();
  std::ofstream(path_ + "/.canopy-tmp-2") << "{}";
  fs::rename(path_ + "/.canopy-tmp-2", path_ + "/canopy-4-acme-db.json");
  EXPECT_TRUE(woken(before)) << "a file of ours renamed into place";
}

TEST_F(DirWatchTest, TheDirectoryDeletedAndCreatedAgainIsWatchedAgain) {
  int before = calls_.load();
  fs::remove_all(path_);
  EXPECT_TRUE(woken(before)) << "the directory deleted";
  EXPECT_TRUE(wait_until([&] { return !watch_->watching(); }, 5000ms, 5ms));

  before = calls_.load();
  fs::create_directory(path_);
  EXPECT_TRUE(woken(before)) << "watching again must call once";
  EXPECT_TRUE(watch_->watching());

  std::this_thread::sleep_for(50ms);
  before = calls_.load();
  std::ofstream(path_ + "/canopy-4-acme-web.json") << "{}";
  EXPECT_TRUE(woken(before)) << "a file of ours in the new directory";
}

TEST(DirWatchStart, AMissingDirectoryIsWatchedOnceItExists) {
  canopy::testing::TempDir dir;
  const std::string path = dir.file("later");
  std::atomic<int> calls{0};
  auto w = DirWatch::start(
      path, [](std::string_view) { return true; }, [&] { ++calls; }, 20ms);
  ASSERT_TRUE(w.ok());
  EXPECT_FALSE((*w)->watching());
  fs::create_directory(path);
  EXPECT_TRUE(wait_until([&] { return (*w)->watching() && calls.load() == 1; }, 5000ms, 5ms));
}

}  // namespace
}  // namespace canopy::spoke

// Conditional writes (if_version) and writes that no thread waits for
// (put_value_async, remove_async): they combine with blocking writes into the
// same commits, and each is reported only once it is durable.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "store/tests/store_test_fixture.h"

namespace canopy::store_test {
namespace {

using nlohmann::json;

// What asynchronous writes reported, to wait on.
struct Outcomes {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<StatusOr<v1::Delta>> results;

  Store::WriteDone add() {
    return [this](StatusOr<v1::Delta> r) {
      std::lock_guard lock(mu);
      results.push_back(std::move(r));
      cv.notify_all();
    };
  }
  void wait_for(size_t n) {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return results.size() >= n; }))
        << results.size() << " of " << n << " writes reported";
  }
};

TEST_F(StoreTest, AWriteNamingAStaleVersionIsRefusedAndChangesNothing) {
  auto s = open("a", 1, Durability::kGroupCommit);
  ASSERT_NE(s, nullptr);
  auto first = s->put_value("t/acme/app", json{{"v", 1}});
  CANOPY_ASSERT_OK(first);
  const uint64_t v1 = first->hlc();
  clock_.advance_ms(5);
  auto second = s->put_value("t/acme/app", json{{"v", 2}}, v1);
  CANOPY_ASSERT_OK(second);
  const uint64_t index = s->last_log_index();

  auto stale = s->put_value("t/acme/app", json{{"v", 3}}, v1);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), StatusCode::kAborted);
  EXPECT_EQ(stale.status().message(), "version " + std::to_string(v1) +
                                          " is stale: it is at version " +
                                          std::to_string(second->hlc()));
  auto stale_remove = s->remove("t/acme/app", v1);
  EXPECT_EQ(stale_remove.status().code(), StatusCode::kAborted);
  EXPECT_EQ(*s->get("t/acme/app"), R"({"v":2})");
  EXPECT_EQ(s->last_log_index(), index) << "a refused write commits nothing";

  // At its version: deleted. A delete of a deleted document is NotFound
  // whatever the version; a write naming the live version is stale, and
  // says the document is deleted.
  auto removed = s->remove("t/acme/app", second->hlc());
  CANOPY_ASSERT_OK(removed);
  EXPECT_EQ(s->remove("t/acme/app", second->hlc()).status().code(), StatusCode::kNotFound);
  auto after_delete = s->put_value("t/acme/app", json{{"v", 4}}, second->hlc());
  EXPECT_EQ(after_delete.status().code(), StatusCode::kAborted);
  EXPECT_NE(after_delete.status().message().find("(deleted)"), std::string::npos)
      << after_delete.status().message();
  // Naming the tombstone's version recreates it; no version at all does too.
  CANOPY_ASSERT_OK(s->put_value("t/acme/app", json{{"v", 5}}, removed->hlc()));
  CANOPY_ASSERT_OK(s->put_value("t/acme/other", json{{"v", 1}}));
}

TEST_F(StoreTest, AsynchronousWritesAreReportedOnlyOnceDurable) {
  auto s = open("a", 1, Durability::kGroupCommit);
  ASSERT_NE(s, nullptr);
  // The listener is told of a write once an fsync covers it: every write
  // reported done must already have been seen by it.
  std::mutex seen_mu;
  std::set<uint64_t> seen;  // dot seqs
  s->subscribe([&](const v1::LogEntry& e) {
    std::lock_guard lock(seen_mu);
    seen.insert(e.delta().dot().seq());
  });
  std::atomic<int> reported_before_durable{0};
  Outcomes out;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 300;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string key = "k/" + std::to_string(t) + "/" + std::to_string(i);
        if (t == 0) {
          // A blocking writer among them: the same commits take both.
          auto r = s->put_value(key, json{{"i", i}});
          ASSERT_TRUE(r.ok()) << r.status().message();
          continue;
        }
        auto done = out.add();
        s->put_value_async(key, json{{"i", i}}, 0, [&, done](StatusOr<v1::Delta> r) {
          if (r.ok()) {
            std::lock_guard lock(seen_mu);
            if (seen.count(r->dot().seq()) == 0) ++reported_before_durable;
          }
          done(std::move(r));
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  out.wait_for((kThreads - 1) * kPerThread);
  for (const auto& r : out.results) ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(reported_before_durable.load(), 0);
  EXPECT_EQ(s->version_vector().contiguous(1), uint64_t{kThreads * kPerThread});

  // A refused asynchronous write is reported at once, and changes nothing.
  Outcomes refused;
  s->put_value_async("", json{{"a", 1}}, 0, refused.add());
  s->put_value_async("k/array", json::array({1}), 0, refused.add());
  s->put_value_async("k/1/1", json{{"i", 9}}, 12345, refused.add());
  s->remove_async("k/never", 0, refused.add());
  refused.wait_for(4);
  EXPECT_EQ(refused.results[0].status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.results[1].status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.results[2].status().code(), StatusCode::kAborted);
  EXPECT_EQ(refused.results[3].status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*s->get("k/1/1"), R"({"i":1})");

  // And the writes are on disk.
  s.reset();
  s = open("a", 1, Durability::kGroupCommit);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(*s->get("k/3/299"), R"({"i":299})");
  EXPECT_EQ(*s->get("k/0/299"), R"({"i":299})");
}

TEST_F(StoreTest, ClosingAStoreCompletesItsPendingAsynchronousWrites) {
  for (Durability d : {Durability::kGroupCommit, Durability::kSync, Durability::kNone}) {
    auto s = open("d" + std::to_string(static_cast<int>(d)), 1, d);
    ASSERT_NE(s, nullptr);
    std::atomic<int> ok{0};
    std::atomic<int> failed{0};
    constexpr int kWrites = 500;
    for (int i = 0; i < kWrites; ++i) {
      s->put_value_async("k/" + std::to_string(i), json{{"i", i}}, 0,
                         [&](StatusOr<v1::Delta> r) { (r.ok() ? ok : failed)++; });
    }
    s.reset();  // waits for every report
    EXPECT_EQ(ok.load(), kWrites);
    EXPECT_EQ(failed.load(), 0);
    if (d == Durability::kNone) continue;  // nothing promised on disk
    s = open("d" + std::to_string(static_cast<int>(d)), 1, d);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->version_vector().contiguous(1), uint64_t{kWrites});
  }
}

}  // namespace
}  // namespace canopy::store_test

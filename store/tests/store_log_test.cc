// Tests of Store's change log (positions, completeness), fingerprints and
// the transfer of whole document states, on real RocksDB directories.

#include <gtest/gtest.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "store/store.h"
#include "store/tests/store_test_fixture.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using namespace store_test;

// A reader at the log's end (a child resuming with nothing new) is answered
// from the log's position without an iterator: over a large log with cold
// files, creating one and seeking costs milliseconds (sync.resync's
// log_ms_k0). Seen in RocksDB's own per-thread counters of seeks.
TEST_F(StoreTest, AReadAtTheLogsEndSeeksNothing) {
  auto a = open("a", 1);
  ASSERT_NE(a, nullptr);
  for (int i = 1; i <= 3; ++i) CANOPY_ASSERT_OK(a->put("k/" + std::to_string(i), "{}"));
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  auto seeks = [&](uint64_t after) {
    rocksdb::get_perf_context()->Reset();
    auto r = a->log_since(a->log_epoch(), after, nullptr, 100);
    EXPECT_TRUE(r.ok());
    EXPECT_TRUE(r.ok() && r->complete);
    return rocksdb::get_perf_context()->seek_on_memtable_count;
  };
  EXPECT_GT(seeks(2), 0u) << "a read before the end seeks (the counter works)";
  EXPECT_EQ(seeks(3), 0u) << "a read at the end must not";
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
}

TEST_F(StoreTest, LogSincePositionsAndCompleteness) {
  auto a = open("a", 1);
  ASSERT_NE(a, nullptr);
  for (int i = 1; i <= 5; ++i) CANOPY_ASSERT_OK(a->put("k/" + std::to_string(i), "{}"));
  const uint64_t epoch = a->log_epoch();
  EXPECT_EQ(a->first_log_index(), 1u);
  EXPECT_EQ(a->last_log_index(), 5u);

  auto all = a->log_since(epoch, 0, nullptr, 100);
  CANOPY_ASSERT_OK(all);
  EXPECT_TRUE(all->complete);
  EXPECT_EQ(all->last_index, 5u);
  ASSERT_EQ(all->entries.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(all->entries[i].index(), i + 1);
    EXPECT_EQ(all->entries[i].source(), 0u);
    EXPECT_EQ(all->entries[i].delta().key(), "k/" + std::to_string(i + 1));
  }

  auto tail = a->log_since(epoch, 3, nullptr, 100);
  CANOPY_ASSERT_OK(tail);
  ASSERT_EQ(tail->entries.size(), 2u);
  EXPECT_EQ(tail->entries[0].index(), 4u);

  auto page = a->log_since(epoch, 0, nullptr, 2);
  CANOPY_ASSERT_OK(page);
  ASSERT_EQ(page->entries.size(), 2u);
  EXPECT_EQ(page->last_index, 2u) << "the next read starts after the last entry returned";
  EXPECT_TRUE(page->complete);

  auto filtered = a->log_since(
      epoch, 0, [](std::string_view k) { return k == "k/4"; }, 100);
  CANOPY_ASSERT_OK(filtered);
  ASSERT_EQ(filtered->entries.size(), 1u);
  EXPECT_EQ(filtered->entries[0].index(), 4u);
  EXPECT_EQ(filtered->last_index, 5u) << "filtered-out entries still advance the position";

  auto up_to_date = a->log_since(epoch, 5, nullptr, 100);
  CANOPY_ASSERT_OK(up_to_date);
  EXPECT_TRUE(up_to_date->complete);
  EXPECT_TRUE(up_to_date->entries.empty());
  EXPECT_EQ(up_to_date->last_index, 5u);

  auto other_epoch = a->log_since(epoch + 1, 0, nullptr, 100);
  CANOPY_ASSERT_OK(other_epoch);
  EXPECT_FALSE(other_epoch->complete);
  EXPECT_TRUE(other_epoch->entries.empty());
  EXPECT_EQ(other_epoch->last_index, 5u);

  auto ahead = a->log_since(epoch, 9, nullptr, 100);
  CANOPY_ASSERT_OK(ahead);
  EXPECT_FALSE(ahead->complete);

  CANOPY_ASSERT_OK(a->trim_log(3));
  EXPECT_EQ(a->first_log_index(), 4u);
  EXPECT_EQ(a->last_log_index(), 5u);
  auto trimmed = a->log_since(epoch, 2, nullptr, 100);
  CANOPY_ASSERT_OK(trimmed);
  EXPECT_FALSE(trimmed->complete);
  auto from_three = a->log_since(epoch, 3, nullptr, 100);
  CANOPY_ASSERT_OK(from_three);
  EXPECT_TRUE(from_three->complete);
  EXPECT_EQ(from_three->entries.size(), 2u);

  // Remote changes carry their source; trimming by age keeps recent entries.
  auto b = open("b", 2);
  ASSERT_NE(b, nullptr);
  auto d = b->put("r", "{}");
  CANOPY_ASSERT_OK(d);
  CANOPY_ASSERT_OK(a->apply_remote(batch_of({*d}), 2));
  auto last = a->log_since(epoch, 5, nullptr, 100);
  CANOPY_ASSERT_OK(last);
  ASSERT_EQ(last->entries.size(), 1u);
  EXPECT_EQ(last->entries[0].source(), 2u);
  clock_.advance_ms(1000);
  CANOPY_ASSERT_OK(a->trim_log_older_than(10'000));
  EXPECT_EQ(a->first_log_index(), 4u);
  clock_.advance_ms(20'000);
  CANOPY_ASSERT_OK(a->trim_log_older_than(10'000));
  EXPECT_EQ(a->first_log_index(), 7u);
  // Reopened, the trimmed position stays.
  a.reset();
  a = open("a", 1);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->first_log_index(), 7u);
  EXPECT_FALSE(a->log_since(epoch, 5, nullptr, 100)->complete);
}

// log_since hands its filter each entry's key without decoding the entry:
// the key of a delta (puts, patches, removes) and of a whole state
// (apply_states), long keys included, and returns exactly the entries the
// filter takes, decoded.
TEST_F(StoreTest, TheLogFilterSeesEveryEntrysKey) {
  auto a = open("a", 1);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const std::string long_key = "l/" + std::string(300, 'x');
  CANOPY_ASSERT_OK(a->put("k/1", R"({"spec":{"n":1,"s":"text"}})"));
  CANOPY_ASSERT_OK(a->put(long_key, R"({"v":[1,2,3]})"));
  CANOPY_ASSERT_OK(a->patch("k/1", R"({"spec":{"n":2}})"));
  CANOPY_ASSERT_OK(a->remove("k/1"));
  CANOPY_ASSERT_OK(b->put("s/x", R"({"a":"b"})"));
  auto states = b->states("s/", "s/~", nullptr, 100);
  CANOPY_ASSERT_OK(states);
  CANOPY_ASSERT_OK(a->apply_states(*states, 2));
  const uint64_t epoch = a->log_epoch();

  auto all = a->log_since(epoch, 0, nullptr, 100);
  CANOPY_ASSERT_OK(all);
  std::vector<std::string> keys;
  for (const auto& e : all->entries)
    keys.push_back(e.has_delta() ? e.delta().key() : e.doc().key());
  ASSERT_EQ(keys, (std::vector<std::string>{"k/1", long_key, "k/1", "k/1", "s/x"}));
  ASSERT_TRUE(all->entries.back().has_doc()) << "apply_states logs a whole state";

  std::vector<std::string> seen;
  auto none = a->log_since(
      epoch, 0,
      [&](std::string_view k) {
        seen.emplace_back(k);
        return false;
      },
      100);
  CANOPY_ASSERT_OK(none);
  EXPECT_TRUE(none->entries.empty());
  EXPECT_EQ(none->last_index, all->last_index);
  EXPECT_EQ(seen, keys);

  auto some = a->log_since(
      epoch, 0, [&](std::string_view k) { return k == long_key || k == "s/x"; }, 100);
  CANOPY_ASSERT_OK(some);
  ASSERT_EQ(some->entries.size(), 2u);
  EXPECT_EQ(some->entries[0].SerializeAsString(), all->entries[1].SerializeAsString());
  EXPECT_EQ(some->entries[1].SerializeAsString(), all->entries[4].SerializeAsString());
}

TEST_F(StoreTest, FingerprintsEqualForEqualContents) {
  auto a = open("a", 1);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<v1::Delta> ds;
  for (int i = 0; i < 20; ++i) {
    char key[16];
    std::snprintf(key, sizeof(key), "d/%02d", i);
    auto d = a->put(key, json{{"i", i}}.dump());
    CANOPY_ASSERT_OK(d);
    ds.push_back(*d);
  }
  auto rm = a->remove("d/07");
  CANOPY_ASSERT_OK(rm);
  ds.push_back(*rm);
  std::reverse(ds.begin(), ds.end());
  CANOPY_ASSERT_OK(b->apply_remote(batch_of(ds), 1));

  auto fa = a->fingerprint("d/", "d/~", nullptr);
  auto fb = b->fingerprint("d/", "d/~", nullptr);
  CANOPY_ASSERT_OK(fa);
  CANOPY_ASSERT_OK(fb);
  EXPECT_EQ(fa->count(), 20u) << "a deleted document is still fingerprinted";
  EXPECT_EQ(fa->SerializeAsString(), fb->SerializeAsString());
  auto pa = a->split_fingerprints("d/", "d/~", nullptr, 4);
  auto pb = b->split_fingerprints("d/", "d/~", nullptr, 4);
  CANOPY_ASSERT_OK(pa);
  CANOPY_ASSERT_OK(pb);
  ASSERT_EQ(pa->size(), 4u);
  ASSERT_EQ(pb->size(), 4u);
  uint64_t total = 0;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*pa)[i].SerializeAsString(), (*pb)[i].SerializeAsString());
    total += (*pa)[i].count();
  }
  EXPECT_EQ(total, 20u);
  EXPECT_EQ(pa->front().first(), "d/");
  EXPECT_EQ(pa->back().last(), "d/~");

  // One document differs: the fingerprint and exactly one range differ.
  CANOPY_ASSERT_OK(b->patch("d/13", R"({"changed":true})"));
  fb = b->fingerprint("d/", "d/~", nullptr);
  CANOPY_ASSERT_OK(fb);
  EXPECT_EQ(fa->count(), fb->count());
  EXPECT_NE(fa->hash(), fb->hash());
  pb = b->split_fingerprints("d/", "d/~", nullptr, 4);
  CANOPY_ASSERT_OK(pb);
  int differing = 0;
  for (size_t i = 0; i < 4; ++i) {
    if ((*pa)[i].hash() != (*pb)[i].hash()) {
      ++differing;
      EXPECT_LE((*pb)[i].first(), "d/13");
      EXPECT_GE((*pb)[i].last(), "d/13");
    }
  }
  EXPECT_EQ(differing, 1);

  // Filters and empty ranges.
  auto even =
      a->fingerprint("d/", "d/~", [](std::string_view k) { return (k.back() - '0') % 2 == 0; });
  CANOPY_ASSERT_OK(even);
  EXPECT_EQ(even->count(), 10u);
  auto none = a->fingerprint("e/", "e/~", nullptr);
  CANOPY_ASSERT_OK(none);
  EXPECT_EQ(none->count(), 0u);
  EXPECT_EQ(none->hash(), 0u);
  auto none_split = a->split_fingerprints("e/", "e/~", nullptr, 4);
  CANOPY_ASSERT_OK(none_split);
  ASSERT_EQ(none_split->size(), 1u);
  EXPECT_EQ(none_split->at(0).count(), 0u);
}

TEST_F(StoreTest, StatesTransferWholeDocuments) {
  auto a = open("a", 1);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<v1::Delta> ds;
  for (const char* k : {"s/1", "s/2", "s/3", "t/1"}) {
    auto d = a->put(k, R"({"v":{"x":1},"w":[1]})");
    CANOPY_ASSERT_OK(d);
    ds.push_back(*d);
  }
  auto rm = a->remove("s/2");
  CANOPY_ASSERT_OK(rm);
  ds.push_back(*rm);

  auto states = a->states("s/", "s/~", nullptr, 100);
  CANOPY_ASSERT_OK(states);
  ASSERT_EQ(states->size(), 3u) << "the deleted document travels as its tombstone";
  int notified = 0;
  const uint64_t listener = b->subscribe([&](const v1::LogEntry& e) {
    EXPECT_TRUE(e.has_doc());
    EXPECT_EQ(e.source(), 1u);
    ++notified;
  });
  CANOPY_ASSERT_OK(b->apply_states(*states, 1));
  EXPECT_EQ(notified, 3);
  b->unsubscribe(listener);
  EXPECT_EQ(*b->get("s/1"), *a->get("s/1"));
  EXPECT_EQ(b->get("s/2").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(b->get("t/1").status().code(), StatusCode::kNotFound);
  for (const char* k : {"s/1", "s/2", "s/3"}) {
    auto sa = a->state(k);
    auto sb = b->state(k);
    CANOPY_ASSERT_OK(sa);
    CANOPY_ASSERT_OK(sb);
    ASSERT_TRUE(sa->has_value() && sb->has_value()) << k;
    EXPECT_EQ((*sa)->SerializeAsString(), (*sb)->SerializeAsString()) << k;
  }
  EXPECT_FALSE(b->state("t/1")->has_value());
  EXPECT_EQ(b->version_vector().size(), 0u) << "states carry no dots";

  // The same states again change nothing; nor do the deltas they contain.
  const auto before = snapshot(*b);
  CANOPY_ASSERT_OK(b->apply_states(*states, 1));
  EXPECT_EQ(snapshot(*b).states, before.states);
  EXPECT_EQ(b->last_log_index(), before.last_log_index);
  CANOPY_ASSERT_OK(b->apply_remote(batch_of(ds), 1));
  for (const char* k : {"s/1", "s/2", "s/3"}) {
    EXPECT_EQ((*a->state(k))->SerializeAsString(), (*b->state(k))->SerializeAsString()) << k;
  }
  EXPECT_EQ(all_docs(*a), all_docs(*b));

  // A limit bounds the answer.
  EXPECT_EQ(a->states("", "~", nullptr, 2)->size(), 2u);
  EXPECT_EQ(a->states(
                 "", "~", [](std::string_view k) { return k.starts_with("t/"); }, 10)
                ->size(),
            1u);
}

}  // namespace
}  // namespace canopy

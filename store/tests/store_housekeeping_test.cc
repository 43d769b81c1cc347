// Tests of Store's housekeeping (drop, tombstone collection, log expiry),
// subscriptions, durability with concurrent writers, folded changes, remote
// batches larger than the document cache, and disk usage, on real RocksDB
// directories.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store/hlc.h"
#include "store/store.h"
#include "store/tests/store_test_fixture.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using namespace store_test;

TEST_F(StoreTest, DropForgetsWithoutTombstones) {
  auto a = open("a", 1);
  ASSERT_NE(a, nullptr);
  CANOPY_ASSERT_OK(a->put("keep", "{}"));
  CANOPY_ASSERT_OK(a->put("gone", R"({"x":1})"));
  auto st = a->state("gone");
  CANOPY_ASSERT_OK(st);
  ASSERT_TRUE(st->has_value());
  const uint64_t index = a->last_log_index();

  CANOPY_ASSERT_OK(a->drop({"gone", "never-was"}));
  EXPECT_EQ(a->get("gone").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(a->state("gone")->has_value());
  EXPECT_EQ(a->last_log_index(), index) << "a drop is not a change to replicate";
  EXPECT_TRUE(a->get("keep").ok());
  a.reset();
  a = open("a", 1);
  ASSERT_NE(a, nullptr);
  EXPECT_FALSE(a->state("gone")->has_value());
  // The key can come back whole.
  CANOPY_ASSERT_OK(a->apply_states({**st}, 9));
  EXPECT_EQ(*a->get("gone"), R"({"x":1})");
}

// A child that dropped a document (its parent lacked it) and is later sent
// the document's deltas again rebuilds it: a seen dot whose document was
// dropped is applied again, not discarded as a duplicate. Elsewhere a seen dot
// stays a duplicate, and the memory of the drop survives a restart.
TEST_F(StoreTest, DeltasOfADroppedDocumentApplyAgain) {
  auto hub = open("hub", 1);
  auto site = open("site", 2);
  ASSERT_NE(hub, nullptr);
  ASSERT_NE(site, nullptr);
  auto first = hub->put("sites/a1", R"({"name":"a1","labels":{"region":"us"}})");
  auto second = hub->patch("sites/a1", R"({"labels":{"region":"eu","legacy":"yes"}})");
  auto other = hub->put("sites/a2", R"({"name":"a2"})");
  CANOPY_ASSERT_OK(first);
  CANOPY_ASSERT_OK(second);
  CANOPY_ASSERT_OK(other);
  CANOPY_ASSERT_OK(site->apply_remote(batch_of({*first, *second, *other}), 1));
  const std::string whole = *site->get("sites/a1");

  CANOPY_ASSERT_OK(site->drop({"sites/a1"}));
  site.reset();
  site = open("site", 2);
  ASSERT_NE(site, nullptr);
  // Sent again in another order, as a second parent that learned them late would.
  auto again = site->apply_remote(batch_of({*second}), 3);
  CANOPY_ASSERT_OK(again);
  EXPECT_EQ(again->applied, 1u);
  EXPECT_EQ(again->duplicates, 0u);
  again = site->apply_remote(batch_of({*first, *other}), 3);
  CANOPY_ASSERT_OK(again);
  EXPECT_EQ(again->applied, 1u);
  EXPECT_EQ(again->duplicates, 1u) << "sites/a2 was never dropped";
  EXPECT_EQ(*site->get("sites/a1"), whole);
  EXPECT_EQ(site->stats().reapplied_deltas, 2u);
  // Applying them yet again changes nothing.
  CANOPY_ASSERT_OK(site->apply_remote(batch_of({*first, *second}), 3));
  EXPECT_EQ(*site->get("sites/a1"), whole);

  // Once deletions in it are collected, the document's old deltas are
  // duplicates again: they would bring back what was deleted.
  clock_.advance_ms(100);
  auto del = hub->patch("sites/a1", R"({"labels":{"legacy":null}})");
  CANOPY_ASSERT_OK(del);
  CANOPY_ASSERT_OK(site->apply_remote(batch_of({*del}), 1));
  auto collected = site->collect_tombstones(hlc_from_ms(kStart + 1000));
  CANOPY_ASSERT_OK(collected);
  EXPECT_GT(*collected, 0u);
  auto old = site->apply_remote(batch_of({*second}), 3);
  CANOPY_ASSERT_OK(old);
  EXPECT_EQ(old->duplicates, 1u);
  EXPECT_EQ(*site->get("sites/a1"), R"({"labels":{"region":"eu"},"name":"a1"})");
}

// The highest dot of each origin a remote delta brought, with its stamp,
// kept across a restart (what a parent tells a child restored from a backup).
TEST_F(StoreTest, TopDotOfEachOriginReplica) {
  auto a = open("a", 1);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->top_dot(1).seq, 0u);
  auto d1 = a->put("k1", "{}");
  clock_.advance_ms(5);
  auto d2 = a->put("k2", R"({"x":1})");
  CANOPY_ASSERT_OK(d1);
  CANOPY_ASSERT_OK(d2);
  // Out of order: the top is the highest seq, not the last applied.
  CANOPY_ASSERT_OK(b->apply_remote(batch_of({*d2}), 1));
  CANOPY_ASSERT_OK(b->apply_remote(batch_of({*d1}), 1));
  EXPECT_EQ(b->top_dot(1).seq, d2->dot().seq());
  EXPECT_EQ(b->top_dot(1).hlc, d2->hlc());
  b.reset();
  b = open("b", 2);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->top_dot(1).seq, d2->dot().seq());
  EXPECT_EQ(b->top_dot(1).hlc, d2->hlc());
  EXPECT_EQ(b->top_dot(7).seq, 0u);
}

// A store put back from a backup with the restore marker becomes a new
// replica: what it held keeps its dots, its own writes start a new id, so a
// write it made after the backup (which a peer holds) and a write it makes
// now cannot share a dot; the marker is used up.
TEST_F(StoreTest, ARestoredStoreTakesANewReplicaId) {
  const std::string path = dir_.sub("site");
  const std::string backup = dir_.sub("site-backup");
  auto site = open("site", 5, Durability::kSync);
  auto peer = open("peer", 6);
  ASSERT_NE(site, nullptr);
  ASSERT_NE(peer, nullptr);
  auto kept = site->put("k/kept", R"({"v":1})");
  CANOPY_ASSERT_OK(kept);
  const uint64_t epoch = site->log_epoch();
  site.reset();
  std::filesystem::copy(path, backup, std::filesystem::copy_options::recursive);
  site = open("site", 5, Durability::kSync);
  auto lost = site->put("k/lost", R"({"v":2})");  // after the backup; the peer has it
  CANOPY_ASSERT_OK(lost);
  CANOPY_ASSERT_OK(peer->apply_remote(batch_of({*kept, *lost}), 5));
  site.reset();

  std::filesystem::remove_all(path);
  std::filesystem::copy(backup, path, std::filesystem::copy_options::recursive);
  std::ofstream(path + "/" + kRestoredMarker).put('\n');
  site = open_store(path, &clock_, Durability::kSync);
  ASSERT_NE(site, nullptr);
  const uint64_t id = site->replica_id();
  EXPECT_NE(id, 5u);
  EXPECT_NE(site->log_epoch(), epoch);
  EXPECT_FALSE(std::filesystem::exists(path + "/" + kRestoredMarker));
  EXPECT_EQ(*site->get("k/kept"), R"({"v":1})");
  EXPECT_FALSE(site->get("k/lost").ok());

  auto fresh = site->put("k/fresh", R"({"v":3})");
  CANOPY_ASSERT_OK(fresh);
  EXPECT_EQ(fresh->dot().replica(), id);
  EXPECT_EQ(fresh->dot().seq(), 1u);
  // Both ways, nothing is taken for a duplicate.
  auto to_peer = peer->apply_remote(batch_of({*fresh}), id);
  CANOPY_ASSERT_OK(to_peer);
  EXPECT_EQ(to_peer->duplicates, 0u);
  auto back = site->apply_remote(batch_of({*lost}), 6);
  CANOPY_ASSERT_OK(back);
  EXPECT_EQ(back->duplicates, 0u);
  EXPECT_EQ(all_docs(*site), all_docs(*peer));

  // The marker is gone: the next open keeps the new id (asking for the old
  // one is the usual mismatch).
  site.reset();
  site = open_store(path, &clock_, Durability::kSync);
  ASSERT_NE(site, nullptr);
  EXPECT_EQ(site->replica_id(), id);
  site.reset();
  StoreOptions o;
  o.path = path;
  o.clock = &clock_;
  o.replica_id = 5;
  EXPECT_EQ(Store::open(o).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(StoreTest, CollectTombstonesBelowStableStamp) {
  auto a = open("a", 1);
  ASSERT_NE(a, nullptr);
  CANOPY_ASSERT_OK(a->put("k1", R"({"a":1,"b":2})"));
  CANOPY_ASSERT_OK(a->put("k2", R"({"z":1})"));
  clock_.advance_ms(100);
  CANOPY_ASSERT_OK(a->patch("k1", R"({"a":null})"));
  CANOPY_ASSERT_OK(a->remove("k2"));

  auto none = a->collect_tombstones(hlc_from_ms(kStart + 50));
  CANOPY_ASSERT_OK(none);
  EXPECT_EQ(*none, 0u) << "tombstones newer than the stable stamp stay";
  EXPECT_TRUE(a->state("k2")->has_value());

  const auto docs = all_docs(*a);
  auto n = a->collect_tombstones(hlc_from_ms(kStart + 1000));
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(all_docs(*a), docs) << "collection changes no visible document";
  EXPECT_FALSE(a->state("k2")->has_value()) << "a collected deleted document is erased";
  auto k1 = a->state("k1");
  CANOPY_ASSERT_OK(k1);
  ASSERT_TRUE(k1->has_value());
  ASSERT_EQ((*k1)->root().children_size(), 1);
  EXPECT_EQ((*k1)->root().children(0).name(), "b");
  EXPECT_EQ(*a->collect_tombstones(hlc_from_ms(kStart + 1000)), 0u);
  a.reset();
  a = open("a", 1);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(all_docs(*a), docs);
  EXPECT_FALSE(a->state("k2")->has_value());
}

// After its first pass, tombstone collection reads only the documents
// written since, and those still holding a tombstone too young to go: its
// cost follows what changed, not what is stored. A restarted store reads
// every document once again (its work list is in memory).
TEST_F(StoreTest, TombstoneCollectionReadsOnlyWhatChangedAfterItsFirstPass) {
  auto a = open("a", 1);
  ASSERT_NE(a, nullptr);
  for (int i = 0; i < 50; ++i) {
    CANOPY_ASSERT_OK(a->put("quiet/" + std::to_string(i), R"({"x":1})"));
  }
  CANOPY_ASSERT_OK(a->put("k1", R"({"a":1,"b":2})"));
  clock_.advance_ms(100);
  CANOPY_ASSERT_OK(a->patch("k1", R"({"a":null})"));  // a tombstone, stamped kStart + 100

  auto n = a->collect_tombstones(hlc_from_ms(kStart + 50));  // too young to go
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(a->stats().tombstone_documents_read, 51u) << "the first pass reads every document";

  // Nothing written: only k1, whose tombstone is still there, is read.
  n = a->collect_tombstones(hlc_from_ms(kStart + 1000));
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(a->stats().tombstone_documents_read, 52u);
  n = a->collect_tombstones(hlc_from_ms(kStart + 1000));
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(a->stats().tombstone_documents_read, 52u) << "k1 holds no tombstone any more";

  // Deletions after a pass are found by the next one, local and remote alike.
  clock_.advance_ms(100);
  CANOPY_ASSERT_OK(a->remove("quiet/7"));
  auto b = open("b", 2);
  ASSERT_NE(b, nullptr);
  auto put = b->put("from-b", R"({"y":1,"z":2})");
  CANOPY_ASSERT_OK(put);
  auto del = b->patch("from-b", R"({"y":null})");
  CANOPY_ASSERT_OK(del);
  CANOPY_ASSERT_OK(a->apply_remote(batch_of({*put, *del}), 2));
  const auto docs = all_docs(*a);
  n = a->collect_tombstones(hlc_from_ms(kStart + 10'000));
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(a->stats().tombstone_documents_read, 54u) << "quiet/7 and from-b";
  EXPECT_FALSE(a->state("quiet/7")->has_value());
  EXPECT_EQ(all_docs(*a), docs);

  // A tombstone left from before a restart is collected by the new process's
  // first pass, which reads every document again.
  clock_.advance_ms(100);
  CANOPY_ASSERT_OK(a->remove("quiet/8"));
  a.reset();
  a = open("a", 1);
  ASSERT_NE(a, nullptr);
  n = a->collect_tombstones(hlc_from_ms(kStart + 20'000));
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  // All of them: 49 quiet ones (quiet/8 with its tombstone), k1 and from-b.
  EXPECT_EQ(a->stats().tombstone_documents_read, 51u);
  EXPECT_FALSE(a->state("quiet/8")->has_value());
}

// A pass reads in chunks and lets writers in between them (the hook below
// writes through the store's own lock, so it would hang if the pass held
// it). What they write before the pass reads a key is collected by this
// pass; what they write after it, by the next one; nothing is lost either way.
TEST_F(StoreTest, TombstonePassLetsWritersInBetweenItsChunks) {
  std::function<void()> hook;
  auto a = open_store(dir_.sub("a"), &clock_, Durability::kNone, 1, [&](StoreOptions* o) {
    o->tombstone_chunk_docs = 4;
    o->between_tombstone_chunks = [&] {
      if (hook) hook();
    };
  });
  ASSERT_NE(a, nullptr);
  auto key = [](int i) { return "d/" + std::string(i < 10 ? "0" : "") + std::to_string(i); };
  for (int i = 0; i < 20; ++i) CANOPY_ASSERT_OK(a->put(key(i), R"({"x":1,"y":1,"z":1})"));
  clock_.advance_ms(100);
  CANOPY_ASSERT_OK(a->patch(key(1), R"({"y":null})"));
  const uint64_t stable = hlc_from_ms(kStart + 10'000);  // every tombstone here is older

  // The first pass reads every document, 4 at a time: d/00-d/03 first.
  int between = 0;
  hook = [&] {
    if (++between != 1) return;
    clock_.advance_ms(100);
    ASSERT_TRUE(a->patch(key(2), R"({"y":null})").ok());   // read already
    ASSERT_TRUE(a->patch(key(17), R"({"y":null})").ok());  // read later
  };
  auto n = a->collect_tombstones(stable);
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(between, 4) << "20 documents in chunks of 4";
  EXPECT_EQ(*n, 2u) << "d/01 and d/17";
  EXPECT_EQ(a->stats().tombstone_documents_read, 20u);
  EXPECT_EQ(*a->get(key(2)), R"({"x":1,"z":1})");

  // d/02 is on the work list; d/17, read after its write, is not.
  hook = nullptr;
  n = a->collect_tombstones(stable);
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(a->stats().tombstone_documents_read, 21u) << "d/02 alone";

  // A pass over the work list is chunked too: 8 keys, d/03-d/06 first.
  clock_.advance_ms(100);
  for (int i = 3; i <= 10; ++i) CANOPY_ASSERT_OK(a->patch(key(i), R"({"y":null})"));
  between = 0;
  hook = [&] {
    if (++between != 1) return;
    clock_.advance_ms(100);
    ASSERT_TRUE(a->patch(key(4), R"({"z":null})").ok());  // read already
  };
  n = a->collect_tombstones(stable);
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(between, 1);
  EXPECT_EQ(*n, 8u);
  EXPECT_EQ(a->stats().tombstone_documents_read, 29u);
  hook = nullptr;
  n = a->collect_tombstones(stable);
  CANOPY_ASSERT_OK(n);
  EXPECT_EQ(*n, 1u) << "d/04's z, deleted after the pass read it";
  EXPECT_EQ(a->stats().tombstone_documents_read, 30u);
  EXPECT_EQ(*a->get(key(4)), R"({"x":1})");
  EXPECT_EQ(*a->get(key(11)), R"({"x":1,"y":1,"z":1})");
}

// The daemons' housekeeping: what is older than the retention goes, the log
// and tombstones alike; what is younger stays.
TEST_F(StoreTest, ExpireOlderThanTrimsTheLogAndCollectsTombstones) {
  auto a = open("a", 1);
  ASSERT_NE(a, nullptr);
  CANOPY_ASSERT_OK(a->put("k1", R"({"a":1})"));
  CANOPY_ASSERT_OK(a->remove("k1"));
  CANOPY_ASSERT_OK(a->put("k2", R"({"b":1})"));
  clock_.advance_ms(60'000);
  CANOPY_ASSERT_OK(a->put("k3", R"({"c":1})"));
  const auto docs = all_docs(*a);

  a->expire_older_than(120'000);  // nothing is that old
  EXPECT_EQ(a->first_log_index(), 1u);
  EXPECT_TRUE(a->state("k1")->has_value());

  a->expire_older_than(30'000);
  EXPECT_EQ(a->first_log_index(), 4u) << "the three older entries go, k3's stays";
  EXPECT_FALSE(a->state("k1")->has_value()) << "the old tombstone was collected";
  EXPECT_EQ(all_docs(*a), docs);
}

TEST_F(StoreTest, SubscribersSeeEveryCommittedEntryInOrder) {
  auto a = open("a", 1);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<v1::LogEntry> seen;
  const uint64_t id = a->subscribe([&](const v1::LogEntry& e) { seen.push_back(e); });

  auto r1 = b->put("r/1", "{}");
  auto r2 = b->put("r/2", "{}");
  CANOPY_ASSERT_OK(r1);
  CANOPY_ASSERT_OK(r2);
  CANOPY_ASSERT_OK(a->put("l/1", R"({"a":1})"));
  CANOPY_ASSERT_OK(a->apply_remote(batch_of({*r1, *r2, *r1}), 2));
  CANOPY_ASSERT_OK(a->patch("l/1", R"({"b":2})"));
  CANOPY_ASSERT_OK(a->remove("r/1"));
  auto st = b->states("r/2", "r/2", nullptr, 1);
  CANOPY_ASSERT_OK(st);
  CANOPY_ASSERT_OK(b->patch("r/2", R"({"x":1})"));
  st = b->states("r/2", "r/2", nullptr, 1);
  CANOPY_ASSERT_OK(a->apply_states(*st, 2));
  CANOPY_ASSERT_OK(a->put("l/1", R"({"a":1,"b":2})"));  // no-op: no entry

  auto log = a->log_since(a->log_epoch(), 0, nullptr, 100);
  CANOPY_ASSERT_OK(log);
  ASSERT_EQ(seen.size(), 6u);
  ASSERT_EQ(log->entries.size(), seen.size());
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].index(), i + 1);
    EXPECT_EQ(seen[i].SerializeAsString(), log->entries[i].SerializeAsString()) << i;
  }
  a->unsubscribe(id);
  CANOPY_ASSERT_OK(a->put("l/2", "{}"));
  EXPECT_EQ(seen.size(), 6u);
}

// Writes from several threads with a durable mode (their local writes combine
// into groups: Store::Impl::write_local); everything acknowledged is there
// after a reopen, and subscribers saw the log in order.
void concurrent_writers(const std::string& path, Clock* clock, Durability durability) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 40;
  std::vector<uint64_t> indexes;
  {
    auto s = open_store(path, clock, durability, 5);
    ASSERT_NE(s, nullptr);
    s->subscribe([&](const v1::LogEntry& e) { indexes.push_back(e.index()); });
    std::atomic<int> failures{0};
    std::atomic<int> reverted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        const std::string field = std::to_string(t);
        for (int i = 0; i < kPerThread; ++i) {
          const std::string key = "w/" + std::to_string(t) + "/" + std::to_string(i);
          if (!s->put(key, json{{"t", t}, {"i", i}}.dump()).ok()) ++failures;
          // Every thread also patches its own field of one shared document;
          // nobody else writes that field, so it never goes back.
          if (!s->patch("shared", json{{field, i}}.dump()).ok()) ++failures;
          auto shared = s->get("shared");
          if (!shared.ok()) {
            ++failures;
          } else if (json::parse(*shared).value(field, -1) != i) {
            ++reverted;
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(reverted.load(), 0) << "a concurrent patch wrote back a stale field";
  }
  ASSERT_EQ(indexes.size(), static_cast<size_t>(2 * kThreads * kPerThread));
  for (size_t i = 0; i < indexes.size(); ++i) ASSERT_EQ(indexes[i], i + 1);

  auto s = open_store(path, clock, durability, 5);
  ASSERT_NE(s, nullptr);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      const std::string key = "w/" + std::to_string(t) + "/" + std::to_string(i);
      auto got = s->get(key);
      ASSERT_TRUE(got.ok()) << key << ": " << got.status().to_string();
      EXPECT_EQ(*got, json({{"i", i}, {"t", t}}).dump());
    }
  }
  json shared;
  for (int t = 0; t < kThreads; ++t) shared[std::to_string(t)] = kPerThread - 1;
  EXPECT_EQ(*s->get("shared"), shared.dump());
  EXPECT_EQ(s->last_log_index(), static_cast<uint64_t>(2 * kThreads * kPerThread));
  EXPECT_EQ(s->version_vector().contiguous(5), static_cast<uint64_t>(2 * kThreads * kPerThread));
}

TEST_F(StoreTest, DurabilitySyncWithConcurrentWriters) {
  concurrent_writers(dir_.sub("sync"), &clock_, Durability::kSync);
}

TEST_F(StoreTest, DurabilityGroupCommitWithConcurrentWriters) {
  concurrent_writers(dir_.sub("group"), &clock_, Durability::kGroupCommit);
}

// A batch that touches more documents than the cache holds.
// Writes store their delta as a merge operand that RocksDB folds into the
// document's state on reads, flushes and compactions (store/doc_merge.h). The
// folded state must be byte for byte what the writer holds in memory, however
// the operands were grouped: read back from the memtable, after compactions
// in the middle of the stream, and after a reopen.
TEST_F(StoreTest, FoldedChangesEqualWholeStates) {
  auto s = open("a", 11);
  ASSERT_NE(s, nullptr);
  std::mt19937_64 rng(3);
  std::map<std::string, Document> mirror;
  const std::vector<std::string> keys = {"t/a/one", "t/a/two", "t/a/three"};
  auto expect_equal = [&](const char* when) {
    for (const auto& k : keys) {
      auto st = s->state(k);
      CANOPY_ASSERT_OK(st);
      v1::NodeState want;
      mirror[k].to_proto(&want);
      if (!st->has_value()) {
        EXPECT_TRUE(mirror[k].empty()) << k << " " << when;
        continue;
      }
      EXPECT_EQ((*st)->root().SerializeAsString(), want.SerializeAsString()) << k << " " << when;
    }
  };
  for (int i = 0; i < 600; ++i) {
    const std::string& k = keys[rng() % keys.size()];
    const int field = static_cast<int>(rng() % 8);
    StatusOr<v1::Delta> d = Status(StatusCode::kUnknown, "");
    switch (rng() % 10) {
      case 0:
        d = s->remove(k);
        break;
      case 1:
        d = s->put(k, R"({"fresh":)" + std::to_string(i) + "}");
        break;
      default:
        d = s->patch(k, R"({"f)" + std::to_string(field) + R"(":{"v":)" + std::to_string(i) +
                            R"(,"old":null}})");
    }
    if (!d.ok()) {
      ASSERT_EQ(d.status().code(), StatusCode::kNotFound) << d.status().to_string();
      continue;
    }
    if (d->ops_size() > 0) mirror[k].apply(*d, nullptr);
    if (i % 97 == 0) {
      expect_equal("from the memtable");
      CANOPY_ASSERT_OK(s->compact());
      expect_equal("after a compaction");
    }
  }
  expect_equal("at the end");
  s.reset();
  s = open("a", 11);
  ASSERT_NE(s, nullptr);
  expect_equal("after reopening");
  for (const auto& k : keys) {
    auto got = s->get(k);
    if (mirror[k].exists()) {
      CANOPY_ASSERT_OK(got);
      EXPECT_EQ(*got, mirror[k].to_json());
    } else {
      EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
    }
  }
}

TEST_F(StoreTest, ApplyRemoteBatchLargerThanDocCache) {
  auto a = open("a", 1);
  ASSERT_NE(a, nullptr);
  auto b = open_store(dir_.sub("b"), &clock_, Durability::kNone, 2,
                      [](StoreOptions* o) { o->doc_cache_entries = 2; });
  ASSERT_NE(b, nullptr);
  std::vector<v1::Delta> ds;
  for (int i = 0; i < 6; ++i) {
    auto d = a->put("k/" + std::to_string(i), json{{"i", i}}.dump());
    CANOPY_ASSERT_OK(d);
    ds.push_back(*d);
    d = a->patch("k/" + std::to_string(i), R"({"second":true})");
    CANOPY_ASSERT_OK(d);
    ds.push_back(*d);
  }
  auto r = b->apply_remote(batch_of(ds), 1);
  CANOPY_ASSERT_OK(r);
  EXPECT_EQ(r->applied, ds.size());
  EXPECT_EQ(all_docs(*b), all_docs(*a));
  EXPECT_EQ(snapshot(*b).states, snapshot(*a).states);
  b.reset();
  b = open_store(dir_.sub("b"), &clock_, Durability::kNone, 2,
                 [](StoreOptions* o) { o->doc_cache_entries = 2; });
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(all_docs(*b), all_docs(*a));
}

// disk_usage reads RocksDB's own size estimates: nothing on a new store,
// the memtable after writes, SST files after a flush, at least a quarter of
// what the documents hold once they are on disk (random decimal digits
// compress to about 42% at best).
TEST_F(StoreTest, DiskUsageFollowsWhatIsWritten) {
  auto s = open("a", 11);
  ASSERT_NE(s, nullptr);
  const StoreDiskUsage empty = s->disk_usage();
  EXPECT_EQ(empty.sst_bytes, 0u);
  EXPECT_EQ(empty.live_data_bytes, 0u);
  constexpr int kDocs = 200;
  constexpr size_t kBytes = 1000;
  std::mt19937_64 rng(7);
  for (int i = 0; i < kDocs; ++i) {
    std::string text;
    while (text.size() < kBytes) text += std::to_string(rng());
    CANOPY_ASSERT_OK(s->put_value("docs/" + std::to_string(i), json{{"v", text}}));
  }
  EXPECT_GT(s->disk_usage().memtable_bytes, empty.memtable_bytes);
  CANOPY_ASSERT_OK(s->compact());
  const StoreDiskUsage after = s->disk_usage();
  EXPECT_GE(after.sst_bytes, kDocs * kBytes / 4);
  EXPECT_GE(after.live_data_bytes, kDocs * kBytes / 4);
  EXPECT_LE(after.live_data_bytes, after.sst_bytes);
}

// A group of writes stages against the cache: a document evicted between two
// writes to it in one group would be read back from disk without the first
// (not yet committed), and the second would neither remove what the first
// added nor know it had seen it.
TEST_F(StoreTest, AGroupWritingAKeyTwiceSeesItsFirstWriteWhateverTheCacheHolds) {
  auto s = open_store(dir_.sub("a"), &clock_, Durability::kGroupCommit, 1,
                      [](StoreOptions* o) { o->doc_cache_entries = 1; });
  ASSERT_NE(s, nullptr);
  auto r = s->put_values(
      {{"k/a", json{{"a", 1}, {"b", 2}}}, {"k/other", json{{"x", 1}}}, {"k/a", json{{"a", 1}}}});
  ASSERT_EQ(r.size(), 3u);
  for (const auto& one : r) CANOPY_ASSERT_OK(one);
  EXPECT_EQ(*s->get("k/a"), R"({"a":1})");
  EXPECT_TRUE(s->conflicts("k/a").empty());
  // And once more, with every document read back from disk.
  s.reset();
  s = open_store(dir_.sub("a"), &clock_, Durability::kGroupCommit, 1,
                 [](StoreOptions* o) { o->doc_cache_entries = 1; });
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(*s->get("k/a"), R"({"a":1})");
}

// The decoded documents kept in memory are bounded in bytes as well as in
// number: large documents empty the cache long before 100,000 of them are
// held; sizes follow the documents as they grow; nothing read is wrong.
TEST_F(StoreTest, TheDocumentCacheIsBoundedInBytes) {
  constexpr size_t kBound = 64 << 10;
  auto s = open_store(dir_.sub("a"), &clock_, Durability::kNone, 1,
                      [](StoreOptions* o) { o->doc_cache_bytes = kBound; });
  ASSERT_NE(s, nullptr);
  // One document growing: its size is accounted as it grows.
  CANOPY_ASSERT_OK(s->put_value("big/0", json{{"f0", std::string(100, 'x')}}));
  const size_t small = s->cache_usage().bytes;
  EXPECT_EQ(s->cache_usage().documents, 1u);
  for (int f = 1; f < 20; ++f) {
    CANOPY_ASSERT_OK(
        s->patch("big/0", json{{"f" + std::to_string(f), std::string(1000, 'y')}}.dump()));
  }
  EXPECT_GE(s->cache_usage().bytes, small + 19 * 1000);
  // Many documents of 4 KB: the cache never holds much more than its bound.
  const std::string text(4000, 'z');
  size_t most = 0;
  for (int i = 0; i < 100; ++i) {
    CANOPY_ASSERT_OK(s->put_value("docs/" + std::to_string(i), json{{"v", text}, {"i", i}}));
    most = std::max(most, s->cache_usage().bytes);
  }
  const StoreCacheUsage u = s->cache_usage();
  EXPECT_GT(u.clears, 0u);
  EXPECT_LE(most, kBound + 8000);  // the bound, and the write that passed it
  EXPECT_LT(u.documents, 100u);
  for (int i = 0; i < 100; ++i) {
    auto got = s->get("docs/" + std::to_string(i));
    CANOPY_ASSERT_OK(got);
    EXPECT_EQ(json::parse(*got)["i"], i);
  }
  EXPECT_EQ(json::parse(*s->get("big/0")).size(), 20u);
}

}  // namespace
}  // namespace canopy

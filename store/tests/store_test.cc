// Tests of Store on real RocksDB directories: local writes and reads, reopen,
// replication between two stores, conflict records and version vectors. The
// change log, fingerprints and state transfer are tested in store_log_test.cc;
// housekeeping, subscriptions and durability with concurrent writers in
// store_housekeeping_test.cc.

#include "store/store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "store/hlc.h"
#include "store/tests/store_test_fixture.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using namespace store_test;

TEST_F(StoreTest, PutGetPatchRemove) {
  auto s = open("a", 11);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->replica_id(), 11u);

  auto d1 = s->put("t/acme/app", R"({"b": 1, "a": {"x": [1, 2]}})");
  CANOPY_ASSERT_OK(d1);
  EXPECT_EQ(d1->key(), "t/acme/app");
  EXPECT_EQ(d1->dot().replica(), 11u);
  EXPECT_EQ(d1->dot().seq(), 1u);
  EXPECT_GT(d1->ops_size(), 0);
  EXPECT_EQ(hlc_physical_ms(d1->hlc()), kStart);

  auto got = s->get("t/acme/app");
  CANOPY_ASSERT_OK(got);
  EXPECT_EQ(*got, R"({"a":{"x":[1,2]},"b":1})");

  auto d2 = s->patch("t/acme/app", R"({"b":null,"c":"new","a":{"y":true}})");
  CANOPY_ASSERT_OK(d2);
  EXPECT_EQ(d2->dot().seq(), 2u);
  EXPECT_GT(d2->hlc(), d1->hlc());
  EXPECT_EQ(*s->get("t/acme/app"), R"({"a":{"x":[1,2],"y":true},"c":"new"})");

  // A patch of a missing document creates it.
  CANOPY_ASSERT_OK(s->patch("t/acme/other", R"({"k":1,"gone":null})"));
  EXPECT_EQ(*s->get("t/acme/other"), R"({"k":1})");

  // put_value takes a parsed value.
  CANOPY_ASSERT_OK(s->put_value("t/acme/value", json{{"v", 1}}));
  EXPECT_EQ(*s->get("t/acme/value"), R"({"v":1})");

  auto rm = s->remove("t/acme/app");
  CANOPY_ASSERT_OK(rm);
  ASSERT_EQ(rm->ops_size(), 1);
  EXPECT_EQ(rm->ops(0).kind(), v1::FieldOp::REMOVE);
  auto missing = s->get("t/acme/app");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("does not exist"), std::string::npos);
  auto again = s->remove("t/acme/app");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s->get("t/acme/never").status().code(), StatusCode::kNotFound);

  // Recreated after the delete: only the new fields show.
  CANOPY_ASSERT_OK(s->put("t/acme/app", R"({"z":0})"));
  EXPECT_EQ(*s->get("t/acme/app"), R"({"z":0})");
}

// put_values: many documents in one commit, each its own write (its own dot
// and log entry, replicated as separate deltas); a refused one fails alone.
TEST_F(StoreTest, PutValuesIsOneCommitOfSeparateWrites) {
  auto a = open("a", 1, Durability::kGroupCommit);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  CANOPY_ASSERT_OK(a->put_value("k/same", json{{"v", 0}}));
  std::vector<v1::LogEntry> seen;
  a->subscribe([&](const v1::LogEntry& e) { seen.push_back(e); });
  const uint64_t index = a->last_log_index();
  auto r = a->put_values({{"k/1", json{{"a", 1}}},
                          {"", json{{"a", 1}}},              // bad key
                          {"k/array", json::array({1, 2})},  // not an object
                          {"k/same", json{{"v", 0}}},        // unchanged
                          {"k/deep", json::parse(std::string(200, '[') + std::string(200, ']'))},
                          {"k/3", json{{"b", 2}}},
                          {"k/1", json{{"a", 2}}}});  // the same key again: a second write
  ASSERT_EQ(r.size(), 7u);
  CANOPY_ASSERT_OK(r[0]);
  EXPECT_EQ(r[0]->dot().seq(), 2u);
  EXPECT_EQ(r[1].status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r[2].status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r[2].status().message().find("must be a JSON object"), std::string::npos);
  CANOPY_ASSERT_OK(r[3]);
  EXPECT_EQ(r[3]->ops_size(), 0);
  EXPECT_EQ(r[4].status().code(), StatusCode::kInvalidArgument);
  CANOPY_ASSERT_OK(r[5]);
  EXPECT_EQ(r[5]->dot().seq(), 3u);
  CANOPY_ASSERT_OK(r[6]);
  EXPECT_EQ(r[6]->dot().seq(), 4u);
  EXPECT_EQ(a->last_log_index(), index + 3);
  ASSERT_EQ(seen.size(), 3u) << "listeners see each write, once durable";
  EXPECT_EQ(seen[0].delta().key(), "k/1");
  EXPECT_EQ(seen[2].index(), index + 3);
  EXPECT_EQ(*a->get("k/1"), R"({"a":2})");
  EXPECT_EQ(*a->get("k/3"), R"({"b":2})");
  EXPECT_EQ(a->get("k/array").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(a->version_vector().contiguous(1), 4u);

  // Another replica takes them as separate deltas and converges.
  CANOPY_ASSERT_OK(a->put_value("k/same", json{{"v", 1}}));  // seq 5
  auto ra = b->apply_remote(batch_of({*r[0], *r[5], *r[6]}), a->replica_id());
  CANOPY_ASSERT_OK(ra);
  EXPECT_EQ(ra->applied, 3u);
  EXPECT_EQ(*b->get("k/1"), R"({"a":2})");
  EXPECT_EQ(*b->get("k/3"), R"({"b":2})");

  // Durable, and the sequence goes on after a reopen.
  a.reset();
  a = open("a", 1, Durability::kGroupCommit);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(*a->get("k/1"), R"({"a":2})");
  EXPECT_EQ(*a->get("k/3"), R"({"b":2})");
  EXPECT_EQ(a->put_value("k/4", json{{"c", 3}})->dot().seq(), 6u);
  // Nothing to write: no commit.
  const uint64_t last = a->last_log_index();
  auto none = a->put_values({{"k/4", json{{"c", 3}}}});
  CANOPY_ASSERT_OK(none[0]);
  EXPECT_EQ(a->last_log_index(), last);
  EXPECT_TRUE(a->put_values({}).empty());
}

TEST_F(StoreTest, ScanPaginatesByPrefix) {
  auto s = open("a", 1);
  ASSERT_NE(s, nullptr);
  for (int i = 0; i < 25; ++i) {
    char key[32];
    std::snprintf(key, sizeof(key), "app/%02d", i);
    CANOPY_ASSERT_OK(s->put(key, json{{"i", i}}.dump()));
  }
  CANOPY_ASSERT_OK(s->put("apq/x", "{}"));
  CANOPY_ASSERT_OK(s->put("app", "{}"));
  CANOPY_ASSERT_OK(s->put("ap/x", "{}"));
  CANOPY_ASSERT_OK(s->remove("app/05"));

  std::vector<std::string> keys;
  std::string after;
  int pages = 0;
  while (true) {
    auto page = s->scan("app/", after, 10);
    CANOPY_ASSERT_OK(page);
    ++pages;
    ASSERT_LE(page->items.size(), 10u);
    for (const auto& item : page->items) {
      keys.push_back(item.key);
      EXPECT_EQ(item.json, (json{{"i", std::stoi(item.key.substr(4))}}.dump()));
    }
    if (page->next_after.empty()) break;
    EXPECT_EQ(page->next_after, page->items.back().key);
    after = page->next_after;
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(keys.size(), 24u);
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(std::count(keys.begin(), keys.end(), "app/05"), 0) << "deleted documents are skipped";

  // A page that ends exactly at the last document says so.
  auto exact = s->scan("app/", "", 24);
  CANOPY_ASSERT_OK(exact);
  EXPECT_EQ(exact->items.size(), 24u);
  EXPECT_EQ(exact->next_after, "");

  auto everything = s->scan("", "", 1000);
  CANOPY_ASSERT_OK(everything);
  EXPECT_EQ(everything->items.size(), 27u);
  EXPECT_TRUE(s->scan("app/", "app/24", 10)->items.empty());
  EXPECT_TRUE(s->scan("app/", "", 0)->items.empty());
  EXPECT_TRUE(s->scan("zzz/", "", 10)->items.empty());
  // start_after before the prefix starts at the prefix.
  EXPECT_EQ(s->scan("app/", "a", 1)->items.at(0).key, "app/00");
}

TEST_F(StoreTest, NoOpWriteCommitsNothing) {
  auto s = open("a", 1);
  ASSERT_NE(s, nullptr);
  CANOPY_ASSERT_OK(s->put("k", R"({"a":1,"b":[1,2],"c":{}})"));
  const auto before = snapshot(*s);
  int notified = 0;
  s->subscribe([&](const v1::LogEntry&) { ++notified; });

  auto same = s->put("k", R"({ "c": {}, "b": [1, 2], "a": 1 })");
  CANOPY_ASSERT_OK(same);
  EXPECT_EQ(same->ops_size(), 0);
  EXPECT_EQ(same->dot().seq(), 0u);
  auto patch = s->patch("k", R"({"a":1,"missing":null})");
  CANOPY_ASSERT_OK(patch);
  EXPECT_EQ(patch->ops_size(), 0);

  EXPECT_EQ(snapshot(*s), before);
  EXPECT_EQ(notified, 0);
  // The next real write takes the next seq: nothing was used up.
  auto next = s->put("k", R"({"a":2})");
  CANOPY_ASSERT_OK(next);
  EXPECT_EQ(next->dot().seq(), 2u);
}

TEST_F(StoreTest, ReopenKeepsDataIdentityClockAndSequence) {
  uint64_t id = 0, epoch = 0, last_hlc = 0, last_index = 0;
  std::map<std::string, std::string> docs;
  {
    auto s = open_store(dir_.sub("a"), &clock_, Durability::kSync);
    ASSERT_NE(s, nullptr);
    id = s->replica_id();
    epoch = s->log_epoch();
    EXPECT_NE(id, 0u);
    EXPECT_NE(epoch, 0u);
    for (int i = 0; i < 5; ++i) {
      clock_.advance_ms(10);
      auto d = s->put("k/" + std::to_string(i), json{{"i", i}}.dump());
      CANOPY_ASSERT_OK(d);
      last_hlc = d->hlc();
    }
    CANOPY_ASSERT_OK(s->remove("k/0"));
    last_index = s->last_log_index();
    EXPECT_EQ(last_index, 6u);
    docs = all_docs(*s);
  }
  // The wall clock went back an hour while the store was closed.
  clock_.set_ms(kStart - 3'600'000);
  auto s = open_store(dir_.sub("a"), &clock_, Durability::kSync);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->replica_id(), id);
  EXPECT_EQ(s->log_epoch(), epoch);
  EXPECT_EQ(all_docs(*s), docs);
  EXPECT_EQ(s->last_log_index(), last_index);
  EXPECT_EQ(s->version_vector().contiguous(id), 6u);

  auto d = s->put("k/new", "{}");
  CANOPY_ASSERT_OK(d);
  EXPECT_EQ(d->dot().seq(), 7u) << "the sequence continues";
  EXPECT_GT(d->hlc(), last_hlc) << "the HLC never goes back, even when the wall clock does";
  EXPECT_EQ(s->last_log_index(), last_index + 1);
  s.reset();

  // The directory belongs to its replica.
  StoreOptions o;
  o.path = dir_.sub("a");
  o.clock = &clock_;
  o.replica_id = id + 1;
  auto wrong = Store::open(o);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong.status().message().find("belongs to replica"), std::string::npos);
}

// A store with the spoke's small memory budget (a tiny block cache, small
// memtables) flushes many times along the way and still holds everything,
// across a reopen.
TEST_F(StoreTest, SmallBlockCacheAndMemtablesKeepEverything) {
  StoreOptions o;
  o.path = dir_.sub("small");
  o.clock = &clock_;
  o.block_cache_bytes = 16 << 10;
  o.write_buffer_bytes = 64 << 10;
  std::map<std::string, std::string> docs;
  {
    auto s = Store::open(o);
    CANOPY_ASSERT_OK(s);
    const std::string filler(300, 'x');
    for (int i = 0; i < 2000; ++i) {
      CANOPY_ASSERT_OK((*s)->put("k/" + std::to_string(i), json{{"i", i}, {"f", filler}}.dump()));
    }
    docs = all_docs(**s);
    ASSERT_EQ(docs.size(), 2000u);
  }
  auto s = Store::open(o);
  CANOPY_ASSERT_OK(s);
  EXPECT_EQ(all_docs(**s), docs);
  EXPECT_EQ(*(*s)->get("k/1999"), json({{"f", std::string(300, 'x')}, {"i", 1999}}).dump());
}

TEST_F(StoreTest, ReplicationConvergesAndCountsDuplicates) {
  auto a = open("a", 1);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<v1::Delta> from_a, from_b;
  auto keep = [](std::vector<v1::Delta>* out, const StatusOr<v1::Delta>& d) {
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    out->push_back(*d);
  };
  keep(&from_a, a->put("x", R"({"name":"x","labels":{"tier":"edge"}})"));
  keep(&from_a, a->put("y", R"({"n":1})"));
  clock_.advance_ms(5);
  keep(&from_b, b->put("z", R"({"only":"b"})"));
  keep(&from_b, b->put("x", R"({"labels":{"region":"eu"}})"));  // concurrent create
  keep(&from_a, a->remove("y"));
  keep(&from_a, a->patch("x", R"({"labels":{"arch":"arm64"}})"));

  auto ra = a->apply_remote(batch_of(from_b), b->replica_id());
  auto rb = b->apply_remote(batch_of(from_a), a->replica_id());
  CANOPY_ASSERT_OK(ra);
  CANOPY_ASSERT_OK(rb);
  EXPECT_EQ(ra->applied, 2u);
  EXPECT_EQ(rb->applied, 4u);
  EXPECT_EQ(ra->duplicates, 0u);

  const auto sa = snapshot(*a);
  const auto sb = snapshot(*b);
  EXPECT_EQ(sa.docs, sb.docs);
  EXPECT_EQ(sa.states, sb.states) << "converged to the same bytes";
  EXPECT_EQ(sa.version_vector, sb.version_vector);
  EXPECT_EQ(*a->get("x"), R"({"labels":{"arch":"arm64","region":"eu","tier":"edge"},"name":"x"})");

  // Delivered again (and with a duplicate inside one batch): nothing changes.
  std::vector<v1::Delta> twice = from_a;
  twice.insert(twice.end(), from_a.begin(), from_a.end());
  auto dup = b->apply_remote(batch_of(twice), a->replica_id());
  CANOPY_ASSERT_OK(dup);
  EXPECT_EQ(dup->applied, 0u);
  EXPECT_EQ(dup->duplicates, 8u);
  EXPECT_EQ(snapshot(*b), sb);
  // Own deltas coming back are duplicates too.
  auto echo = a->apply_remote(batch_of(from_a), b->replica_id());
  CANOPY_ASSERT_OK(echo);
  EXPECT_EQ(echo->duplicates, from_a.size());
}

TEST_F(StoreTest, ConflictRecordsAfterConcurrentEdits) {
  auto a = open("a", 1);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  auto base = a->put("site/s1", R"({"labels":{"tier":"base"},"keep":1})");
  CANOPY_ASSERT_OK(base);
  CANOPY_ASSERT_OK(b->apply_remote(batch_of({*base}), 1));
  clock_.advance_ms(10);

  // Both edit the same field while cut off; b writes later and wins.
  auto ea = a->patch("site/s1", R"({"labels":{"tier":"from-a"}})");
  clock_.advance_ms(10);
  auto eb = b->patch("site/s1", R"({"labels":{"tier":"from-b"}})");
  CANOPY_ASSERT_OK(ea);
  CANOPY_ASSERT_OK(eb);
  auto ra = a->apply_remote(batch_of({*eb}), 2);
  auto rb = b->apply_remote(batch_of({*ea}), 1);
  CANOPY_ASSERT_OK(ra);
  CANOPY_ASSERT_OK(rb);
  EXPECT_EQ(ra->conflicts, 1u);
  EXPECT_EQ(rb->conflicts, 1u);
  EXPECT_EQ(*a->get("site/s1"), R"({"keep":1,"labels":{"tier":"from-b"}})");
  EXPECT_EQ(*b->get("site/s1"), *a->get("site/s1"));

  for (Store* s : {a.get(), b.get()}) {
    auto records = s->conflicts("site/s1");
    ASSERT_EQ(records.size(), 1u);
    const auto& r = records[0];
    EXPECT_EQ(r.key(), "site/s1");
    EXPECT_EQ(std::vector<std::string>(r.path().begin(), r.path().end()),
              (std::vector<std::string>{"labels", "tier"}));
    EXPECT_EQ(r.loser().replica(), 1u);
    EXPECT_EQ(r.loser().seq(), ea->dot().seq());
    EXPECT_EQ(r.loser_hlc(), ea->hlc());
    EXPECT_EQ(r.loser_value(), "\"from-a\"");
    EXPECT_FALSE(r.loser_removed());
    EXPECT_EQ(r.winner().replica(), 2u);
    EXPECT_EQ(r.winner().seq(), eb->dot().seq());
    EXPECT_EQ(r.winner_hlc(), eb->hlc());
    EXPECT_EQ(r.reason(), v1::ConflictRecord::CONCURRENT);
    EXPECT_EQ(s->stats().conflicts, 1u);
    EXPECT_TRUE(s->conflicts("site/s").empty()) << "records are per key, not per prefix";
  }

  // A causal edit (b writes after seeing a's) leaves no record.
  clock_.advance_ms(10);
  auto ec = a->patch("site/s1", R"({"labels":{"tier":"after"}})");
  CANOPY_ASSERT_OK(ec);
  auto rc = b->apply_remote(batch_of({*ec}), 1);
  CANOPY_ASSERT_OK(rc);
  EXPECT_EQ(rc->conflicts, 0u);
  EXPECT_EQ(b->conflicts("site/s1").size(), 1u);
}

TEST_F(StoreTest, VersionVectorTracksDotsOutOfOrder) {
  auto a = open("a", 1);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<v1::Delta> ds;
  for (int i = 0; i < 4; ++i) {
    auto d = a->put("k/" + std::to_string(i), "{}");
    CANOPY_ASSERT_OK(d);
    ds.push_back(*d);
  }
  VersionVector va = a->version_vector();
  EXPECT_EQ(va.contiguous(1), 4u);
  EXPECT_EQ(va.size(), 1u);

  CANOPY_ASSERT_OK(b->apply_remote(batch_of({ds[3], ds[1]}), 1));
  VersionVector vb = b->version_vector();
  EXPECT_EQ(vb.contiguous(1), 0u);
  EXPECT_TRUE(vb.contains(1, 2));
  EXPECT_TRUE(vb.contains(1, 4));
  EXPECT_FALSE(vb.contains(1, 1));
  CANOPY_ASSERT_OK(b->apply_remote(batch_of({ds[0], ds[2]}), 1));
  EXPECT_EQ(b->version_vector().contiguous(1), 4u);
  EXPECT_EQ(b->version_vector(), a->version_vector());
  // It survives a reopen.
  b.reset();
  b = open("b", 2);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->version_vector(), a->version_vector());
}

TEST_F(StoreTest, MissingSinceWithFilterAndTrim) {
  auto a = open("a", 1);
  auto b = open("b", 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  auto remote = b->put("x/b", "{}");
  CANOPY_ASSERT_OK(remote);
  CANOPY_ASSERT_OK(a->put("x/1", "{}"));
  CANOPY_ASSERT_OK(a->put("y/1", "{}"));
  CANOPY_ASSERT_OK(a->apply_remote(batch_of({*remote}), 2));
  CANOPY_ASSERT_OK(a->put("x/2", "{}"));
  const KeyFilter only_x = [](std::string_view k) { return k.starts_with("x/"); };

  bool complete = false;
  auto missing = a->missing_since(VersionVector(), only_x, 100, &complete);
  CANOPY_ASSERT_OK(missing);
  EXPECT_TRUE(complete);
  std::vector<std::string> keys;
  for (const auto& d : *missing) keys.push_back(d.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"x/1", "x/b", "x/2"})) << "in log order";

  VersionVector peer;
  peer.add(1, 1);
  peer.add(2, 1);
  missing = a->missing_since(peer, nullptr, 100, &complete);
  CANOPY_ASSERT_OK(missing);
  keys.clear();
  for (const auto& d : *missing) keys.push_back(d.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"y/1", "x/2"}));

  missing = a->missing_since(VersionVector(), nullptr, 1, &complete);
  CANOPY_ASSERT_OK(missing);
  EXPECT_EQ(missing->size(), 1u);

  // After trimming, a peer that lacks trimmed dots must reconcile; one that
  // has them is still served from the log.
  CANOPY_ASSERT_OK(a->trim_log(2));
  missing = a->missing_since(VersionVector(), nullptr, 100, &complete);
  CANOPY_ASSERT_OK(missing);
  EXPECT_FALSE(complete);
  missing = a->missing_since(peer, nullptr, 100, &complete);
  CANOPY_ASSERT_OK(missing);
  EXPECT_FALSE(complete) << "the peer lacks y/1 (1:2), which was trimmed";
  peer.add(1, 2);
  missing = a->missing_since(peer, nullptr, 100, &complete);
  CANOPY_ASSERT_OK(missing);
  EXPECT_TRUE(complete);
  ASSERT_EQ(missing->size(), 1u);
  EXPECT_EQ(missing->at(0).key(), "x/2");
}

}  // namespace
}  // namespace canopy

// Tests of Store on real RocksDB directories: local writes and reads, reopen,
// replication between two stores, conflict records, version vectors, the change
// log, fingerprints, state transfer, housekeeping, subscriptions and durability
// with concurrent writers.

#include "store/store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store/hlc.h"
#include "store/tests/test_util.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using store_test::make_delta;
using store_test::open_store;
using store_test::set_op;
using store_test::snapshot;
using store_test::TempDir;

constexpr uint64_t kStart = 1'700'000'000'000;

v1::DeltaBatch batch_of(const std::vector<v1::Delta>& deltas) {
  v1::DeltaBatch b;
  for (const auto& d : deltas) *b.add_deltas() = d;
  return b;
}

// Every document of a store, key -> canonical JSON.
std::map<std::string, std::string> all_docs(Store& s) {
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

// Writes from several threads with a durable mode; everything acknowledged is
// there after a reopen, and subscribers saw the log in order.
void concurrent_writers(const std::string& path, Clock* clock, Durability durability) {
  constexpr int kThreads = 4;
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

}  // namespace
}  // namespace canopy

// Conflict records on real stores (RocksDB in temporary directories): which
// lost writes leave a record, with what winner and reason, and the rule that
// a key removal never brings a deleted document back. The rules are in
// store/document.h ("Causal context", "Conflicts", "Removal does not
// resurrect"); conflict_property_test.cc checks them on random histories.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "store/clock.h"
#include "store/hlc.h"
#include "store/store.h"
#include "store/tests/test_util.h"

namespace canopy {
namespace {

using store_test::open_store;
using store_test::TempDir;

constexpr uint64_t kStart = 1'700'000'000'000;

v1::DeltaBatch batch_of(const std::vector<v1::Delta>& deltas) {
  v1::DeltaBatch b;
  for (const auto& d : deltas) *b.add_deltas() = d;
  return b;
}

std::vector<std::string> path_of(const v1::ConflictRecord& r) {
  return {r.path().begin(), r.path().end()};
}

class ConflictTest : public ::testing::Test {
 protected:
  // Replica ids order ties between equal HLC stamps: 3 beats 2 beats 1.
  void SetUp() override {
    a_ = open_store(dir_.sub("a"), &clock_a_, Durability::kNone, 1);
    b_ = open_store(dir_.sub("b"), &clock_b_, Durability::kNone, 2);
    c_ = open_store(dir_.sub("c"), &clock_c_, Durability::kNone, 3);
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    ASSERT_NE(c_, nullptr);
  }

  static void deliver(Store& to, const v1::Delta& d) {
    auto r = to.apply_remote(batch_of({d}), d.dot().replica());
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }

  TempDir dir_;
  ManualClock clock_a_{kStart}, clock_b_{kStart}, clock_c_{kStart};
  std::unique_ptr<Store> a_, b_, c_;
};

// put A k {"x":1,"y":1}; deliver to B; patch A k {"x":2} ‖ delete B k, at the
// same HLC (B wins the tie): A's edit is lost to the delete, on both replicas.
TEST_F(ConflictTest, EditLostToConcurrentDeleteIsRecorded) {
  auto put = a_->put("k", R"({"x":1,"y":1})");
  CANOPY_ASSERT_OK(put);
  deliver(*b_, *put);
  clock_a_.advance_ms(5);
  clock_b_.advance_ms(5);
  auto edit = a_->patch("k", R"({"x":2})");
  auto del = b_->remove("k");
  CANOPY_ASSERT_OK(edit);
  CANOPY_ASSERT_OK(del);
  ASSERT_EQ(edit->hlc(), del->hlc()) << "the same HLC: the replica id breaks the tie";
  deliver(*a_, *del);
  deliver(*b_, *edit);
  for (Store* s : {a_.get(), b_.get()}) {
    EXPECT_FALSE(s->get("k").ok()) << "the delete wins";
    auto records = s->conflicts("k");
    ASSERT_EQ(records.size(), 1u) << "replica " << s->replica_id();
    EXPECT_EQ(path_of(records[0]), std::vector<std::string>{"x"});
    EXPECT_EQ(records[0].loser().replica(), 1u);
    EXPECT_EQ(records[0].loser().seq(), edit->dot().seq());
    EXPECT_EQ(records[0].loser_value(), "2");
    EXPECT_EQ(records[0].winner().replica(), 2u);
    EXPECT_EQ(records[0].winner().seq(), del->dot().seq());
    EXPECT_EQ(records[0].reason(), v1::ConflictRecord::CONCURRENT);
  }
}

// {"a":{"x":2}} against {"a":5}: whichever wins, the other is recorded.
TEST_F(ConflictTest, EditLostToConcurrentAncestorReplacementIsRecorded) {
  auto put = a_->put("k", R"({"a":{"x":1}})");
  CANOPY_ASSERT_OK(put);
  deliver(*b_, *put);
  clock_a_.advance_ms(5);
  clock_b_.advance_ms(6);
  auto nested = a_->patch("k", R"({"a":{"x":2}})");
  auto scalar = b_->patch("k", R"({"a":5})");
  CANOPY_ASSERT_OK(nested);
  CANOPY_ASSERT_OK(scalar);
  deliver(*a_, *scalar);
  deliver(*b_, *nested);
  for (Store* s : {a_.get(), b_.get()}) {
    EXPECT_EQ(*s->get("k"), R"({"a":5})");
    auto records = s->conflicts("k");
    ASSERT_EQ(records.size(), 1u) << "replica " << s->replica_id();
    EXPECT_EQ(path_of(records[0]), (std::vector<std::string>{"a", "x"}));
    EXPECT_EQ(records[0].loser_value(), "2");
    EXPECT_EQ(records[0].winner().replica(), 2u);
  }

  // The other way round: the nested write is newer, the scalar is lost.
  clock_a_.advance_ms(20);
  clock_b_.advance_ms(10);
  auto scalar2 = b_->patch("k", R"({"a":6})");
  auto nested2 = a_->put("k", R"({"a":{"y":3}})");
  CANOPY_ASSERT_OK(scalar2);
  CANOPY_ASSERT_OK(nested2);
  deliver(*a_, *scalar2);
  deliver(*b_, *nested2);
  for (Store* s : {a_.get(), b_.get()}) {
    EXPECT_EQ(*s->get("k"), R"({"a":{"y":3}})");
    auto records = s->conflicts("k");
    ASSERT_EQ(records.size(), 2u) << "replica " << s->replica_id();
    bool found = false;
    for (const auto& r : records) {
      if (r.loser().seq() != scalar2->dot().seq() || r.loser().replica() != 2) continue;
      found = true;
      EXPECT_EQ(path_of(r), std::vector<std::string>{"a"});
      EXPECT_EQ(r.loser_value(), "6");
      EXPECT_EQ(r.winner().replica(), 1u);
    }
    EXPECT_TRUE(found);
  }
}

// put A k {"a":1,"b":2}; deliver to B; delete A k ‖ patch B k {"a":null}:
// the document stays deleted, in both stamp orders.
TEST_F(ConflictTest, RemovalRacingDeleteDoesNotResurrect) {
  for (const bool delete_newer : {false, true}) {
    const std::string key = delete_newer ? "k/delete-newer" : "k/removal-newer";
    auto put = a_->put(key, R"({"a":1,"b":2})");
    CANOPY_ASSERT_OK(put);
    deliver(*b_, *put);
    clock_a_.advance_ms(delete_newer ? 10 : 5);
    clock_b_.advance_ms(delete_newer ? 5 : 10);
    auto del = a_->remove(key);
    auto removal = b_->patch(key, R"({"a":null})");
    CANOPY_ASSERT_OK(del);
    CANOPY_ASSERT_OK(removal);
    deliver(*a_, *removal);
    deliver(*b_, *del);
    for (Store* s : {a_.get(), b_.get()}) {
      auto got = s->get(key);
      EXPECT_FALSE(got.ok()) << key << " on " << s->replica_id() << ": " << *got;
    }
    auto sa = a_->state(key);
    auto sb = b_->state(key);
    CANOPY_ASSERT_OK(sa);
    CANOPY_ASSERT_OK(sb);
    ASSERT_TRUE(sa->has_value() && sb->has_value());
    EXPECT_EQ((*sa)->SerializeAsString(), (*sb)->SerializeAsString());
    clock_a_.advance_ms(20);
    clock_b_.advance_ms(20);
  }
}

// A writes, B overwrites having seen it, C overwrites having seen B's (and,
// through B, A's). Delivered to a fourth replica newest first: no record,
// though A's write is two overwrites back.
TEST_F(ConflictTest, WriteSeenThroughAThirdReplicaIsNotConcurrent) {
  auto w1 = a_->put("k", R"({"x":1})");
  CANOPY_ASSERT_OK(w1);
  deliver(*b_, *w1);
  clock_b_.advance_ms(5);
  auto w2 = b_->patch("k", R"({"x":2})");
  CANOPY_ASSERT_OK(w2);
  deliver(*c_, *w1);
  deliver(*c_, *w2);
  clock_c_.advance_ms(10);
  auto w3 = c_->patch("k", R"({"x":3})");
  CANOPY_ASSERT_OK(w3);
  TempDir other;
  ManualClock clock_d{kStart + 100};
  auto d = open_store(other.sub("d"), &clock_d, Durability::kNone, 4);
  ASSERT_NE(d, nullptr);
  deliver(*d, *w3);
  deliver(*d, *w1);
  deliver(*d, *w2);
  EXPECT_EQ(*d->get("k"), R"({"x":3})");
  EXPECT_TRUE(d->conflicts("k").empty()) << d->conflicts("k")[0].ShortDebugString();
  // Also when C had only B's write (A's reached it through B's context).
  TempDir other2;
  auto e = open_store(other2.sub("e"), &clock_d, Durability::kNone, 5);
  ASSERT_NE(e, nullptr);
  deliver(*e, *w3);
  deliver(*e, *w2);
  deliver(*e, *w1);
  EXPECT_TRUE(e->conflicts("k").empty());
}

// A's clock runs ten minutes ahead. Its write wins over a concurrent one:
// CLOCK_SKEW, blamed on A. B, having seen A's write, writes again (its stamp
// follows A's): B is not blamed, and C's concurrent write lost to B's is a
// plain CONCURRENT record.
TEST_F(ConflictTest, SkewBlamedOnlyOnTheReplicaWhoseClockRanAhead) {
  auto base = b_->put("k", R"({"x":0,"y":0})");
  CANOPY_ASSERT_OK(base);
  deliver(*a_, *base);
  deliver(*c_, *base);
  clock_a_.advance_ms(10 * 60 * 1000);
  auto fast = a_->patch("k", R"({"x":1})");
  CANOPY_ASSERT_OK(fast);
  clock_c_.advance_ms(5);
  auto slow = c_->patch("k", R"({"x":2,"y":2})");
  CANOPY_ASSERT_OK(slow);
  deliver(*c_, *fast);
  auto records = c_->conflicts("k");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].reason(), v1::ConflictRecord::CLOCK_SKEW);
  EXPECT_EQ(records[0].winner().replica(), 1u);

  deliver(*b_, *fast);
  clock_b_.advance_ms(10);
  auto follow = b_->patch("k", R"({"y":3})");
  CANOPY_ASSERT_OK(follow);
  EXPECT_GT(follow->hlc(), fast->hlc()) << "stamped above what it saw";
  EXPECT_NE(follow->clock_hlc(), 0u) << "its own clock reading goes along";
  auto r = c_->apply_remote(batch_of({*follow}), 2);
  CANOPY_ASSERT_OK(r);
  EXPECT_EQ(r->skewed, 0u) << "B's clock did not run ahead";
  records = c_->conflicts("k");
  ASSERT_EQ(records.size(), 2u);
  for (const auto& rec : records) {
    if (rec.winner().replica() == 2u) {
      EXPECT_EQ(rec.reason(), v1::ConflictRecord::CONCURRENT) << rec.ShortDebugString();
      EXPECT_EQ(path_of(rec), std::vector<std::string>{"y"});
    } else {
      EXPECT_EQ(rec.winner().replica(), 1u);
    }
  }
}

}  // namespace
}  // namespace canopy

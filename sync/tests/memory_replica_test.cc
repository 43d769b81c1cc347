// MemoryReplica: the real ChildSync on an in-memory replica ends up holding
// exactly what the same engine holds on a Store (the same states, the same
// reconciliation hashes), through changes, deletes, scope drops, a restart
// and a reconciliation; and it refuses bad input whole, as the Store does.
#include "sync/memory_replica.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <set>

#include "store/store.h"
#include "sync/engine/node.h"
#include "sync/memory_transport.h"
#include "sync/tests/test_parts.h"
#include "tests/support/temp_dir.h"

namespace canopy::sync {
namespace {

class MemoryReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    scope_.prefixes = {"d/", "e/"};
    hub_store_ = open("hub", 1);
    heavy_store_ = open("heavy", 2);
    hub_bus_ = net_.endpoint("hub");
    heavy_bus_ = net_.endpoint("heavy");
    light_bus_ = net_.endpoint("light");
    hub_ = std::make_unique<SyncNode>(hub_store_.get(), hub_bus_.get());
    hub_->set_parent_engine(
        std::make_unique<ParentSync>("hub", hub_store_.get(), &scope_, env(), ParentOptions{}));
    heavy_ = std::make_unique<SyncNode>(heavy_store_.get(), heavy_bus_.get());
    heavy_->set_child_engine(
        std::make_unique<ChildSync>("heavy", "hub", heavy_store_.get(), env(), ChildOptions{}));
    ASSERT_TRUE(hub_->attach().ok());
    ASSERT_TRUE(heavy_->attach().ok());
    start_light();
  }

  void start_light() {
    light_.reset();
    light_ = std::make_unique<SyncNode>(static_cast<Persistence*>(&replica_), light_bus_.get());
    light_->set_child_engine(std::make_unique<ChildSync>(
        "light", "hub", static_cast<StoreView*>(&replica_), env(), ChildOptions{}));
    ASSERT_TRUE(light_->attach().ok());
  }

  Env env() {
    return Env{&clock_, [this] { return rng_(); }};
  }

  std::unique_ptr<Store> open(const std::string& name, uint64_t id) {
    return open_test_store(dir_, name, id, &clock_, [this] { return rng_(); });
  }

  void settle() {
    for (int i = 0; i < 200; ++i) {
      net_.deliver_all(100000);
      hub_->run_once(true);
      heavy_->run_once(true);
      if (light_) light_->run_once(true);
      clock_.advance_ms(50);
    }
  }

  // The light replica holds what the heavy one does, state for state.
  void expect_same_holdings() {
    auto heavy = heavy_store_->states(kKeyMin, kKeyMax, nullptr, SIZE_MAX);
    auto light = replica_.states(kKeyMin, kKeyMax, nullptr, SIZE_MAX);
    ASSERT_TRUE(heavy.ok() && light.ok());
    ASSERT_EQ(heavy->size(), light->size());
    for (size_t i = 0; i < heavy->size(); ++i) {
      EXPECT_EQ((*heavy)[i].key(), (*light)[i].key());
      EXPECT_EQ((*heavy)[i].SerializeAsString(), (*light)[i].SerializeAsString())
          << (*heavy)[i].key();
    }
    auto hh = heavy_store_->doc_hashes(kKeyMin, kKeyMax, nullptr);
    auto lh = replica_.doc_hashes(kKeyMin, kKeyMax, nullptr);
    ASSERT_TRUE(hh.ok() && lh.ok());
    EXPECT_EQ(*hh, *lh);
  }

  testing::TempDir dir_;
  ManualClock clock_;
  std::mt19937_64 rng_{7};
  MemoryNetwork net_{11};
  PrefixScope scope_{{"heavy", "light"}};
  MemoryReplica replica_{0x11e47, 0xe90c};
  std::unique_ptr<Store> hub_store_, heavy_store_;
  std::unique_ptr<MemoryTransport> hub_bus_, heavy_bus_, light_bus_;
  std::unique_ptr<SyncNode> hub_, heavy_, light_;
};

TEST_F(MemoryReplicaTest, HoldsWhatAStoreReplicaHolds) {
  std::vector<std::string> seen;
  replica_.set_observer(
      [&](const std::string& key, const Document&, const v1::Delta*) { seen.push_back(key); });
  ASSERT_TRUE(hub_store_->put("d/a", R"({"x":1,"y":{"z":2}})").ok());
  ASSERT_TRUE(hub_store_->put("d/b", R"({"v":"b"})").ok());
  ASSERT_TRUE(hub_store_->put("e/c", R"({"v":"c"})").ok());
  ASSERT_TRUE(hub_store_->put("x/out", R"({"v":0})").ok());
  settle();
  ASSERT_TRUE(light_->child()->in_sync());
  EXPECT_EQ(replica_.document_count(), 3u);
  expect_same_holdings();
  EXPECT_FALSE(seen.empty());

  ASSERT_TRUE(hub_store_->patch("d/a", R"({"y":{"z":null},"w":[1,2]})").ok());
  ASSERT_TRUE(hub_store_->remove("d/b").ok());
  settle();
  expect_same_holdings();
  auto b = replica_.state("d/b");
  ASSERT_TRUE(b.ok() && b->has_value());  // the tombstone is held, as by a Store

  // A scope change drops the keys under e/ at both children.
  scope_.prefixes.erase("e/");
  scope_.version_ = 2;
  for (const char* child : {"heavy", "light"}) {
    ScopeChange change;
    change.child = child;
    change.left = {"e/c"};
    change.version = 2;
    hub_->enqueue_scope_change(change);
  }
  settle();
  auto c = replica_.state("e/c");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());
  expect_same_holdings();
}

TEST_F(MemoryReplicaTest, ARestartedEngineResumesFromThePositionItPersisted) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  auto pos = replica_.get_local(ChildSync::down_position_key("hub"));
  ASSERT_TRUE(pos.ok() && pos->has_value());
  // The engine goes away (the replica stays); the hub moves on meanwhile.
  light_.reset();
  ASSERT_TRUE(hub_store_->put("d/b", R"({"v":2})").ok());
  const uint64_t reconciliations = hub_->parent()->stats().reconciliations;
  start_light();
  settle();
  ASSERT_TRUE(light_->child()->in_sync());
  EXPECT_EQ(hub_->parent()->stats().reconciliations, reconciliations);  // caught up
  expect_same_holdings();
}

TEST_F(MemoryReplicaTest, ADocumentTheHubDoesNotHoldGoesAtReconciliation) {
  light_.reset();
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  // A document of a former scope, without a position: the session reconciles.
  v1::DocState ghost;
  {
    auto s = open("other", 9);
    ASSERT_TRUE(s->put("d/ghost", R"({"v":"boo"})").ok());
    auto st = s->state("d/ghost");
    ASSERT_TRUE(st.ok() && st->has_value());
    ghost = **st;
  }
  ASSERT_TRUE(replica_.install({ghost}).ok());
  start_light();
  settle();
  ASSERT_TRUE(light_->child()->in_sync());
  auto g = replica_.state("d/ghost");
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->has_value());
  expect_same_holdings();
}

TEST_F(MemoryReplicaTest, RefusesABadWriteWhole) {
  auto other = open("writer", 3);
  auto written = other->put("d/a", R"({"v":1})");
  ASSERT_TRUE(written.ok());
  const v1::Delta good = *written;
  v1::Delta bad = good;
  bad.set_key("d/b");
  bad.mutable_ops(0)->set_value("{not json");
  EXPECT_FALSE(replica_.persist({Write::apply_deltas({&good, &bad}, nullptr, 3)}).ok());
  EXPECT_EQ(replica_.document_count(), 0u);
  v1::DocState broken;
  broken.set_key("d/c");
  broken.mutable_root()->add_children()->set_name("\xff");  // not UTF-8
  EXPECT_FALSE(replica_.persist({Write::apply_states({broken}, 3)}).ok());
  EXPECT_EQ(replica_.document_count(), 0u);
  ASSERT_TRUE(replica_.persist({Write::apply_deltas({&good}, nullptr, 3)}).ok());
  EXPECT_EQ(replica_.document_count(), 1u);
}

}  // namespace
}  // namespace canopy::sync

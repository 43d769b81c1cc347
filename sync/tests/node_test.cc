// SyncNode's edge: persist before send (a failed write sends no ack for it),
// and each of its bounded queues driven to its bound.
#include "sync/engine/node.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <set>

#include "canopy/v1/sync.pb.h"
#include "store/store.h"
#include "sync/memory_transport.h"
#include "sync/subjects.h"
#include "sync/tests/test_parts.h"
#include "tests/support/temp_dir.h"

namespace canopy::sync {
namespace {

class NodeTest : public ::testing::Test {
 protected:
  void start(NodeLimits hub_limits, NodeLimits site_limits) {
    hub_store_ = open("hub", 1);
    site_store_ = open("site", 2);
    hub_bus_ = net_.endpoint("hub");
    site_bus_ = net_.endpoint("site");
    Env env{&clock_, [this] { return rng_(); }};
    hub_ = std::make_unique<SyncNode>(hub_store_.get(), hub_bus_.get(), hub_limits);
    hub_->set_parent_engine(
        std::make_unique<ParentSync>("hub", hub_store_.get(), &scope_, env, ParentOptions{}));
    site_ = std::make_unique<SyncNode>(site_store_.get(), site_bus_.get(), site_limits);
    site_->set_child_engine(
        std::make_unique<ChildSync>("site", "hub", site_store_.get(), env, ChildOptions{}));
    ASSERT_TRUE(hub_->attach().ok());
    ASSERT_TRUE(site_->attach().ok());
  }

  std::unique_ptr<Store> open(const std::string& name, uint64_t id) {
    return open_test_store(dir_, name, id, &clock_, [this] { return rng_(); });
  }

  void settle() {
    for (int i = 0; i < 200; ++i) {
      net_.deliver_all(100000);
      hub_->run_once(true);
      site_->run_once(true);
      clock_.advance_ms(50);
    }
  }

  testing::TempDir dir_;
  ManualClock clock_;
  std::mt19937_64 rng_{42};
  MemoryNetwork net_{7};
  PrefixScope scope_;
  std::unique_ptr<Store> hub_store_, site_store_;
  std::unique_ptr<MemoryTransport> hub_bus_, site_bus_;
  std::unique_ptr<SyncNode> hub_, site_;
};

v1::SyncEnvelope parse(const Message& m) {
  v1::SyncEnvelope env;
  EXPECT_TRUE(env.ParseFromString(m.data));
  return env;
}

// The counters /metrics reports: messages and bytes each way, the peers'
// deltas persisted, the deltas the engines sent. Without faults, what one
// node publishes the other receives.
TEST_F(NodeTest, CountsTrafficAndDeltasEachWay) {
  start({}, {});
  settle();
  const NodeStats hub0 = hub_->stats(), site0 = site_->stats();
  const uint64_t down0 = hub_->parent()->stats().deltas_sent;
  const uint64_t up0 = site_->child()->stats().deltas_sent;
  for (const char* k : {"d/a", "d/b", "d/c"}) ASSERT_TRUE(hub_store_->put(k, R"({"v":1})").ok());
  ASSERT_TRUE(hub_store_->put("x/out-of-scope", R"({"v":1})").ok());
  ASSERT_TRUE(site_store_->put("s/site/status", R"({"ok":true})").ok());
  settle();
  ASSERT_TRUE(site_->child()->in_sync());
  const NodeStats hub1 = hub_->stats(), site1 = site_->stats();
  EXPECT_EQ(hub_->parent()->stats().deltas_sent - down0, 3u);
  EXPECT_EQ(site1.deltas_persisted - site0.deltas_persisted, 3u);
  EXPECT_EQ(site_->child()->stats().deltas_sent - up0, 1u);
  EXPECT_EQ(hub1.deltas_persisted - hub0.deltas_persisted, 1u);
  EXPECT_GT(hub1.messages_published, hub0.messages_published);
  EXPECT_GT(site1.messages_published, site0.messages_published);
  EXPECT_EQ(hub1.messages_published, site1.messages_received);
  EXPECT_EQ(site1.messages_published, hub1.messages_received);
  EXPECT_EQ(hub1.bytes_published, site1.bytes_received);
  EXPECT_EQ(site1.bytes_published, hub1.bytes_received);
  EXPECT_EQ(hub1.dropped_messages + site1.dropped_messages, 0u);
}

// Changes from the parent whose delta the store refuses (an empty key), with
// a position: the write fails, so no ack goes out, the position is not
// saved, and the child starts a new session from what its disk holds.
// A child whose store keeps refusing writes (a full disk) starts a new
// session after each failure: the second failure in a row, and each after,
// waits twice as long before the hello, so that the parent is not made to
// send the same changes again at once for as long as the disk stays full.
TEST_F(NodeTest, PersistFailuresInARowDelayTheNextHello) {
  start({}, {});
  Env env{&clock_, [this] { return rng_(); }};
  ChildSync child("site", "hub", site_store_.get(), env, ChildOptions{});
  uint64_t session = 0;  // of the last hello
  auto hellos = [&] {
    child.tick();
    child.flush();
    size_t n = 0;
    for (const Message& m : child.take_ready().messages) {
      const v1::SyncEnvelope e = parse(m);
      if (!e.has_hello()) continue;
      ++n;
      session = e.session();
    }
    return n;
  };
  child.start();
  ASSERT_EQ(hellos(), 1u);
  const Status full = unavailable("No space left on device");
  child.advance(full);
  EXPECT_EQ(hellos(), 1u) << "one failure: a new session at once";
  child.advance(full);
  EXPECT_EQ(hellos(), 0u);
  clock_.advance_ms(199);
  EXPECT_EQ(hellos(), 0u);
  clock_.advance_ms(1);
  EXPECT_EQ(hellos(), 1u) << "the second in a row: 200 ms";
  // A step that had nothing to persist (the node persists no writes and says
  // so) proves nothing about the disk: the next failure still waits longer.
  child.advance(ok_status());
  child.advance(full);
  clock_.advance_ms(399);
  EXPECT_EQ(hellos(), 0u);
  clock_.advance_ms(1);
  EXPECT_EQ(hellos(), 1u) << "the third: 400 ms";
  for (int i = 0; i < 20; ++i) child.advance(full);
  clock_.advance_ms(29'999);
  EXPECT_EQ(hellos(), 0u);
  clock_.advance_ms(1);
  EXPECT_EQ(hellos(), 1u) << "at most the hellos' longest backoff, 30 s";

  // Writes that persist end the run of failures.
  v1::SyncEnvelope welcome;
  welcome.set_protocol(kProtocolVersion);
  welcome.set_from("hub");
  welcome.set_to("site");
  welcome.set_session(session);
  welcome.mutable_welcome()->set_replica_id(1);
  child.on_message(Message{down_subject("hub", "site"), welcome.SerializeAsString()});
  child.flush();
  Ready opened = child.take_ready();
  ASSERT_FALSE(opened.writes.empty());
  ASSERT_TRUE(persist(site_store_.get(), opened.writes).ok());
  child.advance(ok_status());
  child.advance(full);
  EXPECT_EQ(hellos(), 1u) << "something persisted since: at once again";
}

TEST_F(NodeTest, AFailedWriteSendsNoAckAndKeepsThePositionOnDisk) {
  start({}, {});
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  ASSERT_TRUE(site_->child()->in_sync());
  const v1::LogPosition saved = site_->child()->down_position();
  ASSERT_NE(saved.epoch(), 0u);

  Env env{&clock_, [this] { return rng_(); }};
  ChildSync child("site", "hub", site_store_.get(), env, ChildOptions{});
  child.start();
  child.tick();
  child.flush();
  Ready hello = child.take_ready();
  ASSERT_EQ(hello.messages.size(), 1u);
  const uint64_t session = parse(hello.messages[0]).session();
  auto down = [&](uint64_t seq, v1::SyncEnvelope e) {
    e.set_protocol(kProtocolVersion);
    e.set_from("hub");
    e.set_to("site");
    e.set_session(session);
    e.set_seq(seq);
    return Message{down_subject("hub", "site"), e.SerializeAsString()};
  };
  v1::SyncEnvelope welcome;
  welcome.mutable_welcome()->set_replica_id(1);
  child.on_message(down(0, welcome));
  child.flush();
  Ready opened = child.take_ready();
  ASSERT_TRUE(persist(site_store_.get(), opened.writes).ok());
  child.advance(ok_status());
  ASSERT_TRUE(child.active());

  v1::SyncEnvelope bad;
  v1::Delta* d = bad.mutable_changes()->add_entries()->mutable_delta();
  d->set_key("");  // refused by the store
  d->mutable_dot()->set_replica(1);
  d->mutable_dot()->set_seq(99);
  d->set_hlc(1);
  v1::LogPosition* p = bad.mutable_changes()->mutable_position();
  *p = saved;
  p->set_index(saved.index() + 100);
  child.on_message(down(1, bad));
  Ready ready = child.take_ready();
  ASSERT_FALSE(ready.writes.empty());
  const Status st = persist(site_store_.get(), ready.writes);
  ASSERT_FALSE(st.ok());
  child.advance(st);
  child.flush();
  Ready after = child.take_ready();
  for (const Message& m : after.messages) {
    EXPECT_FALSE(parse(m).has_ack()) << "acked a message whose write failed";
  }
  EXPECT_FALSE(child.active());  // a new session, from the disk
  EXPECT_EQ(child.down_position().index(), saved.index());
  v1::LogPosition on_disk;
  ASSERT_TRUE(on_disk.ParseFromString(**site_store_->get_local("sync/down/hub")));
  EXPECT_EQ(on_disk.index(), saved.index());
}

// The parent refuses a child's batch the store cannot take: the ack it sends
// stays below that message, so the child resends it.
TEST_F(NodeTest, AParentAcksOnlyWhatItPersisted) {
  start({}, {});
  settle();
  Env env{&clock_, [this] { return rng_(); }};
  ParentSync parent("hub", hub_store_.get(), &scope_, env, ParentOptions{});
  auto up = [](uint64_t seq, v1::SyncEnvelope e) {
    e.set_protocol(kProtocolVersion);
    e.set_from("site");
    e.set_to("hub");
    e.set_session(77);
    e.set_seq(seq);
    return Message{up_subject("hub", "site"), e.SerializeAsString()};
  };
  v1::SyncEnvelope hello;
  hello.mutable_hello()->set_replica_id(2);
  parent.on_message(up(0, hello));
  parent.flush();
  ASSERT_TRUE(parent.take_ready().writes.empty());
  parent.advance(ok_status());

  v1::SyncEnvelope bad;
  v1::Delta* d = bad.mutable_changes()->add_entries()->mutable_delta();
  d->set_key("s/site/x");
  d->mutable_dot()->set_replica(2);
  d->mutable_dot()->set_seq(0);  // no dot: refused by the store
  parent.on_message(up(1, bad));
  Ready ready = parent.take_ready();
  ASSERT_FALSE(ready.writes.empty());
  const Status st = persist(hub_store_.get(), ready.writes);
  ASSERT_FALSE(st.ok());
  parent.advance(st);
  parent.flush();
  for (const Message& m : parent.take_ready().messages) {
    v1::SyncEnvelope e = parse(m);
    EXPECT_EQ(e.acked(), 0u);
    if (e.has_ack()) {
      EXPECT_EQ(e.ack().seq(), 0u);
    }
  }
  EXPECT_EQ(parent.stats().refused_messages, 1u);
  EXPECT_FALSE(hub_store_->get_local("sync/upseq/site")->has_value());
}

TEST_F(NodeTest, AFullInboxDropsTheOldestMessages) {
  NodeLimits limits;
  limits.max_inbox = 4;
  start(limits, {});
  settle();
  const uint64_t refused = hub_->parent()->stats().refused_messages;
  for (int i = 0; i < 10; ++i) {
    hub_->enqueue_message(Message{up_subject("hub", "site"), "garbage " + std::to_string(i)});
  }
  EXPECT_EQ(hub_->stats().dropped_messages, 6u);
  hub_->run_once(false);
  EXPECT_EQ(hub_->parent()->stats().refused_messages, refused + 4);
  // The session lives on.
  ASSERT_TRUE(hub_store_->put("d/after", R"({"v":2})").ok());
  settle();
  EXPECT_EQ(*site_store_->get("d/after"), R"({"v":2})");
}

TEST_F(NodeTest, AFullCommitQueueFallsBackToTheLog) {
  NodeLimits limits;
  limits.max_commits = 3;
  start(limits, limits);
  settle();
  ASSERT_TRUE(site_->child()->in_sync());
  const uint64_t catchups = hub_->parent()->stats().catchups;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(hub_store_->put("d/k" + std::to_string(i), R"({"v":1})").ok());
    ASSERT_TRUE(site_store_->put("s/site/k" + std::to_string(i), R"({"v":1})").ok());
  }
  EXPECT_EQ(hub_->stats().lost_commits, 7u);
  EXPECT_EQ(site_->stats().lost_commits, 7u);
  settle();
  // (The site's writes, applied at the hub in one batch, overflow it again.)
  EXPECT_GE(hub_->parent()->stats().catchups, catchups + 1);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(*site_store_->get("d/k" + std::to_string(i)), R"({"v":1})") << i;
    EXPECT_EQ(*hub_store_->get("s/site/k" + std::to_string(i)), R"({"v":1})") << i;
  }
  EXPECT_TRUE(site_->child()->in_sync());
}

TEST_F(NodeTest, AFullScopeChangeQueueReconcilesTheChild) {
  NodeLimits limits;
  limits.max_scope_changes = 1;
  start(limits, {});
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  ASSERT_TRUE(hub_store_->put("e/b", R"({"v":2})").ok());
  ASSERT_TRUE(hub_store_->put("f/c", R"({"v":3})").ok());
  settle();
  ASSERT_FALSE(site_store_->get("e/b").ok());
  const uint64_t reconciliations = hub_->parent()->stats().reconciliations;
  // Two changes queued: e/ enters, then d/ leaves and f/ enters. The second
  // one does not fit.
  scope_.prefixes = {"d/", "e/"};
  scope_.version_ = 2;
  hub_->enqueue_scope_change(ScopeChange{"site", {"e/b"}, {}, 2});
  scope_.prefixes = {"e/", "f/"};
  scope_.version_ = 3;
  hub_->enqueue_scope_change(ScopeChange{"site", {"f/c"}, {"d/a"}, 3});
  EXPECT_EQ(hub_->stats().lost_scope_changes, 1u);
  settle();
  EXPECT_EQ(hub_->parent()->stats().reconciliations, reconciliations + 1);
  EXPECT_EQ(*site_store_->get("e/b"), R"({"v":2})");
  EXPECT_EQ(*site_store_->get("f/c"), R"({"v":3})");
  EXPECT_FALSE(site_store_->get("d/a").ok()) << "a key that left the scope is still held";
  EXPECT_EQ(site_->child()->down_position().scope_version(), 3u);
}

// Many changes of one child queued together, the last reconciling its whole
// scope (a commit that moved many sites into one region): one reconciliation
// serves them all, and the child ends holding exactly its scope.
TEST_F(NodeTest, ALaterReconciliationSupersedesAChildsEarlierChanges) {
  start({}, {});
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  ASSERT_TRUE(hub_store_->put("e/b", R"({"v":2})").ok());
  ASSERT_TRUE(hub_store_->put("f/c", R"({"v":3})").ok());
  settle();
  const uint64_t reconciliations = hub_->parent()->stats().reconciliations;
  scope_.prefixes = {"d/", "e/"};
  scope_.version_ = 2;
  hub_->enqueue_scope_change(ScopeChange{"site", {"e/b"}, {}, 2});
  scope_.prefixes = {"e/", "f/"};
  for (uint64_t v = 3; v < 53; ++v) {
    scope_.version_ = v;
    hub_->enqueue_scope_change(ScopeChange{"site", {}, {}, v, /*reconcile=*/true});
  }
  // Another child's change in between is kept, in its place.
  hub_->enqueue_scope_change(ScopeChange{"elsewhere", {"f/c"}, {}, 9});
  settle();
  EXPECT_EQ(hub_->stats().coalesced_scope_changes, 50u);
  EXPECT_EQ(hub_->parent()->stats().reconciliations, reconciliations + 1);
  EXPECT_EQ(*site_store_->get("e/b"), R"({"v":2})");
  EXPECT_EQ(*site_store_->get("f/c"), R"({"v":3})");
  EXPECT_FALSE(site_store_->get("d/a").ok()) << "a key that left the scope is still held";
  EXPECT_EQ(site_->child()->down_position().scope_version(), 52u);
  EXPECT_TRUE(site_->child()->in_sync());
}

TEST(CoalesceScopeChanges, KeepsTheLastReconciliationAndWhatFollowsIt) {
  std::deque<ScopeChange> q;
  q.push_back(ScopeChange{"a", {"k1"}, {}, 1});
  q.push_back(ScopeChange{"b", {"k2"}, {}, 2});
  q.push_back(ScopeChange{"a", {}, {}, 3, true});
  q.push_back(ScopeChange{"b", {}, {"k2"}, 4});
  q.push_back(ScopeChange{"a", {}, {}, 5, true});
  q.push_back(ScopeChange{"a", {"k3"}, {}, 6});
  EXPECT_EQ(coalesce_scope_changes(&q), 2u);
  std::vector<uint64_t> versions;
  for (const auto& c : q) versions.push_back(c.version);
  EXPECT_EQ(versions, (std::vector<uint64_t>{2, 4, 5, 6}));
  std::deque<ScopeChange> none{ScopeChange{"a", {"k"}, {}, 1}, ScopeChange{"a", {}, {"k"}, 2}};
  EXPECT_EQ(coalesce_scope_changes(&none), 0u);
  EXPECT_EQ(none.size(), 2u);
}

TEST_F(NodeTest, AFullConnectionQueueKeepsTheNewestEvents) {
  NodeLimits limits;
  limits.max_connection_events = 2;
  start({}, limits);
  settle();
  for (int i = 0; i < 6; ++i) net_.set_connected("site", i % 2 == 1);
  EXPECT_EQ(site_->stats().dropped_connection_events, 4u);
  // The last event (connected) survived: the session carries on at once.
  ASSERT_TRUE(hub_store_->put("d/after", R"({"v":2})").ok());
  settle();
  EXPECT_EQ(*site_store_->get("d/after"), R"({"v":2})");
  EXPECT_TRUE(site_->child()->in_sync());
}

}  // namespace
}  // namespace canopy::sync

// Sync engines, step by step over the in-memory bus: a parent and a child,
// each with a real Store, and the boundary checks of the protocol.
#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "canopy/v1/sync.pb.h"
#include "store/store.h"
#include "sync/engine/node.h"
#include "sync/memory_transport.h"
#include "sync/protocol.h"
#include "sync/subjects.h"
#include "sync/tests/test_parts.h"
#include "tests/support/temp_dir.h"

namespace canopy::sync {
namespace {

// Child "site" holds `d/...` and its own `s/site/...`; it may write the
// latter. `g/...` is in scope while `gate_` is open.
class TestScope final : public ScopeProvider {
 public:
  bool in_scope(std::string_view child, std::string_view key) override {
    return key.starts_with("d/") || key.starts_with("s/" + std::string(child) + "/") ||
           (gate_ && key.starts_with("g/"));
  }
  std::vector<std::string> writable_prefixes(std::string_view child) override {
    if (writable_gate_) return {"s/" + std::string(child) + "/", "g/"};
    return {"s/" + std::string(child) + "/"};
  }
  bool writable_gate_ = false;  // with gate_: the child may write g/ too
  uint64_t version(std::string_view) override { return version_; }
  uint64_t version_ = 7;
  bool gate_ = false;
  std::vector<std::string> children_for(std::string_view key) override {
    if (in_scope("site", key)) return {"site"};
    return {};
  }
};

// Ends an engine's batch of inputs, persists what it asks to (as the node
// would), and takes the messages.
template <typename Engine>
std::vector<Message> outbox(Engine& engine, Store* store) {
  engine.flush();
  Ready ready = engine.take_ready();
  const Status persisted = persist(store, ready.writes);
  EXPECT_TRUE(persisted.ok()) << persisted.to_string();
  engine.advance(persisted);
  return std::move(ready.messages);
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hub_store_ = open("hub", 1);
    site_store_ = open("site", 2);
    ASSERT_NO_FATAL_FAILURE(start_hub(hub_store_.get()));
    ASSERT_NO_FATAL_FAILURE(start_site());
  }

  // A hub named "hub" over `store`, and the site over site_store_, each on a
  // new endpoint (the old node and endpoint reset first).
  void start_hub(Store* store) {
    hub_.reset();
    hub_bus_.reset();
    hub_bus_ = net_.endpoint("hub");
    Env env{&clock_, [this] { return rng_(); }};
    hub_ = std::make_unique<SyncNode>(store, hub_bus_.get());
    hub_->set_parent_engine(
        std::make_unique<ParentSync>("hub", store, &scope_, env, ParentOptions{}));
    ASSERT_TRUE(hub_->attach().ok());
  }
  void start_site() {
    site_.reset();
    site_bus_.reset();
    site_bus_ = net_.endpoint("site");
    Env env{&clock_, [this] { return rng_(); }};
    site_ = std::make_unique<SyncNode>(site_store_.get(), site_bus_.get());
    site_->set_child_engine(
        std::make_unique<ChildSync>("site", "hub", site_store_.get(), env, ChildOptions{}));
    ASSERT_TRUE(site_->attach().ok());
  }

  std::unique_ptr<Store> open(const std::string& name, uint64_t id) {
    return open_test_store(dir_, name, id, &clock_);
  }

  void settle() {
    for (int i = 0; i < 200; ++i) {
      net_.deliver_all(100000);
      hub_->run_once(true);
      site_->run_once(true);
      clock_.advance_ms(50);
    }
  }

  // Cuts the site off, and runs both sides until past the hub's session
  // timeout (the site stays cut off).
  void cut_off_until_the_session_expires() {
    net_.set_connected("site", false);
    for (uint64_t t = 0; t <= ParentOptions{}.session_timeout_ms + 2000; t += 1000) {
      net_.deliver_all(100000);
      hub_->run_once(true);
      site_->run_once(true);
      clock_.advance_ms(1000);
    }
  }

  testing::TempDir dir_;
  ManualClock clock_;
  std::mt19937_64 rng_{42};
  MemoryNetwork net_{7};
  TestScope scope_;
  std::unique_ptr<Store> hub_store_, site_store_;
  std::unique_ptr<MemoryTransport> hub_bus_, site_bus_;
  std::unique_ptr<SyncNode> hub_, site_;
};

TEST_F(EngineTest, ScopedStateFlowsDownAndOwnWritesFlowUp) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"x":1})").ok());
  ASSERT_TRUE(hub_store_->put("other/b", R"({"secret":true})").ok());
  settle();
  EXPECT_EQ(*site_store_->get("d/a"), R"({"x":1})");
  EXPECT_EQ(site_store_->get("other/b").status().code(), StatusCode::kNotFound)
      << "a key outside the scope reached the child";
  ASSERT_TRUE(site_store_->put("s/site/status", R"({"ok":true})").ok());
  settle();
  EXPECT_EQ(*hub_store_->get("s/site/status"), R"({"ok":true})");
  EXPECT_TRUE(site_->child()->in_sync());
}

// next_tick_ms() lets a runtime that drives many engines skip idle ticks
// (the sync bench's 10,000 children): before it, tick() must change nothing
// and send nothing, in every state the child passes through — hello, active,
// resending over a lossy bus, disconnected, back. A child ticked only when
// due still converges.
TEST_F(EngineTest, AChildTickedOnlyWhenDueLosesNothing) {
  ChildSync* child = site_->child();
  net_.set_faults(MemoryFaults{.drop = 0.2});
  int idle = 0, due = 0;
  for (int step = 0; step < 800; ++step) {
    if (step == 100) {
      ASSERT_TRUE(hub_store_->put("d/a", R"({"x":1})").ok());
    }
    if (step == 150) {
      ASSERT_TRUE(site_store_->put("s/site/up", R"({"y":2})").ok());
    }
    if (step == 250) net_.set_connected("site", false);
    if (step == 260) {
      ASSERT_TRUE(site_store_->put("s/site/up", R"({"y":3})").ok());
    }
    if (step == 300) net_.set_connected("site", true);
    if (step == 500) net_.set_faults(MemoryFaults{});
    net_.deliver_all(100000);
    hub_->run_once(true);
    site_->run_once(false);  // inputs only
    if (clock_.now_ms() < site_->next_tick_ms()) {
      child->tick();
      child->flush();
      EXPECT_TRUE(child->take_ready().empty()) << "an idle tick did something at step " << step;
      ++idle;
    } else {
      site_->run_once(true);
      ++due;
    }
    clock_.advance_ms(50);
  }
  EXPECT_GT(idle, 400) << "most ticks of a quiet child are idle";
  EXPECT_GT(due, 10);
  EXPECT_EQ(*site_store_->get("d/a"), R"({"x":1})");
  EXPECT_EQ(*hub_store_->get("s/site/up"), R"({"y":3})");
  EXPECT_TRUE(child->in_sync());
}

TEST_F(EngineTest, ChildWritesOutsideItsWritableScopeAreRefused) {
  settle();
  // The child writes a desired-state key locally; it must not be merged up.
  ASSERT_TRUE(site_store_->put("d/forged", R"({"evil":1})").ok());
  ASSERT_TRUE(site_store_->put("s/other-site/x", R"({"evil":2})").ok());
  settle();
  EXPECT_EQ(hub_store_->get("d/forged").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(hub_store_->get("s/other-site/x").status().code(), StatusCode::kNotFound);
  EXPECT_GE(hub_->parent()->stats().refused_writes, 2u);
  // The session goes on: legitimate writes still flow.
  ASSERT_TRUE(site_store_->put("s/site/y", R"({"fine":1})").ok());
  settle();
  EXPECT_EQ(*hub_store_->get("s/site/y"), R"({"fine":1})");
}

TEST_F(EngineTest, GarbageAndMisaddressedMessagesAreRefused) {
  settle();
  const uint64_t before = hub_->parent()->stats().refused_messages;
  auto rogue = net_.endpoint("rogue");
  ASSERT_TRUE(rogue->publish(up_subject("hub", "site"), "\x01\x02garbage").ok());
  v1::SyncEnvelope env;
  env.set_protocol(kProtocolVersion);
  env.set_from("other");  // claims another site on this site's subject
  env.set_to("hub");
  env.mutable_hello()->set_replica_id(9);
  ASSERT_TRUE(rogue->publish(up_subject("hub", "site"), env.SerializeAsString()).ok());
  std::string truncated = env.SerializeAsString();
  truncated.resize(truncated.size() / 2);
  ASSERT_TRUE(rogue->publish(up_subject("hub", "site"), truncated).ok());
  env.set_from("site");
  env.set_protocol(99);
  ASSERT_TRUE(rogue->publish(up_subject("hub", "site"), env.SerializeAsString()).ok());
  const uint64_t child_before = site_->child()->stats().refused_messages;
  ASSERT_TRUE(rogue->publish(down_subject("hub", "site"), "not a protobuf \xff\xff").ok());
  settle();
  EXPECT_GE(hub_->parent()->stats().refused_messages, before + 3);
  EXPECT_GE(site_->child()->stats().refused_messages, child_before + 1);
  // Nothing was lost and the session still works.
  ASSERT_TRUE(hub_store_->put("d/after", R"({"v":2})").ok());
  settle();
  EXPECT_EQ(*site_store_->get("d/after"), R"({"v":2})");
}

TEST_F(EngineTest, ChildRestartResumesFromItsPosition) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  const auto pos = site_->child()->down_position();
  EXPECT_NE(pos.index(), 0u);
  // Crash the child, change state, reopen it: it catches up from its log
  // position (no reconciliation needed).
  site_.reset();
  site_bus_.reset();
  site_store_.reset();
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":2})").ok());
  site_store_ = open("site", 2);
  site_bus_ = net_.endpoint("site");
  Env env{&clock_, [this] { return rng_(); }};
  site_ = std::make_unique<SyncNode>(site_store_.get(), site_bus_.get());
  site_->set_child_engine(
      std::make_unique<ChildSync>("site", "hub", site_store_.get(), env, ChildOptions{}));
  ASSERT_TRUE(site_->attach().ok());
  const uint64_t reconciliations = hub_->parent()->stats().reconciliations;
  settle();
  EXPECT_EQ(*site_store_->get("d/a"), R"({"v":2})");
  EXPECT_EQ(hub_->parent()->stats().reconciliations, reconciliations);
}

// Everything on the session's subjects, decoded, as a third endpoint sees it.
struct Tap {
  Tap(MemoryNetwork* net, std::string_view subject)
      : bus(net->endpoint("tap-" + std::string(subject))) {
    EXPECT_TRUE(bus->subscribe(subject,
                               [this](const Message& m) {
                                 v1::SyncEnvelope env;
                                 EXPECT_TRUE(env.ParseFromString(m.data));
                                 seen.push_back(env);
                               })
                    .ok());
  }
  std::unique_ptr<MemoryTransport> bus;
  std::vector<v1::SyncEnvelope> seen;
};

TEST_F(EngineTest, LivePositionsGoInShortFormAndAcksNameOnlyTheSeq) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  Tap down(&net_, down_subject("hub", "site"));
  Tap up(&net_, up_subject("hub", "site"));
  ASSERT_TRUE(hub_store_->put("d/b", R"({"v":2})").ok());
  settle();
  const uint64_t last = hub_store_->last_log_index();
  const v1::SyncEnvelope* change = nullptr;
  for (const auto& env : down.seen) {
    if (env.has_changes() && env.changes().entries_size() > 0) change = &env;
  }
  ASSERT_NE(change, nullptr);
  EXPECT_EQ(change->changes().entries(0).delta().key(), "d/b");
  EXPECT_FALSE(change->changes().has_position());
  EXPECT_EQ(change->changes().index(), last);
  // The child completed it from the position it held.
  const v1::LogPosition pos = site_->child()->down_position();
  EXPECT_EQ(pos.epoch(), hub_store_->log_epoch());
  EXPECT_EQ(pos.index(), last);
  EXPECT_EQ(pos.scope_version(), 7u);
  auto saved = site_store_->get_local("sync/down/hub");
  ASSERT_TRUE(saved.ok() && saved->has_value());
  EXPECT_EQ(**saved, pos.SerializeAsString());
  // Acks carry the seq alone; the parent knows which position it acked.
  bool acked = false;
  for (const auto& env : up.seen) {
    if (!env.has_ack()) continue;
    acked = true;
    EXPECT_LE(env.ack().ByteSizeLong(), 6u) << "an ack with more than a seq";
  }
  EXPECT_TRUE(acked);
  ASSERT_EQ(hub_->parent()->children().size(), 1u);
  EXPECT_EQ(hub_->parent()->children()[0].acked_index, last);
}

// The parent encodes a committed change once and embeds its bytes in every
// child's envelope: what goes out must still be exactly the envelope's own
// encoding (parse and re-encode give the same bytes), for live changes one
// at a time and batched, with the position in short and in long form.
TEST_F(EngineTest, ChangesEncodedOnceAreTheEnvelopesOwnEncoding) {
  std::vector<Message> sent;
  auto tap = net_.endpoint("tap-bytes");
  ASSERT_TRUE(
      tap->subscribe(down_subject("hub", "site"), [&](const Message& m) { sent.push_back(m); })
          .ok());
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());  // the first position: long form
  settle();
  ASSERT_TRUE(hub_store_->put("d/b", R"({"v":2})").ok());  // live: short form
  settle();
  // Several commits before the parent runs: one message, several entries.
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(
        hub_store_->put("d/c" + std::to_string(i), R"({"w":)" + std::to_string(i) + "}").ok());
  }
  ASSERT_TRUE(hub_store_->put("other/x", R"({"no":1})").ok());  // out of scope
  settle();
  size_t with_entries = 0, batched = 0, long_form = 0, short_form = 0;
  for (const Message& m : sent) {
    v1::SyncEnvelope env;
    ASSERT_TRUE(env.ParseFromString(m.data));
    EXPECT_EQ(env.SerializeAsString(), m.data) << env.ShortDebugString();
    if (!env.has_changes()) continue;
    if (env.changes().has_position()) ++long_form;
    if (env.changes().entries_size() == 0) continue;
    ++with_entries;
    if (env.changes().entries_size() > 1) ++batched;
    if (env.changes().index() != 0) ++short_form;
    for (const auto& e : env.changes().entries()) {
      const std::string& key = e.has_delta() ? e.delta().key() : e.doc().key();
      EXPECT_TRUE(key.starts_with("d/")) << key;
    }
  }
  EXPECT_GE(with_entries, 3u);
  EXPECT_GE(batched, 1u);
  EXPECT_GE(long_form, 1u);
  EXPECT_GE(short_form, 1u);
  EXPECT_EQ(*site_store_->get("d/c4"), R"({"w":4})");
  EXPECT_EQ(site_->child()->down_position().index(), hub_store_->last_log_index());
}

TEST_F(EngineTest, AnAwayChildIsSentNothingAndResumesItsSessionWithoutHello) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  const uint64_t hellos = site_->child()->stats().hellos;
  const uint64_t catchups = hub_->parent()->stats().catchups;
  net_.set_connected("site", false);
  auto run = [&](int ms) {
    for (int t = 0; t < ms; t += 100) {
      net_.deliver_all(100000);
      hub_->run_once(true);
      site_->run_once(true);
      clock_.advance_ms(100);
    }
  };
  run(ParentOptions{}.away_after_ms + 1000);
  ASSERT_EQ(hub_->parent()->children().size(), 1u);
  EXPECT_FALSE(hub_->parent()->children()[0].connected);
  // Changes committed while it is away: nothing goes its way, not even
  // retransmissions, and none are queued.
  Tap down(&net_, down_subject("hub", "site"));
  Tap up(&net_, up_subject("hub", "site"));
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":2})").ok());
  ASSERT_TRUE(hub_store_->put("d/b", R"({"v":3})").ok());
  run(60'000);
  EXPECT_TRUE(down.seen.empty()) << down.seen.size() << " messages sent to an away child";
  EXPECT_TRUE(up.seen.empty()) << "the child heartbeats into a connection known to be down";
  EXPECT_EQ(hub_->parent()->session_count(), 1u);
  // Back: its ack resumes the session; what it missed is read from the log.
  net_.set_connected("site", true);
  settle();
  EXPECT_EQ(*site_store_->get("d/a"), R"({"v":2})");
  EXPECT_EQ(*site_store_->get("d/b"), R"({"v":3})");
  EXPECT_EQ(site_->child()->stats().hellos, hellos);
  EXPECT_EQ(hub_->parent()->stats().catchups, catchups + 1);
  EXPECT_TRUE(hub_->parent()->children()[0].connected);
  EXPECT_TRUE(site_->child()->in_sync());
}

TEST_F(EngineTest, AForgottenSessionStartsOverWithHello) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  const uint64_t hellos = site_->child()->stats().hellos;
  cut_off_until_the_session_expires();
  EXPECT_EQ(hub_->parent()->session_count(), 0u);
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":2})").ok());
  net_.set_connected("site", true);
  settle();
  EXPECT_EQ(*site_store_->get("d/a"), R"({"v":2})");
  EXPECT_EQ(site_->child()->stats().hellos, hellos + 1);
  EXPECT_EQ(site_->child()->stats().resets, 0u) << "it knew to say hello at once";
}

// A reconciliation may send the child anything its scope now holds, outside
// the order of the position it saved: the child forgets that position as the
// reconciliation starts, and holds a new one only when it ends. (A session
// broken off mid-way must not resume from the old position: the scope may
// change back to the version it names; simulation seed 1723.)
TEST_F(EngineTest, AReconciliationMakesTheChildForgetItsPositionUntilItEnds) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  ASSERT_NE(site_->child()->down_position().epoch(), 0u);
  cut_off_until_the_session_expires();
  ASSERT_EQ(hub_->parent()->session_count(), 0u);
  scope_.version_ = 8;  // the child's position names version 7: it reconciles
  const uint64_t reconciliations = hub_->parent()->stats().reconciliations;
  Tap tap(&net_, down_subject("hub", "site"));
  net_.set_connected("site", true);
  bool welcomed = false;
  for (int i = 0; i < 400 && !welcomed; ++i) {
    net_.deliver_all(100000);
    hub_->run_once(true);
    site_->run_once(true);
    clock_.advance_ms(50);
    for (const auto& env : tap.seen) welcomed = welcomed || env.has_welcome();
  }
  ASSERT_TRUE(welcomed);
  // The welcome (reconcile) has been handled; the reconciliation has not ended.
  const bool forgot = site_->child()->down_position().epoch() == 0;
  EXPECT_TRUE(forgot) << "the child kept its position through the reconciliation's start";
  settle();
  EXPECT_GT(hub_->parent()->stats().reconciliations, reconciliations);
  EXPECT_EQ(site_->child()->down_position().scope_version(), 8u);
}

// A key enters the child's scope, and its commit reaches the engine before
// the scope change does (as at a hub: the placement index has evaluated the
// commit by the time the engine routes it). The entry goes out in the live
// stream before the change is sent: its position must not name the old scope
// version, or a child that receives it and loses the rest of the session
// holds the key under that version; when the scope changes back to it, the
// child resumes from that position and keeps the key forever (simulation
// seeds 493 and 763 with the real placement index).
TEST_F(EngineTest, AKeySentBeforeItsScopeChangeIsNotUnderTheOldVersion) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  ASSERT_EQ(site_->child()->down_position().scope_version(), 7u);
  // The key enters: committed first, its scope change queued after it.
  scope_.gate_ = true;
  scope_.version_ = 8;
  ASSERT_TRUE(hub_store_->put("g/x", R"({"v":1})").ok());
  hub_->enqueue_scope_change(ScopeChange{"site", {"g/x"}, {}, 8});
  hub_->run_once(false);
  // Only the first message reaches the child; the session then breaks off.
  ASSERT_TRUE(net_.deliver_one());
  site_->run_once(false);
  ASSERT_TRUE(site_store_->get("g/x").ok()) << "the first message carried the key";
  EXPECT_NE(site_->child()->down_position().scope_version(), 7u)
      << "the child holds g/x under the version of a scope without it";
  cut_off_until_the_session_expires();
  ASSERT_EQ(hub_->parent()->session_count(), 0u);
  // The key leaves again (no session to tell): the scope is back at version 7.
  scope_.gate_ = false;
  scope_.version_ = 7;
  hub_->enqueue_scope_change(ScopeChange{"site", {}, {"g/x"}, 7});
  net_.set_connected("site", true);
  settle();
  EXPECT_EQ(site_store_->get("g/x").status().code(), StatusCode::kNotFound)
      << "the child kept a key outside its scope";
  EXPECT_TRUE(site_->child()->in_sync());
}

// A write that moves a child's scope (a placement naming templates) reaches
// the child after the documents it brings into the scope: a child that
// persisted the placement first would act on half of it, a placement without
// its templates (MetricsE2ETest saw a spoke count three failed applies so).
TEST_F(EngineTest, DocumentsThatEnterTheScopeGoOutBeforeTheWriteThatMovedIt) {
  ASSERT_TRUE(hub_store_->put("g/x", R"({"v":1})").ok());
  ASSERT_TRUE(hub_store_->put("g/y", R"({"v":1})").ok());
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  ASSERT_EQ(site_store_->get("g/x").status().code(), StatusCode::kNotFound);
  // The placement: committed once the scope has it, its change queued after.
  scope_.gate_ = true;
  scope_.version_ = 8;
  ASSERT_TRUE(hub_store_->put("g/p", R"({"v":1})").ok());
  hub_->enqueue_scope_change(ScopeChange{"site", {"g/p", "g/x", "g/y"}, {}, 8});
  hub_->run_once(false);
  // Only the first message reaches the child; the session then breaks off.
  ASSERT_TRUE(net_.deliver_one());
  site_->run_once(false);
  EXPECT_TRUE(site_store_->get("g/x").ok()) << "the first message lacked a document that entered";
  EXPECT_TRUE(site_store_->get("g/y").ok()) << "the first message lacked a document that entered";
  EXPECT_EQ(site_->child()->down_position().scope_version(), 8u);
  // The rest follows; the placement's own entry merges as a no-op.
  settle();
  EXPECT_TRUE(site_store_->get("g/p").ok());
  ASSERT_TRUE(hub_store_->put("d/b", R"({"v":2})").ok());
  settle();
  EXPECT_TRUE(site_store_->get("d/b").ok());
  EXPECT_TRUE(site_->child()->in_sync());
  EXPECT_EQ(site_->child()->down_position().scope_version(), 8u);
}

// A child's scope changed as a whole (what it may write, too) while it had no
// session: what we refused of it meanwhile is in no log entry, and its scope
// may have the same version again when it says hello. Its position from
// before the change reconciles rather than resumes (simulation seed 21394).
TEST_F(EngineTest, AWholeScopeChangeMakesAPositionFromBeforeItReconcile) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  ASSERT_TRUE(site_->child()->in_sync());
  cut_off_until_the_session_expires();
  ASSERT_EQ(hub_->parent()->session_count(), 0u);
  const uint64_t before = hub_->parent()->stats().reconciliations;
  hub_->enqueue_scope_change(ScopeChange{"site", {}, {}, 7, /*reconcile=*/true});
  hub_->run_once(false);
  net_.set_connected("site", true);
  settle();
  EXPECT_EQ(hub_->parent()->stats().reconciliations, before + 1)
      << "the child resumed from a position older than its scope's change";
  EXPECT_TRUE(site_->child()->in_sync());
  // Reconciled: its next hello resumes again.
  ASSERT_TRUE(hub_store_->put("d/b", R"({"v":1})").ok());
  settle();
  cut_off_until_the_session_expires();
  net_.set_connected("site", true);
  settle();
  EXPECT_EQ(hub_->parent()->stats().reconciliations, before + 1);
  EXPECT_TRUE(site_->child()->in_sync());
}

// A reconciliation started within a session (its scope changed as a whole)
// streams what commits meanwhile without a position. A child that kept the
// position it held would, after a break, resume from it while holding keys
// it got outside that position's order: when its scope has changed back to
// the version the position names, nothing drops them (simulation seed 3028
// with CANOPY_SIM_REGION_FAILOVER). The child forgets its position instead.
TEST_F(EngineTest, DeltasStreamedDuringAReconciliationVoidThePosition) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  ASSERT_NE(site_->child()->down_position().epoch(), 0u);
  ASSERT_EQ(site_->child()->down_position().scope_version(), 7u);
  hub_->enqueue_scope_change(ScopeChange{"site", {}, {}, 7, /*reconcile=*/true});
  hub_->run_once(false);
  ASSERT_TRUE(hub_store_->put("d/b", R"({"v":1})").ok());
  hub_->run_once(false);
  // The sketch and the live delta reach the child; the session then breaks.
  while (net_.deliver_one()) {
  }
  site_->run_once(false);
  ASSERT_TRUE(site_store_->get("d/b").ok()) << "the delta streamed during the reconciliation";
  EXPECT_EQ(site_->child()->down_position().epoch(), 0u)
      << "the child kept a position that does not cover what it holds";
}

// A record of refused writes that does not parse (a damaged disk) is
// logged and ignored: the session goes on.
TEST_F(EngineTest, AnUnreadableRefusalRecordIsIgnored) {
  settle();
  ASSERT_TRUE(hub_store_->put_local("sync/refused/site", std::string("\xff\xff\x01", 3)).ok());
  ASSERT_NO_FATAL_FAILURE(start_hub(hub_store_.get()));
  ASSERT_TRUE(site_store_->put("s/site/after", R"({"ok":true})").ok());
  settle();
  EXPECT_EQ(*hub_store_->get("s/site/after"), R"({"ok":true})");
  EXPECT_TRUE(site_->child()->in_sync());
}

// The parent lost a key the child writes (its own parent refused it), and
// reconciles; meanwhile an older write of the key reaches the parent from a
// peer and streams down. The child must not take that as the parent holding
// what it holds: its later write goes up whole, or the parent keeps the old
// value for good (simulation seed 21766, moves with active-active roots).
TEST_F(EngineTest, AnOlderCopySentDuringAReconciliationDoesNotHideOurWrite) {
  settle();
  auto first = site_store_->put_value("s/site/x", nlohmann::json{{"v", 1}});
  ASSERT_TRUE(first.ok());
  settle();
  ASSERT_TRUE(site_store_->put_value("s/site/x", nlohmann::json{{"v", 2}}).ok());
  settle();
  ASSERT_EQ(*hub_store_->get("s/site/x"), R"({"v":2})");
  ASSERT_TRUE(hub_store_->drop({"s/site/x"}).ok());
  hub_->enqueue_scope_change(ScopeChange{"site", {}, {}, 7, /*reconcile=*/true});
  hub_->run_once(false);
  const uint64_t peer = 99;
  ASSERT_TRUE(persist(hub_store_.get(), {Write::apply_deltas({&*first}, nullptr, peer)}).ok());
  hub_->run_once(false);
  settle();
  EXPECT_EQ(*hub_store_->get("s/site/x"), R"({"v":2})") << "the child's later write was lost";
  // The change streamed without a position voided the child's: the hub must
  // know, or it sends the short form, which a child holding none ignores.
  EXPECT_NE(site_->child()->down_position().epoch(), 0u)
      << "the child holds no position after the reconciliation";
  EXPECT_TRUE(site_->child()->in_sync());
}

// The child learns from the welcome how long the parent keeps a session: cut
// off longer than that, it says hello at once instead of earning a reset.
TEST(EngineTimeoutTest, TheWelcomeAnnouncesTheSessionTimeout) {
  testing::TempDir dir;
  ManualClock clock;
  std::mt19937_64 rng{7};
  MemoryNetwork net{3};
  TestScope scope;
  auto open = [&](const std::string& name, uint64_t id) {
    StoreOptions o;
    o.path = dir.file(name);
    o.durability = Durability::kNone;
    o.clock = &clock;
    o.replica_id = id;
    return std::move(Store::open(o)).value();
  };
  auto hub_store = open("hub", 1), site_store = open("site", 2);
  auto hub_bus = net.endpoint("hub"), site_bus = net.endpoint("site");
  Env env{&clock, [&rng] { return rng(); }};
  ParentOptions po;
  po.session_timeout_ms = 20'000;  // the child's own default is 10 min
  SyncNode hub(hub_store.get(), hub_bus.get());
  hub.set_parent_engine(std::make_unique<ParentSync>("hub", hub_store.get(), &scope, env, po));
  SyncNode site(site_store.get(), site_bus.get());
  site.set_child_engine(
      std::make_unique<ChildSync>("site", "hub", site_store.get(), env, ChildOptions{}));
  ASSERT_TRUE(hub.attach().ok());
  ASSERT_TRUE(site.attach().ok());
  auto run = [&](int ms) {
    for (int t = 0; t < ms; t += 100) {
      net.deliver_all(100000);
      hub.run_once(true);
      site.run_once(true);
      clock.advance_ms(100);
    }
  };
  ASSERT_TRUE(hub_store->put("d/a", R"({"v":1})").ok());
  run(2000);
  ASSERT_TRUE(site.child()->in_sync());
  const uint64_t hellos = site.child()->stats().hellos;
  net.set_connected("site", false);
  run(25'000);
  EXPECT_EQ(hub.parent()->session_count(), 0u);
  ASSERT_TRUE(hub_store->put("d/a", R"({"v":2})").ok());
  net.set_connected("site", true);
  run(2000);
  EXPECT_EQ(*site_store->get("d/a"), R"({"v":2})");
  EXPECT_EQ(site.child()->stats().hellos, hellos + 1);
  EXPECT_EQ(site.child()->stats().resets, 0u) << "it did not know the parent forgot it";
}

TEST_F(EngineTest, TrimmedLogForcesReconciliationWithFewDocuments) {
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(hub_store_->put("d/k" + std::to_string(1000 + i), R"({"v":1})").ok());
  }
  settle();
  net_.set_connected("site", false);
  // A deletion whose tombstone the hub collected: only the child holds the
  // document now, and must drop it.
  ASSERT_TRUE(hub_store_->remove("d/k1170").ok());
  clock_.advance_ms(1000);
  ASSERT_TRUE(hub_store_->collect_tombstones(clock_.now_ms() << 16).ok());
  ASSERT_FALSE(hub_store_->state("d/k1170")->has_value());
  clock_.advance_ms(1000);
  ASSERT_TRUE(hub_store_->put("d/k1100", R"({"v":2})").ok());
  ASSERT_TRUE(hub_store_->remove("d/k1150").ok());
  // The child's own write while cut off: kept, and it flows up.
  ASSERT_TRUE(site_store_->put("s/site/status", R"({"ok":true})").ok());
  ASSERT_TRUE(hub_store_->trim_log(hub_store_->last_log_index()).ok());
  // Restart the child so it says hello with its (now trimmed) position.
  site_.reset();
  site_bus_.reset();
  net_.set_connected("site", true);
  site_bus_ = net_.endpoint("site");
  Env env{&clock_, [this] { return rng_(); }};
  site_ = std::make_unique<SyncNode>(site_store_.get(), site_bus_.get());
  site_->set_child_engine(
      std::make_unique<ChildSync>("site", "hub", site_store_.get(), env, ChildOptions{}));
  ASSERT_TRUE(site_->attach().ok());
  const ParentStats before = hub_->parent()->stats();
  settle();
  EXPECT_EQ(*site_store_->get("d/k1100"), R"({"v":2})");
  EXPECT_EQ(site_store_->get("d/k1150").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(site_store_->state("d/k1170")->has_value());
  EXPECT_EQ(*site_store_->get("s/site/status"), R"({"ok":true})");
  EXPECT_EQ(*hub_store_->get("s/site/status"), R"({"ok":true})");
  EXPECT_EQ(*site_store_->get("d/k1000"), R"({"v":1})");
  // Exactly the two documents that differ travel (the changed one and the
  // tombstone), from a handful of sketch symbols.
  const ParentStats& after = hub_->parent()->stats();
  EXPECT_EQ(after.documents_sent - before.documents_sent, 2u);
  EXPECT_LT(after.sketch_symbols_sent - before.sketch_symbols_sent, 64u);
  EXPECT_EQ(after.reconciliations - before.reconciliations, 1u);
}

// A child forgets its write the parent refused (outside its scope). Its log
// still holds the write: after a restart, at a parent that lost its up
// position (here, a new hub), and with its scope grown to take the key, it
// must not send that write up again. The parent would hold what the child
// dropped, and a parent sends no child its own writes back.
TEST_F(EngineTest, AWriteTheParentRefusedIsNotSentAgainOnceForgotten) {
  settle();
  ASSERT_TRUE(site_store_->put("g/x", R"({"stale":true})").ok());
  settle();
  EXPECT_EQ(hub_->parent()->stats().refused_writes, 1u);
  EXPECT_FALSE(site_store_->state("g/x")->has_value()) << "the refused write was kept";
  // Both restart: the hub anew (another store, so nothing of the child's
  // position), and the child may now read and write g/.
  scope_.gate_ = true;
  scope_.writable_gate_ = true;
  ++scope_.version_;
  auto fresh_hub_store = open("hub-again", 3);
  ASSERT_NO_FATAL_FAILURE(start_hub(fresh_hub_store.get()));
  ASSERT_NO_FATAL_FAILURE(start_site());
  ASSERT_TRUE(site_store_->put("s/site/after", R"({"ok":true})").ok());
  settle();
  EXPECT_EQ(*fresh_hub_store->get("s/site/after"), R"({"ok":true})");
  EXPECT_FALSE(fresh_hub_store->state("g/x")->has_value())
      << "the forgotten write went up again: the hub holds what the child lacks";
  EXPECT_FALSE(site_store_->state("g/x")->has_value());
  hub_.reset();
}

// The hub refuses a write and keeps the child's position past it; the
// refusal is lost, and the session with it (the hub restarts). The child,
// resuming from that position, does not send the write again: only the
// hub's record of the refusal, told on the next session, makes it forget a
// key it may neither read nor write.
TEST_F(EngineTest, ARefusalLostWithItsSessionIsMadeAgain) {
  settle();
  ASSERT_TRUE(site_store_->put("g/x", R"({"stale":true})").ok());
  site_->run_once(true);
  net_.deliver_all(100000);
  hub_->run_once(true);
  ASSERT_EQ(hub_->parent()->stats().refused_writes, 1u);
  net_.partition("hub", "site", true);
  net_.deliver_all(100000);  // the refusal and the ack are lost
  ASSERT_NO_FATAL_FAILURE(start_hub(hub_store_.get()));
  net_.partition("hub", "site", false);
  settle();
  EXPECT_EQ(hub_->parent()->stats().refused_writes, 0u)
      << "the write went up again: this test no longer loses the refusal";
  EXPECT_FALSE(site_store_->state("g/x")->has_value()) << "the child kept a write the hub refused";
  ASSERT_TRUE(site_store_->put("s/site/after", R"({"ok":true})").ok());
  settle();
  EXPECT_EQ(*hub_store_->get("s/site/after"), R"({"ok":true})");
}

// Bad sketches, driven against the engines directly (no runtime): each side
// refuses to guess and falls back to sending the whole scope.
class SketchInputTest : public EngineTest {
 protected:
  static v1::SyncEnvelope parse(const Message& m) {
    v1::SyncEnvelope env;
    EXPECT_TRUE(env.ParseFromString(m.data));
    return env;
  }
  static Message down(uint64_t session, uint64_t seq, v1::SyncEnvelope env) {
    env.set_protocol(kProtocolVersion);
    env.set_from("hub");
    env.set_to("site");
    env.set_session(session);
    env.set_seq(seq);
    return Message{down_subject("hub", "site"), env.SerializeAsString()};
  }
};

TEST_F(SketchInputTest, ChildAsksForTheWholeScopeOnAMalformedSketch) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();  // the child holds d/a
  Env env{&clock_, [this] { return rng_(); }};
  ChildSync child("site", "hub", site_store_.get(), env, ChildOptions{});
  child.start();
  child.tick();
  auto out = outbox(child, site_store_.get());
  ASSERT_EQ(out.size(), 1u);
  const uint64_t session = parse(out[0]).session();
  v1::SyncEnvelope welcome;
  welcome.mutable_welcome()->set_replica_id(1);
  welcome.mutable_welcome()->set_reconcile(true);
  child.on_message(down(session, 0, welcome));
  outbox(child, site_store_.get());

  // Three counts but two ids: out of shape.
  v1::SyncEnvelope bad;
  bad.mutable_sketch()->set_round(1);
  bad.mutable_sketch()->set_items(1);
  for (int i = 0; i < 3; ++i) bad.mutable_sketch()->add_counts(1);
  bad.mutable_sketch()->add_ids(5);
  bad.mutable_sketch()->add_ids(6);
  for (int i = 0; i < 3; ++i) bad.mutable_sketch()->add_checks(0);
  child.on_message(down(session, 1, bad));
  out = outbox(child, site_store_.get());
  ASSERT_FALSE(out.empty());
  v1::SyncEnvelope reply = parse(out[0]);
  ASSERT_TRUE(reply.has_sketch_reply());
  EXPECT_TRUE(reply.sketch_reply().whole());
  EXPECT_EQ(reply.acked(), 1u);  // the ack rides on the reply

  // A well-formed stream of symbols that no set codes to: it never decodes,
  // and the child gives up by twice the size of both sets.
  bool whole = false;
  uint64_t offset = 0;
  for (uint64_t seq = 2; seq < 40 && !whole; ++seq) {
    v1::SyncEnvelope junk;
    junk.mutable_sketch()->set_round(2);
    junk.mutable_sketch()->set_offset(offset);
    junk.mutable_sketch()->set_items(1);
    for (int i = 0; i < 16; ++i) {
      junk.mutable_sketch()->add_counts(3);
      junk.mutable_sketch()->add_ids(rng_());
      junk.mutable_sketch()->add_checks(static_cast<uint32_t>(rng_()));
    }
    offset += 16;
    child.on_message(down(session, seq, junk));
    for (const Message& m : outbox(child, site_store_.get())) {
      v1::SyncEnvelope e = parse(m);
      if (!e.has_sketch_reply()) continue;
      EXPECT_FALSE(e.sketch_reply().decoded());
      whole = e.sketch_reply().whole();
    }
  }
  EXPECT_TRUE(whole);
  // Nothing was dropped on the way.
  EXPECT_EQ(*site_store_->get("d/a"), R"({"v":1})");
}

TEST_F(SketchInputTest, ParentSendsTheWholeScopeWhenAskedForAnIdItDoesNotHold) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(hub_store_->put("d/k" + std::to_string(i), R"({"v":1})").ok());
  }
  Env env{&clock_, [this] { return rng_(); }};
  ParentSync parent("hub", hub_store_.get(), &scope_, env, ParentOptions{});
  auto up = [](uint64_t session, uint64_t seq, v1::SyncEnvelope e) {
    e.set_protocol(kProtocolVersion);
    e.set_from("site");
    e.set_to("hub");
    e.set_session(session);
    e.set_seq(seq);
    return Message{up_subject("hub", "site"), e.SerializeAsString()};
  };
  v1::SyncEnvelope hello;
  hello.mutable_hello()->set_replica_id(2);  // no position: reconcile
  parent.on_message(up(77, 0, hello));
  auto out = outbox(parent, hub_store_.get());
  ASSERT_GE(out.size(), 2u);
  EXPECT_TRUE(parse(out[0]).welcome().reconcile());
  ASSERT_TRUE(parse(out[1]).has_sketch());
  EXPECT_EQ(parse(out[1]).sketch().items(), 5u);

  v1::SyncEnvelope reply;
  reply.mutable_sketch_reply()->set_round(parse(out[1]).sketch().round());
  reply.mutable_sketch_reply()->set_decoded(true);
  reply.mutable_sketch_reply()->add_wanted(0x1234);  // no document of ours has it
  parent.on_message(up(77, 1, reply));
  size_t docs = 0;
  bool covered_all = false;
  for (const Message& m : outbox(parent, hub_store_.get())) {
    v1::SyncEnvelope e = parse(m);
    if (!e.has_changes()) continue;
    docs += static_cast<size_t>(e.changes().entries_size());
    for (const auto& c : e.changes().covered()) {
      if (c.first().empty() && c.last() == "\x7f") covered_all = true;
    }
  }
  EXPECT_EQ(docs, 5u);
  EXPECT_TRUE(covered_all);
}

// Active-active parents: a child given a fallback parent pings on its
// heartbeats; when its parent falls silent (the hub died, the bus did not) it
// fails over to the next one, reconciles there, and keeps syncing both ways.
// A parent it left is ignored if it speaks again.
TEST(EngineFailoverTest, AChildFailsOverWhenItsParentFallsSilent) {
  testing::TempDir dir;
  ManualClock clock;
  std::mt19937_64 rng{7};
  MemoryNetwork net{3};
  TestScope scope;
  auto a_store = open_test_store(dir, "a", 1, &clock);
  auto b_store = open_test_store(dir, "b", 2, &clock);
  auto site_store = open_test_store(dir, "site", 3, &clock);
  auto a_bus = net.endpoint("a"), b_bus = net.endpoint("b"), site_bus = net.endpoint("site");
  Env env{&clock, [&rng] { return rng(); }};
  SyncNode a(a_store.get(), a_bus.get()), b(b_store.get(), b_bus.get());
  a.set_parent_engine(
      std::make_unique<ParentSync>("hub-a", a_store.get(), &scope, env, ParentOptions{}));
  b.set_parent_engine(
      std::make_unique<ParentSync>("hub-b", b_store.get(), &scope, env, ParentOptions{}));
  ChildOptions co;
  co.fallback_parents = {"hub-b"};
  SyncNode site(site_store.get(), site_bus.get());
  site.set_child_engine(std::make_unique<ChildSync>("site", "hub-a", site_store.get(), env, co));
  ASSERT_TRUE(a.attach().ok());
  ASSERT_TRUE(b.attach().ok());
  ASSERT_TRUE(site.attach().ok());
  ChildSync* child = site.child();
  EXPECT_EQ(child->subscriptions(), (std::vector<std::string>{down_subject("hub-a", "site"),
                                                              down_subject("hub-b", "site")}));
  // Both hubs hold the level's state (their own replication is not under test).
  for (Store* s : {a_store.get(), b_store.get()}) ASSERT_TRUE(s->put("d/x", R"({"x":1})").ok());
  bool a_alive = true;
  auto run = [&](int steps) {
    for (int i = 0; i < steps; ++i) {
      net.deliver_all(100000);
      if (a_alive) a.run_once(true);
      b.run_once(true);
      site.run_once(true);
      clock.advance_ms(50);
    }
  };
  run(100);
  ASSERT_TRUE(child->in_sync());
  EXPECT_EQ(child->parent(), "hub-a");
  EXPECT_EQ(*site_store->get("d/x"), R"({"x":1})");
  // Pings are answered: a quiet, live parent is never left.
  run(400);  // 20 s
  EXPECT_EQ(child->stats().failovers, 0u);
  EXPECT_EQ(child->parent(), "hub-a");

  // hub-a dies: its subscriptions stay on the bus, nothing answers.
  a_alive = false;
  ASSERT_TRUE(b_store->put("d/y", R"({"y":2})").ok());
  ASSERT_TRUE(site_store->put("s/site/report", R"({"ok":true})").ok());
  run(200);  // 10 s: more than three heartbeats of silence
  EXPECT_EQ(child->stats().failovers, 1u);
  EXPECT_EQ(child->parent(), "hub-b");
  EXPECT_TRUE(child->in_sync());
  EXPECT_EQ(*site_store->get("d/y"), R"({"y":2})");
  EXPECT_EQ(*b_store->get("s/site/report"), R"({"ok":true})");
  // What hub-a gave the child is not sent up to hub-b (hub-b would refuse
  // it): nothing refused there.
  EXPECT_EQ(b.parent()->stats().refused_writes, 0u);

  // hub-a comes back and speaks to the session it remembers: ignored.
  a_alive = true;
  ASSERT_TRUE(b_store->put("d/z", R"({"z":3})").ok());
  run(200);
  EXPECT_EQ(child->parent(), "hub-b");
  EXPECT_EQ(*site_store->get("d/z"), R"({"z":3})");
  EXPECT_EQ(child->stats().failovers, 1u);
}

// The scope of one level of a hierarchy for the redirect test: `d/...` for
// every child it serves; "site" is served while `serves_site` holds, and
// otherwise redirected to `site_below` (empty: not redirected).
class MoveScope final : public ScopeProvider {
 public:
  bool in_scope(std::string_view child, std::string_view key) override {
    return serves(child) && key.starts_with("d/");
  }
  std::vector<std::string> writable_prefixes(std::string_view) override { return {}; }
  uint64_t version(std::string_view) override { return 1; }
  std::vector<std::string> children_for(std::string_view key) override {
    if (in_scope("site", key)) return {"site"};
    return {};
  }
  bool serves(std::string_view child) override { return child != "site" || serves_site; }
  std::string redirect_for(std::string_view child) override {
    return child == "site" ? site_below : std::string();
  }
  bool serves_site = true;
  std::string site_below;
};

// A site moved from regional hub eu to us follows by itself though eu is its
// only parent: eu, which no longer serves it, ends the session with a
// redirect to its own parent (root), and root redirects it to us — no wait
// for silence. eu's welcome named root (Welcome.ancestors), and the child
// keeps it: restarted with eu as its parent, it hears nothing from eu, tries
// root after three heartbeats, and is redirected to us again. A redirect on
// another session is ignored.
TEST(EngineRedirectTest, AMovedSiteFollowsItsParentsParentToTheHubThatServesItNow) {
  testing::TempDir dir;
  ManualClock clock;
  std::mt19937_64 rng{11};
  MemoryNetwork net{5};
  MoveScope root_scope, eu_scope, us_scope;
  root_scope.serves_site = false;
  root_scope.site_below = "eu";
  us_scope.serves_site = false;
  auto root_store = open_test_store(dir, "root", 1, &clock);
  auto eu_store = open_test_store(dir, "eu", 2, &clock);
  auto us_store = open_test_store(dir, "us", 3, &clock);
  auto site_store = open_test_store(dir, "site", 4, &clock);
  auto root_bus = net.endpoint("root"), eu_bus = net.endpoint("eu"), us_bus = net.endpoint("us");
  auto site_bus = net.endpoint("site");
  Env env{&clock, [&rng] { return rng(); }};
  ParentOptions below_root;
  below_root.ancestors = {"root"};
  SyncNode root(root_store.get(), root_bus.get()), eu(eu_store.get(), eu_bus.get()),
      us(us_store.get(), us_bus.get());
  root.set_parent_engine(
      std::make_unique<ParentSync>("root", root_store.get(), &root_scope, env, ParentOptions{}));
  eu.set_parent_engine(
      std::make_unique<ParentSync>("eu", eu_store.get(), &eu_scope, env, below_root));
  us.set_parent_engine(
      std::make_unique<ParentSync>("us", us_store.get(), &us_scope, env, below_root));
  ChildOptions co;
  co.follow_redirects = true;
  auto site = std::make_unique<SyncNode>(site_store.get(), site_bus.get());
  site->set_child_engine(std::make_unique<ChildSync>("site", "eu", site_store.get(), env, co));
  for (SyncNode* n : {&root, &eu, &us, site.get()}) ASSERT_TRUE(n->attach().ok());
  EXPECT_EQ(site->child()->subscriptions(), std::vector<std::string>{"canopy.v1.*.site.down"});
  for (Store* s : {eu_store.get(), us_store.get()}) ASSERT_TRUE(s->put("d/x", R"({"x":1})").ok());
  auto run = [&](int steps) {
    for (int i = 0; i < steps; ++i) {
      net.deliver_all(100000);
      for (SyncNode* n : {&root, &eu, &us, site.get()}) n->run_once(true);
      clock.advance_ms(50);
    }
  };
  run(100);
  ChildSync* child = site->child();
  ASSERT_TRUE(child->in_sync());
  EXPECT_EQ(child->parent(), "eu");
  EXPECT_EQ(*site_store->get_local("sync/ancestors"), "root");
  run(400);  // 20 s: a live parent that answers the pings is kept
  EXPECT_EQ(child->stats().failovers, 0u);

  // eu stops for 8 s (its process hangs): the child tries root, which sends
  // it back to eu, and so on; when eu answers again the session resumes from
  // the child's position in eu's log: a catch-up, not a reconciliation.
  ASSERT_TRUE(eu_store->put("d/w", R"({"w":0})").ok());
  const uint64_t reconciliations = eu.parent()->stats().reconciliations;
  for (int i = 0; i < 160; ++i) {
    net.deliver_all(100000);
    for (SyncNode* n : {&root, &us, site.get()}) n->run_once(true);
    clock.advance_ms(50);
  }
  EXPECT_GE(child->stats().failovers, 1u);
  EXPECT_GE(root.parent()->stats().redirects, 1u);
  run(200);
  EXPECT_EQ(child->parent(), "eu");
  EXPECT_TRUE(child->in_sync());
  EXPECT_EQ(*site_store->get("d/w"), R"({"w":0})");
  EXPECT_EQ(eu.parent()->stats().reconciliations, reconciliations);

  // A long outage: the child gives each round of its hubs twice as long as
  // the last (up to 48 s), so the root, which is up, is not hammered.
  const uint64_t root_hellos = root.parent()->stats().unserved_hellos;
  for (int i = 0; i < 2400; ++i) {  // 120 s
    net.deliver_all(100000);
    for (SyncNode* n : {&root, &us, site.get()}) n->run_once(true);
    clock.advance_ms(50);
  }
  // 3 + 3 + 6 + 6 + 12 + 12 + 24 + 24 + 48 s: about nine tries of the root,
  // against forty at a steady 3 s.
  EXPECT_LE(root.parent()->stats().unserved_hellos - root_hellos, 15u);
  EXPECT_GE(root.parent()->stats().unserved_hellos - root_hellos, 5u);
  run(1200);  // 60 s: the longest wait, then the hello that eu answers
  EXPECT_EQ(child->parent(), "eu");
  EXPECT_TRUE(child->in_sync());
  const uint64_t failovers = child->stats().failovers;
  const uint64_t root_redirects = root.parent()->stats().redirects;
  const uint64_t redirects = child->stats().redirects;

  // A redirect that answers no hello of ours (eu's name, our session) is
  // ignored: the session goes on.
  v1::SyncEnvelope forged;
  forged.set_protocol(kProtocolVersion);
  forged.set_from("eu");
  forged.set_to("site");
  forged.set_session(1);
  forged.mutable_redirect()->set_parent("us");
  ASSERT_TRUE(eu_bus->publish(down_subject("eu", "site"), forged.SerializeAsString()).ok());
  run(20);
  EXPECT_EQ(child->parent(), "eu");
  EXPECT_EQ(child->stats().redirects, redirects);

  // The root moves the site to us: eu lets it go, us serves it.
  root_scope.site_below = "us";
  eu_scope.serves_site = false;
  us_scope.serves_site = true;
  ScopeChange moved;
  moved.child = "site";
  moved.reconcile = true;
  eu.enqueue_scope_change(moved);
  ASSERT_TRUE(us_store->put("d/y", R"({"y":2})").ok());
  run(20);  // 1 s: less than the three heartbeats a silent parent is given
  EXPECT_EQ(child->parent(), "us");
  EXPECT_TRUE(child->in_sync());
  EXPECT_EQ(child->stats().redirects, redirects + 2);  // eu -> root -> us
  EXPECT_EQ(child->stats().failovers, failovers);
  EXPECT_EQ(eu.parent()->stats().redirects, 1u);
  EXPECT_EQ(root.parent()->stats().redirects, root_redirects + 1);
  EXPECT_EQ(*site_store->get("d/y"), R"({"y":2})");
  EXPECT_EQ(*site_store->get("d/x"), R"({"x":1})");

  // Restarted with the same parent (eu), which no longer serves it: eu
  // sends it to its own parent, the root, at once, and the root to us.
  site.reset();
  site = std::make_unique<SyncNode>(site_store.get(), site_bus.get());
  site->set_child_engine(std::make_unique<ChildSync>("site", "eu", site_store.get(), env, co));
  ASSERT_TRUE(site->attach().ok());
  ASSERT_TRUE(us_store->put("d/z", R"({"z":3})").ok());
  run(200);
  EXPECT_EQ(site->child()->parent(), "us");
  EXPECT_TRUE(site->child()->in_sync());
  EXPECT_EQ(site->child()->stats().failovers, 0u);  // no wait for eu's silence
  EXPECT_EQ(site->child()->stats().redirects, 2u);  // eu -> root -> us
  EXPECT_EQ(*site_store->get("d/z"), R"({"z":3})");
  EXPECT_EQ(root.parent()->stats().redirects, root_redirects + 2);
}

// Anti-entropy: a seq reused by a writer restored from an old backup reaches
// the parent as one write and the child as another; the log stream cannot
// repair that (the child takes the parent's as a duplicate of its own), a
// comparison of documents does. With reconcile_every_ms the child reconciles
// again after that long, and the parent's write arrives.
TEST(EngineAntiEntropyTest, AChildReconcilesAgainAndGetsWhatTheLogCouldNotBring) {
  testing::TempDir dir;
  ManualClock clock;
  std::mt19937_64 rng{11};
  MemoryNetwork net{5};
  TestScope scope;
  auto hub_store = open_test_store(dir, "hub", 1, &clock);
  auto follower_store = open_test_store(dir, "follower", 2, &clock);
  // One writer, replica 9, before and after a restore from a backup that
  // held none of its writes: both writes are seq 1.
  auto before = open_test_store(dir, "writer-before", 9, &clock);
  auto after = open_test_store(dir, "writer-after", 9, &clock);
  auto first = before->put("d/first", R"({"v":1})");
  auto second = after->put("d/second", R"({"v":2})");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(first->dot().seq(), second->dot().seq());
  v1::DeltaBatch one, two;
  *one.add_deltas() = *first;
  *two.add_deltas() = *second;

  auto hub_bus = net.endpoint("hub"), follower_bus = net.endpoint("follower");
  Env env{&clock, [&rng] { return rng(); }};
  SyncNode hub(hub_store.get(), hub_bus.get());
  hub.set_parent_engine(
      std::make_unique<ParentSync>("hub", hub_store.get(), &scope, env, ParentOptions{}));
  ChildOptions co;
  co.reconcile_every_ms = 60'000;
  SyncNode follower(follower_store.get(), follower_bus.get());
  follower.set_child_engine(
      std::make_unique<ChildSync>("follower", "hub", follower_store.get(), env, co));
  ASSERT_TRUE(hub.attach().ok());
  ASSERT_TRUE(follower.attach().ok());
  auto run = [&](int steps) {
    for (int i = 0; i < steps; ++i) {
      net.deliver_all(100000);
      hub.run_once(true);
      follower.run_once(true);
      clock.advance_ms(100);
    }
  };
  run(50);  // 5 s: the first session reconciles and streams from then on
  ASSERT_TRUE(follower.child()->in_sync());
  // The first write reaches the follower (the hub refuses it from there: not
  // the follower's to write), then the second the hub.
  ASSERT_TRUE(follower_store->apply_remote(one, 9).ok());
  run(10);
  ASSERT_TRUE(hub_store->apply_remote(two, 9).ok());
  run(100);  // 10 s
  EXPECT_FALSE(follower_store->get("d/second").ok())
      << "the stream brought it, and it was taken for a duplicate";
  EXPECT_EQ(follower.child()->stats().anti_entropy_rounds, 0u);

  run(600);  // 60 s more: past reconcile_every_ms
  EXPECT_GE(follower.child()->stats().anti_entropy_rounds, 1u);
  ASSERT_TRUE(follower_store->get("d/second").ok());
  EXPECT_EQ(*follower_store->get("d/second"), R"({"v":2})");
  EXPECT_TRUE(follower.child()->in_sync());
  // Later rounds find nothing to change.
  const uint64_t received = follower.child()->stats().documents_received;
  run(700);
  EXPECT_GE(follower.child()->stats().anti_entropy_rounds, 2u);
  EXPECT_EQ(follower.child()->stats().documents_received, received);
  EXPECT_TRUE(follower.child()->in_sync());
}

}  // namespace
}  // namespace canopy::sync

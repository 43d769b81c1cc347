// Sync engines recovering: bad sketches, a parent that falls silent, a
// site that moved to another hub, and anti-entropy reconciliations.
#include "sync/tests/engine_fixture.h"

namespace canopy::sync {
namespace {

// A late copy of the child's hello reaches the hub after it restarted: the
// hub opens that session again and numbers its messages from 1, which the
// child, far past them, would take for ones it applied. The welcome's opening
// tells the child the session was opened anew, and it starts another
// (simulation seed 23582, active-active).
TEST_F(EngineTest, AHelloOpenedAgainMakesTheChildStartANewSession) {
  auto spy = net_.endpoint("spy");
  std::vector<Message> hellos;
  ASSERT_TRUE(spy->subscribe(up_subject("hub", "site"),
                             [&hellos](const Message& m) {
                               v1::SyncEnvelope env;
                               if (env.ParseFromString(m.data) && env.has_hello())
                                 hellos.push_back(m);
                             })
                  .ok());
  settle();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(hub_store_->put("d/k" + std::to_string(i), R"({"v":1})").ok());
    settle();
  }
  ASSERT_FALSE(hellos.empty());
  const uint64_t resets = site_->child()->stats().resets;
  ASSERT_NO_FATAL_FAILURE(start_hub(hub_store_.get()));
  ASSERT_TRUE(spy->publish(hellos.back().subject, hellos.back().data).ok());
  net_.deliver_all(100000);
  hub_->run_once(true);
  ASSERT_TRUE(hub_store_->put("d/after", R"({"v":2})").ok());
  settle();
  EXPECT_EQ(site_->child()->stats().resets, resets + 1);
  auto got = site_store_->get("d/after");
  ASSERT_TRUE(got.ok()) << "the child never got the write after the hub opened its session again";
  EXPECT_EQ(*got, R"({"v":2})");
  EXPECT_TRUE(site_->child()->in_sync());
}

// The hub's store fails to read a site's scope while it reconciles, then
// its log while the site catches up: the session gives its slot up and waits
// (it does not sit in reconcile or catch-up holding one), and starts over
// once the store reads again, without the site having to say hello anew.
TEST_F(EngineTest, AFailedReadOfTheHubsStoreIsRetriedNotStuck) {
  auto mode_of_site = [&] {
    for (const ChildInfo& c : hub_->parent()->children())
      if (c.name == "site") return c.mode;
    return std::string("none");
  };
  ASSERT_TRUE(hub_store_->put("d/a", R"({"x":1})").ok());
  ASSERT_TRUE(hub_store_->put("s/site/spec", R"({"y":2})").ok());
  FlakyView view(hub_store_.get());
  view.fail_scope = true;
  ASSERT_NO_FATAL_FAILURE(start_hub(hub_store_.get(), &view));
  settle();
  EXPECT_FALSE(site_->child()->in_sync());
  EXPECT_GE(hub_->parent()->stats().read_failures, 2u) << "each failure is retried";
  EXPECT_EQ(mode_of_site(), "waiting") << "a session whose reads fail must not hold a slot";
  const uint64_t resets = site_->child()->stats().resets;

  view.fail_scope = false;
  for (int i = 0; i < 40; ++i) {  // 2 s: the retry, not the site's giving up
    net_.deliver_all(100000);
    hub_->run_once(true);
    site_->run_once(true);
    clock_.advance_ms(50);
  }
  EXPECT_TRUE(site_->child()->in_sync());
  EXPECT_EQ(mode_of_site(), "live");
  EXPECT_EQ(*site_store_->get("d/a"), R"({"x":1})");
  EXPECT_EQ(*site_store_->get("s/site/spec"), R"({"y":2})");
  EXPECT_EQ(site_->child()->stats().resets, resets) << "the same session recovered";

  // A hub started over the same store whose log cannot be read: the site
  // resumes from its position with a catch-up, which waits the same way.
  ASSERT_TRUE(hub_store_->put("d/b", R"({"x":3})").ok());
  view.fail_log = true;
  ASSERT_NO_FATAL_FAILURE(start_hub(hub_store_.get(), &view));
  const uint64_t failures = hub_->parent()->stats().read_failures;
  settle();
  EXPECT_GT(hub_->parent()->stats().read_failures, failures);
  EXPECT_EQ(mode_of_site(), "waiting");
  view.fail_log = false;
  settle();
  EXPECT_EQ(mode_of_site(), "live");
  EXPECT_EQ(*site_store_->get("d/b"), R"({"x":3})");
  EXPECT_TRUE(site_->child()->in_sync());
}

// A site that resumes at the end of the hub's log (nothing committed while
// it was away) goes live without the hub reading its log: on a hub holding
// a large log that read costs milliseconds (sync.resync's log_ms_k0).
TEST_F(EngineTest, AChildAtTheLogsEndResumesWithoutALogRead) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"x":1})").ok());
  settle();
  ASSERT_TRUE(site_->child()->in_sync());
  FlakyView view(hub_store_.get());
  view.fail_log = true;
  ASSERT_NO_FATAL_FAILURE(start_hub(hub_store_.get(), &view));
  settle();
  EXPECT_EQ(hub_->parent()->stats().read_failures, 0u) << "the log was read";
  EXPECT_GE(hub_->parent()->stats().catchups, 1u);
  EXPECT_TRUE(site_->child()->in_sync());
  ASSERT_TRUE(hub_store_->put("d/b", R"({"x":2})").ok());
  settle();
  EXPECT_EQ(*site_store_->get("d/b"), R"({"x":2})") << "live after the resume";
}

// The hub visits idle sessions only every idle_sweep_ms, but a session with
// a message in flight at every tick: a lost message is resent at its
// timeout (1 s), not at the next sweep. (The site's heartbeat, whose ack
// would also bring the resend, is set far off.)
TEST_F(EngineTest, ALostMessageIsResentAtItsTimeoutBetweenIdleSweeps) {
  ParentOptions po;
  po.idle_sweep_ms = 60'000;
  ASSERT_NO_FATAL_FAILURE(start_hub(hub_store_.get(), nullptr, po));
  ChildOptions co;
  co.heartbeat_ms = 8'000;  // (under the hub's away_after_ms, 10 s)
  ASSERT_NO_FATAL_FAILURE(start_site(co));
  settle();
  ASSERT_TRUE(site_->child()->in_sync());
  net_.set_faults(MemoryFaults{.drop = 1.0});
  ASSERT_TRUE(hub_store_->put("d/x", R"({"v":1})").ok());
  settle(4);  // the change goes out, and is lost
  ASSERT_GE(net_.stats().dropped, 1u);
  net_.set_faults(MemoryFaults{});
  EXPECT_FALSE(site_store_->get("d/x").ok());
  settle(26);  // 1.5 s after the send
  auto got = site_store_->get("d/x");
  ASSERT_TRUE(got.ok()) << "not resent at its timeout";
  EXPECT_EQ(*got, R"({"v":1})");
}

// A child that synced with the hub is restarted with another parent only
// (hub2, which has never heard of the hub): hub2's welcome must forget the
// position in the hub's log, though the restarted child does not know the
// hub. What hub2's session drops would otherwise be missing, for good, once
// the child is back at the hub and resumes from that position (simulation
// seed 308 with moves: a regional hub the site had been redirected to).
TEST_F(EngineTest, AWelcomeForgetsThePositionAtTheLastParentUnknownSinceARestart) {
  ASSERT_TRUE(hub_store_->put("d/a", R"({"v":1})").ok());
  settle();
  ASSERT_TRUE(site_store_->get("d/a").ok());
  ASSERT_NE(site_->child()->down_position().epoch(), 0u);
  auto hub2_store = open("hub2", 3);
  auto hub2_bus = net_.endpoint("hub2");
  Env env{&clock_, [this] { return rng_(); }};
  SyncNode hub2(hub2_store.get(), hub2_bus.get());
  hub2.set_parent_engine(
      std::make_unique<ParentSync>("hub2", hub2_store.get(), &scope_, env, ParentOptions{}));
  ASSERT_TRUE(hub2.attach().ok());
  site_.reset();
  site_bus_.reset();
  site_bus_ = net_.endpoint("site");
  site_ = std::make_unique<SyncNode>(site_store_.get(), site_bus_.get());
  site_->set_child_engine(
      std::make_unique<ChildSync>("site", "hub2", site_store_.get(), env, ChildOptions{}));
  ASSERT_TRUE(site_->attach().ok());
  for (int i = 0; i < 100; ++i) {
    net_.deliver_all(100000);
    hub2.run_once(true);
    site_->run_once(true);
    clock_.advance_ms(50);
  }
  ASSERT_TRUE(site_->child()->in_sync());
  ASSERT_FALSE(site_store_->state("d/a")->has_value()) << "hub2's reconciliation kept d/a";
  ASSERT_NO_FATAL_FAILURE(start_site());  // back with the hub
  settle();
  auto back = site_store_->get("d/a");
  ASSERT_TRUE(back.ok()) << "the child resumed from its old position in the hub's log";
  EXPECT_EQ(*back, R"({"v":1})");
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
  std::vector<std::string> redirect_for(std::string_view child) override {
    if (child != "site" || site_below.empty()) return {};
    return {site_below};
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

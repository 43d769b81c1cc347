// End-to-end tests of what crosses the bus between real daemons (a real
// nats-server, the real canopy-hub and canopy-spoke binaries on loopback, as
// in e2e_test.cc): hostile bytes on the sync subjects, and large local writes
// made while a spoke is cut off.
//
// On a failure, the tails of every daemon's log are printed.
#include <set>

#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

// 5. Hostile bytes on the sync subjects are refused with a logged reason;
// nothing is lost, nothing foreign is merged, and both daemons keep running.
TEST_F(E2ETest, BadInputOnSyncSubjectsIsRefusedAndLogged) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));
  const json web = deployment("web", 2, "nginx:1.27");
  ASSERT_TRUE(put("template", "web", web).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(
      wait_until([&] { return eu.read().count(template_key("web")) == 1; }, kTimeout, kPoll));
  ASSERT_TRUE(wait_hub_applied("shop", "eu-1", "web"));
  const Manifest web_before = eu.read().at(template_key("web"));
  const auto web_at_hub = get("template", "web");
  ASSERT_TRUE(web_at_hub);

  NatsConn nc = nats_connect(nats_->url());
  ASSERT_TRUE(nc) << "cannot connect to nats-server";
  const std::string up = up_subject("eu-1");
  const std::string down = down_subject("eu-1");

  // (a) Garbage (wire type 7 does not exist: never a protobuf message).
  const std::string garbage = std::string("\x07\xff\xff") + "garbage, not a sync envelope";
  ASSERT_EQ(nats_publish(nc.get(), up, garbage), NATS_OK);

  // (b) A valid hello from eu-1, truncated in the middle of its body.
  {
    v1::SyncEnvelope env;
    env.set_protocol(sync::kProtocolVersion);
    env.set_from("eu-1");
    env.set_to(kHubName);
    env.set_session(0x1234);
    env.mutable_hello()->set_replica_id(0x42);
    (*env.mutable_hello()->mutable_labels())["region"] = "eu";
    (*env.mutable_hello()->mutable_labels())["padding"] = std::string(300, 'p');
    const std::string whole = env.SerializeAsString();
    const std::string truncated = whole.substr(0, whole.size() / 2);
    v1::SyncEnvelope probe;
    ASSERT_FALSE(probe.ParseFromString(truncated)) << "the truncation must break the message";
    ASSERT_EQ(nats_publish(nc.get(), up, truncated), NATS_OK);
  }

  // (c) Envelopes whose from/to do not match the subject: a hello claiming to
  // be us-1 on eu-1's subject, and one addressed to another hub.
  {
    v1::SyncEnvelope env;
    env.set_protocol(sync::kProtocolVersion);
    env.set_from("us-1");
    env.set_to(kHubName);
    env.set_session(0x5678);
    env.mutable_hello()->set_replica_id(0x43);
    (*env.mutable_hello()->mutable_labels())["region"] = "eu";
    ASSERT_EQ(nats_publish(nc.get(), up, env.SerializeAsString()), NATS_OK);
    env.set_from("eu-1");
    env.set_to("other-hub");
    ASSERT_EQ(nats_publish(nc.get(), up, env.SerializeAsString()), NATS_OK);
  }

  // (d) A message as large as NATS allows. The hub's limit is NATS's
  // max_payload (ParentOptions.max_message_bytes = max_payload), so nothing
  // NATS delivers can exceed it: it is refused as undecodable instead, and
  // handling it must not hurt the hub.
  const std::string huge(static_cast<size_t>(kNatsMaxPayload) - 4096, '\x07');
  ASSERT_EQ(nats_publish(nc.get(), up, huge), NATS_OK);

  // (e) A rogue child opens a session of its own and sends writes it may not
  // make: a template, an overwrite of an existing one, another site's status.
  // They must be refused and not merged.
  {
    const std::string rogue = "evil-1";
    natsSubscription* raw_sub = nullptr;
    ASSERT_EQ(natsConnection_SubscribeSync(&raw_sub, nc.get(), down_subject(rogue).c_str()),
              NATS_OK);
    NatsSub sub(raw_sub);
    ASSERT_EQ(natsConnection_FlushTimeout(nc.get(), 5000), NATS_OK);
    const uint64_t session = 0xE71L, replica = 0xBAD0BAD0BAD0ULL;
    v1::SyncEnvelope hello;
    hello.set_protocol(sync::kProtocolVersion);
    hello.set_from(rogue);
    hello.set_to(kHubName);
    hello.set_session(session);
    hello.mutable_hello()->set_replica_id(replica);
    (*hello.mutable_hello()->mutable_labels())["region"] = "nowhere";
    ASSERT_EQ(nats_publish(nc.get(), up_subject(rogue), hello.SerializeAsString()), NATS_OK);
    // Wait for the welcome.
    bool welcomed = false;
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (!welcomed && std::chrono::steady_clock::now() < deadline) {
      natsMsg* raw = nullptr;
      if (natsSubscription_NextMsg(&raw, sub.get(), 500) != NATS_OK) continue;
      NatsMsg msg(raw);
      v1::SyncEnvelope env;
      if (!env.ParseFromArray(natsMsg_GetData(msg.get()), natsMsg_GetDataLength(msg.get())))
        continue;
      if (env.has_welcome()) {
        welcomed = true;
        for (const auto& p : env.welcome().writable_prefixes()) {
          EXPECT_TRUE(p.starts_with("sites/evil-1/")) << "writable prefix " << p;
        }
      }
    }
    ASSERT_TRUE(welcomed) << "the hub never welcomed the rogue child";

    const uint64_t hlc =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count())
        << 16;
    v1::SyncEnvelope changes;
    changes.set_protocol(sync::kProtocolVersion);
    changes.set_from(rogue);
    changes.set_to(kHubName);
    changes.set_session(session);
    changes.set_seq(1);
    uint64_t seq = 0;
    auto add_doc = [&](const std::string& key, const json& doc) {
      v1::LogEntry* e = changes.mutable_changes()->add_entries();
      e->set_index(++seq);
      v1::Delta* d = e->mutable_delta();
      d->set_key(key);
      d->mutable_dot()->set_replica(replica);
      d->mutable_dot()->set_seq(seq);
      d->set_hlc(hlc + seq);
      v1::FieldOp* root = d->add_ops();
      root->set_kind(v1::FieldOp::MAKE_OBJECT);
      for (const auto& [k, v] : doc.items()) {
        v1::FieldOp* op = d->add_ops();
        op->add_path(k);
        op->set_kind(v1::FieldOp::SET);
        op->set_value(v.dump());
      }
    };
    add_doc("t/acme/templates/evil",
            {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", "evil"}});
    add_doc("t/acme/templates/web", {{"kind", "Evil"}, {"apiVersion", "evil/v1"}});
    add_doc("sites/eu-1/status/acme/web", {{"outcome", "failed"}, {"hash", "0000"}});
    add_doc("t/acme/placements/grab", {{"templates", json::array({"web"})}, {"sites", {"evil-1"}}});
    ASSERT_EQ(nats_publish(nc.get(), up_subject(rogue), changes.SerializeAsString()), NATS_OK);
    // Wait for the ack of seq 1 (an Ack, or one carried by a sequenced
    // message): the hub has handled the message. The writes outside the
    // rogue's scope come back as refused, for it to forget.
    bool acked = false;
    std::set<std::string> refused;
    const auto deadline2 = std::chrono::steady_clock::now() + kTimeout;
    while ((!acked || refused.size() < 4) && std::chrono::steady_clock::now() < deadline2) {
      natsMsg* raw = nullptr;
      if (natsSubscription_NextMsg(&raw, sub.get(), 500) != NATS_OK) continue;
      NatsMsg msg(raw);
      v1::SyncEnvelope env;
      if (!env.ParseFromArray(natsMsg_GetData(msg.get()), natsMsg_GetDataLength(msg.get())))
        continue;
      acked = acked || (env.has_ack() && env.ack().seq() >= 1) || env.acked() >= 1;
      for (const auto& r : env.changes().refused()) refused.insert(r.key());
    }
    EXPECT_TRUE(acked) << "no ack for the rogue's changes";
    EXPECT_EQ(refused,
              (std::set<std::string>{"sites/eu-1/status/acme/web", "t/acme/placements/grab",
                                     "t/acme/templates/evil", "t/acme/templates/web"}));
  }

  // (f) Garbage on the spoke's down subject: bytes, a truncated welcome, an
  // envelope for another site, a message as large as NATS allows.
  ASSERT_EQ(nats_publish(nc.get(), down, garbage), NATS_OK);
  {
    v1::SyncEnvelope env;
    env.set_protocol(sync::kProtocolVersion);
    env.set_from(kHubName);
    env.set_to("eu-1");
    env.set_session(1);
    env.mutable_welcome()->set_replica_id(7);
    env.mutable_welcome()->add_writable_prefixes("t/" + std::string(200, 'a'));
    const std::string whole = env.SerializeAsString();
    const std::string truncated = whole.substr(0, whole.size() - 20);
    v1::SyncEnvelope probe;
    ASSERT_FALSE(probe.ParseFromString(truncated));
    ASSERT_EQ(nats_publish(nc.get(), down, truncated), NATS_OK);
    env.set_to("us-1");
    ASSERT_EQ(nats_publish(nc.get(), down, env.SerializeAsString()), NATS_OK);
  }
  ASSERT_EQ(nats_publish(nc.get(), down, huge), NATS_OK);

  // Each is refused with a reason in the logs.
  const std::string up_refused = "refused message on " + up;
  const std::string down_refused = "refused message on " + down;
  ASSERT_TRUE(wait_until(
      [&] {
        const std::string hub_log = read_file(hub_->log_path());
        const std::string spoke_log = read_file(eu.log_path());
        return count_lines_with(hub_log, {up_refused, "undecodable"}) >= 3 &&
               count_lines_with(hub_log, {up_refused, "does not match the subject"}) >= 2 &&
               count_lines_with(hub_log, {"refused write of t/acme/templates/evil by evil-1"}) >=
                   1 &&
               count_lines_with(hub_log, {"refused write of t/acme/templates/web by evil-1"}) >=
                   1 &&
               count_lines_with(hub_log,
                                {"refused write of sites/eu-1/status/acme/web by evil-1"}) >= 1 &&
               count_lines_with(hub_log, {"refused write of t/acme/placements/grab by evil-1"}) >=
                   1 &&
               count_lines_with(spoke_log, {down_refused, "undecodable"}) >= 3 &&
               count_lines_with(spoke_log, {down_refused, "not to us"}) >= 1;
      },
      kTimeout, 100ms))
      << "not every bad message was refused with a logged reason";

  // Both keep running.
  EXPECT_TRUE(hub_->proc.running());
  EXPECT_TRUE(eu.proc.running());
  auto hh = http_get_json(hub_->health_port, "/healthz");
  ASSERT_TRUE(hh);
  EXPECT_TRUE(hh->value("nats_connected", false));
  auto sh = spoke_health(eu);
  ASSERT_TRUE(sh);
  EXPECT_TRUE(sh->value("session_open", false));

  // Nothing foreign was merged, nothing accepted was lost.
  grpc::Status gs;
  EXPECT_FALSE(get("template", "evil", &gs));
  EXPECT_EQ(gs.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_FALSE(get("placement", "grab", &gs));
  EXPECT_EQ(gs.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(get("template", "web"), web_at_hub);
  auto sites = list("site");
  ASSERT_TRUE(sites);
  EXPECT_FALSE(sites->count("us-1")) << "a forged hello registered us-1";
  auto hs = hub_template_status("shop", "eu-1", "web");
  ASSERT_TRUE(hs);
  EXPECT_EQ(hs->first, "applied");
  EXPECT_EQ(hs->second, web_before.hash());
  EXPECT_EQ(eu.read().at(template_key("web")).object, web_before.object);

  // A write after all that still reaches the site.
  const json shop_api = deployment("api", 1, "shop/api:1");
  ASSERT_TRUE(put("template", "api", shop_api).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web", "api"}, "eu")).ok());
  ASSERT_TRUE(wait_until(
      [&] {
        auto files = eu.read();
        return files.count(template_key("api")) &&
               files.at(template_key("api")).object["spec"] == shop_api["spec"];
      },
      kTimeout, kPoll))
      << "a put after the bad input never reached eu-1";
  ASSERT_TRUE(wait_hub_applied("shop", "eu-1", "api"));
}

// 7 and 8. Large local writes made while cut off reach the hub when the bus
// returns. The site operator sets two local overrides of ~600 KB each (each
// document well within the store's 1 MiB limit) while NATS is down, and the
// spoke restarts while still cut off, so that its session reopens from its
// log and everything it wrote goes up at once.
//
// BUG (sync/engine/child.cc ChildSync::pump_up, spoke/spoke.cc, hub/hub.cc):
// the spoke batches what it sends up to ChildOptions.max_message_bytes, which
// spoke/spoke.cc sets to max(NATS max_payload, 8 MiB), not to what NATS or the
// hub accept. Both overrides go into one ~1.2 MB Changes message:
//   - with nats-server's default max_payload of 1 MiB (test 7), NATS.c refuses
//     the publish (ResourceExhausted; SyncNode::publish only counts it in
//     publish_failures_, nothing is logged); the message is retransmitted
//     forever and everything behind it in the window (status documents too)
//     stalls, while the spoke reports its session open;
//   - with NATS at 8 MiB but a hub that started before NATS was reachable
//     (test 8), the hub took ParentOptions.max_message_bytes from
//     NatsTransport::max_payload() before connecting, i.e. the 1 MiB default,
//     and refuses the message ("message larger than the limit of 1048576")
//     on every retransmission.
// Expected: the writes reach the hub (messages split to fit the limits the
// receiver and the bus actually have).
class E2ELargeWritesTest : public E2ETest {
 protected:
  void large_local_overrides_reach_the_hub() {
    Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
    ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));
    ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.27")).ok());
    ASSERT_TRUE(put("template", "api", deployment("api", 1, "shop/api:1")).ok());
    ASSERT_TRUE(put("placement", "shop", placement_by_region({"web", "api"}, "eu")).ok());
    ASSERT_TRUE(wait_until([&] { return eu.read().size() == 2; }, kTimeout, kPoll));

    nats_->kill();
    ASSERT_TRUE(wait_spoke_health(eu, "nats_connected", false));
    for (const std::string t : {"web", "api"}) {
      httplib::Client cli("127.0.0.1", eu.health_port);
      cli.set_read_timeout(10, 0);
      const json patch = {{"metadata", {{"annotations", {{"pad", std::string(600'000, 'p')}}}}}};
      auto res = cli.Put("/v1/overrides/acme/" + t, patch.dump(), "application/json");
      ASSERT_TRUE(res);
      ASSERT_EQ(res->status, 200) << res->body;
    }
    std::map<std::string, std::string> hashes;
    ASSERT_TRUE(wait_until(
        [&] {
          auto files = eu.read();
          for (const std::string t : {"web", "api"}) {
            auto st = spoke_status(eu, t);
            if (!st || !files.count(template_key(t))) return false;
            const Manifest& m = files.at(template_key(t));
            if (!m.object["metadata"]["annotations"].contains("pad")) return false;
            if (st->value("hash", "") != m.hash()) return false;
            hashes[t] = m.hash();
          }
          return true;
        },
        kTimeout, kPoll));
    ASSERT_NO_FATAL_FAILURE(kill_spoke(eu));
    ASSERT_NO_FATAL_FAILURE(launch_spoke(eu, /*expect_session=*/false));

    std::string err;
    ASSERT_TRUE(nats_->start(&err)) << err;
    const bool reached = wait_until(
        [&] {
          for (const std::string t : {"web", "api"}) {
            auto s = hub_template_status("shop", "eu-1", t);
            if (!s || s->first != "applied" || s->second != hashes[t]) return false;
          }
          return true;
        },
        kTimeout, 100ms);
    // See BUG above.
    EXPECT_TRUE(reached) << "the site's writes made while cut off never reached the hub";
    // The hub may show the status a moment before the spoke has its acks.
    const bool caught_up = wait_spoke_health(eu, "in_sync", true, 50ms);
    EXPECT_TRUE(caught_up) << "the spoke's session never caught up";
  }
};

// 7. nats-server with its default max_payload (1 MiB).
class E2EDefaultPayloadTest : public E2ELargeWritesTest {
 protected:
  E2EDefaultPayloadTest() { nats_max_payload_ = 1 << 20; }
};

TEST_F(E2EDefaultPayloadTest, LargeLocalOverridesWrittenWhileCutOffReachTheHub) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  large_local_overrides_reach_the_hub();
}

// 8. nats-server at 8 MiB, but the hub started while it was down.
TEST_F(E2ELargeWritesTest, LargeLocalOverridesReachAHubThatStartedBeforeNats) {
  nats_->kill();
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub(/*expect_nats=*/false));
  std::string err;
  ASSERT_TRUE(nats_->start(&err)) << err;
  ASSERT_TRUE(wait_until(
      [&] {
        auto j = http_get_json(hub_->health_port, "/healthz");
        return j && j->value("nats_connected", false);
      },
      kTimeout, kPoll));
  large_local_overrides_reach_the_hub();
}

}  // namespace
}  // namespace canopy::e2e

// Telemetry end to end: a device (mosquitto_pub) publishes telemetry at the
// real canopy-spoke's site bus (Debian's nats-server, a leaf node of the
// hub's nats-server); a subscriber at the hub's nats-server receives it on
// tm.<tenant>.<site>.<device>.>, also what was published while the hub's
// NATS was down and the spoke and its bus were restarted, in order; the
// buffer drops its oldest past its size limit, and what is older than its
// age limit, and counts them; an oversized
// message is refused and counted. The real canopy-hub answers the
// forwarder's barriers (hub/telemetry_barrier.h).
//
// On a failure, the tails of every daemon's log are printed.
#include <sys/wait.h>

#include <regex>

#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

// bcrypt (cost 4) of "pump-secret".
constexpr char kHash[] = "$2b$04$UrDXCYlPNQURswfF2MBrOuNJzRtHfFCBQ52iWsLO/KBXfxi89YwZC";
constexpr char kSite[] = "shop-1";
constexpr char kHubSubject[] = "tm.acme.shop-1.pump-1.temp";

struct Received {
  std::string subject;
  std::string data;
  uint64_t seq = 0;
};

class TelemetryTest : public E2ETest {
 protected:
  void SetUp() override {
    // The hub's nats-server takes the site's leaf connection.
    leaf_port_ = port();
    NatsServerOptions o;
    o.max_payload = nats_max_payload_;
    o.extra_config = "leafnodes { listen: \"127.0.0.1:" + std::to_string(leaf_port_) + "\" }";
    nats_ = std::make_unique<NatsServer>(o);
    std::string err;
    ASSERT_TRUE(nats_->start(&err)) << err;
    create_hub();
    ASSERT_NO_FATAL_FAILURE(launch_hub());
  }

  void start_site(int64_t telemetry_max_bytes, int telemetry_max_age_seconds = 7 * 24 * 3600) {
    mqtt_port_ = port();
    monitor_port_ = port();
    Spoke& s = create_spoke(kSite, {{"region", "eu"}});
    const std::string config = s.dir.file("bus.yaml");
    std::ofstream(config) << "bus:\n"
                          << "  enabled: true\n"
                          << "  mqtt_port: " << mqtt_port_ << "\n"
                          << "  client_port: " << port() << "\n"
                          << "  monitor_port: " << monitor_port_ << "\n"
                          << "  leaf_remote: nats-leaf://127.0.0.1:" << leaf_port_ << "\n"
                          << "  limits: {telemetry_max_bytes: " << telemetry_max_bytes
                          << ", telemetry_max_age_seconds: " << telemetry_max_age_seconds << "}\n"
                          << "  tenants:\n"
                          << "    - name: acme\n"
                          << "      devices: [{id: pump-1, password_hash: \"" << kHash << "\"}]\n";
    s.extra_args = {"--config", config};
    spoke_ = &s;
    ASSERT_NO_FATAL_FAILURE(launch_spoke(s));
  }

  // One message from the device, QoS 1, acknowledged by the site's bus.
  void publish(const std::string& payload) {
    const std::string log = spoke_->dir.file("pub-" + std::to_string(++runs_) + ".log");
    ASSERT_TRUE(publish_pump_telemetry(mqtt_port_, payload, "pump-1-" + std::to_string(runs_), log))
        << "mosquitto_pub failed: " << read_file(log);
  }

  // A subscriber at the hub's nats-server, on tm.> and t.>.
  void subscribe_at_hub() {
    hub_conn_ = nats_connect(nats_->url());
    ASSERT_TRUE(hub_conn_);
    natsSubscription* sub = nullptr;
    ASSERT_EQ(natsConnection_SubscribeSync(&sub, hub_conn_.get(), "tm.>"), NATS_OK);
    tm_sub_.reset(sub);
    ASSERT_EQ(natsConnection_SubscribeSync(&sub, hub_conn_.get(), "t.>"), NATS_OK);
    raw_sub_.reset(sub);
    ASSERT_EQ(natsConnection_Flush(hub_conn_.get()), NATS_OK);
  }

  // Telemetry received at the hub until `done` or the timeout; duplicates
  // (the same Canopy-Seq again: delivery is at least once) are left out.
  std::vector<Received> receive(const std::function<bool(const std::vector<Received>&)>& done,
                                std::chrono::milliseconds timeout = kTimeout) {
    std::vector<Received> out;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done(out) && std::chrono::steady_clock::now() < deadline) {
      natsMsg* m = nullptr;
      if (natsSubscription_NextMsg(&m, tm_sub_.get(), 200) != NATS_OK) continue;
      NatsMsg held(m);
      Received r;
      r.subject = natsMsg_GetSubject(m);
      r.data.assign(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
      const char* seq = nullptr;
      if (natsMsgHeader_Get(m, "Canopy-Seq", &seq) == NATS_OK) r.seq = std::stoull(seq);
      if (r.seq != 0 && r.seq <= last_seq_) {
        ++duplicates_;
        continue;
      }
      if (r.seq != 0) last_seq_ = r.seq;
      out.push_back(std::move(r));
    }
    return out;
  }

  // Raw telemetry subjects seen at the hub (the leaf link must not carry them).
  int raw_telemetry_at_hub() {
    int n = 0;
    natsMsg* m = nullptr;
    while (natsSubscription_NextMsg(&m, raw_sub_.get(), 10) == NATS_OK) {
      if (std::string(natsMsg_GetSubject(m)).find(".telemetry") != std::string::npos) ++n;
      natsMsg_Destroy(m);
    }
    return n;
  }

  // One value of the spoke's /metrics, or -1.
  double spoke_metric(const std::string& name) {
    httplib::Client cli("127.0.0.1", spoke_->health_port);
    auto res = cli.Get("/metrics");
    if (!res || res->status != 200) return -1;
    const std::string key = "\n" + name + " ";
    const size_t at = res->body.find(key);
    if (at == std::string::npos) return -1;
    return std::stod(res->body.substr(at + key.size()));
  }

  // The last "telemetry: uplink ..." counters the spoke logged.
  struct Counters {
    bool found = false;
    uint64_t buffered = 0, forwarded = 0, dropped = 0, refused = 0;
  };
  Counters logged_counters() {
    static const std::regex re(
        R"(telemetry: uplink (up|down), (\d+) buffered, (\d+) forwarded, (\d+) dropped by the buffer's limits, (\d+) refused)");
    Counters c;
    const std::string log = read_file(spoke_->log_path());
    for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
         ++it) {
      c.found = true;
      c.buffered = std::stoull((*it)[2]);
      c.forwarded = std::stoull((*it)[3]);
      c.dropped = std::stoull((*it)[4]);
      c.refused = std::stoull((*it)[5]);
    }
    return c;
  }

  // The uplink is cut: the hub's NATS and canopy-hub both down, so that the
  // test decides when the hub answers again (after its subscriber is back).
  void cut() {
    hub_conn_.reset();
    tm_sub_.reset();
    raw_sub_.reset();
    ASSERT_NO_FATAL_FAILURE(kill_hub());
    nats_->kill();
  }
  void heal() {
    std::string err;
    ASSERT_TRUE(nats_->start(&err)) << err;
    ASSERT_NO_FATAL_FAILURE(subscribe_at_hub());
    ASSERT_NO_FATAL_FAILURE(launch_hub());
  }

  int leaf_port_ = 0;
  int mqtt_port_ = 0;
  int monitor_port_ = 0;
  int runs_ = 0;
  int duplicates_ = 0;
  uint64_t last_seq_ = 0;  // the highest Canopy-Seq received
  Spoke* spoke_ = nullptr;
  NatsConn hub_conn_;
  NatsSub tm_sub_;
  NatsSub raw_sub_;
};

// While the hub's NATS is down, and across a restart of the spoke (and so of
// the site's nats-server), telemetry waits in the site's stream; after the
// cut it reaches the hub's subscriber, all of it, in order, on the tenant's
// hub subjects, and never as the raw device subjects.
TEST_F(TelemetryTest, TelemetryWaitsOutACutAndRestartsThenArrivesInOrder) {
  ASSERT_NO_FATAL_FAILURE(start_site(64 << 20));
  ASSERT_NO_FATAL_FAILURE(subscribe_at_hub());
  // Live: the first message goes straight up (once the leaf link is there).
  ASSERT_NO_FATAL_FAILURE(publish("live-0"));
  auto live = receive([](const auto& r) { return !r.empty(); });
  ASSERT_EQ(live.size(), 1u) << "live telemetry did not reach the hub";
  EXPECT_EQ(live[0].subject, kHubSubject);
  EXPECT_EQ(live[0].data, "live-0");
  EXPECT_EQ(live[0].seq, 1u);
  // The hub's barrier confirms it and the site's stream lets it go; cut
  // before that, and the message is rightly sent again after the cut (with
  // its Canopy-Seq, so that a subscriber can tell).
  ASSERT_TRUE(wait_until(
      [&] {
        return spoke_metric("canopy_spoke_telemetry_forwarded_total") == 1 &&
               spoke_metric("canopy_spoke_telemetry_buffered") == 0;
      },
      kTimeout, kPoll))
      << "the live message is not confirmed";

  ASSERT_NO_FATAL_FAILURE(cut());
  for (int i = 1; i <= 20; ++i) ASSERT_NO_FATAL_FAILURE(publish("m-" + std::to_string(i)));
  // The spoke dies (SIGKILL: its nats-server goes with it) and comes back,
  // still cut off.
  ASSERT_NO_FATAL_FAILURE(kill_spoke(*spoke_));
  ASSERT_NO_FATAL_FAILURE(launch_spoke(*spoke_, /*expect_session=*/false));
  for (int i = 21; i <= 40; ++i) ASSERT_NO_FATAL_FAILURE(publish("m-" + std::to_string(i)));
  ASSERT_TRUE(wait_until(
      [&] {
        // 41 if the restarted bus brought back the confirmed live message
        // (its acknowledgement not yet on disk at the SIGKILL): the
        // forwarder knows its sequence and skips it.
        Counters c = logged_counters();
        return c.found && (c.buffered == 40 || c.buffered == 41);
      },
      kTimeout, kPoll))
      << "the spoke does not report 40 buffered";

  ASSERT_NO_FATAL_FAILURE(heal());
  auto got = receive([](const auto& r) { return r.size() >= 40; });
  ASSERT_EQ(got.size(), 40u) << "telemetry lost across the cut";
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(got[i].data, "m-" + std::to_string(i + 1)) << "out of order at " << i;
    EXPECT_EQ(got[i].subject, kHubSubject);
    EXPECT_EQ(got[i].seq, static_cast<uint64_t>(i + 2));
  }
  EXPECT_EQ(raw_telemetry_at_hub(), 0) << "raw device telemetry crossed the leaf link";
  ASSERT_TRUE(wait_until(
      [&] {
        Counters c = logged_counters();
        return c.buffered == 0 && c.forwarded == 40 && c.dropped == 0;
      },
      kTimeout, kPoll))
      << "counters after the cut";

  // An oversized message is refused with its reason, counted, and the next
  // one goes through.
  ASSERT_NO_FATAL_FAILURE(publish(std::string(20'000, 'x')));
  ASSERT_NO_FATAL_FAILURE(publish("after-big"));
  auto after = receive([](const auto& r) { return !r.empty(); });
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].data, "after-big");
  EXPECT_TRUE(wait_until([&] { return logged_counters().refused == 1; }, kTimeout, kPoll));
  EXPECT_NE(read_file(spoke_->log_path())
                .find("on t.acme.d.pump-1.telemetry.temp refused: 20000 bytes, over the limit of "
                      "16384 (bus.limits.telemetry_max_message)"),
            std::string::npos);
  // Each confirmed batch, the refused message's too, left the stream by one
  // purge, not by an acknowledgement per message (the fallback says so).
  EXPECT_EQ(read_file(spoke_->log_path()).find("cannot purge the forwarded messages"),
            std::string::npos);
  EXPECT_TRUE(spoke_->proc.running());
}

// With a small buffer, a long cut keeps the newest: the oldest are dropped
// first, the hub gets the rest in order, and the drops are counted.
TEST_F(TelemetryTest, ASmallBufferDropsTheOldestAndCountsThem) {
  ASSERT_NO_FATAL_FAILURE(start_site(2048));
  ASSERT_NO_FATAL_FAILURE(subscribe_at_hub());
  ASSERT_NO_FATAL_FAILURE(cut());
  const std::string pad(100, 'p');
  for (int i = 1; i <= 40; ++i) {
    ASSERT_NO_FATAL_FAILURE(publish(std::to_string(i) + ":" + pad));
  }
  ASSERT_NO_FATAL_FAILURE(heal());
  std::vector<Received> got =
      receive([](const auto& r) { return !r.empty() && r.back().data.starts_with("40:"); });
  ASSERT_FALSE(got.empty());
  ASSERT_TRUE(got.back().data.starts_with("40:")) << "the newest message did not arrive";
  const size_t kept = got.size();
  EXPECT_GE(kept, 5u);
  EXPECT_LT(kept, 40u) << "nothing dropped: the limit did not bite";
  for (size_t i = 0; i < kept; ++i) {
    EXPECT_EQ(got[i].data, std::to_string(40 - kept + 1 + i) + ":" + pad) << "at " << i;
  }
  ASSERT_TRUE(wait_until(
      [&] {
        Counters c = logged_counters();
        return c.forwarded == kept && c.dropped == 40 - kept && c.buffered == 0;
      },
      kTimeout, kPoll))
      << "drops not counted: " << logged_counters().dropped << " for " << 40 - kept;
  EXPECT_NE(read_file(spoke_->log_path()).find("were dropped by the buffer's limits"),
            std::string::npos);
  // The same counters on the spoke's /metrics.
  httplib::Client cli("127.0.0.1", spoke_->health_port);
  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res && res->status == 200);
  EXPECT_NE(
      res->body.find("canopy_spoke_telemetry_dropped_total " + std::to_string(40 - kept) + "\n"),
      std::string::npos)
      << res->body;
  EXPECT_NE(res->body.find("canopy_spoke_telemetry_forwarded_total " + std::to_string(kept) + "\n"),
            std::string::npos);
  EXPECT_NE(res->body.find("canopy_spoke_telemetry_buffered 0\n"), std::string::npos);
  EXPECT_NE(res->body.find("canopy_spoke_telemetry_uplink 1\n"), std::string::npos);
}

// The young messages are published once the hub is back: had they waited
// out the hub's restart too, a slow machine (sanitizers) could age them past
// the limit before the leaf link returned, and the test would prove nothing
// about which messages the limit takes.
TEST_F(TelemetryTest, MessagesOlderThanTheAgeLimitAreDroppedAndCounted) {
  ASSERT_NO_FATAL_FAILURE(start_site(1 << 20, 6));
  ASSERT_NO_FATAL_FAILURE(subscribe_at_hub());
  ASSERT_NO_FATAL_FAILURE(cut());
  for (int i = 1; i <= 10; ++i) ASSERT_NO_FATAL_FAILURE(publish("old-" + std::to_string(i)));
  // Past the age limit, the stream has expired all ten.
  ASSERT_TRUE(wait_until([&] { return logged_counters().dropped == 10; }, kTimeout, kPoll))
      << "expired messages not counted: " << logged_counters().dropped;
  ASSERT_NO_FATAL_FAILURE(heal());
  for (int i = 1; i <= 5; ++i) ASSERT_NO_FATAL_FAILURE(publish("new-" + std::to_string(i)));
  std::vector<Received> got =
      receive([](const auto& r) { return !r.empty() && r.back().data == "new-5"; });
  ASSERT_EQ(got.size(), 5u) << "expected only the five young messages";
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].data, "new-" + std::to_string(i + 1)) << "at " << i;
  }
  ASSERT_TRUE(wait_until(
      [&] {
        Counters c = logged_counters();
        return c.forwarded == 5 && c.dropped == 10 && c.buffered == 0;
      },
      kTimeout, kPoll))
      << "forwarded " << logged_counters().forwarded << ", dropped " << logged_counters().dropped;
}

}  // namespace
}  // namespace canopy::e2e

// The telemetry forwarder with real parts: Debian's nats-server run by the
// BusSupervisor as a leaf node of a hub-side nats-server, a real MQTT device
// (mosquitto_pub, QoS 1), a NATS.c subscriber at the hub. The hub's barrier
// (hub/telemetry_barrier.h in canopy-hub) is played by the test itself, so
// that it can hold its echoes back: it answers on the same subjects, with the
// same payload, as canopy-hub does.
#include "spoke/bus/telemetry_forwarder.h"

#include <gtest/gtest.h>
#include <nats/nats.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/password_hash.h"
#include "spoke/bus/supervisor.h"
#include "sync/subjects.h"
#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace canopy::spoke::bus {
namespace {

using canopy::testing::NatsServer;
using canopy::testing::NatsServerOptions;
using canopy::testing::pick_free_port;
using canopy::testing::Process;
using canopy::testing::ProcessOptions;
using canopy::testing::TempDir;
using canopy::testing::wait_until;
using namespace std::chrono_literals;

constexpr char kSite[] = "shop-1";
constexpr char kDevicePassword[] = "pump-secret";

// The hub's side of the barrier, held back on purpose: a nonce is echoed
// once `hold_until` of them are waiting, or once the oldest has waited
// `hold_for`; echoes stop altogether while `mute` is set (nonces that come
// meanwhile are never answered, as when the uplink is cut).
class HeldBarrier {
 public:
  HeldBarrier(natsConnection* conn, size_t hold_until, std::chrono::milliseconds hold_for)
      : conn_(conn), hold_until_(hold_until), hold_for_(hold_for) {}
  ~HeldBarrier() { stop(); }

  bool start() {
    if (natsConnection_SubscribeSync(&sub_, conn_,
                                     sync::telemetry_barrier_subject(kSite).c_str()) != NATS_OK) {
      return false;
    }
    if (natsConnection_Flush(conn_) != NATS_OK) return false;
    thread_ = std::thread([this] { run(); });
    return true;
  }
  void stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
    if (sub_ != nullptr) natsSubscription_Destroy(sub_);
    sub_ = nullptr;
  }
  void set_mute(bool mute) { mute_ = mute; }
  size_t max_waiting() const { return max_waiting_; }
  size_t answered() const { return answered_; }

 private:
  struct Waiting {
    std::string nonce;
    std::chrono::steady_clock::time_point since;
  };
  void run() {
    const std::string ack = sync::telemetry_barrier_ack_subject(kSite);
    std::deque<Waiting> waiting;
    while (!stopping_) {
      natsMsg* m = nullptr;
      if (natsSubscription_NextMsg(&m, sub_, 10) == NATS_OK) {
        if (!mute_) {
          waiting.push_back(
              {std::string(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m))),
               std::chrono::steady_clock::now()});
          max_waiting_ = std::max<size_t>(max_waiting_, waiting.size());
        }
        natsMsg_Destroy(m);
      }
      if (mute_) waiting.clear();
      while (!waiting.empty() &&
             (waiting.size() >= hold_until_ ||
              std::chrono::steady_clock::now() - waiting.front().since >= hold_for_)) {
        natsConnection_PublishString(conn_, ack.c_str(), waiting.front().nonce.c_str());
        natsConnection_Flush(conn_);
        waiting.pop_front();
        ++answered_;
      }
    }
  }

  natsConnection* conn_;
  const size_t hold_until_;
  const std::chrono::milliseconds hold_for_;
  natsSubscription* sub_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> mute_{false};
  std::atomic<size_t> max_waiting_{0};
  std::atomic<size_t> answered_{0};
};

class TelemetryForwarderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    leaf_port_ = pick_free_port();
    NatsServerOptions o;
    o.extra_config = "leafnodes { listen: \"127.0.0.1:" + std::to_string(leaf_port_) + "\" }";
    hub_ = std::make_unique<NatsServer>(o);
    std::string err;
    ASSERT_TRUE(hub_->start(&err)) << err;

    BusSpec spec;
    spec.site = kSite;
    spec.dir = dir_.file("bus");
    spec.client_port = pick_free_port();
    spec.mqtt_port = pick_free_port();
    spec.monitor_port = pick_free_port();
    spec.leaf_urls = {"nats-leaf://127.0.0.1:" + std::to_string(leaf_port_)};
    spoke_password_ = daemon::random_password(32);
    spec.spoke_password_hash = *daemon::bcrypt_hash(spoke_password_, daemon::kMinBcryptCost);
    BusTenant t{"acme", {}};
    t.devices.push_back({"pump-1", *daemon::bcrypt_hash(kDevicePassword, daemon::kMinBcryptCost),
                         DeviceScope::kDevice});
    spec.tenants = {t};
    mqtt_port_ = spec.mqtt_port;
    client_port_ = spec.client_port;
    bus_ = std::make_unique<BusSupervisor>(std::move(spec));
    ASSERT_TRUE(bus_->start().ok());

    ASSERT_EQ(natsConnection_ConnectTo(&hub_conn_, hub_->url().c_str()), NATS_OK);
    ASSERT_EQ(natsConnection_SubscribeSync(&tm_sub_, hub_conn_, "tm.>"), NATS_OK);
    ASSERT_EQ(natsConnection_Flush(hub_conn_), NATS_OK);
  }
  void TearDown() override {
    forwarder_.reset();
    barrier_.reset();
    if (tm_sub_ != nullptr) natsSubscription_Destroy(tm_sub_);
    if (hub_conn_ != nullptr) natsConnection_Destroy(hub_conn_);
    if (bus_) bus_->stop();
  }

  void start_forwarder(int batch, int pipeline) {
    TelemetryOptions o;
    o.nats_url = "nats://127.0.0.1:" + std::to_string(client_port_);
    o.user = kSpokeUser;
    o.password = spoke_password_;
    o.site = kSite;
    o.batch = batch;
    o.pipeline = pipeline;
    o.barrier_timeout = 3s;
    o.retry = 200ms;
    auto f = TelemetryForwarder::start(o);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    forwarder_ = std::move(*f);
  }

  // Whether the forwarder has made its stream (asked of the bus as the spoke).
  bool stream_made() {
    natsOptions* opts = nullptr;
    natsConnection* c = nullptr;
    natsOptions_Create(&opts);
    natsOptions_SetURL(opts, ("nats://127.0.0.1:" + std::to_string(client_port_)).c_str());
    natsOptions_SetUserInfo(opts, kSpokeUser, spoke_password_.c_str());
    bool made = false;
    if (natsConnection_Connect(&c, opts) == NATS_OK) {
      jsCtx* js = nullptr;
      jsStreamInfo* si = nullptr;
      if (natsConnection_JetStream(&js, c, nullptr) == NATS_OK &&
          js_GetStreamInfo(&si, js, kTelemetryStream, nullptr, nullptr) == NATS_OK) {
        made = true;
        jsStreamInfo_Destroy(si);
      }
      jsCtx_Destroy(js);
      natsConnection_Destroy(c);
    }
    natsOptions_Destroy(opts);
    return made;
  }

  // `count` messages "m<first>".."m<first+count-1>" from the device at QoS
  // 1, one connection (mosquitto_pub -l: a message per line of its input);
  // mosquitto_pub exits once the bus has acknowledged every one.
  void publish(int first, int count) {
    const std::string lines = dir_.file("lines-" + std::to_string(first));
    {
      std::ofstream out(lines);
      for (int i = first; i < first + count; ++i) out << "m" << i << "\n";
    }
    const std::string log = dir_.file("pub-" + std::to_string(first) + ".log");
    Process p;
    ProcessOptions po;
    po.log_path = log;
    std::string err;
    ASSERT_TRUE(
        p.start({"/bin/sh", "-c",
                 "exec mosquitto_pub -h 127.0.0.1 -p " + std::to_string(mqtt_port_) +
                     " -u pump-1@acme -P " + kDevicePassword + " -i pump-1-" +
                     std::to_string(first) + " -q 1 -t t/acme/d/pump-1/telemetry/v -l < " + lines},
                po, &err))
        << err;
    auto status = p.wait_exit(30s);
    if (!status) p.kill(SIGKILL);
    ASSERT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << "mosquitto_pub failed: " << (std::ostringstream() << std::ifstream(log).rdbuf()).str();
  }

  // The payloads received at the hub, in order, until `want` distinct
  // Canopy-Seq values or the timeout; `duplicates` counts messages whose
  // Canopy-Seq came before (delivery is at least once).
  std::vector<std::string> receive(size_t want, size_t* duplicates) {
    std::vector<std::string> got;
    uint64_t last_seq = 0;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
      natsMsg* m = nullptr;
      if (natsSubscription_NextMsg(&m, tm_sub_, 200) != NATS_OK) continue;
      const char* seq = nullptr;
      uint64_t s = 0;
      if (natsMsgHeader_Get(m, "Canopy-Seq", &seq) == NATS_OK) s = std::stoull(seq);
      if (s != 0 && s <= last_seq) {
        ++*duplicates;
      } else {
        last_seq = s;
        got.emplace_back(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
      }
      natsMsg_Destroy(m);
    }
    return got;
  }

  static std::vector<std::string> expected(int count) {
    std::vector<std::string> v;
    for (int i = 0; i < count; ++i) v.push_back("m" + std::to_string(i));
    return v;
  }

  TempDir dir_{"canopy-forwarder-test-"};
  int leaf_port_ = 0, mqtt_port_ = 0, client_port_ = 0;
  std::string spoke_password_;
  std::unique_ptr<NatsServer> hub_;
  std::unique_ptr<BusSupervisor> bus_;
  natsConnection* hub_conn_ = nullptr;
  natsSubscription* tm_sub_ = nullptr;
  std::unique_ptr<HeldBarrier> barrier_;
  std::unique_ptr<TelemetryForwarder> forwarder_;
};

// With 60 messages buffered and batches of 5, the forwarder keeps three
// batches out at once (the window) while the hub holds its echoes, never
// more, and every message arrives once, in order.
TEST_F(TelemetryForwarderTest, KeepsAWindowOfBatchesOutAndConfirmsThemInOrder) {
  ASSERT_NO_FATAL_FAILURE(start_forwarder(/*batch=*/5, /*pipeline=*/3));
  // No hub barrier yet: the forwarder makes its stream, then finds no hub.
  ASSERT_TRUE(wait_until([&] { return stream_made(); }, 10s, 50ms));
  ASSERT_NO_FATAL_FAILURE(publish(0, 60));
  ASSERT_TRUE(wait_until([&] { return forwarder_->stats().buffered == 60; }, 10s, 50ms))
      << forwarder_->stats().buffered << " buffered";

  barrier_ = std::make_unique<HeldBarrier>(hub_conn_, /*hold_until=*/3, 300ms);
  ASSERT_TRUE(barrier_->start());
  size_t duplicates = 0;
  EXPECT_EQ(receive(60, &duplicates), expected(60));
  EXPECT_EQ(duplicates, 0u);
  ASSERT_TRUE(wait_until(
      [&] {
        const TelemetryStats s = forwarder_->stats();
        return s.forwarded == 60 && s.buffered == 0 && s.uplink;
      },
      10s, 50ms))
      << forwarder_->stats().forwarded << " forwarded, " << forwarder_->stats().buffered
      << " buffered";
  EXPECT_EQ(barrier_->max_waiting(), 3u) << "batches out at once, the window";
  // 12 batches and the barrier that found the hub.
  EXPECT_GE(barrier_->answered(), 13u);
}

// When the hub stops answering with batches out, all of them go back to the
// stream and come again, in order, once it answers: nothing is lost and the
// counts do not double.
TEST_F(TelemetryForwarderTest, BatchesOutWhenTheHubStopsAnsweringComeAgainInOrder) {
  ASSERT_NO_FATAL_FAILURE(start_forwarder(/*batch=*/5, /*pipeline=*/3));
  barrier_ = std::make_unique<HeldBarrier>(hub_conn_, /*hold_until=*/3, 300ms);
  ASSERT_TRUE(barrier_->start());
  ASSERT_TRUE(wait_until([&] { return stream_made(); }, 10s, 50ms));
  ASSERT_NO_FATAL_FAILURE(publish(0, 20));
  size_t duplicates = 0;
  EXPECT_EQ(receive(20, &duplicates), expected(20));
  ASSERT_TRUE(wait_until([&] { return forwarder_->stats().forwarded == 20; }, 10s, 50ms));

  // Mute: the next batches are published at the hub but never confirmed.
  barrier_->set_mute(true);
  ASSERT_NO_FATAL_FAILURE(publish(20, 40));
  ASSERT_TRUE(wait_until([&] { return !forwarder_->stats().uplink; }, 20s, 50ms))
      << "the forwarder did not notice the silent hub";
  EXPECT_EQ(forwarder_->stats().forwarded, 20u);
  barrier_->set_mute(false);

  std::vector<std::string> rest = receive(40, &duplicates);
  std::vector<std::string> want;
  for (int i = 20; i < 60; ++i) want.push_back("m" + std::to_string(i));
  EXPECT_EQ(rest, want);
  EXPECT_GT(duplicates, 0u) << "the unconfirmed batches were published again";
  ASSERT_TRUE(wait_until(
      [&] {
        const TelemetryStats s = forwarder_->stats();
        return s.forwarded == 60 && s.buffered == 0 && s.uplink && s.dropped == 0;
      },
      20s, 50ms))
      << forwarder_->stats().forwarded << " forwarded, " << forwarder_->stats().buffered
      << " buffered";
}

}  // namespace
}  // namespace canopy::spoke::bus

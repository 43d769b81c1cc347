// device.ingest: telemetry messages a second from N simulated MQTT devices,
// end to end through Canopy's path, against Debian's plain mosquitto broker
// in the same run (issue 14, benchmark 1).
//
// Canopy's path: each device is a real MQTT 3.1.1 connection
// (bench/mqtt_client.h) to the site's nats-server run by BusSupervisor (the
// spoke's code: the generated config, a tenant account, bcrypt device users); the
// message is stored in the site's TELEMETRY stream, fetched by the spoke's
// TelemetryForwarder, published over the leaf link to the hub's nats-server
// and confirmed by the hub's TelemetryBarrier (canopy-hub's code), and
// counted by a NATS subscriber at the hub on tm.>. mosquitto's path: the same
// devices, the same messages, to `mosquitto` (Debian's, no persistence) and a
// local MQTT subscriber on t/#, one hop.
//
// Each run: every device publishes --messages messages of --payload bytes as
// fast as it can (QoS 0; or QoS 1 with at most --inflight unacknowledged
// per device, as MQTT clients do), and the clock stops when the subscriber
// has the last one (or --timeout passes: then what arrived counts, and the
// loss is reported). Figures: messages a second for each path and QoS, and
// the ratio canopy/mosquitto (target >= 1). For reference, no target: the
// engine's own hop, the same devices to a site nats-server with the same
// generated config but no telemetry stream, forwarder or leaf link, and a
// subscriber at the site (site_nats_one_hop_*): what Canopy's durable buffer
// and uplink add is the difference.
//
// --uplink-rtt-ms N puts the leaf link (the site's uplink) behind a relay
// that delays each direction by N/2 ms (bench/delay_proxy.h): the forwarder's
// rate over a WAN's round trip. Every figure's name then ends in _rtt<N>ms.
//
//   canopy_device_ingest_bench [--devices 20] [--messages 2000] [--payload 64]
//                              [--inflight 32] [--timeout 120] [--uplink-rtt-ms 0]
#include <nats/nats.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/delay_proxy.h"
#include "bench/mqtt_client.h"
#include "bench/report.h"
#include "daemon/password_hash.h"
#include "hub/telemetry_barrier.h"
#include "spoke/bus/supervisor.h"
#include "spoke/bus/telemetry_forwarder.h"
#include "sync/nats_transport.h"
#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace canopy::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kBench[] = "device.ingest";

struct Args {
  int devices = 20;
  int messages = 2000;
  int payload = 64;
  int inflight = 32;
  int timeout_s = 120;
  int uplink_rtt_ms = 0;
};

struct DeviceCred {
  std::string user, password, topic;
};

// Every device publishes `messages` in its own thread; returns false if a
// device could not connect or lost its connection.
bool run_devices(int port, const std::vector<DeviceCred>& devices, const Args& a, int qos,
                 const std::string& tag) {
  std::atomic<bool> ok{true};
  std::vector<std::unique_ptr<MqttClient>> conns;
  for (size_t i = 0; i < devices.size(); ++i) {
    conns.push_back(std::make_unique<MqttClient>());
    if (!conns.back()->connect(port, tag + "-" + std::to_string(i), devices[i].user,
                               devices[i].password)) {
      spdlog::error("{}: device {} cannot connect", tag, devices[i].user);
      return false;
    }
  }
  const std::string payload(static_cast<size_t>(a.payload), 'x');
  std::vector<std::thread> threads;
  for (size_t i = 0; i < devices.size(); ++i) {
    threads.emplace_back([&, i] {
      MqttClient& c = *conns[i];
      int unacked = 0;
      uint8_t type = 0;
      std::string body;
      for (int m = 0; m < a.messages; ++m) {
        c.publish(devices[i].topic, payload, qos);
        if (qos == 1) {
          ++unacked;
          if (unacked >= a.inflight) {
            if (!c.flush()) return ok.store(false);
            while (unacked >= a.inflight / 2) {
              if (!c.read_packet(&type, &body)) return ok.store(false);
              if ((type >> 4) == 4) --unacked;
            }
          }
        } else if ((m + 1) % 64 == 0 && !c.flush()) {
          return ok.store(false);
        }
      }
      if (!c.flush()) return ok.store(false);
      while (qos == 1 && unacked > 0) {
        if (!c.read_packet(&type, &body)) return ok.store(false);
        if ((type >> 4) == 4) --unacked;
      }
      if (!c.ping()) ok.store(false);
    });
  }
  for (auto& t : threads) t.join();
  return ok.load();
}

struct Result {
  double rate = 0;
  uint64_t received = 0;
};

// The site's bus as canopy-spoke generates it: tenant acme with `devices`
// devices (bcrypt cost 4), listeners on free ports; `spoke_password` is the
// CANOPY account's user's. Fills `devices` with their credentials.
spoke::bus::BusSpec site_bus_spec(const std::string& dir, const Args& a,
                                  const std::string& spoke_password,
                                  std::vector<DeviceCred>* devices) {
  spoke::bus::BusSpec spec;
  spec.site = "shop-1";
  spec.dir = dir;
  spec.client_port = testing::pick_free_port();
  spec.mqtt_port = testing::pick_free_port();
  spec.monitor_port = testing::pick_free_port();
  spec.spoke_password_hash = *daemon::bcrypt_hash(spoke_password, daemon::kMinBcryptCost);
  const std::string device_hash = *daemon::bcrypt_hash("device-pw", daemon::kMinBcryptCost);
  spoke::bus::BusTenant t{"acme", {}};
  for (int i = 0; i < a.devices; ++i) {
    const std::string id = "dev-" + std::to_string(i);
    t.devices.push_back({id, device_hash, spoke::bus::DeviceScope::kDevice});
    devices->push_back({id + "@acme", "device-pw", "t/acme/d/" + id + "/telemetry/v"});
  }
  spec.tenants = {t};
  return spec;
}

// Messages counted at a path's subscriber: how many, and when the last came.
struct Arrivals {
  std::atomic<uint64_t> received{0};
  std::atomic<int64_t> last_ns{0};
  void note() {
    received.fetch_add(1);
    last_ns.store(Clock::now().time_since_epoch().count());
  }
  // A NATS.c message handler; `closure` is the Arrivals.
  static void on_nats_msg(natsConnection*, natsSubscription*, natsMsg* m, void* closure) {
    static_cast<Arrivals*>(closure)->note();
    natsMsg_Destroy(m);
  }
};

// One run of the devices against the broker at `port`: waits until
// `arrivals` has every message (or the timeout) and gives the rate from the
// first publish to the last arrival.
Result run_path(int port, const std::vector<DeviceCred>& devices, const Args& a, int qos,
                const std::string& tag, const Arrivals& arrivals) {
  const uint64_t base = arrivals.received.load();
  const auto t0 = Clock::now();
  if (!run_devices(port, devices, a, qos, tag + "-q" + std::to_string(qos))) {
    fail_bench(kBench, tag + ": a device failed");
  }
  const uint64_t want = static_cast<uint64_t>(a.devices) * static_cast<uint64_t>(a.messages);
  const auto deadline = t0 + std::chrono::seconds(a.timeout_s);
  while (arrivals.received.load() - base < want && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  Result r;
  r.received = arrivals.received.load() - base;
  const Clock::time_point last = Clock::time_point(Clock::duration(arrivals.last_ns.load()));
  r.rate = static_cast<double>(r.received) / std::chrono::duration<double>(last - t0).count();
  return r;
}

// --- The engine's own hop, for reference: the same devices to a site bus
// (the same generated config) with no telemetry stream and no forwarder, and
// a NATS subscriber in the CANOPY account on t.> (the tenants' import): what
// nats-server's MQTT listener does before Canopy adds anything.
class SiteHopPath {
 public:
  bool start(const Args& a) {
    password_ = daemon::random_password(32);
    spoke::bus::BusSpec spec = site_bus_spec(dir_.file("bus"), a, password_, &devices_);
    mqtt_port_ = spec.mqtt_port;
    const std::string url = "nats://127.0.0.1:" + std::to_string(spec.client_port);
    bus_ = std::make_unique<spoke::bus::BusSupervisor>(std::move(spec));
    if (Status s = bus_->start(); !s.ok()) {
      spdlog::error("site hop bus: {}", s.to_string());
      return false;
    }
    natsOptions* o = nullptr;
    natsOptions_Create(&o);
    natsOptions_SetURL(o, url.c_str());
    natsOptions_SetUserInfo(o, spoke::bus::kSpokeUser, password_.c_str());
    const bool ok = natsConnection_Connect(&conn_, o) == NATS_OK &&
                    natsConnection_Subscribe(&sub_, conn_, "t.>", &Arrivals::on_nats_msg,
                                             &arrivals_) == NATS_OK &&
                    natsSubscription_SetPendingLimits(sub_, -1, -1) == NATS_OK &&
                    natsConnection_Flush(conn_) == NATS_OK;
    natsOptions_Destroy(o);
    return ok;
  }
  ~SiteHopPath() {
    if (sub_ != nullptr) natsSubscription_Destroy(sub_);
    if (conn_ != nullptr) natsConnection_Destroy(conn_);
    if (bus_) bus_->stop();
  }
  Result run(const Args& a, int qos) {
    return run_path(mqtt_port_, devices_, a, qos, "site hop", arrivals_);
  }

 private:
  testing::TempDir dir_{"canopy-bench-sitehop-"};
  std::string password_;
  int mqtt_port_ = 0;
  std::vector<DeviceCred> devices_;
  std::unique_ptr<spoke::bus::BusSupervisor> bus_;
  natsConnection* conn_ = nullptr;
  natsSubscription* sub_ = nullptr;
  Arrivals arrivals_;
};

// --- Canopy: hub nats-server, site bus, forwarder, barrier, hub subscriber.
class CanopyPath {
 public:
  bool start(const Args& a) {
    leaf_port_ = testing::pick_free_port();
    testing::NatsServerOptions o;
    o.extra_config = "leafnodes { listen: \"127.0.0.1:" + std::to_string(leaf_port_) + "\" }";
    hub_ = std::make_unique<testing::NatsServer>(o);
    std::string err;
    if (!hub_->start(&err)) {
      spdlog::error("hub nats-server: {}", err);
      return false;
    }
    password_ = daemon::random_password(32);
    spoke::bus::BusSpec spec = site_bus_spec(dir_.file("bus"), a, password_, &devices_);
    int uplink_port = leaf_port_;
    if (a.uplink_rtt_ms > 0) {
      uplink_ =
          std::make_unique<DelayProxy>(leaf_port_, std::chrono::milliseconds(a.uplink_rtt_ms / 2));
      if (!uplink_->start(&err)) {
        spdlog::error("{}", err);
        return false;
      }
      uplink_port = uplink_->port();
    }
    spec.leaf_urls = {"nats-leaf://127.0.0.1:" + std::to_string(uplink_port)};
    mqtt_port_ = spec.mqtt_port;
    const int client_port = spec.client_port;
    bus_ = std::make_unique<spoke::bus::BusSupervisor>(std::move(spec));
    if (Status s = bus_->start(); !s.ok()) {
      spdlog::error("bus: {}", s.to_string());
      return false;
    }
    sync::NatsOptions no;
    no.urls = {hub_->url()};
    no.name = "bench hub";
    auto hub_nats = sync::NatsTransport::connect(no);
    if (!hub_nats.ok()) return false;
    hub_nats_ = std::move(*hub_nats);
    auto b = hub::TelemetryBarrier::start(hub_nats_.get());
    if (!b.ok()) return false;
    barrier_ = std::move(*b);
    spoke::bus::TelemetryOptions to;
    to.nats_url = "nats://127.0.0.1:" + std::to_string(client_port);
    to.user = spoke::bus::kSpokeUser;
    to.password = password_;
    to.site = "shop-1";
    auto f = spoke::bus::TelemetryForwarder::start(to);
    if (!f.ok()) return false;
    forwarder_ = std::move(*f);
    if (natsConnection_ConnectTo(&sub_conn_, hub_->url().c_str()) != NATS_OK) return false;
    if (natsConnection_Subscribe(&sub_, sub_conn_, "tm.>", &Arrivals::on_nats_msg, &arrivals_) !=
        NATS_OK) {
      return false;
    }
    natsSubscription_SetPendingLimits(sub_, -1, -1);
    natsConnection_Flush(sub_conn_);
    // Warm: one message through, so the leaf link and interest are there.
    MqttClient warm;
    if (!warm.connect(mqtt_port_, "warm", devices_[0].user, devices_[0].password)) return false;
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (arrivals_.received.load() == 0 && Clock::now() < deadline) {
      warm.publish(devices_[0].topic, "warm", 0);
      warm.flush();
      warm.ping();
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    if (arrivals_.received.load() == 0) {
      spdlog::error("canopy path: no telemetry reached the hub");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
    return true;
  }
  ~CanopyPath() {
    if (sub_ != nullptr) {
      natsSubscription_Unsubscribe(sub_);
      natsSubscription_Destroy(sub_);
    }
    if (sub_conn_ != nullptr) natsConnection_Destroy(sub_conn_);
    forwarder_.reset();
    barrier_.reset();
    if (bus_) bus_->stop();
  }
  Result run(const Args& a, int qos) {
    return run_path(mqtt_port_, devices_, a, qos, "canopy", arrivals_);
  }

 private:
  testing::TempDir dir_{"canopy-bench-ingest-"};
  int leaf_port_ = 0;
  int mqtt_port_ = 0;
  std::string password_;
  std::vector<DeviceCred> devices_;
  std::unique_ptr<testing::NatsServer> hub_;
  std::unique_ptr<DelayProxy> uplink_;  // --uplink-rtt-ms
  std::unique_ptr<spoke::bus::BusSupervisor> bus_;
  std::unique_ptr<sync::NatsTransport> hub_nats_;
  std::unique_ptr<hub::TelemetryBarrier> barrier_;
  std::unique_ptr<spoke::bus::TelemetryForwarder> forwarder_;
  natsConnection* sub_conn_ = nullptr;
  natsSubscription* sub_ = nullptr;
  Arrivals arrivals_;

 public:
  const std::vector<DeviceCred>& devices() const { return devices_; }
};

// --- mosquitto: the broker and a local subscriber on t/#.
class MosquittoPath {
 public:
  bool start(const Args& a) {
    port_ = testing::pick_free_port();
    const std::string conf = dir_.file("mosquitto.conf");
    std::ofstream(conf) << "listener " << port_ << " 127.0.0.1\n"
                        << "allow_anonymous true\n"
                        << "persistence false\n"
                        << "set_tcp_nodelay true\n"
                        << "max_queued_messages 0\n"
                        << "max_inflight_messages 0\n"
                        << "log_dest stderr\nlog_type error\n";
    testing::ProcessOptions po;
    po.log_path = dir_.file("mosquitto.log");
    std::string err;
    if (!proc_.start({"/usr/sbin/mosquitto", "-c", conf}, po, &err)) {
      spdlog::error("mosquitto: {}", err);
      return false;
    }
    if (!testing::wait_until([&] { return sub_.connect(port_, "sub", "", ""); },
                             std::chrono::seconds(10), std::chrono::milliseconds(100))) {
      return false;
    }
    if (sub_.subscribe("t/#", 0) < 0) return false;
    for (int i = 0; i < a.devices; ++i) {
      const std::string id = "dev-" + std::to_string(i);
      devices_.push_back({"", "", "t/acme/d/" + id + "/telemetry/v"});
    }
    reader_ = std::thread([this] {
      uint8_t type = 0;
      std::string body;
      while (sub_.read_packet(&type, &body)) {
        if ((type >> 4) == 3) arrivals_.note();
      }
    });
    return true;
  }
  ~MosquittoPath() { stop(); }
  void stop() {
    proc_.kill(SIGKILL);
    if (reader_.joinable()) reader_.join();
  }
  Result run(const Args& a, int qos) {
    return run_path(port_, devices_, a, qos, "mosquitto", arrivals_);
  }

 private:
  testing::TempDir dir_{"canopy-bench-mosquitto-"};
  int port_ = 0;
  testing::Process proc_;
  MqttClient sub_;
  std::vector<DeviceCred> devices_;
  std::thread reader_;
  Arrivals arrivals_;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (k == "--devices")
      a.devices = v;
    else if (k == "--messages")
      a.messages = v;
    else if (k == "--payload")
      a.payload = v;
    else if (k == "--inflight")
      a.inflight = v;
    else if (k == "--timeout")
      a.timeout_s = v;
    else if (k == "--uplink-rtt-ms")
      a.uplink_rtt_ms = v;
    else
      fail_bench(kBench, "unknown argument " + k);
  }
  if (a.devices < 1 || a.messages < 1 || a.payload < 1 || a.inflight < 2 || a.timeout_s < 1 ||
      a.uplink_rtt_ms < 0) {
    fail_bench(kBench, "bad arguments");
  }
  return a;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) {
  using namespace canopy::bench;
  spdlog::set_default_logger(spdlog::stderr_color_mt("bench"));
  spdlog::set_level(spdlog::level::warn);
  const Args a = parse(argc, argv);
  const uint64_t want = static_cast<uint64_t>(a.devices) * static_cast<uint64_t>(a.messages);
  CanopyPath canopy;
  if (!canopy.start(a)) fail_bench(kBench, "canopy path did not start");
  MosquittoPath mosq;
  if (!mosq.start(a)) fail_bench(kBench, "mosquitto did not start");
  SiteHopPath site;
  if (!site.start(a)) fail_bench(kBench, "the reference site bus did not start");
  for (int qos : {0, 1}) {
    const std::string q = "qos" + std::to_string(qos);
    const std::string rtt =
        a.uplink_rtt_ms > 0 ? "_rtt" + std::to_string(a.uplink_rtt_ms) + "ms" : "";
    const Result c = canopy.run(a, qos);
    const Result m = mosq.run(a, qos);
    const Result h = site.run(a, qos);
    std::fprintf(stderr, "%s: canopy %lu/%lu at %.0f msg/s, mosquitto %lu/%lu at %.0f msg/s\n",
                 q.c_str(), static_cast<unsigned long>(c.received),
                 static_cast<unsigned long>(want), c.rate, static_cast<unsigned long>(m.received),
                 static_cast<unsigned long>(want), m.rate);
    emit_figure(kBench, q + "_canopy_msgs_per_s" + rtt, c.rate);
    emit_figure(kBench, q + "_mosquitto_msgs_per_s" + rtt, m.rate);
    emit_figure(kBench, q + "_canopy_lost" + rtt, static_cast<double>(want - c.received), "0");
    emit_figure(kBench, q + "_mosquitto_lost" + rtt, static_cast<double>(want - m.received));
    // The engine alone (nats-server's MQTT, one hop at the site), no target:
    // what bounds Canopy's end to end on this machine.
    std::fprintf(stderr, "%s: site nats-server one hop %lu/%lu at %.0f msg/s\n", q.c_str(),
                 static_cast<unsigned long>(h.received), static_cast<unsigned long>(want), h.rate);
    emit_figure(kBench, q + "_site_nats_one_hop_msgs_per_s" + rtt, h.rate);
    emit_figure(kBench, q + "_site_nats_one_hop_vs_mosquitto" + rtt,
                m.rate > 0 ? h.rate / m.rate : 0);
    // Over a delayed uplink the ratio is for comparison only: mosquitto's
    // hop stays on loopback.
    emit_figure(kBench, q + "_ratio" + rtt, m.rate > 0 ? c.rate / m.rate : 0,
                rtt.empty() ? ">= 1" : "");
  }
  mosq.stop();  // _Exit runs no destructors (the buses die with this process)
  std::fflush(nullptr);
  std::_Exit(0);
}

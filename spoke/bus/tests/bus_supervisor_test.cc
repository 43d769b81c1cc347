// The site's device bus with real parts: Debian's nats-server run by the
// BusSupervisor as a leaf node of a hub-side nats-server, real MQTT clients
// (mosquitto_pub/mosquitto_sub from mosquitto-clients, and python3-paho-mqtt
// from /usr/bin/python3), a NATS.c subscriber at the hub.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <set>

#include "daemon/password_hash.h"
#include "spoke/bus/bus_spec.h"
#include "spoke/bus/mqtt_publisher.h"
#include "spoke/bus/supervisor.h"
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

// A paho-mqtt client: "sub" prints the granted QoS and the first message
// (with its retain flag) then exits; "pub" publishes at QoS 1, retained, and
// exits once acknowledged. Prints "connack N" first (0: accepted).
constexpr char kPahoScript[] = R"PY(
import sys, time
import paho.mqtt.client as mqtt
host, port, user, pw, cid, mode, topic = sys.argv[1:8]
payload = sys.argv[8] if len(sys.argv) > 8 else ""
done = {}
c = mqtt.Client(client_id=cid, clean_session=True)
c.username_pw_set(user, pw)
def on_connect(cl, ud, flags, rc):
    print("connack", rc, flush=True)
    if rc != 0:
        done["x"] = 1
    elif mode == "sub":
        cl.subscribe(topic, qos=1)
    else:
        cl.publish(topic, payload, qos=1, retain=True)
def on_subscribe(cl, ud, mid, granted):
    print("granted", *granted, flush=True)
    if 128 in granted:
        done["x"] = 1
def on_message(cl, ud, msg):
    print("message", msg.topic, msg.payload.decode(), "retained" if msg.retain else "live", flush=True)
    done["x"] = 1
def on_publish(cl, ud, mid):
    print("published", flush=True)
    done["x"] = 1
c.on_connect, c.on_subscribe, c.on_message, c.on_publish = on_connect, on_subscribe, on_message, on_publish
c.connect(host, int(port))
c.loop_start()
deadline = time.time() + 5
while "x" not in done and time.time() < deadline:
    time.sleep(0.02)
c.loop_stop()
c.disconnect()
)PY";

struct ToolRun {
  bool finished = false;
  int exit_code = -1;
  std::string output;
};

struct Device {
  std::string tenant;
  std::string id;
  std::string password;
  std::string user() const { return device_user(tenant, id); }
};

class BusSupervisorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (const char* pw :
         {"pw-pump-1-acme", "pw-gw-acme", "pw-pump-1-globex", "pw-pump-2-acme", "pw-x-initech"}) {
      auto h = daemon::bcrypt_hash(pw, daemon::kMinBcryptCost);
      ASSERT_TRUE(h.ok()) << h.status().to_string();
      (*hashes_)[pw] = *h;
    }
  }

  void SetUp() override {
    log_ = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(2000);
    spdlog::default_logger()->sinks().push_back(log_);
    leaf_port_ = pick_free_port();
    make_hub("");

    spec_.site = "shop-1";
    spec_.dir = dir_.file("bus");
    spec_.client_port = pick_free_port();
    spec_.mqtt_port = pick_free_port();
    spec_.monitor_port = pick_free_port();
    spec_.leaf_urls = {"nats-leaf://127.0.0.1:" + std::to_string(leaf_port_)};
    spoke_password_ = daemon::random_password(32);
    auto spoke_hash = daemon::bcrypt_hash(spoke_password_, daemon::kMinBcryptCost);
    ASSERT_TRUE(spoke_hash.ok());
    spec_.spoke_password_hash = *spoke_hash;
    spec_.tenants = {{"acme",
                      {{"pump-1", hash("pw-pump-1-acme"), DeviceScope::kDevice},
                       {"gw", hash("pw-gw-acme"), DeviceScope::kTenant}}},
                     {"globex", {{"pump-1", hash("pw-pump-1-globex"), DeviceScope::kDevice}}}};
    paho_script_ = dir_.file("paho_client.py");
    std::ofstream(paho_script_) << kPahoScript;
  }

  void TearDown() override {
    sup_.reset();
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), log_), sinks.end());
    if (HasFailure()) {
      std::cerr << "--- supervisor log tail:\n"
                << log_text() << "--- hub nats-server log tail:\n"
                << hub_->log_tail() << "\n";
    }
  }

  static const std::string& hash(const std::string& pw) { return hashes_->at(pw); }

  // The hub-side nats-server, with a leaf listener and `extra` config.
  void make_hub(const std::string& extra) {
    NatsServerOptions o;
    o.extra_config =
        "leafnodes { listen: \"127.0.0.1:" + std::to_string(leaf_port_) + "\" }\n" + extra;
    hub_ = std::make_unique<NatsServer>(o);
  }

  void start_hub() {
    std::string error;
    ASSERT_TRUE(hub_->start(&error)) << error;
  }

  void start_bus(SupervisorOptions o = {}) {
    o.min_backoff = 100ms;
    sup_ = std::make_unique<BusSupervisor>(spec_, o);
    Status st = sup_->start();
    ASSERT_TRUE(st.ok()) << st.to_string();
  }

  std::string log_text() const {
    std::string out;
    for (const auto& l : log_->last_formatted()) out += l;
    return out;
  }

  // Runs a client to completion (or kills it at `timeout`).
  ToolRun run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 10s) {
    const std::string log = dir_.file("tool-" + std::to_string(++runs_) + ".log");
    Process p;
    ProcessOptions o;
    o.log_path = log;
    std::string error;
    ToolRun r;
    if (!p.start(argv, o, &error)) {
      r.output = error;
      return r;
    }
    auto status = p.wait_exit(timeout);
    if (!status) p.kill(SIGKILL);
    r.finished = status && WIFEXITED(*status);
    r.exit_code = r.finished ? WEXITSTATUS(*status) : -1;
    std::ifstream in(log);
    r.output.assign(std::istreambuf_iterator<char>(in), {});
    return r;
  }

  std::vector<std::string> mqtt_args(const std::string& tool, const Device& d,
                                     const std::string& topic) {
    return {tool,     "-h", "127.0.0.1", "-p", std::to_string(spec_.mqtt_port),     "-u",
            d.user(), "-P", d.password,  "-i", d.id + "-" + std::to_string(++ids_), "-q",
            "1",      "-t", topic};
  }

  // mosquitto_sub for one message, waiting at most `wait_s` seconds (-W).
  ToolRun sub_one(const Device& d, const std::string& topic, int wait_s = 5) {
    auto a = mqtt_args("mosquitto_sub", d, topic);
    a.insert(a.end(), {"-C", "1", "-W", std::to_string(wait_s), "-v"});
    return run(a);
  }

  ToolRun pub(const Device& d, const std::string& topic, const std::string& msg,
              bool retain = false) {
    auto a = mqtt_args("mosquitto_pub", d, topic);
    a.insert(a.end(), {"-m", msg});
    if (retain) a.push_back("-r");
    return run(a);
  }

  ToolRun paho(const Device& d, const std::string& mode, const std::string& topic,
               const std::string& payload = "") {
    return run({"/usr/bin/python3", paho_script_, "127.0.0.1", std::to_string(spec_.mqtt_port),
                d.user(), d.password, "paho-" + d.id + "-" + std::to_string(++ids_), mode, topic,
                payload});
  }

  // Publishes from `d` until a hub subscriber on `hub_subject` gets it (the
  // leaf link and the hub's interest take a moment to be in place).
  bool reaches_hub(const Device& d, const std::string& topic, const std::string& hub_subject,
                   std::string* got_subject, std::chrono::milliseconds timeout = 10s) {
    natsConnection* nc = nullptr;
    if (natsConnection_ConnectTo(&nc, hub_->url().c_str()) != NATS_OK) return false;
    natsSubscription* sub = nullptr;
    natsConnection_SubscribeSync(&sub, nc, hub_subject.c_str());
    natsConnection_Flush(nc);
    bool got = false;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int i = 0; !got && std::chrono::steady_clock::now() < deadline; ++i) {
      const std::string payload = "reading-" + std::to_string(i);
      if (pub(d, topic, payload).exit_code != 0) break;
      natsMsg* m = nullptr;
      while (natsSubscription_NextMsg(&m, sub, 300) == NATS_OK) {
        const std::string data(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
        if (data == payload) {
          *got_subject = natsMsg_GetSubject(m);
          got = true;
        }
        natsMsg_Destroy(m);
      }
    }
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    return got;
  }

  static std::unique_ptr<std::map<std::string, std::string>> hashes_;
  TempDir dir_{"canopy-bus-test-"};
  int leaf_port_ = 0;
  std::unique_ptr<NatsServer> hub_;
  BusSpec spec_;
  std::unique_ptr<BusSupervisor> sup_;
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> log_;
  std::string paho_script_;
  std::string spoke_password_;
  int runs_ = 0;
  int ids_ = 0;

  const Device pump_ = {"acme", "pump-1", "pw-pump-1-acme"};
  const Device gw_ = {"acme", "gw", "pw-gw-acme"};
  const Device globex_pump_ = {"globex", "pump-1", "pw-pump-1-globex"};
};

std::unique_ptr<std::map<std::string, std::string>> BusSupervisorTest::hashes_ =
    std::make_unique<std::map<std::string, std::string>>();

TEST_F(BusSupervisorTest, DeviceMessagesReachTheHubThroughTheLeaf) {
  ASSERT_NO_FATAL_FAILURE(start_hub());
  ASSERT_NO_FATAL_FAILURE(start_bus());
  std::string subject;
  ASSERT_TRUE(reaches_hub(pump_, "t/acme/d/pump-1/temp", "t.acme.>", &subject));
  EXPECT_EQ(subject, "t.acme.d.pump-1.temp");
  // The server's log is in the spoke's log, prefixed.
  EXPECT_NE(log_text().find("bus nats-server:"), std::string::npos);
}

// A hub running JetStream of its own (domain "hub"): the site's JetStream
// (domain site-shop-1) and MQTT are unaffected, and messages still go up.
TEST_F(BusSupervisorTest, AHubWithJetStreamDoesNotDisturbTheSiteBus) {
  make_hub("jetstream { store_dir: \"" + dir_.file("hub-js") + "\", domain: \"hub\" }");
  ASSERT_NO_FATAL_FAILURE(start_hub());
  ASSERT_NO_FATAL_FAILURE(start_bus());
  ASSERT_EQ(pub(gw_, "t/acme/d/pump-1/desired", "v1", /*retain=*/true).exit_code, 0);
  EXPECT_EQ(sub_one(pump_, "t/acme/d/pump-1/desired").output, "t/acme/d/pump-1/desired v1\n");
  std::string subject;
  ASSERT_TRUE(reaches_hub(pump_, "t/acme/d/pump-1/temp", "t.acme.>", &subject));
  EXPECT_EQ(subject, "t.acme.d.pump-1.temp");
}

TEST_F(BusSupervisorTest, RetainedMessagesReachLateSubscribersAndSurviveAKill) {
  ASSERT_NO_FATAL_FAILURE(start_bus());  // no hub: the bus is local
  ToolRun p = pub(gw_, "t/acme/d/pump-1/desired", "v1", /*retain=*/true);
  ASSERT_EQ(p.exit_code, 0) << p.output;

  ToolRun s = sub_one(pump_, "t/acme/d/pump-1/desired");
  EXPECT_EQ(s.exit_code, 0) << s.output;
  EXPECT_EQ(s.output, "t/acme/d/pump-1/desired v1\n");
  ToolRun py = paho(pump_, "sub", "t/acme/d/pump-1/desired");
  EXPECT_NE(py.output.find("connack 0\ngranted 1\nmessage t/acme/d/pump-1/desired v1 retained"),
            std::string::npos)
      << py.output;

  // paho publishes a retained report; mosquitto_sub (as the gateway) reads it.
  py = paho(pump_, "pub", "t/acme/d/pump-1/reported", "r1");
  EXPECT_NE(py.output.find("published"), std::string::npos) << py.output;
  s = sub_one(gw_, "t/acme/d/pump-1/reported");
  EXPECT_EQ(s.output, "t/acme/d/pump-1/reported r1\n");

  // SIGKILL: the supervisor starts a new server; the retained messages are in
  // the site's JetStream.
  const pid_t first = sup_->pid();
  ASSERT_GT(first, 0);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(wait_until([&] { return sup_->starts() == 2 && sup_->ready(); }, 10s))
      << "not restarted";
  EXPECT_NE(sup_->pid(), first);
  s = sub_one(pump_, "t/acme/d/pump-1/desired");
  EXPECT_EQ(s.output, "t/acme/d/pump-1/desired v1\n");
  py = paho(gw_, "sub", "t/acme/d/pump-1/reported");
  EXPECT_NE(py.output.find("message t/acme/d/pump-1/reported r1 retained"), std::string::npos)
      << py.output;
  EXPECT_NE(log_text().find("killed by signal 9"), std::string::npos);

  // Dying again soon after: the wait before the next start doubles.
  ASSERT_EQ(::kill(sup_->pid(), SIGKILL), 0);
  ASSERT_TRUE(wait_until([&] { return sup_->starts() == 3 && sup_->ready(); }, 10s));
  const std::string log = log_text();
  const size_t first_wait = log.find("starting it again in 100 ms");
  ASSERT_NE(first_wait, std::string::npos) << log;
  EXPECT_NE(log.find("starting it again in 200 ms", first_wait), std::string::npos) << log;
}

// The spoke's desired twins go out pipelined (MqttPublisher::
// publish_retained_all): each PUBLISH is acknowledged by nats-server and kept
// as the topic's retained message; a connection that breaks fails what it
// did not acknowledge, with the reason.
TEST_F(BusSupervisorTest, PipelinedRetainedPublishesAreEachAcknowledgedAndKept) {
  ASSERT_NO_FATAL_FAILURE(start_bus());
  MqttPublisher mqtt;
  Status st = mqtt.connect("127.0.0.1", spec_.mqtt_port, "_canopy-test-acme",
                           spoke_mqtt_user("acme"), spoke_password_);
  ASSERT_TRUE(st.ok()) << st.to_string();
  std::vector<std::string> topics, payloads;
  for (int i = 0; i < 500; ++i) {
    topics.push_back("t/acme/d/dev-" + std::to_string(i) + "/desired");
    payloads.push_back(R"({"n":)" + std::to_string(i) + "}");
  }
  topics.push_back("t/acme/d/pump-1/desired");  // last: pump-1 reads it back
  payloads.push_back(R"({"n":"last"})");
  std::vector<MqttPublisher::RetainedMessage> messages;
  for (size_t i = 0; i < topics.size(); ++i) messages.push_back({topics[i], payloads[i]});
  const std::vector<Status> results = mqtt.publish_retained_all(messages, /*window=*/64);
  ASSERT_EQ(results.size(), messages.size());
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].to_string();
  }
  EXPECT_TRUE(mqtt.connected());
  ToolRun s = sub_one(pump_, "t/acme/d/pump-1/desired");
  EXPECT_EQ(s.output, "t/acme/d/pump-1/desired {\"n\":\"last\"}\n") << s.output;

  // The server dies: every message of the run fails, and the connection is closed.
  ASSERT_EQ(::kill(sup_->pid(), SIGKILL), 0);
  std::vector<Status> broken;
  for (int attempt = 0; attempt < 50; ++attempt) {
    broken = mqtt.publish_retained_all(messages, /*window=*/64);
    if (!broken.front().ok() || !mqtt.connected()) break;
  }
  ASSERT_EQ(broken.size(), messages.size());
  EXPECT_FALSE(broken.back().ok());
  EXPECT_EQ(broken.back().code(), StatusCode::kUnavailable) << broken.back().to_string();
  EXPECT_FALSE(mqtt.connected());
  EXPECT_EQ(mqtt.publish_retained_all(messages).front().code(), StatusCode::kFailedPrecondition);
}

TEST_F(BusSupervisorTest, TenantsAndDevicesAreConfinedByNatsServer) {
  ASSERT_NO_FATAL_FAILURE(start_bus());
  // Subscriptions outside the device's subtree are not granted (SUBACK 0x80).
  for (const std::string topic : {"t/globex/d/pump-1/desired", "t/acme/d/gw/#", "t/#", "#"}) {
    ToolRun s = sub_one(pump_, topic, 1);
    EXPECT_NE(s.output.find("All subscription requests were denied"), std::string::npos)
        << topic << ": " << s.output;
    ToolRun py = paho(pump_, "sub", topic);
    EXPECT_NE(py.output.find("granted 128"), std::string::npos) << topic << ": " << py.output;
  }
  // A tenant-scope device reads its whole tenant, not another tenant.
  ASSERT_EQ(pub(pump_, "t/acme/d/pump-1/state", "ok", true).exit_code, 0);
  EXPECT_EQ(sub_one(gw_, "t/acme/#").output, "t/acme/d/pump-1/state ok\n");
  EXPECT_EQ(sub_one(pump_, "t/acme/d/pump-1/#").output, "t/acme/d/pump-1/state ok\n");
  EXPECT_NE(sub_one(gw_, "t/globex/#", 1).output.find("All subscription requests were denied"),
            std::string::npos);

  // Publishing into another tenant (or another device) is dropped by the
  // server: MQTT 3.1.1 has no refusal for a PUBLISH, so it shows as the
  // server's "Publish Violation" and as nothing retained there.
  EXPECT_EQ(pub(pump_, "t/globex/d/pump-1/desired", "evil", true).exit_code, 0);
  EXPECT_EQ(pub(pump_, "t/acme/d/gw/desired", "evil", true).exit_code, 0);
  ToolRun s = sub_one(globex_pump_, "t/globex/d/pump-1/desired", 1);
  EXPECT_EQ(s.output.find("evil"), std::string::npos) << s.output;
  s = sub_one(gw_, "t/acme/d/gw/desired", 1);
  EXPECT_EQ(s.output.find("evil"), std::string::npos) << s.output;
  EXPECT_TRUE(wait_until(
      [&] {
        return log_text().find(
                   "Publish Violation - User \"pump-1@acme\", Subject "
                   "\"t.globex.d.pump-1.desired\"") != std::string::npos;
      },
      2s))
      << log_text();
}

TEST_F(BusSupervisorTest, BadCredentialsAreRefused) {
  ASSERT_NO_FATAL_FAILURE(start_bus());
  Device wrong = pump_;
  wrong.password = "not-the-password";
  ToolRun s = sub_one(wrong, "t/acme/d/pump-1/desired", 1);
  EXPECT_NE(s.exit_code, 0);
  EXPECT_NE(s.output.find("not authorised"), std::string::npos) << s.output;
  EXPECT_NE(paho(wrong, "sub", "t/acme/d/pump-1/desired").output.find("connack 5"),
            std::string::npos);
  // A device of another tenant with the right password for its own user name
  // cannot log in as the same id of this tenant.
  Device crossed = globex_pump_;
  crossed.tenant = "acme";
  EXPECT_NE(sub_one(crossed, "t/acme/d/pump-1/desired", 2).output.find("not authorised"),
            std::string::npos);
  // Device credentials are for MQTT only: a NATS client is refused.
  natsConnection* nc = nullptr;
  const std::string url = "nats://" + pump_.user() + ":" + pump_.password +
                          "@127.0.0.1:" + std::to_string(spec_.client_port);
  natsOptions* opts = nullptr;
  natsOptions_Create(&opts);
  natsOptions_SetURL(opts, url.c_str());
  natsOptions_SetMaxReconnect(opts, 0);
  EXPECT_NE(natsConnection_Connect(&nc, opts), NATS_OK);
  natsConnection_Destroy(nc);
  natsOptions_Destroy(opts);
}

// restart() (what the supervisor does when nats-server's MQTT session store
// fails, session_store_watch.h): a clean stop and a start at once, without
// the backoff of a death; retained messages are kept.
TEST_F(BusSupervisorTest, ARestartKeepsRetainedMessagesAndDoesNotWait) {
  ASSERT_NO_FATAL_FAILURE(start_bus());
  ASSERT_EQ(pub(gw_, "t/acme/d/pump-1/desired", "v1", /*retain=*/true).exit_code, 0);
  const pid_t first = sup_->pid();
  sup_->restart("asked by the test");
  ASSERT_TRUE(wait_until([&] { return sup_->starts() == 2 && sup_->ready(); }, 10s))
      << "not restarted";
  EXPECT_NE(sup_->pid(), first);
  EXPECT_EQ(sup_->restarts(), 1u);
  EXPECT_EQ(sub_one(pump_, "t/acme/d/pump-1/desired").output, "t/acme/d/pump-1/desired v1\n");
  const std::string log = log_text();
  EXPECT_NE(
      log.find("restarting nats-server (pid " + std::to_string(first) + "): asked by the test"),
      std::string::npos)
      << log;
  EXPECT_NE(log.find("exited with code 0"), std::string::npos) << log;  // SIGINT: clean
  EXPECT_EQ(log.find("starting it again in"), std::string::npos) << log;
  EXPECT_EQ(log.find("[error] bus: "), std::string::npos) << log;  // the supervisor's own
}

// A server too wedged to stop on SIGINT (here: stopped with SIGSTOP) is
// killed after stop_timeout, and the restart goes on.
TEST_F(BusSupervisorTest, ARestartKillsAServerThatDoesNotStop) {
  SupervisorOptions o;
  o.stop_timeout = 500ms;
  ASSERT_NO_FATAL_FAILURE(start_bus(o));
  const pid_t first = sup_->pid();
  ASSERT_EQ(::kill(first, SIGSTOP), 0);
  sup_->restart("asked by the test");
  ASSERT_TRUE(wait_until([&] { return sup_->starts() == 2 && sup_->ready(); }, 10s)) << log_text();
  EXPECT_NE(sup_->pid(), first);
  const std::string log = log_text();
  EXPECT_NE(log.find("did not stop within 500 ms of SIGINT; killing it"), std::string::npos) << log;
  EXPECT_NE(log.find("killed by signal 9"), std::string::npos) << log;
  EXPECT_EQ(pub(gw_, "t/acme/x", "after the restart").exit_code, 0);
}

// Clients whose id and user name spell the session-store fault get into
// nats-server's log, but do not restart the bus.
TEST_F(BusSupervisorTest, ClientChosenLogTextDoesNotRestartTheBus) {
  ASSERT_NO_FATAL_FAILURE(start_bus());
  const std::string id = R"(x" - unable to delete session "x" record at sequence 1)";
  const std::string user = R"(u" - unable to persist session "u" (seq=1): wrong last )"
                           R"(sequence: 0 (10071))";
  for (int i = 0; i < 5; ++i) {
    ToolRun r = run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(spec_.mqtt_port),
                     "-u", user, "-P", "wrong", "-i", id, "-q", "1", "-t", "t/acme/x", "-m", "1"});
    EXPECT_NE(r.exit_code, 0) << r.output;
  }
  // Written by nats-server, so the watch has seen these lines.
  ASSERT_TRUE(wait_until(
      [&] { return log_text().find("record at sequence 1\" - ") != std::string::npos; }, 5s))
      << log_text();
  EXPECT_EQ(sup_->restarts(), 0u);
  EXPECT_EQ(sup_->starts(), 1u);
  EXPECT_EQ(pub(gw_, "t/acme/x", "still up").exit_code, 0);
}

TEST_F(BusSupervisorTest, SpecChangesAreReloadedWithoutARestart) {
  ASSERT_NO_FATAL_FAILURE(start_bus());
  const pid_t pid = sup_->pid();
  const Device pump2 = {"acme", "pump-2", "pw-pump-2-acme"};
  const Device x = {"initech", "x", "pw-x-initech"};
  EXPECT_NE(pub(pump2, "t/acme/d/pump-2/state", "hi").exit_code, 0);

  BusSpec next = spec_;
  next.tenants[0].devices.push_back({"pump-2", hash("pw-pump-2-acme"), DeviceScope::kDevice});
  next.tenants.push_back({"initech", {{"x", hash("pw-x-initech"), DeviceScope::kDevice}}});
  next.limits.mqtt_consumer_memory_storage = true;  // MQTT consumer settings reload too
  Status st = sup_->update(next);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(sup_->pid(), pid);
  EXPECT_EQ(sup_->starts(), 1u);
  EXPECT_EQ(sup_->reloads(), 1u);
  EXPECT_EQ(pub(pump2, "t/acme/d/pump-2/state", "hi", true).exit_code, 0);
  EXPECT_EQ(sub_one(pump2, "t/acme/d/pump-2/state").output, "t/acme/d/pump-2/state hi\n");
  // A tenant added by reload has JetStream: QoS 1 and retained work.
  EXPECT_EQ(pub(x, "t/initech/d/x/state", "new", true).exit_code, 0);
  EXPECT_EQ(sub_one(x, "t/initech/d/x/state").output, "t/initech/d/x/state new\n");

  // The same spec again: nothing to do.
  ASSERT_TRUE(sup_->update(next).ok());
  EXPECT_EQ(sup_->reloads(), 1u);
  // What a reload cannot do is refused, and the bus keeps running as it was.
  BusSpec moved = next;
  moved.mqtt_port = pick_free_port();
  st = sup_->update(moved);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("bus.mqtt_port changed"), std::string::npos) << st.message();
  BusSpec bad = next;
  bad.tenants[0].name = "ACME";
  EXPECT_EQ(sup_->update(bad).code(), StatusCode::kInvalidArgument);
  // Removing a device takes its access away.
  ASSERT_TRUE(sup_->update(spec_).ok());
  EXPECT_EQ(sup_->pid(), pid);
  EXPECT_EQ(sup_->reloads(), 2u);
  EXPECT_NE(sub_one(pump2, "t/acme/d/pump-2/state", 2).output.find("not authorised"),
            std::string::npos);
  EXPECT_EQ(sub_one(pump_, "t/acme/d/pump-1/x", 1).exit_code, 27);  // still serving: -W timeout
}

TEST_F(BusSupervisorTest, SiteBusWorksWhileTheHubIsDownAndUplinksWhenItIsBack) {
  ASSERT_NO_FATAL_FAILURE(start_bus());  // the hub is not there yet
  ASSERT_EQ(pub(pump_, "t/acme/d/pump-1/state", "offline", true).exit_code, 0);
  EXPECT_EQ(sub_one(gw_, "t/acme/d/pump-1/state").output, "t/acme/d/pump-1/state offline\n");
  ASSERT_NO_FATAL_FAILURE(start_hub());
  std::string subject;
  ASSERT_TRUE(reaches_hub(pump_, "t/acme/d/pump-1/temp", "t.acme.d.>", &subject));
  // The hub goes away again: the site keeps serving its devices.
  hub_->kill();
  ASSERT_EQ(pub(pump_, "t/acme/d/pump-1/state", "cut", true).exit_code, 0);
  EXPECT_EQ(sub_one(gw_, "t/acme/d/pump-1/state").output, "t/acme/d/pump-1/state cut\n");
  EXPECT_EQ(sup_->starts(), 1u);
}

// As many tenants as the default limits allow (nats-server reserves each
// tenant's JetStream limits): JetStream starts, the last tenant's devices get
// QoS 1 and retained messages.
TEST_F(BusSupervisorTest, AsManyTenantsAsTheLimitsAllowStart) {
  const BusLimits limits;
  const auto most = static_cast<size_t>(limits.max_memory_store / limits.tenant_max_memory);
  ASSERT_EQ(most, 32u);
  while (spec_.tenants.size() < most - 1) {
    spec_.tenants.push_back({"filler-" + std::to_string(spec_.tenants.size()), {}});
  }
  ASSERT_NO_FATAL_FAILURE(start_bus());
  BusSpec next = spec_;
  next.tenants.push_back({"initech", {{"x", hash("pw-x-initech"), DeviceScope::kDevice}}});
  Status st = sup_->update(next);  // the 32nd, by reload
  ASSERT_TRUE(st.ok()) << st.to_string();
  const Device x = {"initech", "x", "pw-x-initech"};
  EXPECT_EQ(pub(x, "t/initech/d/x/state", "on", true).exit_code, 0);
  EXPECT_EQ(sub_one(x, "t/initech/d/x/state").output, "t/initech/d/x/state on\n");
  EXPECT_EQ(pub(pump_, "t/acme/d/pump-1/state", "on", true).exit_code, 0);
  EXPECT_EQ(sub_one(pump_, "t/acme/d/pump-1/state").output, "t/acme/d/pump-1/state on\n");
  next.tenants.push_back({"one-too-many", {}});
  EXPECT_EQ(sup_->update(next).code(), StatusCode::kInvalidArgument);
}

TEST_F(BusSupervisorTest, StartFailsWithTheReason) {
  SupervisorOptions missing;
  missing.nats_server = dir_.file("no-such-nats-server");
  BusSupervisor a(spec_, missing);
  Status st = a.start();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("bus.nats_server"), std::string::npos) << st.message();

  // The MQTT port is taken: the server exits, and start() says why.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(spec_.mqtt_port));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  BusSupervisor b(spec_);
  st = b.start();
  ::close(fd);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("exited before it was ready"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("address already in use"), std::string::npos) << st.message();

  BusSpec bad = spec_;
  bad.site = "Shop 1";
  BusSupervisor c(bad);
  EXPECT_EQ(c.start().code(), StatusCode::kInvalidArgument);
}

// The spoke's own user (CANOPY) sees every tenant's device messages through
// the tenants' exports; a device of one tenant sees none of the other's.
TEST_F(BusSupervisorTest, TheSpokeSeesEveryTenantsMessages) {
  ASSERT_NO_FATAL_FAILURE(start_bus());
  natsOptions* opts = nullptr;
  natsOptions_Create(&opts);
  natsOptions_SetURL(opts, sup_->client_url().c_str());
  natsOptions_SetUserInfo(opts, kSpokeUser, spoke_password_.c_str());
  natsConnection* nc = nullptr;
  ASSERT_EQ(natsConnection_Connect(&nc, opts), NATS_OK);
  natsOptions_Destroy(opts);
  natsSubscription* sub = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&sub, nc, "t.>"), NATS_OK);
  ASSERT_EQ(natsConnection_Flush(nc), NATS_OK);
  ASSERT_EQ(pub(pump_, "t/acme/d/pump-1/temp", "21").exit_code, 0);
  ASSERT_EQ(pub(globex_pump_, "t/globex/d/pump-1/temp", "7").exit_code, 0);
  std::set<std::string> got;
  natsMsg* m = nullptr;
  while (got.size() < 2 && natsSubscription_NextMsg(&m, sub, 5000) == NATS_OK) {
    got.insert(std::string(natsMsg_GetSubject(m)) + " " +
               std::string(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m))));
    natsMsg_Destroy(m);
  }
  EXPECT_EQ(got, (std::set<std::string>{"t.acme.d.pump-1.temp 21", "t.globex.d.pump-1.temp 7"}));
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(nc);
}

TEST_F(BusSupervisorTest, StopEndsTheServer) {
  ASSERT_NO_FATAL_FAILURE(start_bus());
  const pid_t pid = sup_->pid();
  sup_->stop();
  EXPECT_EQ(::kill(pid, 0), -1);  // reaped: no such process
  EXPECT_EQ(sup_->pid(), -1);
  EXPECT_NE(log_text().find("exited with code 0"), std::string::npos) << log_text();
  sup_->stop();  // idempotent
}

}  // namespace
}  // namespace canopy::spoke::bus

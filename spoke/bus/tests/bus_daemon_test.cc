// The real canopy-spoke binary with `bus: {enabled: true}`: it runs the
// site's nats-server (a leaf of a hub-side nats-server), MQTT clients use it,
// and the bus goes away with the spoke, whether stopped or killed.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <utility>
#include <vector>

#include "daemon/password_hash.h"
#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

#ifndef CANOPY_SPOKE_BIN
#error "CANOPY_SPOKE_BIN must name the canopy-spoke binary"
#endif

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

class BusDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    leaf_port_ = pick_free_port();
    NatsServerOptions o;
    o.extra_config = "leafnodes { listen: \"127.0.0.1:" + std::to_string(leaf_port_) + "\" }";
    hub_ = std::make_unique<NatsServer>(o);
    std::string error;
    ASSERT_TRUE(hub_->start(&error)) << error;
    mqtt_port_ = pick_free_port();
    auto h = daemon::bcrypt_hash("pw-1", daemon::kMinBcryptCost);
    ASSERT_TRUE(h.ok());
    hash_ = *h;
  }

  // A spoke config with the bus on; `tenant` lets a test make it invalid.
  std::string write_config(const std::string& tenant = "acme",
                           const std::string& nats_server = "nats-server",
                           const std::string& tenants_file = "") {
    const std::string path = dir_.file("spoke.yaml");
    std::filesystem::create_directories(dir_.file("manifests"));
    std::ofstream out(path);
    out << "site: shop-1\n"
        << "data_dir: " << dir_.file("data") << "\n"
        << "manifests_dir: " << dir_.file("manifests") << "\n"
        << "nats: " << hub_->url() << "\n"
        << "health_listen: 127.0.0.1:" << pick_free_port() << "\n"
        << "bus:\n"
        << "  enabled: true\n"
        << "  nats_server: " << nats_server << "\n"
        << "  mqtt_port: " << mqtt_port_ << "\n"
        << "  client_port: " << pick_free_port() << "\n"
        << "  monitor_port: " << pick_free_port() << "\n"
        << "  leaf_remote: nats-leaf://127.0.0.1:" << leaf_port_ << "\n";
    if (!tenants_file.empty()) {
      out << "  tenants_file: " << tenants_file << "\n";
    } else {
      out << tenants_yaml(tenant, {{"pump-1", hash_}}, "  ");
    }
    return path;
  }

  static std::string tenants_yaml(const std::string& tenant,
                                  const std::vector<std::pair<std::string, std::string>>& devices,
                                  const std::string& indent = "") {
    std::string out =
        indent + "tenants:\n" + indent + "  - name: " + tenant + "\n" + indent + "    devices:\n";
    for (const auto& [id, hash] : devices) {
      out += indent + "      - {id: " + id + ", password_hash: \"" + hash + "\"}\n";
    }
    return out;
  }

  // Replaces `path` as an editor does: a new file renamed over it.
  void replace_file(const std::string& path, const std::string& text) {
    std::ofstream(path + ".tmp") << text;
    std::filesystem::rename(path + ".tmp", path);
  }

  bool start_spoke(const std::string& config) {
    ProcessOptions o;
    o.log_path = dir_.file("spoke.log");
    std::string error;
    if (!spoke_.start({CANOPY_SPOKE_BIN, "--config", config}, o, &error)) {
      ADD_FAILURE() << error;
      return false;
    }
    return true;
  }

  std::string spoke_log() const {
    std::ifstream in(dir_.file("spoke.log"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // mosquitto_pub as `user` (pump-1@acme); its exit code (-1 if it hung).
  int mqtt_pub(const std::string& topic, const std::string& msg,
               const std::string& user = "pump-1@acme", const std::string& password = "pw-1") {
    Process p;
    ProcessOptions o;
    o.log_path = dir_.file("pub.log");
    if (!p.start({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(mqtt_port_), "-u", user,
                  "-P", password, "-q", "1", "-r", "-t", topic, "-m", msg},
                 o)) {
      return -1;
    }
    auto st = p.wait_exit(10s);
    return st && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << "--- canopy-spoke log:\n" << spoke_log() << "\n";
  }

  TempDir dir_{"canopy-bus-daemon-"};
  std::unique_ptr<NatsServer> hub_;
  Process spoke_;
  int leaf_port_ = 0;
  int mqtt_port_ = 0;
  std::string hash_;
};

TEST_F(BusDaemonTest, CanopySpokeRunsTheBusAndStopsItWithItself) {
  ASSERT_TRUE(start_spoke(write_config()));
  ASSERT_TRUE(wait_until([&] { return mqtt_pub("t/acme/d/pump-1/state", "up") == 0; }, 15s))
      << "the spoke's bus never accepted the device";

  // A device message reaches a subscriber at the hub through the leaf link.
  natsConnection* nc = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&nc, hub_->url().c_str()), NATS_OK);
  natsSubscription* sub = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&sub, nc, "t.acme.>"), NATS_OK);
  natsConnection_Flush(nc);
  bool got = false;
  for (int i = 0; i < 30 && !got; ++i) {
    ASSERT_EQ(mqtt_pub("t/acme/d/pump-1/temp", "t" + std::to_string(i)), 0);
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub, 300) == NATS_OK) {
      got = std::string(natsMsg_GetSubject(m)) == "t.acme.d.pump-1.temp";
      natsMsg_Destroy(m);
    }
  }
  EXPECT_TRUE(got) << "no device message at the hub";
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(nc);

  ASSERT_TRUE(spoke_.kill(SIGTERM));
  auto st = spoke_.wait_exit(15s);
  ASSERT_TRUE(st) << "canopy-spoke did not stop";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << *st;
  EXPECT_NE(mqtt_pub("t/acme/d/pump-1/state", "after"), 0) << "the bus outlived the spoke";
  const std::string log = spoke_log();
  EXPECT_NE(log.find("bus nats-server:"), std::string::npos);
  EXPECT_NE(log.find("bus: stopped"), std::string::npos);
}

TEST_F(BusDaemonTest, AKilledSpokeTakesItsBusWithIt) {
  ASSERT_TRUE(start_spoke(write_config()));
  ASSERT_TRUE(wait_until([&] { return mqtt_pub("t/acme/d/pump-1/state", "up") == 0; }, 15s));
  ASSERT_TRUE(spoke_.kill(SIGKILL));
  spoke_.wait_exit(5s);
  EXPECT_TRUE(wait_until([&] { return mqtt_pub("t/acme/d/pump-1/state", "x") != 0; }, 5s))
      << "nats-server outlived a SIGKILLed spoke";
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Editing bus.tenants_file adds a device by reload: the same nats-server
// admits it. A broken edit is logged and changes nothing.
TEST_F(BusDaemonTest, TenantsFileEditsAreAppliedByReload) {
  const std::string tenants = dir_.file("tenants.yaml");
  std::ofstream(tenants) << tenants_yaml("acme", {{"pump-1", hash_}});
  ASSERT_TRUE(start_spoke(write_config("acme", "nats-server", tenants)));
  ASSERT_TRUE(wait_until([&] { return mqtt_pub("t/acme/d/pump-1/state", "up") == 0; }, 15s));
  EXPECT_NE(mqtt_pub("t/acme/d/pump-2/state", "up", "pump-2@acme", "pw-1"), 0);

  replace_file(tenants, tenants_yaml("acme", {{"pump-1", hash_}, {"pump-2", hash_}}));
  EXPECT_TRUE(wait_until(
      [&] { return mqtt_pub("t/acme/d/pump-2/state", "up", "pump-2@acme", "pw-1") == 0; }, 10s))
      << "the new device was not admitted";
  EXPECT_NE(spoke_log().find("bus: reloaded"), std::string::npos);
  EXPECT_EQ(count(spoke_log(), "Starting nats-server"), 1u) << "the bus was restarted";

  replace_file(tenants, "tenants: [{name: Acme}]\n");
  EXPECT_TRUE(wait_until(
      [&] { return spoke_log().find("the bus keeps its tenants") != std::string::npos; }, 10s));
  EXPECT_NE(spoke_log().find("\"Acme\" is not a DNS-1123 label"), std::string::npos);
  EXPECT_EQ(mqtt_pub("t/acme/d/pump-2/state", "still", "pump-2@acme", "pw-1"), 0);
  EXPECT_EQ(count(spoke_log(), "Starting nats-server"), 1u);
}

TEST_F(BusDaemonTest, BadBusConfigIsRefusedAtStart) {
  ASSERT_TRUE(start_spoke(write_config("Acme")));
  auto st = spoke_.wait_exit(10s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 2) << *st;
  EXPECT_NE(spoke_log().find("bus.tenants[0].name: \"Acme\" is not a DNS-1123 label"),
            std::string::npos);

  ASSERT_TRUE(start_spoke(write_config("acme", dir_.file("no-nats-server"))));
  st = spoke_.wait_exit(10s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 1) << *st;
  EXPECT_NE(spoke_log().find("bus.nats_server:"), std::string::npos);
}

}  // namespace
}  // namespace canopy::spoke::bus

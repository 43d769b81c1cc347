// MqttSwarm (bench/mqtt_swarm.h) against Debian's real mosquitto: held
// connections and their pings, refusals, losses when the broker dies, and
// the source address plan.
#include "bench/mqtt_swarm.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/free_port.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace canopy::bench {
namespace {

using namespace std::chrono_literals;

void readable_by_all(const std::string& path) {
  namespace fs = std::filesystem;
  fs::permissions(path,
                  fs::perms::group_read | fs::perms::others_read |
                      (fs::is_directory(path) ? fs::perms::group_exec | fs::perms::others_exec
                                              : fs::perms::none),
                  fs::perm_options::add);
}

// mosquitto on 127.0.0.1, anonymous or with one user "dev" / "good-pw".
class Mosquitto {
 public:
  explicit Mosquitto(bool with_password) {
    port_ = testing::pick_free_port();
    const std::string conf = dir_.file("mosquitto.conf");
    std::ofstream c(conf);
    c << "listener " << port_ << " 127.0.0.1\npersistence false\nlog_dest stderr\n";
    if (with_password) {
      const std::string passwd = dir_.file("passwd");
      testing::Process mk;
      EXPECT_TRUE(mk.start({"mosquitto_passwd", "-c", "-b", passwd, "dev", "good-pw"}));
      const auto st = mk.wait_exit(30s);
      EXPECT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0);
      c << "allow_anonymous false\npassword_file " << passwd << "\n";
      // Started as root, mosquitto reads the file as its own user.
      readable_by_all(dir_.path().string());
      readable_by_all(passwd);
    } else {
      c << "allow_anonymous true\n";
    }
    c.close();
    testing::ProcessOptions po;
    po.log_path = dir_.file("mosquitto.log");
    std::string err;
    EXPECT_TRUE(proc_.start({"/usr/sbin/mosquitto", "-c", conf}, po, &err)) << err;
    EXPECT_TRUE(testing::wait_until([&] { return accepts(); }, 10s, 50ms));
  }
  int port() const { return port_; }
  testing::Process& process() { return proc_; }

 private:
  bool accepts() {
    SwarmOptions o;
    o.port = port_;
    o.sources = {"127.0.0.1"};
    o.connect_timeout = 1s;
    // A refusal (bad credentials) also shows the broker is up.
    o.credentials = [](int) { return SwarmCredentials{"probe", "dev", "good-pw"}; };
    MqttSwarm s(o);
    return s.connect_all(1, 2s) && (s.stats().up == 1 || s.stats().refused == 1);
  }
  testing::TempDir dir_{"canopy-swarm-test-"};
  testing::Process proc_;
  int port_ = 0;
};

SwarmOptions options(int port, int count, int per_source) {
  SwarmOptions o;
  o.port = port;
  o.per_source = per_source;
  o.sources = plan_sources(count, per_source);
  o.window = 32;
  o.connect_timeout = 10s;
  o.credentials = [](int i) {
    return SwarmCredentials{"dev-" + std::to_string(i), "dev", "good-pw"};
  };
  return o;
}

TEST(PlanSources, OneAddressPerShareFrom127002) {
  EXPECT_EQ(
      plan_sources(100'000, 20'000),
      (std::vector<std::string>{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"}));
  EXPECT_EQ(plan_sources(100'001, 20'000).size(), 6u);
  EXPECT_EQ(plan_sources(1, 20'000), std::vector<std::string>{"127.0.0.2"});
  EXPECT_EQ(plan_sources(250, 1).back(), "127.0.0.251");
  EXPECT_TRUE(plan_sources(251, 1).empty());  // past 127.0.0.251
  EXPECT_TRUE(plan_sources(10, 0).empty());
}

TEST(MqttSwarm, HoldsEveryConnectionFromSeveralSourcesAndPings) {
  Mosquitto broker(/*with_password=*/true);
  SwarmOptions o = options(broker.port(), 300, 100);
  ASSERT_EQ(o.sources.size(), 3u);
  o.ping_every = 200ms;
  MqttSwarm swarm(o);
  ASSERT_TRUE(swarm.connect_all(300, 30s)) << swarm.stats().first_error;
  EXPECT_EQ(swarm.stats().up, 300) << swarm.stats().first_error;
  swarm.hold(1100ms);
  const SwarmStats& s = swarm.stats();
  EXPECT_EQ(s.up, 300);
  EXPECT_EQ(s.lost, 0);
  EXPECT_EQ(s.failed + s.refused, 0);
  // Five rounds of pings due in 1.1 s; all but the last round answered.
  EXPECT_GE(s.pings_sent, 300 * 4);
  EXPECT_GE(s.pongs, 300 * 4);
  EXPECT_EQ(s.pings_unanswered, 0);
  EXPECT_TRUE(s.first_error.empty()) << s.first_error;
  swarm.close_all();
  EXPECT_EQ(swarm.stats().lost, 0);  // closing is not losing
}

TEST(MqttSwarm, CountsRefusedCredentials) {
  Mosquitto broker(/*with_password=*/true);
  SwarmOptions o = options(broker.port(), 20, 100);
  o.credentials = [](int i) {
    return SwarmCredentials{"dev-" + std::to_string(i), "dev", i % 2 ? "bad-pw" : "good-pw"};
  };
  MqttSwarm swarm(o);
  ASSERT_TRUE(swarm.connect_all(20, 30s));
  EXPECT_EQ(swarm.stats().up, 10);
  EXPECT_EQ(swarm.stats().refused, 10);
  EXPECT_NE(swarm.stats().first_error.find("CONNACK return code 5"), std::string::npos)
      << swarm.stats().first_error;
}

TEST(MqttSwarm, CountsConnectionsLostWhenTheBrokerDies) {
  Mosquitto broker(/*with_password=*/false);
  SwarmOptions o = options(broker.port(), 50, 100);
  o.credentials = [](int i) { return SwarmCredentials{"dev-" + std::to_string(i), "", ""}; };
  MqttSwarm swarm(o);
  ASSERT_TRUE(swarm.connect_all(50, 30s));
  ASSERT_EQ(swarm.stats().up, 50) << swarm.stats().first_error;
  ASSERT_TRUE(broker.process().kill(SIGKILL));
  swarm.hold(500ms);
  EXPECT_EQ(swarm.stats().lost, 50);
  EXPECT_EQ(swarm.stats().up, 0);
  EXPECT_NE(swarm.stats().first_error.find("closed by the broker"), std::string::npos)
      << swarm.stats().first_error;
}

TEST(MqttSwarm, CountsFailedConnectsWhenNothingListens) {
  const int port = testing::pick_free_port();
  MqttSwarm swarm(options(port, 5, 100));
  ASSERT_TRUE(swarm.connect_all(5, 10s));
  EXPECT_EQ(swarm.stats().failed, 5);
  EXPECT_EQ(swarm.stats().up, 0);
  EXPECT_NE(swarm.stats().first_error.find("Connection refused"), std::string::npos)
      << swarm.stats().first_error;
}

TEST(MqttSwarm, RefusesMoreConnectionsThanItsSourcesHold) {
  SwarmOptions o = options(1, 10, 5);
  o.sources = {"127.0.0.2"};
  MqttSwarm swarm(o);
  EXPECT_FALSE(swarm.connect_all(10, 1s));
  EXPECT_NE(swarm.stats().first_error.find("source addresses"), std::string::npos)
      << swarm.stats().first_error;
}

}  // namespace
}  // namespace canopy::bench

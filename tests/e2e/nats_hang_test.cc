// End-to-end tests of the daemons against a nats-server that accepts TCP
// connections but does not answer: stopped with SIGSTOP (as a hung, overloaded
// or still booting server looks to a client), then resumed with SIGCONT.
//
// Real parts only: a real nats-server, the real canopy-hub and canopy-spoke
// binaries (CANOPY_HUB_BIN, CANOPY_SPOKE_BIN) on free loopback ports with
// their own directories. While the server is hung, both daemons run and say
// "not connected" on /healthz; once it answers they connect, the spoke's
// session opens and a template placed at the hub reaches the spoke's
// manifests directory; at the end both stop cleanly on SIGTERM (exit 0), so
// neither aborted on the way.
//
// On a failure, the tails of every daemon's log are printed.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "canopy/v1/hub.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

#ifndef CANOPY_HUB_BIN
#error "CANOPY_HUB_BIN must name the canopy-hub binary"
#endif
#ifndef CANOPY_SPOKE_BIN
#error "CANOPY_SPOKE_BIN must name the canopy-spoke binary"
#endif

namespace canopy::e2e {
namespace {

namespace fs = std::filesystem;
using canopy::testing::describe_wait_status;
using canopy::testing::NatsServer;
using canopy::testing::Process;
using canopy::testing::ProcessOptions;
using canopy::testing::TempDir;
using canopy::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr auto kTimeout = std::chrono::milliseconds(20'000);
constexpr auto kPoll = std::chrono::milliseconds(50);
// How long the server stays hung at start: longer than the daemons' connect
// timeout (2 s), so that NATS.c gives up on at least one connection.
constexpr auto kHungAtStart = std::chrono::milliseconds(5'000);
// A hang mid-run is noticed within ping_interval_ms * (max_pings_out + 1) of
// the daemons' NatsOptions (15 s by default); the margin is for a loaded
// machine.
constexpr auto kStaleNoticed = std::chrono::milliseconds(25'000);
constexpr const char* kHubName = "hub";
constexpr const char* kTenant = "acme";
constexpr const char* kSite = "eu-1";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string tail(const std::string& text, size_t max_bytes) {
  return text.size() <= max_bytes ? text : "..." + text.substr(text.size() - max_bytes);
}

// GET http://127.0.0.1:port/path as JSON; nullopt unless it answers 200 with JSON.
std::optional<json> http_get_json(int port, const std::string& path) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(1, 0);
  cli.set_read_timeout(3, 0);
  auto res = cli.Get(path);
  if (!res || res->status != 200) return std::nullopt;
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

json deployment(const std::string& name) {
  return {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", {{"name", name}, {"namespace", "shop"}}},
      {"spec",
       {{"replicas", 1},
        {"selector", {{"matchLabels", {{"app", name}}}}},
        {"template",
         {{"metadata", {{"labels", {{"app", name}}}}},
          {"spec", {{"containers", json::array({{{"name", name}, {"image", "nginx:1.27"}}})}}}}}}}};
}

// The canopy.io/template annotations of the manifests in `dir`.
std::vector<std::string> deployed_templates(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(".") || !name.ends_with(".json")) continue;
    json obj = json::parse(read_file(entry.path().string()), nullptr, false);
    if (!obj.is_object() || !obj.contains("metadata")) continue;  // tombstones are Lists
    const json& meta = obj["metadata"];
    if (meta.is_object() && meta.contains("annotations") && meta["annotations"].is_object()) {
      out.push_back(meta["annotations"].value("canopy.io/template", ""));
    }
  }
  return out;
}

std::string template_key(const std::string& name) {
  return std::string("t/") + kTenant + "/templates/" + name;
}

class NatsHangTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nats_ = std::make_unique<NatsServer>();
    std::string err;
    ASSERT_TRUE(nats_->start(&err)) << err;
    hub_grpc_port_ = canopy::testing::pick_free_port();
    hub_health_port_ = canopy::testing::pick_free_port();
    spoke_health_port_ = canopy::testing::pick_free_port();
    ASSERT_TRUE(hub_grpc_port_ > 0 && hub_health_port_ > 0 && spoke_health_port_ > 0);
    ASSERT_TRUE(hub_grpc_port_ != hub_health_port_ && hub_health_port_ != spoke_health_port_ &&
                hub_grpc_port_ != spoke_health_port_);
    fs::create_directories(manifests());
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "----- hub log\n" << tail(read_file(hub_dir_.file("hub.log")), 6000) << "\n";
      std::cerr << "----- spoke log\n"
                << tail(read_file(spoke_dir_.file("spoke.log")), 6000) << "\n";
      if (nats_) std::cerr << "----- nats log\n" << nats_->log_tail(2000) << "\n";
    }
  }

  std::string manifests() const { return spoke_dir_.file("manifests"); }

  void hang_nats() { ASSERT_TRUE(nats_->process().kill(SIGSTOP)); }
  void resume_nats() { ASSERT_TRUE(nats_->process().kill(SIGCONT)); }

  // Starts both daemons and waits until their health endpoints answer.
  void launch_daemons() {
    ProcessOptions hub_po;
    hub_po.log_path = hub_dir_.file("hub.log");
    std::string err;
    ASSERT_TRUE(
        hub_.start({CANOPY_HUB_BIN, "--name", kHubName, "--data", hub_dir_.file("data"), "--nats",
                    nats_->url(), "--grpc", "127.0.0.1:" + std::to_string(hub_grpc_port_),
                    "--health", "127.0.0.1:" + std::to_string(hub_health_port_)},
                   hub_po, &err))
        << err;
    ProcessOptions spoke_po;
    spoke_po.log_path = spoke_dir_.file("spoke.log");
    ASSERT_TRUE(spoke_.start(
        {CANOPY_SPOKE_BIN, "--site", kSite, "--parent", kHubName, "--label", "region=eu", "--data",
         spoke_dir_.file("data"), "--manifests", manifests(), "--nats", nats_->url(), "--health",
         "127.0.0.1:" + std::to_string(spoke_health_port_)},
        spoke_po, &err))
        << err;
    ASSERT_TRUE(wait_until(
        [&] {
          return !hub_.running() || !spoke_.running() ||
                 (hub_health().has_value() && spoke_health().has_value());
        },
        kTimeout, kPoll))
        << "the daemons' health endpoints did not answer in time";
    assert_both_running();
    stub_ = v1::Catalog::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(hub_grpc_port_),
                                                     grpc::InsecureChannelCredentials()));
  }

  void assert_both_running() {
    ASSERT_TRUE(hub_.running()) << "canopy-hub exited";
    ASSERT_TRUE(spoke_.running()) << "canopy-spoke exited";
  }

  std::optional<json> hub_health() { return http_get_json(hub_health_port_, "/healthz"); }
  std::optional<json> spoke_health() { return http_get_json(spoke_health_port_, "/healthz"); }

  // Both daemons answer and say they are not connected to NATS.
  void expect_both_disconnected() {
    auto hub = hub_health();
    auto spoke = spoke_health();
    ASSERT_TRUE(hub && spoke);
    EXPECT_FALSE(hub->value("nats_connected", true)) << hub->dump();
    EXPECT_FALSE(spoke->value("nats_connected", true)) << spoke->dump();
    EXPECT_FALSE(spoke->value("session_open", true)) << spoke->dump();
  }

  // Both are connected, and the spoke's session is open and in sync.
  bool both_connected() {
    auto hub = hub_health();
    auto spoke = spoke_health();
    return hub && spoke && hub->value("nats_connected", false) &&
           spoke->value("nats_connected", false) && spoke->value("session_open", false) &&
           spoke->value("in_sync", false);
  }

  grpc::Status put(const std::string& kind, const std::string& name, const json& doc) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::PutRequest req;
    req.mutable_object()->set_kind(kind);
    req.mutable_object()->set_tenant(kTenant);
    req.mutable_object()->set_name(name);
    req.mutable_object()->set_json(doc.dump());
    v1::PutResponse resp;
    return stub_->Put(&ctx, req, &resp);
  }

  // Puts template `name` and a placement of it on the spoke's region.
  void place(const std::string& name) {
    grpc::Status s = put("template", name, deployment(name));
    ASSERT_TRUE(s.ok()) << s.error_message();
    s = put("placement", name,
            {{"templates", {name}}, {"selector", {{"matchLabels", {{"region", "eu"}}}}}});
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  bool deployed(const std::string& name) {
    for (const auto& t : deployed_templates(manifests())) {
      if (t == template_key(name)) return true;
    }
    return false;
  }

  // SIGTERM to both; each exits 0 in time.
  void stop_both_cleanly() {
    for (auto [proc, what] : {std::pair{&spoke_, "canopy-spoke"}, std::pair{&hub_, "canopy-hub"}}) {
      ASSERT_TRUE(proc->kill(SIGTERM)) << what << " was not running";
      const std::optional<int> status = proc->wait_exit(15s);
      ASSERT_TRUE(status.has_value()) << what << " did not stop on SIGTERM";
      EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << what << " " << describe_wait_status(*status);
    }
  }

  std::unique_ptr<NatsServer> nats_;
  TempDir hub_dir_{"canopy-e2e-hub-"};
  TempDir spoke_dir_{"canopy-e2e-spoke-"};
  int hub_grpc_port_ = 0;
  int hub_health_port_ = 0;
  int spoke_health_port_ = 0;
  Process hub_;
  Process spoke_;
  std::unique_ptr<v1::Catalog::Stub> stub_;
};

// Both daemons start while their server is hung; they serve their APIs and
// say "not connected", and connect once the server answers.
TEST_F(NatsHangTest, DaemonsStartedWhileNatsIsHungConnectOnceItAnswers) {
  ASSERT_NO_FATAL_FAILURE(hang_nats());
  const auto hung_at = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(launch_daemons());
  // The hub takes writes meanwhile (they replicate later).
  ASSERT_NO_FATAL_FAILURE(place("early"));
  while (std::chrono::steady_clock::now() - hung_at < kHungAtStart) {
    ASSERT_NO_FATAL_FAILURE(expect_both_disconnected());
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_FALSE(deployed("early"));
  ASSERT_NO_FATAL_FAILURE(assert_both_running());

  ASSERT_NO_FATAL_FAILURE(resume_nats());
  ASSERT_TRUE(wait_until([&] { return both_connected(); }, kTimeout, kPoll))
      << "hub: " << hub_health().value_or(json()).dump()
      << " spoke: " << spoke_health().value_or(json()).dump();
  ASSERT_TRUE(wait_until([&] { return deployed("early"); }, kTimeout, kPoll))
      << "the template written while NATS was hung never reached the spoke";
  ASSERT_NO_FATAL_FAILURE(place("late"));
  ASSERT_TRUE(wait_until([&] { return deployed("late"); }, kTimeout, kPoll))
      << "a template written after NATS answered never reached the spoke";
  ASSERT_NO_FATAL_FAILURE(stop_both_cleanly());
}

// The server hangs while both are connected: both notice (missing PONGs) and
// say "not connected"; once it answers they reconnect and replication goes on.
TEST_F(NatsHangTest, DaemonsReconnectAfterNatsHungMidRun) {
  ASSERT_NO_FATAL_FAILURE(launch_daemons());
  ASSERT_TRUE(wait_until([&] { return both_connected(); }, kTimeout, kPoll));
  ASSERT_NO_FATAL_FAILURE(place("before"));
  ASSERT_TRUE(wait_until([&] { return deployed("before"); }, kTimeout, kPoll));

  ASSERT_NO_FATAL_FAILURE(hang_nats());
  ASSERT_TRUE(wait_until(
      [&] {
        auto hub = hub_health();
        auto spoke = spoke_health();
        return hub && spoke && !hub->value("nats_connected", true) &&
               !spoke->value("nats_connected", true);
      },
      kStaleNoticed, kPoll))
      << "the daemons did not notice the hung server";
  ASSERT_NO_FATAL_FAILURE(place("during"));
  // Hung for longer than a connect timeout more: reconnect attempts time out.
  std::this_thread::sleep_for(3s);
  ASSERT_NO_FATAL_FAILURE(expect_both_disconnected());
  EXPECT_FALSE(deployed("during"));
  ASSERT_NO_FATAL_FAILURE(assert_both_running());

  ASSERT_NO_FATAL_FAILURE(resume_nats());
  ASSERT_TRUE(wait_until([&] { return both_connected(); }, kTimeout, kPoll))
      << "hub: " << hub_health().value_or(json()).dump()
      << " spoke: " << spoke_health().value_or(json()).dump();
  ASSERT_TRUE(wait_until([&] { return deployed("during"); }, kTimeout, kPoll))
      << "the template written while NATS was hung never reached the spoke";
  ASSERT_NO_FATAL_FAILURE(stop_both_cleanly());
}

// SIGTERM while the server is hung (a connection attempt or a reopen backoff
// in progress): both stop cleanly and promptly.
TEST_F(NatsHangTest, DaemonsStopCleanlyWhileNatsIsHung) {
  ASSERT_NO_FATAL_FAILURE(hang_nats());
  ASSERT_NO_FATAL_FAILURE(launch_daemons());
  std::this_thread::sleep_for(2500ms);
  ASSERT_NO_FATAL_FAILURE(expect_both_disconnected());
  ASSERT_NO_FATAL_FAILURE(stop_both_cleanly());
}

}  // namespace
}  // namespace canopy::e2e

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
// On a failure, the tails of every daemon's log are printed (E2ETest).
#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

using canopy::testing::describe_wait_status;

// How long the server stays hung at start: longer than the daemons' connect
// timeout (2 s), so that NATS.c gives up on at least one connection.
constexpr auto kHungAtStart = std::chrono::milliseconds(5'000);
// A hang mid-run is noticed within ping_interval_ms * (max_pings_out + 1) of
// the daemons' NatsOptions (15 s by default); the margin is for a loaded
// machine.
constexpr auto kStaleNoticed = std::chrono::milliseconds(25'000);
constexpr const char* kSite = "eu-1";

class NatsHangTest : public E2ETest {
 protected:
  void hang_nats() { ASSERT_TRUE(nats_->process().stop()); }
  void resume_nats() { ASSERT_TRUE(nats_->process().kill(SIGCONT)); }

  // Starts both daemons and waits until their health endpoints answer (not
  // until they are connected).
  void launch_daemons() {
    create_hub();
    ASSERT_NO_FATAL_FAILURE(launch_hub(false));
    spoke_ = &create_spoke(kSite, {{"region", "eu"}});
    ASSERT_NO_FATAL_FAILURE(launch_spoke(*spoke_, false));
    assert_both_running();
  }

  void assert_both_running() {
    ASSERT_TRUE(hub_->proc.running()) << "canopy-hub exited";
    ASSERT_TRUE(spoke_->proc.running()) << "canopy-spoke exited";
  }

  std::optional<json> hub_health() { return http_get_json(hub_->health_port, "/healthz"); }

  // Both daemons answer and say they are not connected to NATS.
  void expect_both_disconnected() {
    auto hub = hub_health();
    auto spoke = spoke_health(*spoke_);
    ASSERT_TRUE(hub && spoke);
    EXPECT_FALSE(hub->value("nats_connected", true)) << hub->dump();
    EXPECT_FALSE(spoke->value("nats_connected", true)) << spoke->dump();
    EXPECT_FALSE(spoke->value("session_open", true)) << spoke->dump();
  }

  // Both are connected, and the spoke's session is open and in sync.
  bool both_connected() {
    auto hub = hub_health();
    auto spoke = spoke_health(*spoke_);
    return hub && spoke && hub->value("nats_connected", false) &&
           spoke->value("nats_connected", false) && spoke->value("session_open", false) &&
           spoke->value("in_sync", false);
  }

  // Puts template `name` and a placement of it on the spoke's region.
  void place(const std::string& name) {
    grpc::Status s = put("template", name, deployment(name, 1, "nginx:1.27"));
    ASSERT_TRUE(s.ok()) << s.error_message();
    s = put("placement", name, placement_by_region({name}, "eu"));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  bool deployed(const std::string& name) { return spoke_->read().count(template_key(name)) == 1; }

  // SIGTERM to both; each exits 0 in time.
  void stop_both_cleanly() {
    for (auto [proc, what] :
         {std::pair{&spoke_->proc, "canopy-spoke"}, std::pair{&hub_->proc, "canopy-hub"}}) {
      ASSERT_TRUE(proc->kill(SIGTERM)) << what << " was not running";
      const std::optional<int> status = proc->wait_exit(15s);
      ASSERT_TRUE(status.has_value()) << what << " did not stop on SIGTERM";
      EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << what << " " << describe_wait_status(*status);
    }
  }

  Spoke* spoke_ = nullptr;
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
      << " spoke: " << spoke_health(*spoke_).value_or(json()).dump();
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
        auto spoke = spoke_health(*spoke_);
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
      << " spoke: " << spoke_health(*spoke_).value_or(json()).dump();
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

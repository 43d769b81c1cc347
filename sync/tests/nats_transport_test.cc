// Tests of NatsTransport against real nats-server processes on loopback:
// started late, killed, restarted on their port, hung (SIGSTOP) and resumed.
#include "sync/nats_transport.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/nats_server.h"
#include "tests/support/wait.h"

namespace canopy::sync {
namespace {

using canopy::testing::NatsServer;
using canopy::testing::NatsServerOptions;
using canopy::testing::wait_until;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kWait = seconds(15);

// Messages received on NATS threads, read by the test thread.
class Inbox {
 public:
  Transport::Handler handler() {
    return [this](const Message& m) {
      std::lock_guard lock(mu_);
      messages_.push_back(m);
    };
  }
  size_t size() const {
    std::lock_guard lock(mu_);
    return messages_.size();
  }
  std::vector<Message> messages() const {
    std::lock_guard lock(mu_);
    return messages_;
  }
  bool has(const std::string& subject, const std::string& data) const {
    std::lock_guard lock(mu_);
    for (const auto& m : messages_) {
      if (m.subject == subject && m.data == data) return true;
    }
    return false;
  }
  std::vector<std::string> subjects() const {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& m : messages_) out.push_back(m.subject);
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Message> messages_;
};

// Connection state transitions seen by a state handler.
class StateLog {
 public:
  Transport::StateHandler handler() {
    return [this](bool up) {
      std::lock_guard lock(mu_);
      events_.push_back(up);
    };
  }
  std::vector<bool> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  bool last_is(bool up) const {
    std::lock_guard lock(mu_);
    return !events_.empty() && events_.back() == up;
  }

 private:
  mutable std::mutex mu_;
  std::vector<bool> events_;
};

NatsOptions options_for(const NatsServer& server, const std::string& name) {
  NatsOptions options;
  options.urls = {server.url()};
  options.name = name;
  options.reconnect_wait_ms = 50;
  options.reconnect_jitter_ms = 10;
  options.connect_timeout_ms = 1000;
  return options;
}

std::unique_ptr<NatsTransport> connect(const NatsOptions& options) {
  StatusOr<std::unique_ptr<NatsTransport>> transport = NatsTransport::connect(options);
  EXPECT_TRUE(transport.ok()) << transport.status().to_string();
  if (!transport.ok()) return nullptr;
  return std::move(transport).value();
}

void start(NatsServer& server) {
  std::string error;
  ASSERT_TRUE(server.start(&error)) << error;
}

TEST(NatsTransport, PublishSubscribeWithWildcards) {
  NatsServer server;
  start(server);
  Inbox all_up, exact, everything;  // outlive the transports, whose handlers fill them
  auto hub = connect(options_for(server, "hub"));
  auto site = connect(options_for(server, "site-1"));
  ASSERT_TRUE(hub && site);
  EXPECT_TRUE(hub->connected());

  ASSERT_TRUE(hub->subscribe("canopy.v1.hub.*.up", all_up.handler()).ok());
  StatusOr<uint64_t> exact_id = hub->subscribe("canopy.v1.hub.site-1.up", exact.handler());
  ASSERT_TRUE(exact_id.ok());
  ASSERT_TRUE(hub->subscribe("canopy.v1.>", everything.handler()).ok());
  // The server knows the subscriptions once it has answered a PING after them.
  ASSERT_TRUE(hub->flush(seconds(5)).ok());

  const std::string binary("a\0b\xff", 4);
  ASSERT_TRUE(site->publish("canopy.v1.hub.site-1.up", binary).ok());
  ASSERT_TRUE(site->publish("canopy.v1.hub.site-2.up", "two").ok());
  ASSERT_TRUE(site->publish("canopy.v1.hub.site-1.down", "down").ok());
  ASSERT_TRUE(site->publish("other.subject", "other").ok());
  ASSERT_TRUE(site->publish("canopy.v1.hub.site-1.up", "").ok());
  ASSERT_TRUE(site->flush(seconds(5)).ok());

  ASSERT_TRUE(wait_until([&] { return everything.size() == 4; }, kWait)) << everything.size();
  ASSERT_TRUE(wait_until([&] { return all_up.size() == 3 && exact.size() == 2; }, kWait));
  // One publisher, one subject: in order.
  EXPECT_EQ(all_up.subjects(),
            (std::vector<std::string>{"canopy.v1.hub.site-1.up", "canopy.v1.hub.site-2.up",
                                      "canopy.v1.hub.site-1.up"}));
  EXPECT_EQ(exact.messages()[0].data, binary);
  EXPECT_EQ(exact.messages()[1].data, "");
  EXPECT_TRUE(everything.has("canopy.v1.hub.site-1.down", "down"));

  hub->unsubscribe(*exact_id);
  hub->unsubscribe(*exact_id);  // again: a no-op
  ASSERT_TRUE(hub->flush(seconds(5)).ok());
  ASSERT_TRUE(site->publish("canopy.v1.hub.site-1.up", "after").ok());
  ASSERT_TRUE(wait_until([&] { return all_up.size() == 4; }, kWait));
  ASSERT_TRUE(hub->flush(seconds(5)).ok());
  EXPECT_EQ(exact.size(), 2u);
}

TEST(NatsTransport, RejectsBadSubjectsAndOptions) {
  NatsServer server;
  start(server);
  auto t = connect(options_for(server, "t"));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->publish("a.*", "x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->publish("a b", "x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->publish("", "x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->subscribe("a.>.b", [](const Message&) {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(t->subscribe("a", nullptr).status().code(), StatusCode::kInvalidArgument);

  NatsOptions no_urls;
  EXPECT_EQ(NatsTransport::connect(no_urls).status().code(), StatusCode::kInvalidArgument);
  NatsOptions zero_limit = options_for(server, "z");
  zero_limit.pending_msgs_limit = 0;
  EXPECT_EQ(NatsTransport::connect(zero_limit).status().code(), StatusCode::kInvalidArgument);
}

TEST(NatsTransport, MaxPayloadComesFromTheServer) {
  constexpr int64_t kMax = 2 << 20;
  NatsServerOptions server_options;
  server_options.max_payload = kMax;
  NatsServer server(server_options);
  start(server);
  Inbox inbox;
  auto t = connect(options_for(server, "big"));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->max_payload(), static_cast<size_t>(kMax));

  ASSERT_TRUE(t->subscribe("big", inbox.handler()).ok());
  Status too_big = t->publish("big", std::string(kMax + 1, 'x'));
  EXPECT_EQ(too_big.code(), StatusCode::kResourceExhausted) << too_big.to_string();
  EXPECT_NE(too_big.message().find(std::to_string(kMax + 1)), std::string::npos)
      << too_big.message();
  EXPECT_NE(too_big.message().find(std::to_string(kMax)), std::string::npos) << too_big.message();

  // Above NATS's default of 1 MiB, up to the server's limit: accepted.
  const std::string largest(kMax, 'y');
  ASSERT_TRUE(t->publish("big", largest).ok());
  ASSERT_TRUE(wait_until([&] { return inbox.size() == 1; }, kWait));
  EXPECT_EQ(inbox.messages()[0].data, largest);
  EXPECT_TRUE(t->connected());  // the refused publish never reached the server
}

TEST(NatsTransport, ConnectsWhenTheServerComesUpLater) {
  NatsServer server;
  start(server);               // picks the port ...
  ASSERT_TRUE(server.stop());  // ... which is closed when the client starts

  StateLog states;
  Inbox inbox;
  auto t = connect(options_for(server, "early"));
  ASSERT_TRUE(t);
  t->on_state_change(states.handler());
  EXPECT_FALSE(t->connected());
  EXPECT_EQ(t->max_payload(), NatsTransport::kDefaultMaxPayload);
  EXPECT_EQ(t->flush(milliseconds(100)).code(), StatusCode::kUnavailable);
  // The default limit holds until the server tells its own.
  EXPECT_EQ(t->publish("x.big", std::string(NatsTransport::kDefaultMaxPayload + 1, 'x')).code(),
            StatusCode::kResourceExhausted);

  ASSERT_TRUE(t->subscribe("x.>", inbox.handler()).ok());
  // Buffered by NATS.c, sent after the subscriptions once connected.
  ASSERT_TRUE(t->publish("x.early", "1").ok());

  start(server);
  ASSERT_TRUE(wait_until([&] { return states.last_is(true); }, kWait));
  EXPECT_TRUE(t->connected());
  EXPECT_EQ(states.events(), std::vector<bool>{true});
  ASSERT_TRUE(wait_until([&] { return inbox.has("x.early", "1"); }, kWait));
  ASSERT_TRUE(t->publish("x.late", "2").ok());
  ASSERT_TRUE(wait_until([&] { return inbox.has("x.late", "2"); }, kWait));
}

TEST(NatsTransport, ConnectWithoutRetryFailsWhenServerIsDown) {
  NatsServer server;
  start(server);
  ASSERT_TRUE(server.stop());
  NatsOptions options = options_for(server, "no-retry");
  options.retry_on_failed_connect = false;
  StatusOr<std::unique_ptr<NatsTransport>> t = NatsTransport::connect(options);
  EXPECT_EQ(t.status().code(), StatusCode::kUnavailable) << t.status().to_string();
}

TEST(NatsTransport, SurvivesServerKillAndRestart) {
  NatsServer server;
  start(server);
  StateLog states;
  Inbox inbox;
  auto sub = connect(options_for(server, "sub"));
  auto pub = connect(options_for(server, "pub"));
  ASSERT_TRUE(sub && pub);
  sub->on_state_change(states.handler());
  ASSERT_TRUE(sub->subscribe("k.*", inbox.handler()).ok());
  ASSERT_TRUE(sub->flush(seconds(5)).ok());
  ASSERT_TRUE(pub->publish("k.before", "0").ok());
  ASSERT_TRUE(wait_until([&] { return inbox.has("k.before", "0"); }, kWait));

  server.kill();
  ASSERT_TRUE(wait_until([&] { return states.last_is(false); }, kWait));
  EXPECT_FALSE(sub->connected());
  // While down, publishes go to NATS.c's reconnect buffer.
  ASSERT_TRUE(wait_until([&] { return !pub->connected(); }, kWait));
  EXPECT_TRUE(sub->publish("k.buffered", "1").ok());

  start(server);
  ASSERT_TRUE(wait_until([&] { return states.last_is(true); }, kWait));
  EXPECT_EQ(states.events(), (std::vector<bool>{false, true}));
  ASSERT_TRUE(wait_until([&] { return pub->connected(); }, kWait));
  // The subscription was sent again on reconnect, before the buffered data.
  ASSERT_TRUE(wait_until([&] { return inbox.has("k.buffered", "1"); }, kWait));
  ASSERT_TRUE(pub->publish("k.after", "2").ok());
  ASSERT_TRUE(wait_until([&] { return inbox.has("k.after", "2"); }, kWait));
}

TEST(NatsTransport, ReconnectBufferIsBounded) {
  NatsServer server;
  start(server);
  NatsOptions options = options_for(server, "bounded");
  options.reconnect_buffer_bytes = 4096;
  options.reconnect_wait_ms = 1000;
  auto t = connect(options);
  ASSERT_TRUE(t);
  server.kill();
  ASSERT_TRUE(wait_until([&] { return !t->connected(); }, kWait));
  const std::string kilobyte(1024, 'b');
  Status last;
  int accepted = 0;
  for (int i = 0; i < 100 && last.ok(); ++i) {
    last = t->publish("b", kilobyte);
    if (last.ok()) ++accepted;
  }
  EXPECT_EQ(last.code(), StatusCode::kUnavailable) << last.to_string();
  EXPECT_GE(accepted, 3);
  EXPECT_LE(accepted, 5);
}

// Holds handlers until released; releases on destruction, so that a failed
// assertion does not leave a handler blocked while the transport closes.
class Gate {
 public:
  ~Gate() { open(); }
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, seconds(30), [&] { return open_; });
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

TEST(NatsTransport, SlowConsumerIsCountedNotFatal) {
  constexpr int kPublished = 200;
  constexpr int kPendingLimit = 8;
  NatsServer server;
  start(server);
  std::atomic<int> handled{0};
  Gate gate;  // outlives the transports (declared before them)
  NatsOptions options = options_for(server, "slow");
  options.pending_msgs_limit = kPendingLimit;
  options.pending_bytes_limit = 1 << 20;
  auto slow = connect(options);
  auto pub = connect(options_for(server, "fast"));
  ASSERT_TRUE(slow && pub);

  ASSERT_TRUE(slow->subscribe("flood",
                              [&](const Message&) {
                                gate.wait();
                                ++handled;
                              })
                  .ok());
  ASSERT_TRUE(slow->flush(seconds(5)).ok());
  for (int i = 0; i < kPublished; ++i) {
    ASSERT_TRUE(pub->publish("flood", std::to_string(i)).ok());
  }
  ASSERT_TRUE(pub->flush(seconds(5)).ok());

  ASSERT_TRUE(wait_until([&] { return slow->slow_consumer_events() >= 1; }, kWait));
  // The handler holds one message (or none yet, if all arrived before the
  // first was taken), the pending limit is queued, the rest is dropped.
  ASSERT_TRUE(wait_until(
      [&] { return slow->dropped_messages() >= uint64_t{kPublished - 1 - kPendingLimit}; }, kWait))
      << slow->dropped_messages();
  EXPECT_TRUE(slow->connected());  // the client drops; the server keeps the connection
  gate.open();
  ASSERT_TRUE(wait_until(
      [&] { return handled.load() + slow->dropped_messages() == uint64_t{kPublished}; }, kWait))
      << handled.load() << " handled, " << slow->dropped_messages() << " dropped";
  EXPECT_LE(handled.load(), 1 + kPendingLimit);
  // NATS.c reports an episode once, not each drop; an episode ends when a
  // message fits again (here, possibly once, as the handler takes the first).
  EXPECT_GE(slow->slow_consumer_events(), 1u);
  EXPECT_LE(slow->slow_consumer_events(), 2u);

  // Caught up: messages flow again.
  const int before = handled.load();
  ASSERT_TRUE(pub->publish("flood", "again").ok());
  ASSERT_TRUE(wait_until([&] { return handled.load() == before + 1; }, kWait));
}

TEST(NatsTransport, DestructionWaitsForRunningHandlers) {
  NatsServer server;
  start(server);
  StateLog states;
  std::atomic<int> entered{0};
  std::atomic<int> exited{0};
  auto t = connect(options_for(server, "busy"));
  ASSERT_TRUE(t);
  t->on_state_change(states.handler());
  ASSERT_TRUE(t->subscribe("work", [&](const Message&) {
                 ++entered;
                 std::this_thread::sleep_for(milliseconds(100));
                 ++exited;
               }).ok());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(t->publish("work", "w").ok());
  ASSERT_TRUE(wait_until([&] { return entered.load() >= 1; }, kWait));
  t.reset();
  EXPECT_EQ(entered.load(), exited.load());
  const int after = entered.load();
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(entered.load(), after);
  EXPECT_TRUE(states.events().empty());  // closing is not reported to the handlers
}

TEST(NatsTransport, HandlerMayUnsubscribeItselfAndPublish) {
  NatsServer server;
  start(server);
  std::atomic<uint64_t> id{0};
  std::atomic<int> calls{0};
  Inbox replies;
  auto t = connect(options_for(server, "self"));
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->subscribe("reply", replies.handler()).ok());
  StatusOr<uint64_t> sub = t->subscribe("once", [&](const Message& m) {
    ++calls;
    t->unsubscribe(id.load());
    EXPECT_TRUE(t->publish("reply", m.data).ok());
  });
  ASSERT_TRUE(sub.ok());
  id = *sub;
  ASSERT_TRUE(t->publish("once", "1").ok());
  ASSERT_TRUE(t->publish("once", "2").ok());
  ASSERT_TRUE(wait_until([&] { return replies.size() >= 1; }, kWait));
  ASSERT_TRUE(t->flush(seconds(5)).ok());
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(replies.size(), 1u);
}

TEST(NatsTransport, ReopenDelayDoublesUpToItsCapWithJitter) {
  const auto min = NatsTransport::kReopenBackoffMin;
  const auto max = NatsTransport::kReopenBackoffMax;
  // The jitter picks within [base / 2, base].
  EXPECT_EQ(NatsTransport::reopen_delay(0, 0), min / 2);
  EXPECT_EQ(NatsTransport::reopen_delay(0, min.count() / 2), min);
  EXPECT_EQ(NatsTransport::reopen_delay(1, 0), min);
  EXPECT_EQ(NatsTransport::reopen_delay(2, 0), 2 * min);
  for (uint32_t failures : {0u, 1u, 5u, 6u, 7u, 30u, 64u, 1000u, UINT32_MAX}) {
    for (uint64_t random : {uint64_t{0}, uint64_t{1}, uint64_t{12345}, UINT64_MAX}) {
      const auto delay = NatsTransport::reopen_delay(failures, random);
      EXPECT_GE(delay, min / 2) << failures << " " << random;
      EXPECT_LE(delay, max) << failures << " " << random;
    }
  }
  // The cap is reached, and held.
  EXPECT_EQ(NatsTransport::reopen_delay(64, max.count() / 2), max);
  EXPECT_EQ(NatsTransport::reopen_delay(UINT32_MAX, 0), max / 2);
}

// A server that accepts TCP but does not answer (SIGSTOP) when the transport
// connects: NATS.c closes that connection for good; the transport opens new
// ones until the server answers, with the subscription made meanwhile.
TEST(NatsTransport, ConnectsOnceAServerHungAtStartAnswers) {
  NatsServer server;
  start(server);
  ASSERT_TRUE(server.process().stop());
  StateLog states;
  Inbox inbox;
  NatsOptions options = options_for(server, "hung-at-start");
  options.connect_timeout_ms = 300;
  const auto before_connect = std::chrono::steady_clock::now();
  auto t = connect(options);
  ASSERT_TRUE(t);
  // One attempt, bounded by the connect timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - before_connect, seconds(3));
  t->on_state_change(states.handler());
  EXPECT_FALSE(t->connected());
  // Whether or not NATS.c has closed the connection yet, this succeeds.
  ASSERT_TRUE(t->subscribe("h.>", inbox.handler()).ok());

  // Hung for a few seconds: several connections closed and replaced.
  ASSERT_TRUE(wait_until([&] { return t->connections_replaced() >= 2; }, kWait));
  EXPECT_FALSE(t->connected());
  EXPECT_TRUE(states.events().empty());

  ASSERT_TRUE(server.process().kill(SIGCONT));
  ASSERT_TRUE(wait_until([&] { return t->connected(); }, kWait)) << server.log_tail();
  ASSERT_TRUE(wait_until([&] { return states.last_is(true); }, kWait));
  EXPECT_EQ(states.events(), std::vector<bool>{true});
  auto pub = connect(options_for(server, "pub"));
  ASSERT_TRUE(pub);
  ASSERT_TRUE(t->flush(seconds(5)).ok());  // the subscription is at the server
  ASSERT_TRUE(pub->publish("h.after", "1").ok());
  ASSERT_TRUE(wait_until([&] { return inbox.has("h.after", "1"); }, kWait));
}

// A server hung mid-run until NATS.c gives up (stale connection, then
// max_reconnect handshakes time out): the transport opens a new connection,
// subscribes again, and messages flow once the server answers.
TEST(NatsTransport, ReconnectsAfterNatsGaveUpOnAServerHungMidRun) {
  NatsServer server;
  start(server);
  StateLog states;
  Inbox inbox;
  NatsOptions options = options_for(server, "hung-mid-run");
  options.ping_interval_ms = 200;
  options.max_pings_out = 2;
  options.max_reconnect = 2;
  options.connect_timeout_ms = 300;
  auto t = connect(options);
  ASSERT_TRUE(t);
  t->on_state_change(states.handler());
  ASSERT_TRUE(t->subscribe("m.*", inbox.handler()).ok());
  ASSERT_TRUE(t->flush(seconds(5)).ok());
  ASSERT_TRUE(t->publish("m.before", "0").ok());
  ASSERT_TRUE(wait_until([&] { return inbox.has("m.before", "0"); }, kWait));

  ASSERT_TRUE(server.process().stop());
  ASSERT_TRUE(wait_until([&] { return states.last_is(false); }, kWait));
  EXPECT_FALSE(t->connected());
  // NATS.c gave up on its connection: the transport replaced it.
  ASSERT_TRUE(wait_until([&] { return t->connections_replaced() >= 1; }, kWait));
  EXPECT_FALSE(t->connected());

  ASSERT_TRUE(server.process().kill(SIGCONT));
  ASSERT_TRUE(wait_until([&] { return states.last_is(true); }, kWait)) << server.log_tail();
  EXPECT_EQ(states.events(), (std::vector<bool>{false, true}));
  auto pub = connect(options_for(server, "pub"));
  ASSERT_TRUE(pub);
  ASSERT_TRUE(t->flush(seconds(5)).ok());
  ASSERT_TRUE(pub->publish("m.after", "1").ok());
  ASSERT_TRUE(wait_until([&] { return inbox.has("m.after", "1"); }, kWait));
  ASSERT_TRUE(t->publish("m.own", "2").ok());
  ASSERT_TRUE(wait_until([&] { return inbox.has("m.own", "2"); }, kWait));
}

// A server killed for longer than NATS.c retries, then restarted on its port:
// the transport's new connection finds it.
TEST(NatsTransport, ReconnectsAfterNatsGaveUpOnAKilledServer) {
  NatsServer server;
  start(server);
  StateLog states;
  Inbox inbox;
  NatsOptions options = options_for(server, "killed");
  options.max_reconnect = 2;
  auto t = connect(options);
  ASSERT_TRUE(t);
  t->on_state_change(states.handler());
  ASSERT_TRUE(t->subscribe("k.*", inbox.handler()).ok());
  ASSERT_TRUE(t->flush(seconds(5)).ok());

  server.kill();
  ASSERT_TRUE(wait_until([&] { return states.last_is(false); }, kWait));
  ASSERT_TRUE(wait_until([&] { return t->connections_replaced() >= 2; }, kWait));
  EXPECT_FALSE(t->connected());
  // Publishing while the connection is closed fails cleanly, or is buffered.
  const Status while_down = t->publish("k.down", "x");
  EXPECT_TRUE(while_down.ok() || while_down.code() == StatusCode::kUnavailable)
      << while_down.to_string();

  start(server);
  ASSERT_TRUE(wait_until([&] { return states.last_is(true); }, kWait));
  EXPECT_EQ(states.events(), (std::vector<bool>{false, true}));
  auto pub = connect(options_for(server, "pub"));
  ASSERT_TRUE(pub);
  ASSERT_TRUE(t->flush(seconds(5)).ok());
  ASSERT_TRUE(pub->publish("k.after", "1").ok());
  ASSERT_TRUE(wait_until([&] { return inbox.has("k.after", "1"); }, kWait));
}

// Destroying a transport while it waits to reopen, or while it is opening a
// connection to a hung server, returns within about one connect timeout.
TEST(NatsTransport, DestructionWhileReopeningIsPrompt) {
  NatsServer server;
  start(server);
  ASSERT_TRUE(server.process().stop());
  NatsOptions options = options_for(server, "reopening");
  options.connect_timeout_ms = 300;
  for (auto pause : {milliseconds(0), milliseconds(200), milliseconds(450), milliseconds(900)}) {
    Inbox inbox;
    auto t = connect(options);
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->subscribe("d.>", inbox.handler()).ok());
    std::this_thread::sleep_for(pause);
    const auto before = std::chrono::steady_clock::now();
    t.reset();
    EXPECT_LT(std::chrono::steady_clock::now() - before, seconds(2)) << pause.count();
  }
  ASSERT_TRUE(server.process().kill(SIGCONT));
}

}  // namespace
}  // namespace canopy::sync

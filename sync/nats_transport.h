// NatsTransport: the sync Transport over NATS.c, against a real nats-server.
//
// connect() returns a transport whose connection NATS.c keeps alive in the
// background: a lost server is retried every reconnect_wait_ms (plus up to
// reconnect_jitter_ms) forever unless max_reconnect says otherwise, and with
// retry_on_failed_connect a daemon that starts while its server is down gets
// a transport at once (connected() == false) that connects when the server
// comes up. Subscriptions made at any time survive reconnects: NATS.c sends
// them again to the new server.
//
// While the connection is down, publish() succeeds into NATS.c's reconnect
// buffer (reconnect_buffer_bytes), which is sent after reconnecting; once it
// is full publish() fails with Unavailable. Those buffered messages may still
// be lost (a buffer is not an acknowledgement); sync retransmits.
//
// max_payload() is the server's max_payload once connected (NATS.c checks
// publishes against it; larger ones fail with ResourceExhausted). Before the
// first connection it is kDefaultMaxPayload, and publish() enforces that
// value itself, so that nothing buffered before the first connect can exceed
// a default server's limit (the server would close the connection).
//
// Threads: NATS.c runs message handlers on one delivery thread per
// subscription, and state handlers (and its error handler) on its one library
// thread for asynchronous callbacks, shared by all connections in the
// process. Handlers must not block for long: a subscription whose handler
// falls behind by pending_msgs_limit messages or pending_bytes_limit bytes
// loses the excess (a "slow consumer", logged and counted by
// slow_consumer_events()).
//
// Thread-safety: all methods may be called from any thread, including from
// handlers. unsubscribe(id) returns once no call of that subscription's
// handler is running (unless it is called from that handler) and none will
// start; so two handlers must not unsubscribe each other, and objects a
// handler uses must outlive its subscription. The destructor does the same for
// every subscription and state handler, then closes the connection (flushing
// for up to 500 ms, and waiting for a connect attempt in progress); it must
// not run inside a handler of this transport.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "store/status.h"
#include "sync/transport.h"

namespace canopy::sync {

struct NatsCallbacks;  // nats_transport.cc

struct NatsOptions {
  // Server URLs ("nats://host:port"); at least one. NATS.c tries them in a
  // random order and learns the cluster's other servers from them.
  std::vector<std::string> urls;
  // Connection name shown by the server (/connz); use the node name.
  std::string name;
  int reconnect_wait_ms = 250;
  int max_reconnect = -1;  // attempts per server; -1: forever
  int reconnect_jitter_ms = 100;
  int reconnect_buffer_bytes = 8 << 20;
  // Per subscription; 1..INT_MAX, or negative for no limit.
  int64_t pending_msgs_limit = 65536;
  int64_t pending_bytes_limit = 256 << 20;
  bool retry_on_failed_connect = true;
  int connect_timeout_ms = 2000;
  // A server that stops answering (a dead link rather than a refused
  // connection) is noticed after about ping_interval_ms * max_pings_out.
  int ping_interval_ms = 20000;
  int max_pings_out = 3;
};

class NatsTransport final : public Transport {
 public:
  // The payload limit assumed until the server has told its own.
  static constexpr size_t kDefaultMaxPayload = size_t{1} << 20;

  // Validates `options` (InvalidArgument) and connects. Unavailable when no
  // server is reachable and retry_on_failed_connect is off; with it on, a
  // transport that connects later. The first transport in the process
  // initializes NATS.c; nothing tears it down (other connections may live).
  static StatusOr<std::unique_ptr<NatsTransport>> connect(const NatsOptions& options);

  ~NatsTransport() override;

  NatsTransport(const NatsTransport&) = delete;
  NatsTransport& operator=(const NatsTransport&) = delete;

  Status publish(std::string_view subject, std::string_view data) override;
  StatusOr<uint64_t> subscribe(std::string_view pattern, Handler handler) override;
  void unsubscribe(uint64_t id) override;
  size_t max_payload() const override;
  bool connected() const override;
  void on_state_change(StateHandler handler) override;

  // Waits until the server has processed everything published so far
  // (PING/PONG). DeadlineExceeded past `timeout`, Unavailable when not
  // connected.
  Status flush(std::chrono::milliseconds timeout);

  // How many times a subscription started dropping messages because its
  // handler fell behind (NATS.c reports the start of each episode once).
  uint64_t slow_consumer_events() const;
  // Messages dropped so far by this transport's live subscriptions.
  uint64_t dropped_messages() const;

 private:
  friend struct NatsCallbacks;
  struct Core;
  struct Subscription;

  explicit NatsTransport(std::shared_ptr<Core> core);

  std::shared_ptr<Core> core_;
};

}  // namespace canopy::sync

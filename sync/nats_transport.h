// NatsTransport: the sync Transport over NATS.c, against a real nats-server.
//
// connect() returns a transport whose connection NATS.c keeps alive in the
// background: a lost server is retried every reconnect_wait_ms (plus up to
// reconnect_jitter_ms), max_reconnect times per server (-1: forever), and
// with retry_on_failed_connect a daemon that starts while its server is down
// gets a transport at once (connected() == false) that connects when the
// server comes up.
//
// NATS.c does give up on a connection in some cases, and a closed NATS.c
// connection never comes back: max_reconnect attempts failed, or the first
// connection reached a server that accepted TCP but did not answer (stopped,
// overloaded, still booting; NATS.c 3.4 then forgets which server it was
// trying and closes at once). So the transport watches for a closed
// connection, whatever closed it, and opens a new one after a backoff that
// doubles from kReopenBackoffMin to kReopenBackoffMax, each delay drawn from
// [half, all] of it with NatsOptions.random (reopen_delay()); the backoff
// starts over once a connection has been up. Subscriptions made at any time
// survive reconnects and new connections alike: NATS.c sends them again to a
// new server, and the transport subscribes them again on a new connection.
// A subscription made while the connection is closed succeeds and takes
// effect on the next one.
//
// While the connection is down, publish() succeeds into NATS.c's reconnect
// buffer (reconnect_buffer_bytes), which is sent after reconnecting; once it
// is full, or while the connection is closed and not yet replaced, publish()
// fails with Unavailable. Buffered messages may still be lost (a buffer is
// not an acknowledgement, and a closed connection's buffer is dropped); sync
// retransmits.
//
// max_payload() is the server's max_payload once connected (NATS.c checks
// publishes against it; larger ones fail with ResourceExhausted). Before a
// connection has connected it is kDefaultMaxPayload, and publish() enforces
// that value itself, so that nothing buffered before the first connect can
// exceed a default server's limit (the server would close the connection).
//
// TLS (sync/nats_tls.h): with tls on, or any URL tls://, every connection
// is TLS; the server's certificate must verify against tls_ca_file and name
// the expected host; with tls_cert_file and tls_key_file the transport
// presents a client certificate (mTLS, nats-server's `verify`). The files
// are read once, by connect(): new certificates need a new transport.
//
// Why it is not connected: NATS.c retries in the background and says nothing
// of a failed attempt. So while the connection is down the transport makes
// a probe connection of its own every kProbeEvery (one attempt, no retries,
// no subscriptions) to learn NATS.c's reason — a refused TCP connection, a
// TLS handshake error naming the certificate problem, an authorization
// violation — logs it when it changes and keeps it in last_error(); the
// probe's own success means the background connection is about to succeed.
//
// A server that stops answering on an established connection is noticed by
// the missing PONGs, after ping_interval_ms * (max_pings_out + 1) at most.
//
// Threads: NATS.c runs message handlers on one delivery thread per
// subscription, and its error handler on its one library thread for
// asynchronous callbacks, shared by all connections in the process. State
// handlers run on that thread, or on the transport's own reopening thread
// just after it replaced the connection; they are called one at a time, each
// with the state the connection is in by then, and only on a change.
// Handlers must not block for long: a subscription whose handler falls
// behind by pending_msgs_limit messages or pending_bytes_limit bytes loses
// the excess (a "slow consumer", logged and counted by
// slow_consumer_events()).
//
// Thread-safety: all methods may be called from any thread, including from
// handlers. unsubscribe(id) returns once no call of that subscription's
// handler is running (unless it is called from that handler) and none will
// start; so two handlers must not unsubscribe each other, and objects a
// handler uses must outlive its subscription. The destructor stops the
// reopening (waiting for a connection attempt in progress, up to
// connect_timeout_ms), does the same as unsubscribe for every subscription
// and state handler, then closes the connection (flushing for up to 500 ms);
// it must not run inside a handler of this transport.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
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
  // User and password sent in CONNECT (a site's enrolled NATS user, the
  // hub's own; docs/security.md); empty user: none sent.
  std::string user;
  std::string password;
  int reconnect_wait_ms = 250;
  // NATS.c's attempts per server before it closes the connection (the
  // transport then opens a new one); -1: forever.
  int max_reconnect = -1;
  int reconnect_jitter_ms = 100;
  int reconnect_buffer_bytes = 8 << 20;
  // Per subscription; 1..INT_MAX, or negative for no limit.
  int64_t pending_msgs_limit = 65536;
  int64_t pending_bytes_limit = 256 << 20;
  // Whether connect() returns a transport (that connects later) when no
  // server answers at first; off, it fails with Unavailable.
  bool retry_on_failed_connect = true;
  // Bounds each connection attempt (TCP connect, then the server's INFO and
  // PONG); a connect() against a server that accepts but does not answer
  // takes this long.
  int connect_timeout_ms = 2000;
  // A server that stops answering (a hung process or a dead link rather than
  // a refused connection) is noticed within ping_interval_ms *
  // (max_pings_out + 1): 15 s by default, so that health reports it while an
  // operator still looks.
  int ping_interval_ms = 5000;
  int max_pings_out = 2;
  // TLS. On when `tls` is set or any URL starts with tls://; then
  // tls_ca_file is required (the CA that signed the server's certificate),
  // and tls_cert_file and tls_key_file go together (the client certificate
  // and its key, PEM: mTLS). tls_server_name is the name the server's
  // certificate must carry (a DNS name or IP address in its
  // subjectAltName); empty: the URLs' host when they all name the same one.
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
  // Uniform 64-bit values for the jitter of the reopen backoff, called on
  // the transport's reopening thread only; empty: a generator seeded from
  // std::random_device.
  std::function<uint64_t()> random;
};

class NatsTransport final : public Transport {
 public:
  // The payload limit assumed until the server has told its own.
  static constexpr size_t kDefaultMaxPayload = size_t{1} << 20;
  // Bounds of the backoff between new connections after NATS.c closed one.
  // The cap keeps a daemon that was cut off for long from waiting long once
  // its server answers again.
  static constexpr std::chrono::milliseconds kReopenBackoffMin{250};
  static constexpr std::chrono::milliseconds kReopenBackoffMax{10'000};
  // While not connected, how often a probe connection asks why (above).
  static constexpr std::chrono::milliseconds kProbeEvery{3'000};

  // The delay before opening a new connection after `failures` closed
  // connections in a row that never connected (0 for the first): the base
  // kReopenBackoffMin * 2^failures, capped at kReopenBackoffMax, of which
  // `random` picks a value in [base / 2, base].
  static std::chrono::milliseconds reopen_delay(uint32_t failures, uint64_t random);

  // Validates `options` (InvalidArgument) and connects. Unavailable when no
  // server is reachable and retry_on_failed_connect is off; with it on, a
  // transport that connects later, whatever the first attempt met. Blocks
  // for one connection attempt (up to connect_timeout_ms). The first
  // transport in the process initializes NATS.c; nothing tears it down
  // (other connections may live).
  static StatusOr<std::unique_ptr<NatsTransport>> connect(const NatsOptions& options);

  ~NatsTransport() override;

  NatsTransport(const NatsTransport&) = delete;
  NatsTransport& operator=(const NatsTransport&) = delete;

  Status publish(std::string_view subject, std::string_view data) override;
  StatusOr<uint64_t> subscribe(std::string_view pattern, Handler handler) override;
  void unsubscribe(uint64_t id) override;
  // Inside a handler: the reply subject of the message it was called with
  // (a NATS request's; empty when the sender wants no answer). A handler runs
  // on the thread that received the message, so this is that message's.
  static std::string& current_reply();
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
  // Messages dropped so far by its live subscriptions, and by every
  // subscription on the connections it replaced.
  uint64_t dropped_messages() const;
  // How many times a closed connection was replaced by a new one.
  uint64_t connections_replaced() const;
  // Why the last attempt to connect failed, in NATS.c's words ("SSL
  // handshake error: certificate verify failed", "Authorization
  // Violation", ...), prefixed by what failed; empty once connected, and
  // before any attempt failed.
  std::string last_error() const;

 private:
  friend struct NatsCallbacks;
  struct Core;
  struct Subscription;

  explicit NatsTransport(std::shared_ptr<Core> core);

  std::shared_ptr<Core> core_;
};

}  // namespace canopy::sync

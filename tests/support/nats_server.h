// NatsServer: a real nats-server on loopback, owned by a test.
//
// Each NatsServer has its own TempDir holding `nats.conf` and `nats.log`. The
// first start() picks two free ports on 127.0.0.1 (client and HTTP
// monitoring), writes the config and starts `nats-server -c nats.conf`; later
// start() calls (after stop() or kill()) reuse the same config and therefore
// the same ports, so a restarted server is where clients left it. start()
// returns only once the client port answers with the server's `INFO {`
// greeting, or fails after `start_timeout`, with the reason and the tail of
// the server's log in *error.
//
// Nothing but 127.0.0.1 is bound by the generated config; `extra_config` is
// appended verbatim (cluster, leafnodes, accounts, jetstream, ...) and must
// keep to loopback too. `max_payload` must not exceed the server's
// max_pending (64 MiB unless raised in extra_config).
//
// With `tls` set (a cert_file), the client port takes TLS only (the greeting
// INFO still comes in clear, then the client upgrades) and url() is
// "tls://127.0.0.1:PORT"; with tls.verify, clients must present a
// certificate signed by tls.ca_file (mTLS). tls_block() writes the same
// block for leafnodes { } and remotes in extra_config.
//
// The server binary is, in order: options.binary, $CANOPY_NATS_SERVER, or
// `nats-server` from $PATH, /usr/sbin or /usr/local/sbin.
//
// The destructor kills the server (SIGKILL) and removes the directory. See
// Process for how the server is tied to the thread that started it.
// REQUIRES: external synchronization.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace canopy::testing {

// nats-server's `tls { }` block.
struct NatsTlsFiles {
  std::string cert_file;  // empty: no TLS
  std::string key_file;
  std::string ca_file;  // verifies the peer's certificate
  bool verify = false;  // the peer must present a certificate (mTLS)
  // verify, and the certificate's subject names the user (authorization
  // users listed by their certificate's DN, no password).
  bool verify_and_map = false;
  double timeout_s = 2;  // handshake timeout
};

// `tls { ... }` for a nats-server config, indented by `indent` spaces.
std::string tls_block(const NatsTlsFiles& tls, int indent = 0);

struct NatsServerOptions {
  // Largest message payload the server accepts, in bytes (nats-server's
  // default is 1 MiB).
  int64_t max_payload = 1 << 20;
  // TLS on the client port; off unless tls.cert_file is set.
  NatsTlsFiles tls;
  // Appended to the generated config, after a newline.
  std::string extra_config;
  // Path or name of the nats-server binary; empty: see the header comment.
  std::string binary;
  // How long start() waits for the server to accept clients.
  std::chrono::milliseconds start_timeout{10'000};
};

class NatsServer {
 public:
  explicit NatsServer(NatsServerOptions options = {});
  ~NatsServer() = default;  // Process kills, TempDir removes.

  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  // Starts the server (see above). Returns false, with the reason in *error
  // if error is not null, when it could not be started; a server that is
  // already running is an error too.
  bool start(std::string* error = nullptr);

  // Graceful stop: SIGTERM, then waits up to `timeout` for the exit; past it,
  // SIGKILL. Returns whether the server exited on SIGTERM within the timeout
  // (true also when it was not running).
  bool stop(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Crash: SIGKILL, and waits for the exit.
  void kill();

  // Whether the server process is alive.
  bool running();

  // Client port and URL ("nats://127.0.0.1:PORT", tls:// with TLS); 0 and "" before the first
  // start() picked the ports.
  int port() const { return port_; }
  std::string url() const;
  // HTTP monitoring port (/varz, /connz, /healthz), on 127.0.0.1.
  int monitor_port() const { return monitor_port_; }

  std::string config_path() const { return dir_.file("nats.conf"); }
  std::string log_path() const { return dir_.file("nats.log"); }
  const TempDir& dir() const { return dir_; }
  // The last `max_bytes` of the server's log, for failure messages.
  std::string log_tail(size_t max_bytes = 4096) const;

  // The process, for tests that need its pid or want to signal it directly.
  Process& process() { return process_; }

 private:
  bool write_config(std::string* error) const;
  bool launch(std::string* error);
  bool wait_ready(std::string* error);

  NatsServerOptions options_;
  TempDir dir_;
  Process process_;
  int port_ = 0;
  int monitor_port_ = 0;
};

}  // namespace canopy::testing

// MqttSwarm: many idle MQTT 3.1.1 devices held by one thread, for the
// device.connections benchmark (100,000 connections to one broker).
//
// One epoll loop, non-blocking sockets, no thread per connection: each
// device is a TCP connection that sends CONNECT, waits for CONNACK, then only
// PINGREQs (every ping_every, spread by when each connected) and reads
// PINGRESPs. Packets come from spoke/bus/mqtt_packet.h, the spoke's encoder.
//
// Ports: one destination (127.0.0.1:port) gives one source address about
// 28,000 ephemeral ports (net.ipv4.ip_local_port_range), so connection i
// binds source address sources[i / per_source] (127.0.0.2, 127.0.0.3, ...)
// with IP_BIND_ADDRESS_NO_PORT, the kernel choosing the port at connect().
// plan_sources() says how many addresses a count needs. Keep per_source well
// below the range: the kernel searches for a free port at each connect(), and
// that search slows as the range fills (19,000 connections from one address
// took 5.5 s of system time against 2 s from ten; device.connections uses
// 2,000 an address).
//
// Pacing: at most `window` connections are between connect() and CONNACK at
// once, as a fleet reconnecting through a load balancer would be; a burst of
// 100,000 SYNs would only overflow the broker's accept backlog
// (net.core.somaxconn) and measure SYN retransmission timers.
//
// What is counted (stats()): a connection is `up` from an accepted CONNACK
// (return code 0) until it closes; `refused` when the CONNACK's return code
// is not 0; `failed` when the TCP connect fails, or the connection closes or
// connect_timeout passes before a CONNACK; `lost` when an up connection is
// closed by anything but close_all() (EOF, reset, error, a malformed packet).
// A PINGREQ still unanswered when the next one is due counts in
// `pings_unanswered`. Each first failure's reason is kept (first_error).
//
// close_all() closes with SO_LINGER 0 (a reset, no TIME_WAIT), so the same
// source addresses can connect again at once; it leaves the counts as they
// were (`up` is then what was held when it was called).
//
// REQUIRES: external synchronization (one thread drives it).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

namespace canopy::bench {

struct SwarmCredentials {
  std::string client_id;
  std::string user;  // empty: no user name and no password
  std::string password;
};

struct SwarmOptions {
  int port = 0;                      // the broker, on 127.0.0.1
  std::vector<std::string> sources;  // source addresses, e.g. plan_sources(...)
  int per_source = 20'000;           // connections per source address
  int window = 256;                  // connects in flight (before CONNACK)
  uint16_t keep_alive_s = 60;        // sent in CONNECT
  std::chrono::milliseconds ping_every{30'000};
  std::chrono::milliseconds connect_timeout{30'000};
  // The credentials of device i.
  std::function<SwarmCredentials(int i)> credentials;
};

struct SwarmStats {
  int64_t up = 0;
  int64_t refused = 0;
  int64_t failed = 0;
  int64_t lost = 0;
  int64_t pings_sent = 0;
  int64_t pongs = 0;
  int64_t pings_unanswered = 0;
  std::string first_error;
};

// `count` source addresses 127.0.0.2, 127.0.0.3, ... for `connections` at
// `per_source` each; empty when per_source < 1 or more than 250 would be
// needed (127.0.0.2 to 127.0.0.251).
std::vector<std::string> plan_sources(int connections, int per_source);

class MqttSwarm {
 public:
  // REQUIRES: options.credentials is set, sources non-empty.
  explicit MqttSwarm(SwarmOptions options);
  ~MqttSwarm();
  MqttSwarm(const MqttSwarm&) = delete;
  MqttSwarm& operator=(const MqttSwarm&) = delete;

  // Opens `count` connections (window at a time) and runs the loop until
  // each is up or has failed, or `limit` passes (the rest count as failed).
  // False, with first_error set, when count exceeds sources x per_source or
  // the process has too few file descriptors. Call once.
  bool connect_all(int count, std::chrono::milliseconds limit);
  // Runs the loop for `duration`: pings, PINGRESPs, and losses counted.
  void hold(std::chrono::milliseconds duration);
  // Closes every connection (not counted as lost).
  void close_all();

  const SwarmStats& stats() const { return stats_; }

 private:
  enum class State : uint8_t { kIdle, kConnecting, kAwaitConnack, kUp, kClosed };
  struct Conn {
    int fd = -1;
    State state = State::kIdle;
    bool ping_outstanding = false;
    std::string in;                               // bytes of an incomplete packet
    std::string out;                              // bytes the socket did not take yet
    std::chrono::steady_clock::time_point since;  // connect() started
  };
  struct PingDue {
    std::chrono::steady_clock::time_point at;
    int conn;
  };

  void open(int i);
  void poll_once(int timeout_ms);
  void on_event(int i, uint32_t events);
  void on_writable(int i);
  void on_readable(int i);
  void on_packet(int i, uint8_t first, std::string_view body);
  bool send(int i, const std::string& bytes);
  // Counts a failure (failed, or lost if it was up) and closes.
  void fail(int i, const std::string& why);
  void note_error(const std::string& why);
  void close_conn(int i);
  void run_pings();
  void expire_connects();

  SwarmOptions o_;
  int epfd_ = -1;
  std::vector<Conn> conns_;
  std::deque<PingDue> pings_;      // FIFO: due times only grow
  std::deque<int> connect_order_;  // connections in the order they were opened
  int in_flight_ = 0;
  bool closing_ = false;
  SwarmStats stats_;
};

}  // namespace canopy::bench

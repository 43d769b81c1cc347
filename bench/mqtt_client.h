// MqttClient: a simulated MQTT 3.1.1 device for the device benchmarks
// (device.ingest, device.twin), over a plain loopback TCP socket.
//
// Packets are encoded by spoke/bus/mqtt_packet.h, the spoke's own encoder.
// Two ways to read: blocking (connect, subscribe, ping, read_packet: one
// thread per client, as device.ingest drives them), or, once connected and
// subscribed, read_available() from an event loop (poll/epoll on fd()) that
// serves thousands of clients from one thread, as device.twin does.
//
// connect(), subscribe() and ping() wait for their answer; a PUBLISH that
// arrives meanwhile (a retained message right after SUBSCRIBE) is kept, and
// is the first packet read_packet() or read_available() returns; the caller
// acknowledges it (puback) as any other. publish() only buffers; flush()
// sends.
//
// REQUIRES: external synchronization. Reads (read_packet, read_available)
// and writes (publish, flush, puback, pingreq) touch separate state, so one
// thread may read while others write, the writes serialized among
// themselves; connect, subscribe and ping do both.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "spoke/bus/mqtt_packet.h"

namespace canopy::bench {

class MqttClient {
 public:
  MqttClient() = default;
  ~MqttClient();
  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;

  // Connects to 127.0.0.1:port and waits for CONNACK; true if accepted.
  // An empty `user` sends neither user name nor password.
  bool connect(int port, const std::string& id, const std::string& user, const std::string& pw,
               bool clean_session = true);
  // Buffers a PUBLISH (QoS 0 or 1); flush() sends what is buffered.
  void publish(std::string_view topic, std::string_view payload, int qos);
  bool flush();
  // SUBSCRIBE to one filter: the QoS the SUBACK grants, or -1 if refused
  // (0x80) or the connection failed.
  int subscribe(const std::string& filter, int qos);
  // A round trip: everything sent before has been processed by the broker.
  bool ping();
  // Sends a PINGREQ (with what is buffered) without waiting for PINGRESP: the
  // keep-alive of a client read by an event loop. The server closes a
  // connection that sends nothing for 1.5 keep-alive periods (60 s here).
  bool pingreq();
  // Blocking: the next packet's first byte and body.
  bool read_packet(uint8_t* first, std::string* body);
  // Sends a PUBACK for a received QoS 1 PUBLISH (with what is buffered).
  bool puback(uint16_t id);

  // The socket, for poll/epoll once connected.
  int fd() const { return fd_; }
  // Non-blocking: reads what the socket holds and calls `on_frame` for each
  // whole packet (its body valid during the call). False when the connection
  // is closed or failed, or a packet is malformed.
  bool read_available(const std::function<void(const spoke::bus::mqtt::Frame&)>& on_frame);

 private:
  bool send_bytes(std::string_view bytes);
  // Blocking read of more bytes into rbuf_; false on EOF or error.
  bool fill();
  // Takes the next whole packet out of rbuf_, if it holds one.
  spoke::bus::mqtt::SplitResult take(uint8_t* first, std::string* body);
  // Reads packets until one of `type`; PUBLISHes before it go to early_.
  bool await(uint8_t type, std::string* body);

  int fd_ = -1;
  uint16_t next_id_ = 1;
  std::string out_;
  std::string rbuf_;
  size_t rpos_ = 0;
  std::deque<std::pair<uint8_t, std::string>> early_;  // PUBLISHes await() passed over
};

}  // namespace canopy::bench

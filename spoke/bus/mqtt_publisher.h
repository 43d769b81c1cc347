// MqttPublisher: a minimal MQTT 3.1.1 client that publishes retained QoS 1
// messages, for the spoke's desired twins (docs/device-bus.md, *Twins*).
//
// Why MQTT and not NATS: nats-server keeps MQTT retained messages in the
// account's `$MQTT_rmsgs` JetStream stream, written only by its MQTT layer
// when it receives a PUBLISH with the retain flag (mqtt.go,
// handleRetainedMsg); a NATS publish on t.<tenant>.... reaches the
// subscribers connected at that moment and is never retained. So the spoke
// connects to its own bus as an MQTT client, one connection per tenant, as
// the tenant account's `_canopy@<tenant>` user (bus_spec.h), and publishes
// each changed desired document retained at QoS 1: nats-server stores it
// before it sends PUBACK, and delivers it to every subscriber, now and on
// every later subscribe.
//
// The protocol subset: CONNECT (clean session, user name and password),
// CONNACK, PUBLISH at QoS 1 with retain (pipelined: many unacknowledged at
// once), PUBACK, DISCONNECT. Blocking, with a deadline on every read; one
// publisher is used by one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/status.h"

namespace canopy::spoke::bus {

class MqttPublisher {
 public:
  MqttPublisher() = default;
  ~MqttPublisher();
  MqttPublisher(const MqttPublisher&) = delete;
  MqttPublisher& operator=(const MqttPublisher&) = delete;

  // Connects and waits for CONNACK: Unavailable when the server cannot be
  // reached or does not answer, PermissionDenied when it refuses (CONNACK's
  // return code in the message).
  Status connect(const std::string& host, int port, const std::string& client_id,
                 const std::string& user, const std::string& password,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Publishes `payload` on `topic` at QoS 1 with retain, and waits for its
  // PUBACK. An empty payload clears the topic's retained message.
  Status publish_retained(std::string_view topic, std::string_view payload);
  // The same for many messages, pipelined: up to `window` PUBLISHes (and
  // while more than one, up to `window_bytes` of topics and payloads) are
  // unacknowledged at once, as MQTT 3.1.1 allows at QoS 1; the server
  // acknowledges each once it stored it. results[i] is messages[i]'s: OK once
  // its PUBACK came, InvalidArgument for a message too large for MQTT (the
  // others go on), and on a broken connection the error for every message
  // not yet acknowledged (the connection is closed).
  struct RetainedMessage {
    std::string_view topic;
    std::string_view payload;
  };
  std::vector<Status> publish_retained_all(const std::vector<RetainedMessage>& messages,
                                           size_t window = 64, size_t window_bytes = 1 << 20);
  // Sends DISCONNECT and closes; also done by the destructor.
  void disconnect();
  bool connected() const { return fd_ >= 0; }

 private:
  Status send_all(const std::string& bytes);
  // Reads one packet: its first byte and its body.
  Status read_packet(uint8_t* type, std::string* body);
  Status read_exact(char* out, size_t n);

  int fd_ = -1;
  uint16_t next_id_ = 1;
  std::chrono::milliseconds timeout_{5000};
};

}  // namespace canopy::spoke::bus

// MQTT 3.1.1 packets, encoded and framed: the one encoder of the spoke's
// MqttPublisher and of the benchmarks' simulated devices (bench/mqtt_client.h).
//
// Only what those two need: CONNECT, PUBLISH (QoS 0 or 1, retained or not),
// PUBACK, SUBSCRIBE (one filter), PINGREQ, DISCONNECT, and the framing of a
// received packet (fixed header, remaining length, body). No I/O here: the
// callers own their sockets, blocking or not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace canopy::spoke::bus::mqtt {

// Packet types, the high nibble of a fixed header's first byte.
inline constexpr uint8_t kConnect = 1;
inline constexpr uint8_t kConnack = 2;
inline constexpr uint8_t kPublish = 3;
inline constexpr uint8_t kPuback = 4;
inline constexpr uint8_t kSubscribe = 8;
inline constexpr uint8_t kSuback = 9;
inline constexpr uint8_t kPingreq = 12;
inline constexpr uint8_t kPingresp = 13;
inline constexpr uint8_t kDisconnect = 14;

// The largest remaining length MQTT's four length bytes can carry.
inline constexpr size_t kMaxRemaining = 268'435'455;

void put_u16(std::string* out, uint16_t v);
void put_string(std::string* out, std::string_view s);
// A whole packet: `first` (type and flags), the remaining length, `body`.
// REQUIRES: body.size() <= kMaxRemaining.
std::string frame(uint8_t first, std::string_view body);

struct ConnectOptions {
  std::string_view client_id;
  std::string_view user;      // empty: no user name and no password
  std::string_view password;  // sent only with a user name
  bool clean_session = true;
  uint16_t keep_alive_s = 60;
};
std::string connect_packet(const ConnectOptions& o);
// PUBLISH at `qos` 0 or 1; `id` is the packet id (QoS 1 only, never 0).
std::string publish_packet(std::string_view topic, std::string_view payload, int qos, bool retain,
                           uint16_t id);
std::string puback_packet(uint16_t id);
std::string subscribe_packet(uint16_t id, std::string_view filter, int qos);
std::string pingreq_packet();
std::string disconnect_packet();

// One received packet, viewing the bytes it was split from.
struct Frame {
  uint8_t first = 0;  // type << 4 | flags
  std::string_view body;
  uint8_t type() const { return first >> 4; }
};
enum class SplitResult { kFrame, kIncomplete, kMalformed };
// Splits the packet at the start of `in`: kFrame with *out and *consumed
// (its whole length) set; kIncomplete when `in` holds only part of it;
// kMalformed when its remaining length does not end within four bytes.
SplitResult split_frame(std::string_view in, Frame* out, size_t* consumed);

// A received PUBLISH's parts (body of a Frame of type kPublish).
struct PublishView {
  std::string_view topic;
  std::string_view payload;
  int qos = 0;
  bool retain = false;
  uint16_t id = 0;  // QoS 1 only
};
// False when the body is too short for its topic (and packet id).
bool parse_publish(const Frame& f, PublishView* out);

}  // namespace canopy::spoke::bus::mqtt

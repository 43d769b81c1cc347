#include "spoke/bus/mqtt_packet.h"

namespace canopy::spoke::bus::mqtt {

void put_u16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xff));
}

void put_string(std::string* out, std::string_view s) {
  put_u16(out, static_cast<uint16_t>(s.size()));
  out->append(s);
}

std::string frame(uint8_t first, std::string_view body) {
  std::string out(1, static_cast<char>(first));
  size_t n = body.size();
  do {
    uint8_t byte = n % 128;
    n /= 128;
    if (n > 0) byte |= 0x80;
    out.push_back(static_cast<char>(byte));
  } while (n > 0);
  out.append(body);
  return out;
}

std::string connect_packet(const ConnectOptions& o) {
  std::string body;
  put_string(&body, "MQTT");
  body.push_back(4);  // protocol level: 3.1.1
  uint8_t flags = o.clean_session ? 0x02 : 0x00;
  if (!o.user.empty()) flags |= 0x80 | 0x40;  // user name, password
  body.push_back(static_cast<char>(flags));
  put_u16(&body, o.keep_alive_s);
  put_string(&body, o.client_id);
  if (!o.user.empty()) {
    put_string(&body, o.user);
    put_string(&body, o.password);
  }
  return frame(kConnect << 4, body);
}

std::string publish_packet(std::string_view topic, std::string_view payload, int qos, bool retain,
                           uint16_t id) {
  std::string body;
  put_string(&body, topic);
  if (qos > 0) put_u16(&body, id);
  body.append(payload);
  return frame(static_cast<uint8_t>(kPublish << 4 | qos << 1 | (retain ? 1 : 0)), body);
}

std::string puback_packet(uint16_t id) {
  std::string body;
  put_u16(&body, id);
  return frame(kPuback << 4, body);
}

std::string subscribe_packet(uint16_t id, std::string_view filter, int qos) {
  std::string body;
  put_u16(&body, id);
  put_string(&body, filter);
  body.push_back(static_cast<char>(qos));
  return frame(kSubscribe << 4 | 0x02, body);  // SUBSCRIBE's reserved flags are 0010
}

std::string pingreq_packet() { return frame(kPingreq << 4, ""); }
std::string disconnect_packet() { return frame(kDisconnect << 4, ""); }

SplitResult split_frame(std::string_view in, Frame* out, size_t* consumed) {
  if (in.empty()) return SplitResult::kIncomplete;
  size_t length = 0;
  size_t pos = 1;
  for (int shift = 0;; shift += 7) {
    if (shift > 21) return SplitResult::kMalformed;
    if (pos == in.size()) return SplitResult::kIncomplete;
    const auto b = static_cast<uint8_t>(in[pos++]);
    length |= static_cast<size_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) break;
  }
  if (in.size() - pos < length) return SplitResult::kIncomplete;
  out->first = static_cast<uint8_t>(in[0]);
  out->body = in.substr(pos, length);
  *consumed = pos + length;
  return SplitResult::kFrame;
}

bool parse_publish(const Frame& f, PublishView* out) {
  const std::string_view b = f.body;
  if (b.size() < 2) return false;
  const size_t topic_len =
      static_cast<size_t>(static_cast<uint8_t>(b[0])) << 8 | static_cast<uint8_t>(b[1]);
  out->qos = (f.first >> 1) & 0x03;
  out->retain = (f.first & 0x01) != 0;
  size_t pos = 2 + topic_len;
  if (b.size() < pos) return false;
  out->topic = b.substr(2, topic_len);
  out->id = 0;
  if (out->qos > 0) {
    if (b.size() < pos + 2) return false;
    out->id =
        static_cast<uint16_t>(static_cast<uint8_t>(b[pos]) << 8 | static_cast<uint8_t>(b[pos + 1]));
    pos += 2;
  }
  out->payload = b.substr(pos);
  return true;
}

}  // namespace canopy::spoke::bus::mqtt

// The MQTT packet encoder and splitter: the bytes of each packet as MQTT
// 3.1.1 lays them out, remaining lengths across their byte boundaries, and a
// stream split packet by packet, whole or in pieces.
#include "spoke/bus/mqtt_packet.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace canopy::spoke::bus::mqtt {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;

TEST(MqttPacket, EncodesConnectWithCredentialsAndSessionFlag) {
  ConnectOptions o;
  o.client_id = "c";
  o.user = "u";
  o.password = "p";
  o.clean_session = false;
  EXPECT_EQ(connect_packet(o),
            "\x10\x13\x00\x04MQTT\x04\xC0\x00\x3C\x00\x01"
            "c\x00\x01u\x00\x01p"s);
  o.user = "";
  o.clean_session = true;
  EXPECT_EQ(connect_packet(o),
            "\x10\x0D\x00\x04MQTT\x04\x02\x00\x3C\x00\x01"
            "c"s);
}

TEST(MqttPacket, EncodesPublishSubscribeAndPuback) {
  EXPECT_EQ(publish_packet("t/a", "x", 1, true, 0x0102), "\x33\x08\x00\x03t/a\x01\x02x"s);
  EXPECT_EQ(publish_packet("t/a", "x", 0, false, 7), "\x30\x06\x00\x03t/ax"s);
  EXPECT_EQ(subscribe_packet(5, "t/#", 1), "\x82\x08\x00\x05\x00\x03t/#\x01"s);
  EXPECT_EQ(puback_packet(0x0A0B), "\x40\x02\x0A\x0B"s);
  EXPECT_EQ(pingreq_packet(), "\xC0\x00"s);
  EXPECT_EQ(disconnect_packet(), "\xE0\x00"s);
}

TEST(MqttPacket, RemainingLengthCrossesByteBoundaries) {
  for (size_t n : {size_t{0}, size_t{127}, size_t{128}, size_t{16383}, size_t{16384}}) {
    const std::string p = frame(0x30, std::string(n, 'x'));
    const size_t length_bytes = n < 128 ? 1 : n < 16384 ? 2 : 3;
    EXPECT_EQ(p.size(), 1 + length_bytes + n) << n;
    Frame f;
    size_t consumed = 0;
    ASSERT_EQ(split_frame(p, &f, &consumed), SplitResult::kFrame) << n;
    EXPECT_EQ(consumed, p.size());
    EXPECT_EQ(f.body.size(), n);
    // Every proper prefix is incomplete.
    for (size_t cut : {size_t{0}, size_t{1}, p.size() - 1}) {
      if (cut >= p.size()) continue;
      EXPECT_EQ(split_frame(std::string_view(p).substr(0, cut), &f, &consumed),
                SplitResult::kIncomplete)
          << n << " cut at " << cut;
    }
  }
}

TEST(MqttPacket, SplitsAStreamAndParsesPublishes) {
  const std::string stream = "\x90\x03\x00\x01\x01"s +
                             publish_packet("t/d", "{\"n\":1}", 1, true, 9) +
                             publish_packet("t/e", "", 0, false, 0);
  std::string_view rest = stream;
  Frame f;
  size_t consumed = 0;
  ASSERT_EQ(split_frame(rest, &f, &consumed), SplitResult::kFrame);
  EXPECT_EQ(f.type(), kSuback);
  rest.remove_prefix(consumed);

  ASSERT_EQ(split_frame(rest, &f, &consumed), SplitResult::kFrame);
  PublishView p;
  ASSERT_TRUE(parse_publish(f, &p));
  EXPECT_EQ(p.topic, "t/d");
  EXPECT_EQ(p.payload, "{\"n\":1}");
  EXPECT_EQ(p.qos, 1);
  EXPECT_TRUE(p.retain);
  EXPECT_EQ(p.id, 9);
  rest.remove_prefix(consumed);

  ASSERT_EQ(split_frame(rest, &f, &consumed), SplitResult::kFrame);
  ASSERT_TRUE(parse_publish(f, &p));
  EXPECT_EQ(p.topic, "t/e");
  EXPECT_EQ(p.payload, "");
  EXPECT_EQ(p.qos, 0);
  rest.remove_prefix(consumed);
  EXPECT_TRUE(rest.empty());
}

TEST(MqttPacket, RefusesMalformedInput) {
  Frame f;
  size_t consumed = 0;
  // A remaining length that does not end within four bytes.
  EXPECT_EQ(split_frame("\x30\xFF\xFF\xFF\xFF\x01"s, &f, &consumed), SplitResult::kMalformed);
  // A PUBLISH whose topic runs past its body, or without its packet id.
  PublishView p;
  EXPECT_FALSE(parse_publish(Frame{0x30, "\x00\x05t/"sv}, &p));
  EXPECT_FALSE(parse_publish(Frame{0x32, "\x00\x01t\x01"sv}, &p));
  EXPECT_FALSE(parse_publish(Frame{0x30, "\x00"sv}, &p));
}

}  // namespace
}  // namespace canopy::spoke::bus::mqtt

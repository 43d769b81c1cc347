#include "spoke/bus/mqtt_publisher.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "spoke/bus/mqtt_packet.h"

namespace canopy::spoke::bus {
namespace {

constexpr uint8_t kConnack = mqtt::kConnack << 4;
constexpr uint8_t kPuback = mqtt::kPuback << 4;

const char* connack_reason(int rc) {
  switch (rc) {
    case 1:
      return "unacceptable protocol version";
    case 2:
      return "identifier rejected";
    case 3:
      return "server unavailable";
    case 4:
      return "bad user name or password";
    case 5:
      return "not authorized";
    default:
      return "unknown return code";
  }
}

}  // namespace

MqttPublisher::~MqttPublisher() { disconnect(); }

Status MqttPublisher::connect(const std::string& host, int port, const std::string& client_id,
                              const std::string& user, const std::string& password,
                              std::chrono::milliseconds timeout) {
  disconnect();
  timeout_ = timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string where = host + ":" + std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
    return unavailable("mqtt " + where + ": " + gai_strerror(rc));
  }
  int fd = -1;
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) return unavailable("mqtt " + where + ": cannot connect: " + std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fd_ = fd;

  mqtt::ConnectOptions co;
  co.client_id = client_id;
  co.user = user;
  co.password = password;
  if (Status st = send_all(mqtt::connect_packet(co)); !st.ok()) {
    disconnect();
    return st;
  }
  uint8_t type = 0;
  std::string reply;
  if (Status st = read_packet(&type, &reply); !st.ok()) {
    disconnect();
    return st;
  }
  if (type != kConnack || reply.size() != 2) {
    disconnect();
    return unavailable("mqtt " + where + ": expected CONNACK, got packet type " +
                       std::to_string(type >> 4));
  }
  const int rc = static_cast<uint8_t>(reply[1]);
  if (rc != 0) {
    disconnect();
    return permission_denied("mqtt " + where + ": CONNECT as " + user +
                             " refused: " + connack_reason(rc) + " (" + std::to_string(rc) + ")");
  }
  return ok_status();
}

Status MqttPublisher::publish_retained(std::string_view topic, std::string_view payload) {
  return publish_retained_all({RetainedMessage{topic, payload}}).front();
}

std::vector<Status> MqttPublisher::publish_retained_all(
    const std::vector<RetainedMessage>& messages, size_t window, size_t window_bytes) {
  std::vector<Status> results(messages.size());
  if (fd_ < 0) {
    for (Status& st : results) st = failed_precondition("mqtt: not connected");
    return results;
  }
  if (window == 0) window = 1;
  // Packet id -> the message it carries, for the PUBLISHes not yet acknowledged.
  std::unordered_map<uint16_t, size_t> in_flight;
  size_t in_flight_bytes = 0;
  size_t next = 0;
  std::vector<size_t> bytes(messages.size(), 0);
  // On a broken connection every message without its PUBACK fails with `st`.
  auto fail_rest = [&](const Status& st) {
    for (const auto& [id, i] : in_flight) results[i] = st;
    for (; next < messages.size(); ++next) results[next] = st;
    disconnect();
    return results;
  };
  while (next < messages.size() || !in_flight.empty()) {
    while (next < messages.size() && in_flight.size() < window &&
           (in_flight.empty() || in_flight_bytes < window_bytes)) {
      const RetainedMessage& m = messages[next];
      // The body is the topic with its two length bytes, the packet id and the payload.
      if (m.topic.size() + m.payload.size() > mqtt::kMaxRemaining - 4) {
        results[next++] = invalid_argument("mqtt: message too large");
        continue;
      }
      uint16_t id = next_id_++;
      if (next_id_ == 0) next_id_ = 1;
      while (in_flight.contains(id)) {  // only after 65,535 ids in one window: never
        id = next_id_++;
        if (next_id_ == 0) next_id_ = 1;
      }
      if (Status st = send_all(mqtt::publish_packet(m.topic, m.payload, 1, /*retain=*/true, id));
          !st.ok()) {
        return fail_rest(st);
      }
      in_flight.emplace(id, next);
      bytes[next] = m.topic.size() + m.payload.size();
      in_flight_bytes += bytes[next];
      ++next;
    }
    if (in_flight.empty()) break;
    uint8_t type = 0;
    std::string reply;
    if (Status st = read_packet(&type, &reply); !st.ok()) return fail_rest(st);
    if ((type & 0xF0) != kPuback || reply.size() != 2) continue;  // nothing else is expected
    const uint16_t acked = static_cast<uint16_t>((static_cast<uint8_t>(reply[0]) << 8) |
                                                 static_cast<uint8_t>(reply[1]));
    auto it = in_flight.find(acked);
    if (it == in_flight.end()) continue;
    results[it->second] = ok_status();
    in_flight_bytes -= bytes[it->second];
    in_flight.erase(it);
  }
  return results;
}

void MqttPublisher::disconnect() {
  if (fd_ < 0) return;
  const std::string bye = mqtt::disconnect_packet();
  (void)::send(fd_, bye.data(), bye.size(), MSG_NOSIGNAL);
  ::close(fd_);
  fd_ = -1;
}

Status MqttPublisher::send_all(const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return unavailable(std::string("mqtt: send: ") + std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
  return ok_status();
}

Status MqttPublisher::read_exact(char* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(timeout_.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0)
      return unavailable("mqtt: no answer within " + std::to_string(timeout_.count()) + " ms");
    const ssize_t r = ::recv(fd_, out + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return unavailable("mqtt: the server closed the connection");
    if (r < 0) return unavailable(std::string("mqtt: recv: ") + std::strerror(errno));
    got += static_cast<size_t>(r);
  }
  return ok_status();
}

Status MqttPublisher::read_packet(uint8_t* type, std::string* body) {
  char first = 0;
  CANOPY_RETURN_IF_ERROR(read_exact(&first, 1));
  *type = static_cast<uint8_t>(first);
  size_t length = 0;
  for (int shift = 0; shift < 28; shift += 7) {
    char b = 0;
    CANOPY_RETURN_IF_ERROR(read_exact(&b, 1));
    length |= static_cast<size_t>(static_cast<uint8_t>(b) & 0x7f) << shift;
    if ((static_cast<uint8_t>(b) & 0x80) == 0) break;
    if (shift == 21) return unavailable("mqtt: malformed remaining length");
  }
  if (length > (1u << 20))
    return unavailable("mqtt: packet of " + std::to_string(length) + " bytes");
  body->assign(length, '\0');
  return length == 0 ? ok_status() : read_exact(body->data(), length);
}

}  // namespace canopy::spoke::bus

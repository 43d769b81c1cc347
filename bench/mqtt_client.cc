#include "bench/mqtt_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace canopy::bench {

namespace mqtt = spoke::bus::mqtt;

MqttClient::~MqttClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool MqttClient::connect(int port, const std::string& id, const std::string& user,
                         const std::string& pw, bool clean_session) {
  if (fd_ >= 0) ::close(fd_);
  rbuf_.clear();
  rpos_ = 0;
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return false;
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  mqtt::ConnectOptions o;
  o.client_id = id;
  o.user = user;
  o.password = pw;
  o.clean_session = clean_session;
  if (!send_bytes(mqtt::connect_packet(o))) return false;
  std::string body;
  return await(mqtt::kConnack, &body) && body.size() == 2 && body[1] == 0;
}

void MqttClient::publish(std::string_view topic, std::string_view payload, int qos) {
  if (next_id_ == 0) next_id_ = 1;  // 0 is not a packet id
  out_ += mqtt::publish_packet(topic, payload, qos, /*retain=*/false, qos > 0 ? next_id_++ : 0);
}

bool MqttClient::flush() {
  const bool ok = send_bytes(out_);
  out_.clear();
  return ok;
}

int MqttClient::subscribe(const std::string& filter, int qos) {
  if (next_id_ == 0) next_id_ = 1;
  if (!send_bytes(mqtt::subscribe_packet(next_id_++, filter, qos))) return -1;
  std::string body;
  if (!await(mqtt::kSuback, &body) || body.size() != 3) return -1;
  const auto granted = static_cast<uint8_t>(body[2]);
  return granted == 0x80 ? -1 : granted;
}

bool MqttClient::pingreq() {
  out_ += mqtt::pingreq_packet();
  return flush();
}

bool MqttClient::puback(uint16_t id) {
  out_ += mqtt::puback_packet(id);
  return flush();
}

bool MqttClient::ping() {
  if (!send_bytes(mqtt::pingreq_packet())) return false;
  std::string body;
  return await(mqtt::kPingresp, &body);
}

bool MqttClient::read_packet(uint8_t* first, std::string* body) {
  if (!early_.empty()) {
    *first = early_.front().first;
    *body = std::move(early_.front().second);
    early_.pop_front();
    return true;
  }
  while (true) {
    switch (take(first, body)) {
      case mqtt::SplitResult::kFrame:
        return true;
      case mqtt::SplitResult::kMalformed:
        return false;
      case mqtt::SplitResult::kIncomplete:
        if (!fill()) return false;
    }
  }
}

bool MqttClient::read_available(const std::function<void(const mqtt::Frame&)>& on_frame) {
  while (!early_.empty()) {
    const auto [first, body] = std::move(early_.front());
    early_.pop_front();
    on_frame(mqtt::Frame{first, body});
  }
  char buf[64 * 1024];
  while (true) {
    const ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) {
      rbuf_.append(buf, static_cast<size_t>(r));
      continue;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
    break;
  }
  while (true) {
    mqtt::Frame f;
    size_t consumed = 0;
    const auto got = mqtt::split_frame(std::string_view(rbuf_).substr(rpos_), &f, &consumed);
    if (got == mqtt::SplitResult::kMalformed) return false;
    if (got == mqtt::SplitResult::kIncomplete) break;
    on_frame(f);
    rpos_ += consumed;
  }
  rbuf_.erase(0, rpos_);
  rpos_ = 0;
  return true;
}

bool MqttClient::send_bytes(std::string_view bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool MqttClient::fill() {
  if (rpos_ > 0) {
    rbuf_.erase(0, rpos_);
    rpos_ = 0;
  }
  char buf[64 * 1024];
  while (true) {
    const ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    rbuf_.append(buf, static_cast<size_t>(r));
    return true;
  }
}

mqtt::SplitResult MqttClient::take(uint8_t* first, std::string* body) {
  mqtt::Frame f;
  size_t consumed = 0;
  const auto got = mqtt::split_frame(std::string_view(rbuf_).substr(rpos_), &f, &consumed);
  if (got != mqtt::SplitResult::kFrame) return got;
  *first = f.first;
  body->assign(f.body);
  rpos_ += consumed;
  return got;
}

bool MqttClient::await(uint8_t type, std::string* body) {
  uint8_t first = 0;
  while (true) {
    // Not read_packet(): the kept PUBLISHes stay for the caller.
    switch (take(&first, body)) {
      case mqtt::SplitResult::kFrame:
        if ((first >> 4) == type) return true;
        if ((first >> 4) == mqtt::kPublish) early_.emplace_back(first, std::move(*body));
        break;
      case mqtt::SplitResult::kMalformed:
        return false;
      case mqtt::SplitResult::kIncomplete:
        if (!fill()) return false;
    }
  }
}

}  // namespace canopy::bench

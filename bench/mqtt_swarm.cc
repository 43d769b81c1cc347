#include "bench/mqtt_swarm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "spoke/bus/mqtt_packet.h"

namespace canopy::bench {

namespace mqtt = spoke::bus::mqtt;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kMaxSources = 250;  // 127.0.0.2 .. 127.0.0.251
constexpr int kEventsPerWait = 1024;
constexpr int kSpareFds = 64;  // the process's own files, epoll, logs

}  // namespace

std::vector<std::string> plan_sources(int connections, int per_source) {
  if (per_source < 1 || connections < 0) return {};
  const int count = std::max(1, (connections + per_source - 1) / per_source);
  if (count > kMaxSources) return {};
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back("127.0.0." + std::to_string(2 + i));
  return out;
}

MqttSwarm::MqttSwarm(SwarmOptions options) : o_(std::move(options)) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
}

MqttSwarm::~MqttSwarm() {
  for (Conn& c : conns_) {
    if (c.fd >= 0) ::close(c.fd);
  }
  if (epfd_ >= 0) ::close(epfd_);
}

bool MqttSwarm::connect_all(int count, std::chrono::milliseconds limit) {
  if (epfd_ < 0) {
    note_error(std::string("epoll_create1: ") + std::strerror(errno));
    return false;
  }
  if (o_.sources.empty() || !o_.credentials || o_.per_source < 1 || o_.window < 1) {
    note_error("swarm options: sources, credentials, per_source and window are required");
    return false;
  }
  if (static_cast<int64_t>(count) >
      static_cast<int64_t>(o_.sources.size()) * static_cast<int64_t>(o_.per_source)) {
    note_error(std::to_string(count) + " connections need more than " +
               std::to_string(o_.sources.size()) + " source addresses of " +
               std::to_string(o_.per_source));
    return false;
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 ||
      rl.rlim_cur < static_cast<rlim_t>(count) + static_cast<rlim_t>(kSpareFds)) {
    note_error("the file descriptor limit " + std::to_string(rl.rlim_cur) + " is below " +
               std::to_string(count + kSpareFds) + ": raise RLIMIT_NOFILE first");
    return false;
  }
  conns_.resize(static_cast<size_t>(count));
  const auto deadline = Clock::now() + limit;
  int next = 0;
  while ((next < count || in_flight_ > 0) && Clock::now() < deadline) {
    while (next < count && in_flight_ < o_.window) open(next++);
    poll_once(10);
    expire_connects();
    run_pings();
  }
  for (int i = 0; i < count; ++i) {
    const State s = conns_[static_cast<size_t>(i)].state;
    if (s == State::kIdle) {
      ++stats_.failed;
      note_error("connect_all: the time limit passed before connection " + std::to_string(i));
    } else if (s == State::kConnecting || s == State::kAwaitConnack) {
      fail(i, "connect_all: the time limit passed before CONNACK");
    }
  }
  return true;
}

void MqttSwarm::hold(std::chrono::milliseconds duration) {
  const auto deadline = Clock::now() + duration;
  for (auto now = Clock::now(); now < deadline; now = Clock::now()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    poll_once(static_cast<int>(std::clamp<int64_t>(left.count(), 1, 100)));
    run_pings();
  }
}

void MqttSwarm::close_all() {
  closing_ = true;
  for (Conn& c : conns_) {
    if (c.fd < 0) continue;
    linger l{1, 0};  // a reset: no TIME_WAIT left on the source ports
    ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(c.fd);
    c.fd = -1;
    c.state = State::kClosed;
  }
}

void MqttSwarm::open(int i) {
  Conn& c = conns_[static_cast<size_t>(i)];
  c.state = State::kConnecting;
  c.since = Clock::now();
  ++in_flight_;
  connect_order_.push_back(i);
  c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c.fd < 0) return fail(i, std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  const std::string& source = o_.sources[static_cast<size_t>(i / o_.per_source)];
  if (::inet_pton(AF_INET, source.c_str(), &src.sin_addr) != 1) {
    return fail(i, "source address \"" + source + "\" is not an IPv4 address");
  }
  if (::bind(c.fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
    return fail(i, "bind " + source + ": " + std::strerror(errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
  ev.data.u32 = static_cast<uint32_t>(i);
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, c.fd, &ev) != 0) {
    return fail(i, std::string("epoll_ctl: ") + std::strerror(errno));
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(o_.port));
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(c.fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0 && errno != EINPROGRESS) {
    return fail(i, "connect from " + source + ": " + std::strerror(errno));
  }
  // Writability (EPOLLOUT) says the TCP connect finished, either way.
}

void MqttSwarm::poll_once(int timeout_ms) {
  epoll_event events[kEventsPerWait];
  const int n = ::epoll_wait(epfd_, events, kEventsPerWait, timeout_ms);
  for (int k = 0; k < n; ++k) on_event(static_cast<int>(events[k].data.u32), events[k].events);
}

void MqttSwarm::on_event(int i, uint32_t events) {
  Conn& c = conns_[static_cast<size_t>(i)];
  if (c.fd < 0) return;
  if (events & EPOLLOUT) on_writable(i);
  if (c.fd >= 0 && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) on_readable(i);
}

void MqttSwarm::on_writable(int i) {
  Conn& c = conns_[static_cast<size_t>(i)];
  if (c.state == State::kConnecting) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(i, std::string("connect: ") + std::strerror(err));
    int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c.state = State::kAwaitConnack;
    const SwarmCredentials cred = o_.credentials(i);
    mqtt::ConnectOptions co;
    co.client_id = cred.client_id;
    co.user = cred.user;
    co.password = cred.password;
    co.keep_alive_s = o_.keep_alive_s;
    send(i, mqtt::connect_packet(co));
    return;
  }
  send(i, "");  // what the socket did not take before
}

void MqttSwarm::on_readable(int i) {
  Conn& c = conns_[static_cast<size_t>(i)];
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n == 0) {
      return fail(i, c.state == State::kUp ? "closed by the broker"
                                           : "closed by the broker before CONNACK");
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      return fail(i, std::string("read: ") + std::strerror(errno));
    }
    c.in.append(buf, static_cast<size_t>(n));
    size_t pos = 0;
    for (;;) {
      mqtt::Frame f;
      size_t used = 0;
      const auto r = mqtt::split_frame(std::string_view(c.in).substr(pos), &f, &used);
      if (r == mqtt::SplitResult::kMalformed) return fail(i, "malformed packet from the broker");
      if (r == mqtt::SplitResult::kIncomplete) break;
      on_packet(i, f.first, f.body);
      if (c.fd < 0) return;
      pos += used;
    }
    c.in.erase(0, pos);
  }
}

void MqttSwarm::on_packet(int i, uint8_t first, std::string_view body) {
  Conn& c = conns_[static_cast<size_t>(i)];
  const uint8_t type = first >> 4;
  if (type == mqtt::kConnack) {
    if (c.state != State::kAwaitConnack || body.size() != 2) {
      return fail(i, "unexpected CONNACK");
    }
    const auto rc = static_cast<uint8_t>(body[1]);
    if (rc != 0) {
      ++stats_.refused;
      note_error("CONNACK return code " + std::to_string(rc) + " for connection " +
                 std::to_string(i));
      return close_conn(i);
    }
    c.state = State::kUp;
    --in_flight_;
    ++stats_.up;
    pings_.push_back({Clock::now() + o_.ping_every, i});
  } else if (type == mqtt::kPingresp) {
    ++stats_.pongs;
    c.ping_outstanding = false;
  }
  // Nothing else is expected by a device that never subscribes; ignored.
}

bool MqttSwarm::send(int i, const std::string& bytes) {
  Conn& c = conns_[static_cast<size_t>(i)];
  c.out += bytes;
  while (!c.out.empty()) {
    const ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    fail(i, std::string("send: ") + std::strerror(errno));
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (c.out.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
  ev.data.u32 = static_cast<uint32_t>(i);
  ::epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev);
  return true;
}

void MqttSwarm::note_error(const std::string& why) {
  if (stats_.first_error.empty()) stats_.first_error = why;
}

void MqttSwarm::fail(int i, const std::string& why) {
  Conn& c = conns_[static_cast<size_t>(i)];
  if (c.state == State::kUp) {
    if (!closing_) ++stats_.lost;
  } else {
    ++stats_.failed;
  }
  note_error(why + " (connection " + std::to_string(i) + ")");
  close_conn(i);
}

void MqttSwarm::close_conn(int i) {
  Conn& c = conns_[static_cast<size_t>(i)];
  if (c.state == State::kConnecting || c.state == State::kAwaitConnack) --in_flight_;
  if (c.state == State::kUp) --stats_.up;
  if (c.fd >= 0) ::close(c.fd);  // also leaves the epoll set
  c.fd = -1;
  c.state = State::kClosed;
  c.in.clear();
  c.out.clear();
}

void MqttSwarm::run_pings() {
  const auto now = Clock::now();
  while (!pings_.empty() && pings_.front().at <= now) {
    const int i = pings_.front().conn;
    pings_.pop_front();
    Conn& c = conns_[static_cast<size_t>(i)];
    if (c.state != State::kUp) continue;
    if (c.ping_outstanding) ++stats_.pings_unanswered;
    c.ping_outstanding = true;
    ++stats_.pings_sent;
    if (!send(i, mqtt::pingreq_packet())) continue;
    pings_.push_back({now + o_.ping_every, i});
  }
}

void MqttSwarm::expire_connects() {
  const auto now = Clock::now();
  while (!connect_order_.empty()) {
    const int i = connect_order_.front();
    const Conn& c = conns_[static_cast<size_t>(i)];
    if (c.state == State::kConnecting || c.state == State::kAwaitConnack) {
      if (now - c.since < o_.connect_timeout) break;
      fail(i, "no CONNACK within the connect timeout");
    }
    connect_order_.pop_front();
  }
}

}  // namespace canopy::bench

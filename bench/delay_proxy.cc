// DelayProxy: see delay_proxy.h.
#include "bench/delay_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>

namespace canopy::bench {

using Clock = std::chrono::steady_clock;

// One direction of one connection: what was read, and when it may be written.
struct DelayProxy::Direction {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<Clock::time_point, std::string>> queue;
  bool closed = false;
};

DelayProxy::DelayProxy(int target_port, std::chrono::milliseconds one_way)
    : target_port_(target_port), one_way_(one_way) {}

DelayProxy::~DelayProxy() {
  stopping_ = true;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (std::thread& t : threads_) t.join();
  for (int fd : fds_) ::close(fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

bool DelayProxy::start(std::string* error) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    *error = std::string("delay proxy: ") + std::strerror(errno);
    return false;
  }
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
  return true;
}

void DelayProxy::accept_loop() {
  while (!stopping_) {
    const int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) {
      if (errno == EINTR) continue;
      return;
    }
    const int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(client);
      if (server >= 0) ::close(server);
      continue;
    }
    const int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::lock_guard lock(mu_);
    fds_.push_back(client);
    fds_.push_back(server);
    for (auto [from, to] : {std::pair{client, server}, std::pair{server, client}}) {
      auto d = std::make_shared<Direction>();
      threads_.emplace_back([this, from, d] { relay(from, d); });
      threads_.emplace_back([this, to, d] { deliver(to, d); });
    }
  }
}

// Reads from `from`, stamping each chunk with the time it may be written.
void DelayProxy::relay(int from, const std::shared_ptr<Direction>& d) {
  char buf[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(from, buf, sizeof(buf));
    if (n <= 0) break;
    std::lock_guard lock(d->mu);
    d->queue.emplace_back(Clock::now() + one_way_, std::string(buf, static_cast<size_t>(n)));
    d->cv.notify_one();
  }
  std::lock_guard lock(d->mu);
  d->closed = true;
  d->cv.notify_one();
}

// Writes each chunk to `to` once its time has come; closes the direction
// after the last one.
void DelayProxy::deliver(int to, const std::shared_ptr<Direction>& d) {
  std::unique_lock lock(d->mu);
  for (;;) {
    if (d->queue.empty()) {
      if (d->closed) break;
      d->cv.wait(lock);
      continue;
    }
    const Clock::time_point due = d->queue.front().first;
    if (Clock::now() < due) {
      d->cv.wait_until(lock, due);
      continue;
    }
    std::string chunk = std::move(d->queue.front().second);
    d->queue.pop_front();
    lock.unlock();
    size_t off = 0;
    while (off < chunk.size()) {
      const ssize_t n = ::write(to, chunk.data() + off, chunk.size() - off);
      if (n <= 0) {
        ::shutdown(to, SHUT_RDWR);
        return;
      }
      off += static_cast<size_t>(n);
    }
    lock.lock();
  }
  ::shutdown(to, SHUT_WR);
}

}  // namespace canopy::bench

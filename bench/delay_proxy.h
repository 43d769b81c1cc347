// DelayProxy: a TCP relay on 127.0.0.1 that holds every byte for a fixed
// one-way delay in each direction, so that a link on loopback has a WAN
// uplink's round trip (2 x the delay). Bench only: bandwidth is not limited
// and nothing is lost or reordered, as on a slow but healthy link.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace canopy::bench {

class DelayProxy {
 public:
  DelayProxy(int target_port, std::chrono::milliseconds one_way);
  ~DelayProxy();
  DelayProxy(const DelayProxy&) = delete;
  DelayProxy& operator=(const DelayProxy&) = delete;

  // Listens on a free port of 127.0.0.1; each connection accepted is relayed
  // to 127.0.0.1:<target_port>.
  bool start(std::string* error);
  int port() const { return port_; }

 private:
  struct Direction;
  void accept_loop();
  void relay(int from, const std::shared_ptr<Direction>& d);
  void deliver(int to, const std::shared_ptr<Direction>& d);

  const int target_port_;
  const std::chrono::milliseconds one_way_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<int> fds_;  // every relayed socket, shut down on destruction
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace canopy::bench

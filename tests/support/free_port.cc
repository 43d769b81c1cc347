#include "tests/support/free_port.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>

namespace canopy::testing {
namespace {

// How long a port handed out stays out of the draw, for every process.
constexpr int64_t kQuarantineSeconds = 600;
constexpr char kRegistry[] = "/tmp/canopy-test-ports";

// A port the kernel has free now (bind to port 0), or -1.
int kernel_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  int saved_errno = errno;
  ::close(fd);
  errno = saved_errno;
  return port;
}

}  // namespace

int pick_free_port() {
  static std::mutex mu;
  std::lock_guard lock(mu);
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  // The registry of ports handed out lately, shared by every test process
  // (locked while read and rewritten). Without it, a port freed when a test
  // kills its server can be handed to a parallel test, whose server the
  // first test's daemons then reconnect to. Unusable: the kernel's pick.
  const int fd = ::open(kRegistry, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0 || ::flock(fd, LOCK_EX) != 0) {
    if (fd >= 0) ::close(fd);
    return kernel_free_port();
  }
  std::map<int, int64_t> recent;
  {
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    size_t at = 0;
    while (at < text.size()) {
      const size_t end = text.find('\n', at);
      const std::string line = text.substr(at, end == std::string::npos ? end : end - at);
      at = end == std::string::npos ? text.size() : end + 1;
      int port = 0;
      long long when = 0;
      if (std::sscanf(line.c_str(), "%d %lld", &port, &when) == 2 &&
          now - when < kQuarantineSeconds) {
        recent[port] = when;
      }
    }
  }
  int port = -1;
  for (int attempt = 0; attempt < 64; ++attempt) {
    port = kernel_free_port();
    if (port < 0 || !recent.contains(port)) break;
  }
  if (port > 0) recent[port] = now;
  std::string out;
  for (const auto& [p, when] : recent) out += std::to_string(p) + " " + std::to_string(when) + "\n";
  if (::ftruncate(fd, 0) == 0 && ::lseek(fd, 0, SEEK_SET) == 0) {
    const ssize_t w = ::write(fd, out.data(), out.size());
    (void)w;  // a registry not written only weakens the next pick
  }
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return port;
}

}  // namespace canopy::testing

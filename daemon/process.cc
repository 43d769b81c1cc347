#include "daemon/process.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <charconv>
#include <ctime>

#include "daemon/openssl_exit.h"

#ifndef CANOPY_VERSION
#define CANOPY_VERSION "0.0.0"
#endif

namespace canopy::daemon {
namespace {

// Before every shared library's initializer (daemon/openssl_exit.h): in any
// executable that links this file, which canopy-hub and canopy-spoke do.
CANOPY_KEEP_OPENSSL_UNTIL_EXIT();

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

const char* version() { return CANOPY_VERSION; }

void prepare_process() {
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

bool wait_for_stop_signal(std::chrono::milliseconds timeout) {
  const sigset_t set = stop_signals();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(left.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(left.count() % 1'000'000'000);
    if (sigtimedwait(&set, nullptr, &ts) > 0) return true;
    if (errno != EINTR) return false;  // EAGAIN: the time is up
  }
}

void set_log_level(const std::string& level) { spdlog::set_level(spdlog::level::from_str(level)); }

bool split_host_port(const std::string& address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  *host = address.substr(0, colon);
  const char* first = address.data() + colon + 1;
  const char* last = address.data() + address.size();
  auto [end, ec] = std::from_chars(first, last, *port);
  return ec == std::errc() && end == last && first != last && *port >= 0 && *port < 65536;
}

const char* phase_name(Phase phase) {
  switch (phase) {
    case Phase::kStarting:
      return "starting";
    case Phase::kServing:
      return "serving";
    case Phase::kStopping:
      return "stopping";
  }
  return "unknown";
}

int run_until_signal(std::vector<Part> parts, Health* health) {
  if (health != nullptr) health->set_phase(Phase::kStarting);
  size_t started = 0;
  for (; started < parts.size(); ++started) {
    if (Status s = parts[started].start(); !s.ok()) {
      spdlog::critical("{}: {}", parts[started].name, s.to_string());
      break;
    }
  }
  const bool ok = started == parts.size();
  if (ok) {
    if (health != nullptr) health->set_phase(Phase::kServing);
    const sigset_t set = stop_signals();
    int sig = 0;
    sigwait(&set, &sig);
    spdlog::info("signal {}: shutting down", sig);
  }
  if (health != nullptr) health->set_phase(Phase::kStopping);
  while (started > 0) parts[--started].stop();
  return ok ? 0 : 1;
}

}  // namespace canopy::daemon

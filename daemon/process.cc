#include "daemon/process.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <charconv>

#ifndef CANOPY_VERSION
#define CANOPY_VERSION "0.0.0"
#endif

namespace canopy::daemon {
namespace {

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

// The start-up path shared by canopy-hub and canopy-spoke: signals, logging,
// the listen-address format, and the run-until-signal sequence.
//
// A daemon is a list of parts (the Hub or Spoke object, then the servers of
// api/ over it). run_until_signal starts them in order, serves until SIGTERM
// or SIGINT, and stops them in reverse order, so a server stops taking
// requests before the object it serves goes away. A part that fails to start
// stops the ones already started, and the process exits 1.
//
// REQUIRES: prepare_process() is called first in main, before any thread
// starts, so that every thread inherits the blocked stop signals and only
// run_until_signal's sigwait takes them.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "store/status.h"

namespace canopy::daemon {

// The version compiled into the binaries (CANOPY_VERSION).
const char* version();

// Blocks SIGTERM and SIGINT in the calling thread (and the threads it starts)
// and ignores SIGPIPE (a client hanging up must not end the daemon). (An
// executable that links this file also keeps OpenSSL's state until exit,
// from before main: daemon/openssl_exit.h.)
void prepare_process();

// Sleeps up to `timeout`, or until SIGTERM or SIGINT arrives (blocked by
// prepare_process()): true when one did (it is taken). For waits before
// run_until_signal (an enrollment waiting for approval).
bool wait_for_stop_signal(std::chrono::milliseconds timeout);

// Sets spdlog's level from "trace|debug|info|warn|error".
void set_log_level(const std::string& level);

// Splits "host:port"; false unless the port is a number in [0, 65535].
bool split_host_port(const std::string& address, std::string* host, int* port);

// What a health endpoint reports as the daemon's phase.
enum class Phase { kStarting, kServing, kStopping };
const char* phase_name(Phase phase);

// The daemon's phase, set by run_until_signal, read by health endpoints from
// any thread.
class Health {
 public:
  Phase phase() const { return phase_.load(); }
  void set_phase(Phase phase) { phase_.store(phase); }

 private:
  std::atomic<Phase> phase_{Phase::kStarting};
};

struct Part {
  std::string name;  // for logs: "hub", "gRPC API", ...
  std::function<Status()> start;
  std::function<void()> stop;  // must be safe to call once start returned OK
};

// Starts `parts` in order, waits for SIGTERM or SIGINT, stops them in reverse.
// Returns the exit code: 0 after a clean stop, 1 when a part failed to start.
int run_until_signal(std::vector<Part> parts, Health* health = nullptr);

}  // namespace canopy::daemon

// BusSupervisor: runs the site's nats-server (Debian's) for the device bus.
//
// start() writes the config rendered from the BusSpec (bus_spec.h) to
// <spec.dir>/nats.conf (atomically, mode 0600), starts `nats-server -c` on it
// and returns once the server's /healthz (on 127.0.0.1:monitor_port) answers
// 200, or fails with the reason and the server's last log lines.
//
// While it runs, one supervisor thread owns the child: it reads the server's
// stdout and stderr line by line into the spoke's log (spdlog, prefixed
// "bus nats-server:", at the server's own level), reaps it, and if it died
// without being asked to, starts it again with backoff (doubling from
// min_backoff to max_backoff, back to min_backoff after a run of a minute).
// The child gets PR_SET_PDEATHSIG from that thread, so a spoke that dies
// leaves no server holding the bus's ports.
//
// update() applies a changed spec without a restart: it rewrites the config
// atomically and sends SIGHUP, then waits for the server's "Reloaded server
// configuration" (OK) or "Failed to reload" (the old config is written back
// and the error returned; the server keeps running on it). A change that
// nats-server 2.9 cannot reload (listeners, JetStream store, leaf remotes:
// restart_only_difference) is refused with FailedPrecondition: the supervisor
// never restarts the bus for a change, since that would drop every device.
//
// A bus whose MQTT session store has gone inconsistent (nats-server 2.9's
// reload defect, see session_store_watch.h) is restarted: the supervisor
// sends SIGINT (SIGKILL after stop_timeout) and starts the server again at
// once, without the backoff. It
// tells that from the server's own log lines; restart() does the same on
// request. Devices reconnect; their sessions and retained messages are in
// the site's JetStream.
//
// stop() sends SIGINT (nats-server's clean shutdown, exit code 0; SIGTERM
// exits 1), waits stop_timeout, then SIGKILL; it is idempotent and
// called by the destructor.
//
// Thread-safety: start() and stop() from one thread (the spoke's); update()
// from one thread at a time, never concurrently with start() or stop(); the
// accessors from any.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "spoke/bus/bus_spec.h"
#include "spoke/bus/session_store_watch.h"
#include "store/status.h"

namespace canopy::spoke::bus {

struct SupervisorOptions {
  // Path or name of nats-server; a bare name is looked up in $PATH, then in
  // /usr/sbin and /usr/local/sbin (Debian installs it in /usr/sbin).
  std::string nats_server = "nats-server";
  std::chrono::milliseconds ready_timeout{15'000};
  std::chrono::milliseconds reload_timeout{10'000};
  std::chrono::milliseconds stop_timeout{10'000};
  std::chrono::milliseconds min_backoff{200};
  std::chrono::milliseconds max_backoff{10'000};
};

class BusSupervisor {
 public:
  BusSupervisor(BusSpec spec, SupervisorOptions options = {});
  ~BusSupervisor();
  BusSupervisor(const BusSupervisor&) = delete;
  BusSupervisor& operator=(const BusSupervisor&) = delete;

  // Validates the spec, writes the config, starts the server and waits until
  // it is ready. Call once; on failure everything started is stopped.
  Status start();
  // Applies `spec` by reload (see above). REQUIRES: start() succeeded.
  Status update(const BusSpec& spec);
  void stop();
  // Stops the running server cleanly and starts it again at once; `reason`
  // goes to the log. Returns without waiting; does nothing between a death
  // and its restart, or while stopping.
  void restart(const std::string& reason);

  // The running server's pid, or -1 between a death and its restart.
  pid_t pid() const;
  // Servers started so far (the first and every restart), and reloads
  // applied.
  uint64_t starts() const { return starts_.load(); }
  uint64_t reloads() const { return reloads_.load(); }
  // Restarts asked for (by restart() or by the session-store watch).
  uint64_t restarts() const { return restarts_.load(); }
  // Whether the current server has answered /healthz since it started.
  bool ready() const;
  // The spec in force (the last one started or reloaded).
  BusSpec spec() const;
  std::string config_path() const { return spec_.dir + "/nats.conf"; }
  // nats://127.0.0.1:<client_port>, for the spoke's own NATS connection.
  std::string client_url() const;

 private:
  void run();
  pid_t spawn(int* read_fd);
  void pump(pid_t child, int fd);
  void on_line(const std::string& line);
  bool probe_health() const;
  std::string recent_log() const;
  void restart_locked(const std::string& reason);  // REQUIRES: mu_ held
  void kill_if_restart_overdue(pid_t child);

  BusSpec spec_;  // guarded by mu_ after start()
  const SupervisorOptions options_;
  std::string binary_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  pid_t pid_ = -1;
  bool ready_ = false;
  bool exited_since_start_ = false;  // the first server exited before ready
  uint64_t reload_ok_ = 0;
  uint64_t reload_failed_ = 0;
  std::string reload_error_;
  std::deque<std::string> recent_;  // the server's last log lines
  SessionStoreWatch session_watch_;
  bool restart_asked_ = false;  // the current server was stopped to restart
  std::chrono::steady_clock::time_point restart_asked_at_;
  bool restart_killed_ = false;  // ... and SIGKILLed, having ignored SIGINT
  std::atomic<uint64_t> starts_{0};
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> restarts_{0};
  std::thread thread_;
  bool started_ = false;
};

}  // namespace canopy::spoke::bus

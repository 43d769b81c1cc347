// SessionStoreWatch: tells from nats-server's log when its MQTT session store
// has gone inconsistent, so that the supervisor can restart the bus.
//
// nats-server keeps each MQTT session as one record in the account's
// $MQTT_sess stream and remembers, in memory, the record's sequence. Debian
// 12's nats-server 2.9.10 can lose that agreement: configuration reloads
// replace the account objects under the MQTT session manager (fixed upstream
// in 2.9.16, "Fixed accounts configuration reload"), and nats-server's own
// issue 7667 and pull request 7478 report the same state in later versions.
// From then on every connection of the account fails to save or delete its
// session, and MQTT clients subscribing with QoS 1 are dropped over and over
// (seen in Canopy's CI: "unable to persist session ... wrong last sequence:
// 0 (10071)" every second for one client, "unable to delete session ...
// record" for every other one). Restarting nats-server rebuilds the manager
// from the stream; retained messages and sessions are kept on disk. The
// spoke reloads on every device change, so it must expect this.
//
// A line counts only if it has the exact shape nats-server gives these
// errors, with the client id twice and a server-written ending: a device's
// client id and user name appear in nats-server's log too (quoted), and a
// client must not be able to restart the bus by choosing them.
//
// note() says kRestart when `threshold` such lines fell within `window` and
// no restart was asked for within `cooldown`: a bus whose restart did not
// help is not restarted in a loop (kHeldBack, once per cooldown, so that
// the supervisor can say so).
//
// Thread-compatible: the supervisor calls it under its lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string_view>

namespace canopy::spoke::bus {

class SessionStoreWatch {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    size_t threshold = 3;
    std::chrono::seconds window{30};
    std::chrono::seconds cooldown{300};
  };

  SessionStoreWatch() = default;
  explicit SessionStoreWatch(Options options) : options_(options) {}

  // Whether `line` (one line of nats-server's output, as logged with
  // `logtime: false`) reports a failed save or delete of an MQTT session.
  static bool is_session_store_fault(std::string_view line);

  enum class Verdict { kNone, kCounted, kRestart, kHeldBack };
  // Notes one line seen at `now`.
  Verdict note(std::string_view line, Clock::time_point now);

  const Options& options() const { return options_; }
  // Faults noted in all, and the ones that fell in a cooldown.
  uint64_t faults() const { return faults_; }
  uint64_t suppressed() const { return suppressed_; }

 private:
  Options options_;
  std::deque<Clock::time_point> recent_;
  std::optional<Clock::time_point> last_restart_;
  bool held_back_ = false;  // since the last restart
  uint64_t faults_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace canopy::spoke::bus

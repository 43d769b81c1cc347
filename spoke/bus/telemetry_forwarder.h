// TelemetryForwarder: devices' telemetry from the site's buffer stream to
// the hub, in order, whether the uplink is up or has been down for hours.
//
// A device publishes telemetry on t/<tenant>/d/<id>/telemetry[/...] (NATS
// t.<tenant>.d.<id>.telemetry[.>]). nats-server itself keeps every such
// message in the CANOPY account's JetStream stream kTelemetryStream (it
// imports every tenant's t.<tenant>.>), file storage, bounded by the
// BusLimits telemetry_max_bytes and telemetry_max_age with discard old (the
// oldest are dropped first), work-queue retention (a forwarded message is
// deleted). The leaf remote denies these subjects, so they reach the hub only
// through this forwarder:
//
//   t.<tenant>.d.<id>.telemetry[.<rest>]  ->  tm.<tenant>.<site>.<id>[.<rest>]
//
// with headers Canopy-Seq (the stream sequence: a subscriber drops a
// duplicate by (site, seq)) and Canopy-Time-Ms (when the site stored it).
//
// The forwarder is the stream's one durable pull consumer. It fetches a
// batch (what the stream holds, up to `batch` messages and batch_max_bytes),
// publishes each message on the hub subject through its connection to
// the bus (CANOPY, whose leaf remote is the uplink), then asks the hub for a
// barrier: a nonce on sync::telemetry_barrier_subject(site) that canopy-hub
// echoes on sync::telemetry_barrier_ack_subject(site) (hub/telemetry_barrier.h).
// The echo comes back over the same leaf link
// after the hub's nats-server has taken every message published before the
// request, so only then is the batch acknowledged: one purge of the stream
// below the batch's last sequence deletes it (a message-by-message ack cost
// the bus a message and a delete each, a quarter of device.ingest's rate).
// The forwarder does not wait for an echo before the next batch: up to
// `pipeline` batches are out, each followed by its own nonce, and the echoes
// come back in order, each confirming its batch and those before it (one
// purge for all confirmed at once). So a slow uplink (a satellite link's
// half second) costs a round trip per `pipeline` batches, not per batch.
// Without a reply in time (the uplink is down, the hub is away) every batch
// still out is given back to the stream (the consumer is made anew, so the
// oldest unconfirmed message is the next to be delivered again, subject to
// the stream's limits like the rest) and fetched again a second later, until
// the hub answers: delivery is at least once, in order; a message published
// twice has the same Canopy-Seq.
//
// Counted (stats(), logged on every change of the uplink and every 5 s while they
// changes): forwarded; dropped (sequence numbers the stream lost to its
// limits before they were forwarded, counted once the stream's first
// sequence has passed them, so also while the uplink is down); refused (over telemetry_max_message
// bytes, or a subject that does not map: logged with the reason, never
// sent); buffered (what the stream holds now). The last forwarded sequence
// is kept in `state_file` so that drops while the spoke was down are counted
// after its restart.
//
// Thread-safety: one thread does the work; stats() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "store/status.h"

typedef struct __natsConnection natsConnection;

namespace canopy::spoke::bus {

struct TelemetryOptions {
  std::string nats_url;  // the bus's client listener, nats://127.0.0.1:<client_port>
  std::string user;      // kSpokeUser, in CANOPY
  std::string password;
  std::string site;
  std::string state_file;  // the last forwarded sequence; empty: not kept
  int64_t max_bytes = 256LL << 20;
  std::chrono::seconds max_age{7 * 24 * 3600};
  int64_t max_message = 16 * 1024;
  // A batch (one barrier round trip) is up to `batch` messages and
  // batch_max_bytes, which must exceed the largest message the bus takes
  // (its max_payload, at most 8 MiB) plus headers.
  int batch = 2048;
  int64_t batch_max_bytes = (8LL << 20) + (64 << 10);
  // Batches published and awaiting their barrier's echo at once: the uplink's
  // round trip is paid once per `pipeline` batches, not once per batch. A
  // further batch is fetched only while those in flight hold less than
  // batch_max_bytes, so at most about twice that is held in memory.
  int pipeline = 4;
  std::chrono::milliseconds barrier_timeout{2000};
  std::chrono::milliseconds retry{1000};
};

struct TelemetryStats {
  uint64_t forwarded = 0;
  uint64_t dropped = 0;            // lost to the stream's limits before forwarding
  uint64_t refused_oversized = 0;  // over max_message
  uint64_t refused_subject = 0;    // a subject that does not map
  uint64_t buffered = 0;           // in the stream now (as of the last look)
  bool uplink = false;             // the last barrier was answered
};

// t.<tenant>.d.<id>.telemetry[.<rest>] -> tm.<tenant>.<site>.<id>[.<rest>];
// nullopt when `subject` is not such a subject or a name is not a DNS-1123
// label.
std::optional<std::string> telemetry_hub_subject(std::string_view site, std::string_view subject);

class TelemetryForwarder {
 public:
  // Starts the work thread, which connects (retrying until the bus answers),
  // makes or updates the stream and its consumer, and forwards.
  static StatusOr<std::unique_ptr<TelemetryForwarder>> start(TelemetryOptions options);
  ~TelemetryForwarder();
  TelemetryForwarder(const TelemetryForwarder&) = delete;
  TelemetryForwarder& operator=(const TelemetryForwarder&) = delete;

  TelemetryStats stats();

 private:
  explicit TelemetryForwarder(TelemetryOptions options);
  void run();
  bool sleep_for(std::chrono::milliseconds d);  // false when stopping
  void log_progress(bool force);
  uint64_t load_last() const;
  void save_last(uint64_t seq) const;

  const TelemetryOptions options_;
  natsConnection* conn_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  TelemetryStats stats_;
  TelemetryStats logged_;
  std::chrono::steady_clock::time_point last_log_{};
  std::thread worker_;
};

}  // namespace canopy::spoke::bus

// TelemetryBarrier: canopy-hub's answer to sites' telemetry barriers.
//
// A site's telemetry forwarder (spoke/bus/telemetry_forwarder.h) publishes a
// batch of device telemetry over its bus's leaf link, then publishes a nonce
// on sync::telemetry_barrier_subject(site) on the same link. The hub echoes
// it on sync::telemetry_barrier_ack_subject(site) (and answers a request's
// reply subject, as spokes of earlier releases asked). A leaf link delivers
// one connection's messages in order, so the echo proves that the hub's
// nats-server has taken every message of the batch; only then does the site
// delete the batch from its buffer. Hubs of one level each answer; the site
// takes the first echo of its nonce.
//
// It rides on the hub's transport (its NATS connection, with its handling of
// hung and lost servers). Thread-safety: the transport's callback thread
// answers; answered() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "store/status.h"
#include "sync/nats_transport.h"

namespace canopy::hub {

class TelemetryBarrier {
 public:
  // Subscribes on `transport`, which must outlive the result.
  static StatusOr<std::unique_ptr<TelemetryBarrier>> start(sync::NatsTransport* transport);
  ~TelemetryBarrier();
  TelemetryBarrier(const TelemetryBarrier&) = delete;
  TelemetryBarrier& operator=(const TelemetryBarrier&) = delete;

  uint64_t answered() const { return answered_->load(); }

 private:
  explicit TelemetryBarrier(sync::NatsTransport* transport) : transport_(transport) {}

  sync::NatsTransport* const transport_;
  uint64_t subscription_ = 0;
  std::shared_ptr<std::atomic<uint64_t>> answered_ = std::make_shared<std::atomic<uint64_t>>(0);
};

}  // namespace canopy::hub

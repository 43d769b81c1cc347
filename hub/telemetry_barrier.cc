// TelemetryBarrier: see telemetry_barrier.h.
#include "hub/telemetry_barrier.h"

#include <string>

#include "sync/subjects.h"

namespace canopy::hub {

StatusOr<std::unique_ptr<TelemetryBarrier>> TelemetryBarrier::start(
    sync::NatsTransport* transport) {
  std::unique_ptr<TelemetryBarrier> b(new TelemetryBarrier(transport));
  auto answered = b->answered_;
  auto id = transport->subscribe(sync::kAllTelemetryBarriers,
                                 [transport, answered](const sync::Message& m) {
                                   // The echo on <subject>.ack; a spoke of an
                                   // earlier release asked with a request and
                                   // waits on its reply subject instead.
                                   bool ok = transport->publish(m.subject + ".ack", m.data).ok();
                                   const std::string reply = sync::NatsTransport::current_reply();
                                   if (!reply.empty())
                                     ok = transport->publish(reply, "").ok() && ok;
                                   if (ok) answered->fetch_add(1);
                                 });
  if (!id.ok()) {
    return Status(id.status().code(), "telemetry barrier: " + id.status().message());
  }
  b->subscription_ = *id;
  return b;
}

TelemetryBarrier::~TelemetryBarrier() { transport_->unsubscribe(subscription_); }

}  // namespace canopy::hub

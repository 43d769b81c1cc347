// The spoke's local HTTP API, over a running spoke::Spoke. It serves site
// operators on loopback, also while the uplink is down:
//
//   GET    /healthz                           site, role, version, replica id,
//                                             NATS, session, in_sync, objects,
//                                             failed, applied (and the daemon's
//                                             phase when a daemon::Health is
//                                             given)
//   GET    /metrics                           Prometheus text format
//                                             (docs/metrics.md): session,
//                                             apply outcomes, sync traffic,
//                                             store size, NATS
//   GET    /livez                             200 "live" while it serves HTTP
//   GET    /readyz                            200 "ready" when serving, the
//                                             store open, NATS connected and a
//                                             reconcile pass completed; else
//                                             503 saying what is not
//   GET    /v1/status                         the site's status documents
//   PUT    /v1/overrides/<tenant>/<template>  a local override: the body is a
//                                             JSON merge patch
//   DELETE /v1/overrides/<tenant>/<template>  removes it
//
// A local override is written to the site's own store and flows up when the
// uplink returns. Errors are {"error": "..."} with 400 for bad input, 404 for
// a missing override, 500 otherwise.
//
// The spoke must outlive the server, and stay started while it serves.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "api/http_server.h"
#include "api/metrics.h"
#include "daemon/process.h"
#include "spoke/spoke.h"

namespace canopy::api {

// More metric families for the page, from parts outside the Spoke (the
// device bus's telemetry forwarder); may be empty.
using ExtraMetrics = std::function<void(MetricsText*)>;

// The body of GET /metrics.
std::string spoke_metrics(spoke::Spoke* spoke, const ExtraMetrics& extra = {});
// What keeps the spoke from being ready (empty: ready).
std::vector<std::string> spoke_readiness(spoke::Spoke* spoke, const daemon::Health* health);

void add_spoke_routes(httplib::Server& server, spoke::Spoke* spoke,
                      const daemon::Health* health = nullptr, ExtraMetrics extra = {});

}  // namespace canopy::api

// The hub's HTTP endpoints, over a running hub::Hub:
//
//   GET /healthz       name, role, version, replica id, NATS connection, log
//                      index, number of sessions (and the daemon's phase when
//                      a daemon::Health is given)
//   GET /v1/sessions   one row per site session: site, mode, connected,
//                      acked_index, labels
//   GET /metrics       Prometheus text format (docs/metrics.md): sessions,
//                      lag per site, sync traffic, catch-ups, conflicts,
//                      store size, NATS, placements, watch streams
//   GET /livez         200 "live" while the process serves HTTP
//   GET /readyz        200 "ready" when serving, the store open and NATS
//                      connected; else 503 saying what is not
//
// The hub must outlive the server, and stay started while it serves.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "api/catalog_service.h"
#include "api/http_server.h"
#include "daemon/process.h"
#include "hub/hub.h"

namespace canopy::api {

// The body of GET /metrics; with `catalog`, its watch streams too.
std::string hub_metrics(hub::Hub* hub, const CatalogService* catalog = nullptr);
// What keeps the hub from being ready (empty: ready).
std::vector<std::string> hub_readiness(hub::Hub* hub, const daemon::Health* health);

// `catalog` (when given) returns the API service, or null while it is not up.
void add_hub_routes(httplib::Server& server, hub::Hub* hub, const daemon::Health* health = nullptr,
                    std::function<const CatalogService*()> catalog = {});

}  // namespace canopy::api

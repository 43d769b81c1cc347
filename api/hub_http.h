// The hub's HTTP endpoints, over a running hub::Hub:
//
//   GET /healthz       name, role, version, replica id, NATS connection, log
//                      index, number of sessions (and the daemon's phase when
//                      a daemon::Health is given)
//   GET /v1/sessions   one row per site session: site, mode, connected,
//                      acked_index, labels
//
// The hub must outlive the server, and stay started while it serves.
#pragma once

#include "api/http_server.h"
#include "daemon/process.h"
#include "hub/hub.h"

namespace canopy::api {

void add_hub_routes(httplib::Server& server, hub::Hub* hub, const daemon::Health* health = nullptr);

}  // namespace canopy::api

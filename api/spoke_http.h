// The spoke's local HTTP API, over a running spoke::Spoke. It serves site
// operators on loopback, also while the uplink is down:
//
//   GET    /healthz                           site, role, version, replica id,
//                                             NATS, session, in_sync, objects,
//                                             failed (and the daemon's phase
//                                             when a daemon::Health is given)
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

#include "api/http_server.h"
#include "daemon/process.h"
#include "spoke/spoke.h"

namespace canopy::api {

void add_spoke_routes(httplib::Server& server, spoke::Spoke* spoke,
                      const daemon::Health* health = nullptr);

}  // namespace canopy::api

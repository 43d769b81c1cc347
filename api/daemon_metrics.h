// What both daemons serve on GET /metrics beside their own metrics, and
// their liveness and readiness probes (docs/metrics.md lists every name).
//
//   canopy_build_info            role, version and node name, always 1
//   canopy_nats_connected        1 while the NATS connection is up
//   canopy_store_*               the store's size (RocksDB's estimates), its
//                                log position, its merge counters, and
//                                whether the disk takes its writes
//   canopy_sync_*                the sync node's traffic (messages and bytes
//                                in and out, peers' deltas persisted) and
//                                what its bounded queues dropped or lost
//
// Counters count from the process's start, as Prometheus expects (a restart
// resets them; rate() copes).
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/metrics.h"
#include "store/store.h"
#include "sync/engine/node.h"

namespace canopy::api {

// canopy_build_info{role, name, version} 1.
void add_build_info(MetricsText* page, const std::string& role, const std::string& name);
void add_nats_metrics(MetricsText* page, bool connected);
void add_store_metrics(MetricsText* page, Store* store);
// A /healthz body's store fields: "store_writable", and while the disk
// refuses the store's writes, "store_error" (Store::write_health).
void add_store_health(nlohmann::json* health, Store* store);
void add_sync_node_metrics(MetricsText* page, const sync::NodeStats& stats);

// Serves `page` as the body of a scrape.
void reply_metrics(httplib::Response& res, const MetricsText& page);

// GET /livez: 200 "live" (the process answers HTTP).
void reply_live(httplib::Response& res);
// GET /readyz: 200 "ready" when `problems` is empty, else 503 "not ready: "
// and the problems joined with "; ". Text bodies, ending in a newline.
void reply_ready(httplib::Response& res, const std::vector<std::string>& problems);

}  // namespace canopy::api

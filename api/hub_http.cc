#include "api/hub_http.h"

#include <nlohmann/json.hpp>

namespace canopy::api {

using json = nlohmann::json;

void add_hub_routes(httplib::Server& server, hub::Hub* hub, const daemon::Health* health) {
  server.Get("/healthz", [hub, health](const httplib::Request&, httplib::Response& res) {
    json j = {{"name", hub->config().name},
              {"role", "hub"},
              {"version", daemon::version()},
              {"replica_id", hub->store()->replica_id()},
              {"nats_connected", hub->nats_connected()},
              {"log_index", hub->store()->last_log_index()},
              {"sessions", hub->session_count()}};
    if (health != nullptr) j["state"] = daemon::phase_name(health->phase());
    // A regional hub: how it stands with its parent.
    if (auto up = hub->upstream()) {
      j["parent"] = {{"name", up->parent},
                     {"session_open", up->session_open},
                     {"in_sync", up->in_sync},
                     {"down_index", up->down_index},
                     {"hellos", up->hellos}};
    }
    reply_json(res, j.dump());
  });
  server.Get("/v1/sessions", [hub](const httplib::Request&, httplib::Response& res) {
    json arr = json::array();
    for (const auto& c : hub->sessions()) {
      arr.push_back({{"site", c.name},
                     {"mode", c.mode},
                     {"connected", c.connected},
                     {"acked_index", c.acked_index},
                     {"labels", c.labels}});
    }
    reply_json(res, arr.dump());
  });
}

}  // namespace canopy::api

#include "api/spoke_http.h"

#include <nlohmann/json.hpp>

#include "sync/subjects.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;

// Most status documents /v1/status lists.
constexpr size_t kMaxStatusRows = 100'000;

// The override's key from the request path, or false with `*error` set.
bool override_key(const std::string& site, const httplib::Request& req, std::string* key,
                  std::string* error) {
  const std::string tenant = req.matches[1], tmpl = req.matches[2];
  for (const auto* n : {&tenant, &tmpl}) {
    if (Status s = sync::validate_node_name(*n); !s.ok()) {
      *error = s.message();
      return false;
    }
  }
  *key = "sites/" + site + "/overrides/" + tenant + "/" + tmpl;
  return true;
}

}  // namespace

void add_spoke_routes(httplib::Server& server, spoke::Spoke* spoke, const daemon::Health* health) {
  const std::string site = spoke->config().site;
  server.Get("/healthz", [spoke, health](const httplib::Request&, httplib::Response& res) {
    const spoke::SpokeHealth h = spoke->health();
    json j = {{"site", spoke->config().site},
              {"role", "spoke"},
              {"version", daemon::version()},
              {"replica_id", spoke->store()->replica_id()},
              {"nats_connected", h.nats_connected},
              {"session_open", h.session_open},
              {"in_sync", h.in_sync},
              {"objects", h.objects},
              {"failed", h.failed},
              {"documents_received", h.documents_received}};
    if (health != nullptr) j["state"] = daemon::phase_name(health->phase());
    reply_json(res, j.dump());
  });
  server.Get("/v1/status", [spoke, site](const httplib::Request&, httplib::Response& res) {
    json arr = json::array();
    auto page = spoke->store()->scan("sites/" + site + "/status/", "", kMaxStatusRows);
    if (page.ok()) {
      for (const auto& item : page->items) {
        arr.push_back({{"key", item.key}, {"status", json::parse(item.json)}});
      }
    }
    reply_json(res, arr.dump());
  });
  const char* path = R"(/v1/overrides/([^/]+)/([^/]+))";
  server.Put(path, [spoke, site](const httplib::Request& req, httplib::Response& res) {
    std::string key, error;
    if (!override_key(site, req, &key, &error)) return reply_error(res, 400, error);
    json patch = json::parse(req.body, nullptr, false);
    if (patch.is_discarded() || !patch.is_object()) {
      return reply_error(res, 400, "body must be a JSON object (a JSON merge patch)");
    }
    auto r = spoke->store()->put_value(key, json{{"patch", patch}});
    if (!r.ok()) {
      return reply_error(res, r.status().code() == StatusCode::kInvalidArgument ? 400 : 500,
                         r.status().message());
    }
    reply_json(res, json{{"key", key}}.dump());
  });
  server.Delete(path, [spoke, site](const httplib::Request& req, httplib::Response& res) {
    std::string key, error;
    if (!override_key(site, req, &key, &error)) return reply_error(res, 400, error);
    auto r = spoke->store()->remove(key);
    if (!r.ok()) {
      return reply_error(res, r.status().code() == StatusCode::kNotFound ? 404 : 500,
                         r.status().message());
    }
    reply_json(res, json{{"key", key}}.dump());
  });
}

}  // namespace canopy::api

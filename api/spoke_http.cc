#include "api/spoke_http.h"

#include <nlohmann/json.hpp>

#include "api/daemon_metrics.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"
#include "store/clock.h"
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

// Longest hold the local API sets: a forgotten hold must not stop rollouts to
// the site for good.
constexpr uint64_t kMaxHoldSeconds = 30ull * 24 * 3600;

// The hold document from a request body: {"durationSeconds": S | "untilMs":
// N, "reason": "..."}, or an error naming the field.
StatusOr<json> hold_from_body(const std::string& body) {
  json in = json::parse(body, nullptr, false);
  if (in.is_discarded() || !in.is_object()) {
    return invalid_argument(
        "body must be a JSON object: {\"durationSeconds\": S} or {\"untilMs\": N}, with an "
        "optional \"reason\"");
  }
  const uint64_t now = SystemClock::instance()->now_ms();
  if (auto d = in.find("durationSeconds"); d != in.end()) {
    if (in.contains("untilMs"))
      return invalid_argument("give durationSeconds or untilMs, not both");
    if (!d->is_number_integer() || *d <= 0 || d->get<int64_t>() > int64_t{kMaxHoldSeconds}) {
      return invalid_argument("durationSeconds must be a whole number from 1 to " +
                              std::to_string(kMaxHoldSeconds) + ", not " + d->dump());
    }
    in["untilMs"] = now + d->get<uint64_t>() * 1000;
    in.erase("durationSeconds");
  }
  auto hold = model::parse_hold(in);
  if (!hold.ok()) return hold.status();
  if (hold->until_ms > now + kMaxHoldSeconds * 1000) {
    return invalid_argument("untilMs is more than " + std::to_string(kMaxHoldSeconds / 86400) +
                            " days ahead");
  }
  return model::hold_document(*hold);
}

}  // namespace

std::string spoke_metrics(spoke::Spoke* spoke, const ExtraMetrics& extra) {
  MetricsText page;
  const spoke::SpokeMetrics m = spoke->metrics();
  add_build_info(&page, "spoke", spoke->config().site);
  add_nats_metrics(&page, m.health.nats_connected);
  add_store_metrics(&page, spoke->store());
  add_sync_node_metrics(&page, m.node);

  const spoke::SpokeHealth& h = m.health;
  page.gauge("canopy_spoke_session_open", "1 while the sync session with the hub is open.")
      .add(h.session_open ? 1 : 0);
  page.gauge("canopy_spoke_in_sync",
             "1 while caught up with the hub with nothing of the site's unacknowledged.")
      .add(h.in_sync ? 1 : 0);
  page.gauge("canopy_spoke_applied_once",
             "1 once a reconcile pass has completed without error since start.")
      .add(h.applied ? 1 : 0);
  page.gauge("canopy_spoke_objects", "Objects rendered by the last reconcile pass.")
      .add(static_cast<double>(h.objects));
  page.gauge("canopy_spoke_objects_failed",
             "Templates that failed to render or apply in the last reconcile pass.")
      .add(static_cast<double>(h.failed));
  page.gauge("canopy_spoke_objects_held",
             "Objects held at their applied revision by a rollout in the last pass.")
      .add(static_cast<double>(m.held));

  const spoke::ReconcileTotals& r = m.reconcile;
  page.counter("canopy_spoke_reconcile_passes", "Reconcile passes, by result.")
      .add(static_cast<double>(r.passes - r.failed_passes), {{"result", "ok"}})
      .add(static_cast<double>(r.failed_passes), {{"result", "error"}});
  page.counter("canopy_spoke_apply_outcomes",
               "Per-object outcomes of reconcile passes: applied (changed), unchanged, failed, "
               "pruned, drifted (drift reported by the applier).")
      .add(static_cast<double>(r.changed), {{"outcome", "applied"}})
      .add(static_cast<double>(r.unchanged), {{"outcome", "unchanged"}})
      .add(static_cast<double>(r.failed), {{"outcome", "failed"}})
      .add(static_cast<double>(r.pruned), {{"outcome", "pruned"}})
      .add(static_cast<double>(r.drifted), {{"outcome", "drifted"}});

  const sync::ChildStats& c = m.child;
  auto counter = [&page](const char* name, const char* help, uint64_t value) {
    page.counter(name, help).add(static_cast<double>(value));
  };
  counter("canopy_spoke_hellos", "Hellos sent to the hub (session starts and retries).", c.hellos);
  counter("canopy_spoke_resets", "Sessions the hub reset (it had lost them).", c.resets);
  counter("canopy_spoke_applied_messages", "Sequenced messages from the hub applied.",
          c.applied_messages);
  counter("canopy_spoke_documents_received",
          "Whole documents received from the hub (reconciliation, scope entry).",
          c.documents_received);
  counter("canopy_spoke_dropped_keys", "Documents dropped as they left the site's scope.",
          c.dropped_keys);
  counter("canopy_spoke_deltas_sent", "Deltas sent up to the hub (retransmissions not counted).",
          c.deltas_sent);
  counter("canopy_spoke_sent_bytes", "Bytes of the sync messages the child engine sent.",
          c.bytes_sent);
  counter("canopy_spoke_received_bytes", "Bytes of the sync messages the child engine received.",
          c.bytes_received);
  counter("canopy_spoke_refused_messages", "Sync messages refused (malformed, stale session).",
          c.refused_messages);
  counter("canopy_spoke_parent_failovers",
          "Sessions moved to another hub (a silent parent, or a site moved to another region).",
          c.failovers);
  counter("canopy_spoke_redirects", "Redirects to the hub that serves the site now, followed.",
          c.redirects);
  if (extra) extra(&page);
  return page.text();
}

std::vector<std::string> spoke_readiness(spoke::Spoke* spoke, const daemon::Health* health) {
  std::vector<std::string> problems;
  if (health != nullptr && health->phase() != daemon::Phase::kServing) {
    problems.push_back(std::string("daemon ") + daemon::phase_name(health->phase()));
  }
  if (spoke->store() == nullptr) {
    problems.push_back("store not open");
  } else if (Status st = spoke->store()->write_health(); !st.ok()) {
    problems.push_back(st.message());
  }
  const spoke::SpokeHealth h = spoke->health();
  if (!h.nats_connected) {
    problems.push_back(h.nats_error.empty() ? "NATS not connected"
                                            : "NATS not connected: " + h.nats_error);
  }
  if (!h.applied) problems.push_back("no reconcile pass has completed");
  return problems;
}

void add_spoke_routes(httplib::Server& server, spoke::Spoke* spoke, const daemon::Health* health,
                      ExtraMetrics extra) {
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
              {"documents_received", h.documents_received},
              {"applied", h.applied},
              {"parent", h.parent},
              {"failovers", h.failovers},
              {"redirects", h.redirects}};
    if (!h.nats_connected && !h.nats_error.empty()) j["nats_error"] = h.nats_error;
    if (health != nullptr) j["state"] = daemon::phase_name(health->phase());
    add_store_health(&j, spoke->store());
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
  server.Get("/metrics", [spoke, extra](const httplib::Request&, httplib::Response& res) {
    res.set_content(spoke_metrics(spoke, extra), kMetricsContentType);
  });
  server.Get("/livez", [](const httplib::Request&, httplib::Response& res) { reply_live(res); });
  server.Get("/readyz", [spoke, health](const httplib::Request&, httplib::Response& res) {
    reply_ready(res, spoke_readiness(spoke, health));
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
      return reply_error(res, http_status(r.status().code()), r.status().message());
    }
    reply_json(res, json{{"key", key}}.dump());
  });
  server.Delete(path, [spoke, site](const httplib::Request& req, httplib::Response& res) {
    std::string key, error;
    if (!override_key(site, req, &key, &error)) return reply_error(res, 400, error);
    auto r = spoke->store()->remove(key);
    if (!r.ok()) {
      return reply_error(res, http_status(r.status().code()), r.status().message());
    }
    reply_json(res, json{{"key", key}}.dump());
  });

  // Holds on rollouts to this site (model::Hold): the hub releases no new
  // revision here while one is active.
  server.Get("/v1/holds", [spoke, site](const httplib::Request&, httplib::Response& res) {
    auto page = spoke->store()->scan(model::holds_prefix(site), "", 1000);
    if (!page.ok()) return reply_error(res, 500, page.status().message());
    json out = json::object();
    for (const auto& item : page->items) {
      out[std::string(model::parse_key(item.key).name)] = json::parse(item.json, nullptr, false);
    }
    reply_json(res, out.dump());
  });
  const char* hold_path = R"(/v1/holds/([^/]+))";
  server.Put(hold_path, [spoke, site](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    if (!model::is_dns1123_label(name)) {
      return reply_error(res, 400, "hold name \"" + name + "\" is not a DNS-1123 label");
    }
    auto doc = hold_from_body(req.body);
    if (!doc.ok()) return reply_error(res, 400, doc.status().message());
    auto r = spoke->store()->put_value(model::hold_key(site, name), *doc);
    if (!r.ok()) return reply_error(res, http_status(r.status().code()), r.status().message());
    reply_json(res, json{{"key", model::hold_key(site, name)}, {"hold", *doc}}.dump());
  });
  server.Delete(hold_path, [spoke, site](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    if (!model::is_dns1123_label(name)) {
      return reply_error(res, 400, "hold name \"" + name + "\" is not a DNS-1123 label");
    }
    auto r = spoke->store()->remove(model::hold_key(site, name));
    if (!r.ok()) {
      return reply_error(res, http_status(r.status().code()), r.status().message());
    }
    reply_json(res, json{{"key", model::hold_key(site, name)}}.dump());
  });
}

}  // namespace canopy::api

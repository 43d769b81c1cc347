#include "api/hub_http.h"

#include <map>
#include <nlohmann/json.hpp>

#include "api/daemon_metrics.h"

namespace canopy::api {

using json = nlohmann::json;

std::string hub_metrics(hub::Hub* hub, const CatalogService* catalog) {
  MetricsText page;
  add_build_info(&page, "hub", hub->config().name);
  add_nats_metrics(&page, hub->nats_connected());
  add_store_metrics(&page, hub->store());
  const hub::HubSyncSnapshot snap = hub->sync_snapshot();
  add_sync_node_metrics(&page, snap.node);

  // Sessions by mode; every mode is written, 0 when none.
  std::map<std::string, size_t> by_mode = {
      {"waiting", 0}, {"catch-up", 0}, {"reconcile", 0}, {"live", 0}};
  size_t connected = 0;
  for (const auto& c : snap.sessions) {
    ++by_mode[c.mode];
    connected += c.connected ? 1 : 0;
  }
  auto& sessions = page.gauge("canopy_hub_sessions", "Sync sessions of sites, by mode.");
  for (const auto& [mode, n] : by_mode) sessions.add(static_cast<double>(n), {{"mode", mode}});
  page.gauge("canopy_hub_sessions_connected",
             "Sync sessions whose site was heard from within the away time.")
      .add(static_cast<double>(connected));
  page.gauge("canopy_hub_catchups_running",
             "Sessions catching up from the log or reconciling (each holds a slot).")
      .add(static_cast<double>(by_mode["catch-up"] + by_mode["reconcile"]));

  // Per site.
  const uint64_t log_index = hub->store()->last_log_index();
  auto& site_connected = page.gauge("canopy_hub_site_connected",
                                    "1 while the site was heard from within the away time.");
  auto& site_age = page.gauge("canopy_hub_site_last_seen_age_seconds",
                              "Seconds since the hub last heard from the site.");
  auto& site_lag = page.gauge(
      "canopy_hub_site_lag_entries",
      "Entries of the hub's log after the position the site acknowledged (in its scope or not).");
  auto& site_acked = page.gauge("canopy_hub_site_acked_index",
                                "The site's acknowledged position in the hub's log.");
  auto& site_unacked =
      page.gauge("canopy_hub_site_unacked_messages",
                 "Sequenced sync messages sent to the site and not yet acknowledged by it.");
  for (const auto& c : snap.sessions) {
    const MetricLabels site = {{"site", c.name}};
    site_connected.add(c.connected ? 1 : 0, site);
    const uint64_t age_ms = snap.now_ms > c.last_seen_ms ? snap.now_ms - c.last_seen_ms : 0;
    site_age.add(static_cast<double>(age_ms) / 1000.0, site);
    site_lag.add(static_cast<double>(log_index > c.acked_index ? log_index - c.acked_index : 0),
                 site);
    site_acked.add(static_cast<double>(c.acked_index), site);
    site_unacked.add(static_cast<double>(c.unacked), site);
  }

  const sync::ParentStats& p = snap.parent;
  auto counter = [&page](const char* name, const char* help, uint64_t value) {
    page.counter(name, help).add(static_cast<double>(value));
  };
  counter("canopy_hub_deltas_sent", "Deltas sent down to sites (retransmissions not counted).",
          p.deltas_sent);
  counter("canopy_hub_documents_sent",
          "Whole documents sent down to sites (reconciliation, scope entry).", p.documents_sent);
  counter("canopy_hub_sent_bytes", "Bytes of the sync messages the parent engine sent.",
          p.bytes_sent);
  counter("canopy_hub_catchups", "Catch-ups from the log started.", p.catchups);
  counter("canopy_hub_sync_read_failures",
          "Failed reads of the hub's store while serving a site's session (each retried).",
          p.read_failures);
  counter("canopy_hub_reconciliations", "Reconciliations (sketch exchanges) started.",
          p.reconciliations);
  counter("canopy_hub_sketch_symbols_sent", "Sketch symbols sent in reconciliations.",
          p.sketch_symbols_sent);
  counter("canopy_hub_refused_messages",
          "Sync messages refused (malformed, wrong addressee, stale session).", p.refused_messages);
  counter("canopy_hub_refused_writes", "Sites' writes refused: outside their writable scope.",
          p.refused_writes);
  counter("canopy_hub_unserved_hellos",
          "Hellos of sites this hub does not serve (no record, or below a regional hub).",
          p.unserved_hellos);
  counter("canopy_hub_redirects",
          "Sites sent to another hub: a hello answered with the regional hub that serves the "
          "site, or a session ended because the site moved (sent to this hub's parent).",
          p.redirects);
  counter("canopy_hub_refused_revoked_messages",
          "Sync messages refused because their site's identity is revoked.",
          p.refused_not_admitted);
  if (hub::Enrollment* e = hub->enrollment()) {
    const hub::EnrollmentStats es = e->stats();
    counter("canopy_hub_bootstrap_tokens_issued", "Bootstrap tokens issued.", es.tokens_issued);
    counter("canopy_hub_enrollments", "Sites enrolled (certificate and NATS user issued).",
            es.enrollments);
    counter("canopy_hub_enrollments_refused",
            "Enrollment requests refused (bad, expired or used token, bad CSR).",
            es.refused_enrollments);
    counter("canopy_hub_site_revocations", "Site identities revoked.", es.revocations);
    counter("canopy_hub_certificate_renewals", "Site certificates renewed before expiry.",
            es.renewals);
    counter("canopy_hub_certificate_renewals_refused",
            "Certificate renewals refused (expired or foreign certificate, bad signature, "
            "revoked site, bad CSR).",
            es.refused_renewals);
    counter("canopy_hub_enrollments_held_for_approval",
            "Enrollment requests held for a fleet admin's approval (double opt-in).",
            es.pending_requests);
  }

  const hub::IndexCounts counts = hub->index()->counts();
  page.gauge("canopy_hub_known_sites", "Sites with a site record.")
      .add(static_cast<double>(counts.known_sites));
  page.gauge("canopy_hub_placements", "Valid placements.")
      .add(static_cast<double>(counts.placements));
  page.gauge("canopy_hub_overrides", "Valid overrides.").add(static_cast<double>(counts.overrides));
  if (catalog != nullptr) {
    const WatchFanout::Stats ws = catalog->watch_stats();
    page.gauge("canopy_hub_watches", "Open watch streams (gRPC and REST).")
        .add(static_cast<double>(ws.watchers));
    counter("canopy_hub_watches_fell_behind",
            "Watch streams ended because they fell behind (RESOURCE_EXHAUSTED: watch again).",
            ws.fell_behind);
  }
  return page.text();
}

std::vector<std::string> hub_readiness(hub::Hub* hub, const daemon::Health* health) {
  std::vector<std::string> problems;
  if (health != nullptr && health->phase() != daemon::Phase::kServing) {
    problems.push_back(std::string("daemon ") + daemon::phase_name(health->phase()));
  }
  if (hub->store() == nullptr) {
    problems.push_back("store not open");
  } else if (Status st = hub->store()->write_health(); !st.ok()) {
    problems.push_back(st.message());
  }
  if (!hub->nats_connected()) {
    const std::string why = hub->nats_last_error();
    problems.push_back(why.empty() ? "NATS not connected" : "NATS not connected: " + why);
  }
  return problems;
}

void add_hub_routes(httplib::Server& server, hub::Hub* hub, const daemon::Health* health,
                    std::function<const CatalogService*()> catalog) {
  server.Get("/healthz", [hub, health](const httplib::Request&, httplib::Response& res) {
    json j = {{"name", hub->config().name},
              {"role", "hub"},
              {"version", daemon::version()},
              {"replica_id", hub->store()->replica_id()},
              {"nats_connected", hub->nats_connected()},
              {"log_index", hub->store()->last_log_index()},
              {"sessions", hub->session_count()}};
    if (health != nullptr) j["state"] = daemon::phase_name(health->phase());
    add_store_health(&j, hub->store());
    // Why it cannot connect (a refused certificate, a refused password, ...).
    if (!hub->nats_connected()) {
      if (std::string why = hub->nats_last_error(); !why.empty()) j["nats_error"] = why;
    }
    // A regional hub: how it stands with its parent.
    if (auto up = hub->upstream()) {
      j["parent"] = {{"name", up->parent},     {"session_open", up->session_open},
                     {"in_sync", up->in_sync}, {"down_index", up->down_index},
                     {"hellos", up->hellos},   {"failovers", up->failovers}};
    }
    // Active-active: the peer this hub follows, and whether it is caught up
    // with it (the level's other writes have all reached this hub).
    if (auto peer = hub->peer_link()) {
      j["peer"] = {{"name", peer->parent},     {"session_open", peer->session_open},
                   {"in_sync", peer->in_sync}, {"down_index", peer->down_index},
                   {"hellos", peer->hellos},   {"failovers", peer->failovers}};
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
                     {"unacked", c.unacked},
                     {"labels", c.labels}});
    }
    reply_json(res, arr.dump());
  });
  server.Get("/metrics", [hub, catalog](const httplib::Request&, httplib::Response& res) {
    res.set_content(hub_metrics(hub, catalog ? catalog() : nullptr), kMetricsContentType);
  });
  server.Get("/livez", [](const httplib::Request&, httplib::Response& res) { reply_live(res); });
  server.Get("/readyz", [hub, health](const httplib::Request&, httplib::Response& res) {
    reply_ready(res, hub_readiness(hub, health));
  });
}

}  // namespace canopy::api

// canopy-spoke: the daemon at a site.
//
// Composes a spoke::Spoke (the site's store, the manifests-dir applier k3s
// deploys from, the reconciler writing status documents that flow up, the
// sync session with its hub over NATS) with the site's local HTTP API from
// api/ (/healthz, /v1/status, local overrides), which serves site operators
// while the uplink is down; and, with `bus: {enabled: true}` or --bus, the
// site's device bus (spoke/bus/: a supervised nats-server with MQTT, a leaf
// of the hub's NATS).
//
//   canopy-spoke --config spoke.yaml
//   canopy-spoke --site shop-1 --label region=eu --data DIR --manifests DIR --nats URL
//   canopy-spoke --site shop-1 --enroll TOKEN --hub-url http://hub:7401 --ca-fingerprint sha256:...
//                (enrolls first: docs/security.md)
//   canopy-spoke --version
//
// At start it applies what its store holds before it even connects. SIGTERM
// or SIGINT stops it cleanly. Exit codes: 0 clean, 2 bad configuration, 1 a
// failure at start.
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <vector>

#include "api/spoke_http.h"
#include "daemon/command_line.h"
#include "daemon/process.h"
#include "spoke/bus/device_tenants.h"
#include "spoke/bus/supervisor.h"
#include "spoke/bus/telemetry_forwarder.h"
#include "spoke/bus/tenants_file_watch.h"
#include "spoke/bus/twin_reports.h"
#include "spoke/config.h"
#include "spoke/enroll.h"
#include "spoke/renew.h"
#include "spoke/spoke.h"

namespace canopy {
namespace {

constexpr char kProgram[] = "canopy-spoke";

int run(const spoke::SpokeConfig& cfg) {
  daemon::set_log_level(cfg.log_level);
  // A renewal a crash interrupted is finished before anything reads the
  // site's key and certificate.
  if (Status st = spoke::complete_renewal(cfg.data_dir); !st.ok()) {
    spdlog::error("{}: {}", kProgram, st.to_string());
    return 1;
  }
  daemon::Health health;
  spoke::Spoke site(cfg);
  api::HttpServer http;
  std::vector<daemon::Part> parts;
  // The device bus first: the site's devices are served whatever the uplink.
  std::unique_ptr<spoke::bus::BusSupervisor> bus;
  std::unique_ptr<spoke::bus::BusTenantSources> bus_tenants;
  std::unique_ptr<spoke::bus::TenantsFileWatch> tenants_watch;
  std::unique_ptr<spoke::bus::DeviceDocumentsWatch> devices_watch;
  std::unique_ptr<spoke::bus::TwinReports> twin_reports;
  std::unique_ptr<spoke::bus::TelemetryForwarder> telemetry;
  std::string bus_dir;
  // The spoke's own password on its bus (made at each start, only its hash
  // in the bus's config): its NATS user in CANOPY and its MQTT users.
  std::string spoke_password;
  if (cfg.bus.enabled) {
    auto spec = spoke::bus::make_bus_spec(cfg.bus, cfg.site, cfg.data_dir, &spoke_password);
    if (!spec.ok()) return daemon::config_error(kProgram, spec.status());
    // A tls:// leaf remote: the site's certificate for the hub's mTLS.
    const spoke::NatsTlsFiles tls = spoke::nats_tls_files(cfg);
    spoke::bus::use_leaf_tls(&*spec, tls.ca_file, tls.cert_file, tls.key_file);
    // An enrolled site's leaf node connects as its own leaf user.
    auto creds = spoke::load_nats_credentials(cfg.nats_credentials_path());
    if (!creds.ok()) return daemon::config_error(kProgram, creds.status());
    if (creds->has_value()) {
      spoke::bus::use_leaf_credentials(&*spec, (*creds)->leaf_user, (*creds)->password);
    }
    spoke::bus::SupervisorOptions options;
    options.nats_server = cfg.bus.nats_server;
    std::vector<spoke::bus::BusTenant> configured = spec->tenants;
    bus_dir = spec->dir;
    bus = std::make_unique<spoke::bus::BusSupervisor>(std::move(*spec), options);
    bus_tenants = std::make_unique<spoke::bus::BusTenantSources>(bus.get(), std::move(configured));
    auto start_bus = [&]() -> Status {
      CANOPY_RETURN_IF_ERROR(bus->start());
      if (cfg.bus.tenants_file.empty()) return ok_status();
      auto watch = spoke::bus::TenantsFileWatch::start(cfg.bus.tenants_file, bus_tenants.get());
      if (!watch.ok()) {
        bus->stop();
        return watch.status();
      }
      tenants_watch = std::move(*watch);
      return ok_status();
    };
    auto stop_bus = [&] {
      tenants_watch.reset();
      bus->stop();
    };
    parts.push_back({"device bus", start_bus, stop_bus});
  }
  parts.push_back({"spoke", [&] { return site.start(); }, [&] { site.stop(); }});
  // Rotation of the site certificate before it expires (enrolled sites).
  spoke::CertificateRenewer renewer(cfg.data_dir, cfg.hub_url, cfg.renew_at);
  parts.push_back({"certificate renewal",
                   [&]() -> Status {
                     renewer.start();
                     return ok_status();
                   },
                   [&] { renewer.stop(); }});
  if (cfg.bus.enabled) {
    // The site's device documents (from the hub's API, in the site's scope)
    // join the configured devices once the store is open.
    // Desired twins are published retained through the MQTT listener.
    auto start_devices = [&]() -> Status {
      spoke::bus::DesiredTwinOptions desired;
      const std::string& host = cfg.bus.spec.mqtt_host;
      desired.mqtt_host = host == "0.0.0.0" || host == "::" || host.empty() ? "127.0.0.1" : host;
      desired.mqtt_port = cfg.bus.spec.mqtt_port;
      desired.password = spoke_password;
      auto watch = spoke::bus::DeviceDocumentsWatch::start(site.store(), cfg.site,
                                                           bus_tenants.get(), desired);
      if (!watch.ok()) return watch.status();
      devices_watch = std::move(*watch);
      return ok_status();
    };
    parts.push_back({"device documents", start_devices, [&] { devices_watch.reset(); }});
    // Reported twins: the devices' reports, coalesced into the store.
    auto start_reports = [&]() -> Status {
      spoke::bus::TwinReportOptions o;
      o.nats_url = "nats://127.0.0.1:" + std::to_string(cfg.bus.spec.client_port);
      o.user = spoke::bus::kSpokeUser;
      o.password = spoke_password;
      o.site = cfg.site;
      auto reports = spoke::bus::TwinReports::start(
          site.store(), o, [watch = devices_watch.get()](std::string_view t, std::string_view d) {
            return watch->known(t, d);
          });
      if (!reports.ok()) return reports.status();
      twin_reports = std::move(*reports);
      return ok_status();
    };
    parts.push_back({"twin reports", start_reports, [&] { twin_reports.reset(); }});
    // Telemetry: the site's buffer stream, forwarded to the hub in order.
    auto start_telemetry = [&]() -> Status {
      spoke::bus::TelemetryOptions o;
      o.nats_url = "nats://127.0.0.1:" + std::to_string(cfg.bus.spec.client_port);
      o.user = spoke::bus::kSpokeUser;
      o.password = spoke_password;
      o.site = cfg.site;
      o.state_file = bus_dir + "/telemetry-forwarded";
      const spoke::bus::BusLimits& l = cfg.bus.spec.limits;
      o.max_bytes = l.telemetry_max_bytes;
      o.max_age = l.telemetry_max_age;
      o.max_message = l.telemetry_max_message;
      auto f = spoke::bus::TelemetryForwarder::start(o);
      if (!f.ok()) return f.status();
      telemetry = std::move(*f);
      return ok_status();
    };
    parts.push_back({"telemetry", start_telemetry, [&] { telemetry.reset(); }});
  }
  if (!cfg.health_listen.empty()) {
    // The device bus's counters (docs/device-bus.md: Devices as documents,
    // Twins, Telemetry; docs/metrics.md).
    auto bus_metrics = [&bus, &devices_watch, &twin_reports, &telemetry](api::MetricsText* page) {
      if (bus) {
        page->gauge("canopy_spoke_bus_ready",
                    "1 while the site bus's nats-server is up and has answered its health "
                    "check.")
            .add(bus->ready() ? 1 : 0);
        page->counter("canopy_spoke_bus_starts",
                      "nats-server processes started for the site bus: the first, and one "
                      "after each death or restart.")
            .add(static_cast<double>(bus->starts()));
        page->counter("canopy_spoke_bus_restarts",
                      "Restarts of the site bus because nats-server's MQTT session store "
                      "failed to save or delete sessions.")
            .add(static_cast<double>(bus->restarts()));
        page->counter("canopy_spoke_bus_reloads", "Configuration reloads the site bus applied.")
            .add(static_cast<double>(bus->reloads()));
      }
      if (devices_watch) {
        const spoke::bus::DeviceWatchStats d = devices_watch->stats();
        page->gauge("canopy_spoke_devices", "Valid device documents at the site.")
            .add(static_cast<double>(d.devices));
        page->counter("canopy_spoke_device_documents_refused",
                      "Device documents refused (not a valid device), over all passes.")
            .add(static_cast<double>(d.refused));
        page->counter("canopy_spoke_twin_desired_published",
                      "Desired twins published retained to the devices (clears included).")
            .add(static_cast<double>(d.desired_published));
        page->counter("canopy_spoke_twin_desired_failed",
                      "Desired twin publishes that failed (each is retried).")
            .add(static_cast<double>(d.desired_failed));
      }
      if (twin_reports) {
        const spoke::bus::TwinReportStats r = twin_reports->stats();
        page->counter("canopy_spoke_twin_reports_accepted",
                      "Device reports taken, before coalescing.")
            .add(static_cast<double>(r.accepted));
        page->counter("canopy_spoke_twin_reports_refused", "Device reports refused.")
            .add(static_cast<double>(r.refused_malformed), {{"reason", "malformed"}})
            .add(static_cast<double>(r.refused_oversized), {{"reason", "oversized"}})
            .add(static_cast<double>(r.refused_unknown), {{"reason", "unknown_device"}});
        page->counter("canopy_spoke_twin_reported_writes",
                      "Reported twin documents written to the store (after coalescing).")
            .add(static_cast<double>(r.writes));
        page->counter("canopy_spoke_twin_reported_commits",
                      "Store commits of reported twins (many devices' reports share one).")
            .add(static_cast<double>(r.commits));
        page->counter("canopy_spoke_twin_reported_write_failures",
                      "Reported twin writes that failed.")
            .add(static_cast<double>(r.write_failures));
      }
      if (!telemetry) return;
      const spoke::bus::TelemetryStats t = telemetry->stats();
      page->counter("canopy_spoke_telemetry_forwarded",
                    "Device telemetry messages forwarded to the hub (confirmed by it).")
          .add(static_cast<double>(t.forwarded));
      page->counter("canopy_spoke_telemetry_dropped",
                    "Device telemetry messages the site buffer dropped by its limits before "
                    "they were forwarded.")
          .add(static_cast<double>(t.dropped));
      page->counter("canopy_spoke_telemetry_refused", "Device telemetry messages refused.")
          .add(static_cast<double>(t.refused_oversized), {{"reason", "oversized"}})
          .add(static_cast<double>(t.refused_subject), {{"reason", "subject"}});
      page->gauge("canopy_spoke_telemetry_buffered",
                  "Device telemetry messages in the site buffer, not yet forwarded.")
          .add(static_cast<double>(t.buffered));
      page->gauge("canopy_spoke_telemetry_uplink",
                  "1 while the hub answers the telemetry forwarder.")
          .add(t.uplink ? 1 : 0);
    };
    api::add_spoke_routes(http.server(), &site, &health, bus_metrics);
    parts.push_back(http.part("local API", cfg.health_listen));
  }
  return daemon::run_until_signal(std::move(parts), &health);
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) {
  using namespace canopy;
  daemon::prepare_process();
  // A site machine's memory is scarce: glibc's default of 8 arenas per core
  // keeps memory freed by the reconciler's worker threads (a pass over 1,000
  // objects parses megabytes of JSON) out of reach of the others.
  mallopt(M_ARENA_MAX, 2);
  // Blocks of 128 KiB and more (a LIST's body, a message's decoding scratch,
  // a pass's vectors) are mapped on their own and unmapped when freed, never
  // left in the heap between the small blocks the spoke keeps: glibc would
  // otherwise raise this threshold after the first such block is freed, and
  // the audit's transient megabytes would stay resident as fragments.
  mallopt(M_MMAP_THRESHOLD, 128 << 10);
  mallopt(M_TRIM_THRESHOLD, 256 << 10);
  spoke::SpokeConfig cfg;
  std::vector<std::string> labels;
  spoke::EnrollRequest enroll;
  auto bind = [&labels, &enroll](CLI::App& app, spoke::SpokeConfig* c) {
    app.add_option("--enroll", enroll.token,
                   "enroll first with this bootstrap token (kubectl canopy enroll SITE), then run");
    app.add_option("--hub-url", enroll.hub_url,
                   "with --enroll: the hub's HTTP API, http://host:port or https://host:port "
                   "(https: its certificate must be issued by the pinned CA)");
    app.add_option("--renew-at", c->renew_at,
                   "renew the site certificate after this fraction of its lifetime (default "
                   "0.667)");
    app.add_option("--ca-fingerprint", enroll.ca_fingerprint,
                   "with --enroll: the hub CA's fingerprint to pin (sha256:<hex>)");
    app.add_option("--nats-credentials", c->nats_credentials_file,
                   "the site's NATS user file (default: <data>/identity/nats.json if present)");
    app.add_option("--site", c->site, "site name (DNS-1123 label)");
    app.add_option("--label", labels, "site label key=value (repeatable)");
    app.add_option("--parent", c->parent,
                   "name of the hub to sync with, or of the hubs of an active-active level "
                   "(a,b): the spoke fails over between them");
    app.add_option("--data", c->data_dir, "data directory (RocksDB)");
    app.add_option("--applier", c->applier, "manifests-dir (default) or kube");
    app.add_option("--manifests", c->manifests_dir, "manifests directory (k3s deploys from it)");
    app.add_option("--kubeconfig", c->kubeconfig,
                   "applier kube: kubeconfig file (none: in-cluster service account)");
    app.add_option("--context", c->kube_context, "applier kube: kubeconfig context");
    app.add_option("--kube-audit-seconds", c->kube_audit_seconds,
                   "applier kube: read back health and drift this often");
    app.add_option("--nats", c->nats_urls, "NATS URL(s)");
    app.add_option("--nats-ca-file", c->nats_ca_file,
                   "NATS TLS: CA of the server's certificate (default: identity/ca.crt)");
    app.add_option("--nats-cert-file", c->nats_cert_file,
                   "NATS TLS: client certificate (default: identity/site.crt)");
    app.add_option("--nats-key-file", c->nats_key_file,
                   "NATS TLS: its key (default: identity/site.key)");
    app.add_option("--nats-tls-server-name", c->nats_tls_server_name,
                   "NATS TLS: name in the server's certificate (default: the URL's host)");
    app.add_option("--health", c->health_listen, "local API listen address host:port");
    app.add_option("--log-level", c->log_level, "trace|debug|info|warn|error");
    app.add_flag("--bus", c->bus.enabled, "run the site's device bus (nats-server with MQTT)");
    app.add_option("--nats-server", c->bus.nats_server, "device bus: the nats-server binary");
    app.add_option("--bus-mqtt-port", c->bus.spec.mqtt_port, "device bus: MQTT port");
    app.add_option("--bus-leaf-remote", c->bus.spec.leaf_urls,
                   "device bus: the hub's leaf node URL(s)");
  };
  if (auto exit_code = daemon::parse_command_line<spoke::SpokeConfig>(
          argc, argv, kProgram, "canopy-spoke: Canopy site daemon", bind, spoke::load_spoke_config,
          &cfg)) {
    return *exit_code;
  }
  for (const auto& l : labels) {
    if (Status s = spoke::parse_label(l, &cfg.labels); !s.ok()) {
      return daemon::config_error(kProgram, s);
    }
  }
  if (Status s = spoke::validate_spoke_config(cfg); !s.ok()) {
    return daemon::config_error(kProgram, s);
  }
  if (!enroll.token.empty() || !enroll.hub_url.empty() || !enroll.ca_fingerprint.empty()) {
    if (enroll.token.empty() || enroll.hub_url.empty() || enroll.ca_fingerprint.empty()) {
      return daemon::config_error(
          kProgram, invalid_argument("--enroll, --hub-url and --ca-fingerprint go together"));
    }
    daemon::set_log_level(cfg.log_level);
    enroll.site = cfg.site;
    enroll.data_dir = cfg.data_dir;
    // Waiting for a fleet admin's approval ends at SIGTERM or SIGINT.
    enroll.wait = [](std::chrono::milliseconds d) { return !daemon::wait_for_stop_signal(d); };
    if (Status s = spoke::enroll_site(enroll); !s.ok()) {
      if (s.code() == StatusCode::kCancelled) {
        spdlog::info("{}", s.message());
        return 0;
      }
      // The token is not in the message: enroll_site never repeats it.
      spdlog::error("enrollment failed: {}", s.message());
      return 1;
    }
  }
  return run(cfg);
}

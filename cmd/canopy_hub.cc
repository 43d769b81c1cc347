// canopy-hub: the control-plane replica in a data centre or region.
//
// Composes a hub::Hub (store, placement index, status aggregate, the sync
// sessions of its sites over NATS) with what api/ serves over it: the Catalog
// gRPC API, and on the HTTP listener the same API as REST/JSON (api/rest.h)
// with /healthz and /v1/sessions. Every API call needs a token; a hub started on an empty store
// writes a fleet-admin token to <data>/admin.token (mode 0600) or --admin-token-file.
//
//   canopy-hub --config hub.yaml
//   canopy-hub --name hub --data /var/lib/canopy/hub --nats nats://127.0.0.1:4222
//   canopy-hub --name eu --parent root --nats nats://127.0.0.1:4223 ...  (a regional hub)
//   canopy-hub --nats-auth-file /etc/nats/canopy-auth.conf --write-nats-auth ...
//   canopy-hub --tls-cert hub.crt --tls-key hub.key [--tls-client-ca ca.crt] ...
//   canopy-hub --tls-host hub.example.com --tls-host 10.0.0.5 ...  (a serving
//       certificate issued by the hub's own CA, which sites pin)
//   canopy-hub --version
//
// SIGTERM or SIGINT shuts it down cleanly: the API stops taking requests,
// sessions stop, the store closes. Exit codes: 0 clean, 2 bad configuration,
// 1 a failure at start.
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>

#include "api/catalog_service.h"
#include "api/grpc_server.h"
#include "api/hub_http.h"
#include "api/rest.h"
#include "daemon/command_line.h"
#include "daemon/identity.h"
#include "daemon/process.h"
#include "hub/config.h"
#include "hub/hub.h"

namespace canopy {
namespace {

constexpr char kProgram[] = "canopy-hub";
// A serving certificate the hub issues itself (--tls-host) is issued again
// at each start.
constexpr int kServingCertDays = 90;

void bind_hub_flags(CLI::App& app, hub::HubConfig* cfg) {
  app.add_option("--name", cfg->name, "hub name (DNS-1123 label)");
  app.add_option("--data", cfg->data_dir, "data directory (RocksDB)");
  app.add_option("--nats", cfg->nats_urls, "NATS URL(s)");
  app.add_option("--grpc", cfg->grpc_listen, "gRPC listen address host:port");
  app.add_option("--health", cfg->health_listen, "health HTTP listen address host:port");
  app.add_option("--log-level", cfg->log_level, "trace|debug|info|warn|error");
  app.add_option("--admin-token-file", cfg->admin_token_file,
                 "where a new hub writes its first fleet-admin token (default: "
                 "<data>/admin.token)");
  app.add_option("--parent", cfg->parent,
                 "parent hub's name, or the names of an active-active parent level "
                 "(a,b): this hub is a regional hub (default: none, the root)");
  app.add_option("--region", cfg->region,
                 "the region this regional hub serves, as its sites' records name it "
                 "(default: the hub's name; several hubs of one region: active-active)");
  app.add_option("--peers", cfg->peers,
                 "the other hubs of this level, a,b: active-active (docs/hierarchy.md)");
  app.add_option("--peer-reconcile-seconds", cfg->peer_reconcile_s,
                 "how often to compare every document with the peer hub this hub follows "
                 "(default 600)");
  app.add_option("--nats-auth-file", cfg->nats_auth_file,
                 "nats-server authorization include file the hub manages (docs/security.md)");
  app.add_option("--nats-pid-file", cfg->nats_pid_file,
                 "nats-server's pid file: SIGHUP after each change of --nats-auth-file");
  app.add_flag("--enrollment-approval", cfg->enrollment_approval,
               "double opt-in: enrollments wait for kubectl canopy site approve SITE");
  app.add_option("--site-cert-seconds", cfg->site_cert_seconds,
                 "site certificates' validity in seconds instead of site_cert_days (tests)");
  app.add_option("--tls-cert", cfg->tls_cert_file,
                 "serving certificate (PEM) for gRPC and HTTP: both then speak TLS");
  app.add_option("--tls-key", cfg->tls_key_file, "the serving certificate's key (PEM)");
  app.add_option("--tls-client-ca", cfg->tls_client_ca_file,
                 "require client certificates issued by a CA in this file (mTLS)");
  app.add_option("--tls-host", cfg->tls_hosts,
                 "instead of --tls-cert: the hub issues its serving certificate from its CA for "
                 "this host name or address (repeat for more)");
  app.add_option("--nats-ca-file", cfg->nats_ca_file,
                 "NATS TLS: CA of nats-server's certificate (default: the hub's CA)");
  app.add_option("--nats-cert-file", cfg->nats_cert_file,
                 "NATS TLS: client certificate (default: issued by the hub's CA at start)");
  app.add_option("--nats-key-file", cfg->nats_key_file, "NATS TLS: the client certificate's key");
  app.add_option("--nats-tls-server-name", cfg->nats_tls_server_name,
                 "NATS TLS: name in nats-server's certificate (default: the URL's host)");
}

// The TLS files of the listeners; with tls_hosts, a serving certificate
// issued from the hub's CA now, into <data>/tls/ (key 0600).
StatusOr<api::TlsServerFiles> tls_files(const hub::HubConfig& cfg) {
  api::TlsServerFiles files{cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_client_ca_file};
  if (cfg.tls_hosts.empty()) return files;
  auto ca = hub::load_or_create_ca(cfg.data_dir, cfg.name);
  if (!ca.ok()) return ca.status();
  auto served = daemon::issue_server_cert(*ca, cfg.tls_hosts, kServingCertDays);
  if (!served.ok()) return served.status();
  files.cert_file = cfg.data_dir + "/tls/hub.crt";
  files.key_file = cfg.data_dir + "/tls/hub.key";
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(files.key_file, served->key_pem));
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(files.cert_file, served->cert_pem));
  std::string hosts;
  for (const auto& h : cfg.tls_hosts) hosts += (hosts.empty() ? "" : ", ") + h;
  spdlog::info("TLS: issued the hub's serving certificate for {} from its CA ({})", hosts,
               files.cert_file);
  return files;
}

// --write-nats-auth: writes the CA and the NATS authorization file from the
// store and exits, so that nats-server can start with it before the hub.
int write_nats_auth(const hub::HubConfig& cfg) {
  daemon::set_log_level(cfg.log_level);
  if (cfg.nats_auth_file.empty()) {
    return daemon::config_error(kProgram,
                                invalid_argument("--write-nats-auth needs --nats-auth-file"));
  }
  StoreOptions so;
  so.path = cfg.data_dir;
  so.durability = cfg.durability;
  auto store = Store::open(so);
  if (!store.ok()) {
    spdlog::error("cannot open the store: {}", store.status().message());
    return 1;
  }
  hub::EnrollmentOptions eo;
  eo.hub_name = cfg.name;
  eo.data_dir = cfg.data_dir;
  eo.nats_auth_file = cfg.nats_auth_file;
  eo.nats_pid_file = cfg.nats_pid_file;
  eo.cert_days = cfg.site_cert_days;
  eo.cert_seconds = cfg.site_cert_seconds;
  auto enrollment = hub::Enrollment::open(store->get(), SystemClock::instance(), eo);
  if (!enrollment.ok()) {
    spdlog::error("enrollment: {}", enrollment.status().message());
    return 1;
  }
  spdlog::info("wrote {}; CA fingerprint {}", cfg.nats_auth_file, (*enrollment)->ca_fingerprint());
  return 0;
}

int run(const hub::HubConfig& cfg) {
  daemon::set_log_level(cfg.log_level);
  auto tls = tls_files(cfg);
  if (!tls.ok()) {
    spdlog::error("TLS: {}", tls.status().message());
    return 1;
  }
  std::shared_ptr<grpc::ServerCredentials> grpc_credentials;
  if (tls->enabled()) {
    auto creds = api::grpc_tls_credentials(*tls);
    if (!creds.ok()) {
      spdlog::error("TLS: {}", creds.status().message());
      return 1;
    }
    grpc_credentials = *creds;
  }
  daemon::Health health;
  hub::Hub hub(cfg);
  std::unique_ptr<api::Authenticator> auth;
  std::unique_ptr<api::CatalogService> catalog;
  std::unique_ptr<api::GrpcServer> grpc_server;
  api::HttpServer http(*tls);
  std::vector<daemon::Part> parts;
  parts.push_back({"hub", [&] { return hub.start(); }, [&] { hub.stop(); }});
  // The API's parts follow the hub's store (the authenticator subscribes to
  // it): they are destroyed before the hub part stops and closes the store.
  auto drop_api = [&] {
    grpc_server.reset();
    catalog.reset();
    auth.reset();
  };
  auto start_api = [&]() -> Status {
    auth = std::make_unique<api::Authenticator>(hub.store(), SystemClock::instance());
    // Only the file's path is logged, never the token.
    auto wrote = auth->bootstrap_admin(cfg.admin_token_path());
    if (!wrote.ok()) return wrote.status();
    if (*wrote) spdlog::info("wrote a fleet-admin API token to {}", cfg.admin_token_path());
    api::CatalogOptions options;
    // Status shows a site without a live session as offline (away for
    // away_after_s), with what it last reported and when.
    // Below regional hubs, from their presence documents.
    options.liveness = [&hub] { return hub.liveness_lookup(); };
    options.enrollment = hub.enrollment();
    catalog = std::make_unique<api::CatalogService>(hub.store(), hub.index(), hub.status(),
                                                    auth.get(), std::move(options));
    grpc_server =
        api::start_grpc_server(cfg.grpc_listen, {catalog.get()}, nullptr, grpc_credentials);
    if (!grpc_server) return unavailable("cannot listen on " + cfg.grpc_listen);
    spdlog::info("gRPC API on {}{}", cfg.grpc_listen,
                 !grpc_credentials             ? ""
                 : tls->requires_client_cert() ? " (TLS, client certificates required)"
                                               : " (TLS)");
    return ok_status();
  };
  parts.push_back({"gRPC API",
                   [&]() -> Status {
                     Status st = start_api();
                     if (!st.ok()) drop_api();
                     return st;
                   },
                   [&] {
                     catalog->shutdown();
                     grpc_server->Shutdown(std::chrono::system_clock::now() +
                                           std::chrono::seconds(2));
                     drop_api();
                   }});
  if (!cfg.health_listen.empty()) {
    api::add_hub_routes(http.server(), &hub, &health,
                        [&catalog]() -> const api::CatalogService* { return catalog.get(); });
    // The HTTP part starts after the gRPC part has made the service.
    api::add_rest_routes(http.server(), [&catalog] { return catalog.get(); });
    daemon::Part part = http.part("HTTP API", cfg.health_listen);
    // Open REST watches hold the server's threads: end them before it stops.
    part.stop = [&http, &catalog] {
      if (catalog) catalog->shutdown();
      http.stop();
    };
    parts.push_back(std::move(part));
  }
  return daemon::run_until_signal(std::move(parts), &health);
}

}  // namespace
}  // namespace canopy

int main(int argc, char** argv) {
  using namespace canopy;
  daemon::prepare_process();
  api::keep_freed_memory();
  hub::HubConfig cfg;
  static bool write_auth_only = false;
  auto bind = [](CLI::App& app, hub::HubConfig* c) {
    bind_hub_flags(app, c);
    app.add_flag("--write-nats-auth", write_auth_only,
                 "write the CA and --nats-auth-file, then exit (before nats-server first starts)");
  };
  if (auto exit_code = daemon::parse_command_line<hub::HubConfig>(
          argc, argv, kProgram, "canopy-hub: Canopy control-plane hub", bind, hub::load_hub_config,
          &cfg)) {
    return *exit_code;
  }
  if (Status s = hub::validate_hub_config(cfg); !s.ok()) return daemon::config_error(kProgram, s);
  if (write_auth_only) return write_nats_auth(cfg);
  return run(cfg);
}

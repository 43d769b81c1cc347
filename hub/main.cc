// canopy-hub: the control-plane replica in a data centre or region.
//
// Holds the tenants' catalogues and the site registry in its store, evaluates
// placements into per-site scopes (PlacementIndex), serves the sync sessions
// of its sites over NATS, and serves the Catalog gRPC API. A health endpoint
// (HTTP) reports its state and its sessions.
//
//   canopy-hub --config hub.yaml
//   canopy-hub --name hub --data /var/lib/canopy/hub --nats nats://127.0.0.1:4222
//   canopy-hub --version
//
// SIGTERM or SIGINT shuts it down cleanly: the API stops taking requests,
// sessions stop, the store closes. Exit codes: 0 clean, 2 bad configuration,
// 1 a failure at start.
#include <httplib.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "api/catalog_service.h"
#include "api/grpc_server.h"
#include "hub/config.h"
#include "hub/placement_index.h"
#include "store/hlc.h"
#include "store/store.h"
#include "sync/engine/node.h"
#include "sync/nats_transport.h"

#ifndef CANOPY_VERSION
#define CANOPY_VERSION "0.0.0"
#endif

namespace canopy::hub {
namespace {

using json = nlohmann::json;

bool split_host_port(const std::string& addr, std::string* host, int* port) {
  const size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return false;
  *host = addr.substr(0, colon);
  try {
    *port = std::stoi(addr.substr(colon + 1));
  } catch (...) {
    return false;
  }
  return *port >= 0 && *port < 65536;
}

int run(const HubConfig& cfg) {
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  StoreOptions so;
  so.path = cfg.data_dir;
  so.durability = cfg.durability;
  auto store_or = Store::open(so);
  if (!store_or.ok()) {
    spdlog::critical("cannot open the store: {}", store_or.status().to_string());
    return 1;
  }
  std::unique_ptr<Store> store = std::move(store_or).value();
  spdlog::info("hub {} (replica {:016x}) store {} open", cfg.name, store->replica_id(),
               cfg.data_dir);

  auto index_or = PlacementIndex::attach(store.get());
  if (!index_or.ok()) {
    spdlog::critical("cannot load placements: {}", index_or.status().to_string());
    return 1;
  }
  std::unique_ptr<PlacementIndex> index = std::move(index_or).value();

  sync::NatsOptions no;
  no.urls = cfg.nats_urls;
  no.name = "canopy-hub-" + cfg.name;
  auto nats_or = sync::NatsTransport::connect(no);
  if (!nats_or.ok()) {
    spdlog::critical("cannot set up NATS: {}", nats_or.status().to_string());
    return 1;
  }
  std::unique_ptr<sync::NatsTransport> nats = std::move(nats_or).value();

  std::mt19937_64 rng(std::random_device{}());
  sync::Env env{SystemClock::instance(), [&rng] { return rng(); }};
  sync::ParentOptions po;
  po.max_concurrent_catchups = cfg.max_concurrent_catchups;
  po.away_after_ms = cfg.away_after_s * 1000;
  po.session_timeout_ms = cfg.session_timeout_s * 1000;
  auto parent = std::make_unique<sync::ParentSync>(cfg.name, store.get(), index.get(), env, po);
  Store* st = store.get();
  // The site describes itself in its hello; the registry keeps it.
  parent->set_hello_hook([st](const std::string& child, const v1::Hello& hello) {
    hub::register_site(st, child, hello);
  });
  sync::SyncNode node(store.get(), nats.get());
  node.set_parent_engine(std::move(parent));
  index->on_scope_change([&node](const sync::ScopeChange& c) { node.enqueue_scope_change(c); });
  if (Status s = node.attach(); !s.ok()) {
    spdlog::critical("cannot subscribe: {}", s.to_string());
    return 1;
  }
  sync::SyncRuntime runtime(&node);
  runtime.start();

  api::CatalogService catalog(store.get(), index.get());
  int grpc_port = 0;
  auto grpc_server = api::start_grpc_server(cfg.grpc_listen, {&catalog}, &grpc_port);
  if (!grpc_server) {
    spdlog::critical("cannot listen for gRPC on {}", cfg.grpc_listen);
    runtime.stop();
    return 1;
  }
  spdlog::info("gRPC API on {}", cfg.grpc_listen);

  httplib::Server health;
  health.Get("/healthz", [&](const httplib::Request&, httplib::Response& res) {
    json j = {{"name", cfg.name},
              {"role", "hub"},
              {"version", CANOPY_VERSION},
              {"replica_id", store->replica_id()},
              {"nats_connected", nats->connected()},
              {"log_index", store->last_log_index()}};
    size_t sessions = 0;
    runtime.call([&] { sessions = node.parent()->session_count(); });
    j["sessions"] = sessions;
    res.set_content(j.dump() + "\n", "application/json");
  });
  health.Get("/v1/sessions", [&](const httplib::Request&, httplib::Response& res) {
    json arr = json::array();
    runtime.call([&] {
      for (const auto& c : node.parent()->children()) {
        arr.push_back({{"site", c.name},
                       {"mode", c.mode},
                       {"connected", c.connected},
                       {"acked_index", c.acked_index},
                       {"labels", c.labels}});
      }
    });
    res.set_content(arr.dump() + "\n", "application/json");
  });
  std::string hhost;
  int hport = 0;
  std::thread health_thread;
  if (!cfg.health_listen.empty()) {
    split_host_port(cfg.health_listen, &hhost, &hport);
    if (!health.bind_to_port(hhost.c_str(), hport)) {
      spdlog::critical("cannot listen for health on {}", cfg.health_listen);
      grpc_server->Shutdown();
      runtime.stop();
      return 1;
    }
    health_thread = std::thread([&] { health.listen_after_bind(); });
    spdlog::info("health on http://{}/healthz", cfg.health_listen);
  }

  // Housekeeping: the log and tombstones older than the retention window go.
  std::atomic<bool> stopping{false};
  std::mutex hk_mu;
  std::condition_variable hk_cv;
  std::thread housekeeping([&] {
    std::unique_lock lock(hk_mu);
    while (!hk_cv.wait_for(lock, std::chrono::minutes(1), [&] { return stopping.load(); })) {
      store->expire_older_than(cfg.log_retention_hours * 3600 * 1000);
    }
  });

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: shutting down", sig);

  stopping = true;
  hk_cv.notify_all();
  housekeeping.join();
  catalog.shutdown();
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  // stop() is a no-op until the server runs: wait for it, briefly.
  for (int i = 0; i < 1000 && health_thread.joinable() && !health.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  health.stop();
  if (health_thread.joinable()) health_thread.join();
  runtime.stop();
  spdlog::info("hub {} stopped", cfg.name);
  return 0;
}

}  // namespace
}  // namespace canopy::hub

int main(int argc, char** argv) {
  // Signals are taken by sigwait in the main thread only.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  canopy::hub::HubConfig cfg;
  CLI::App app{"canopy-hub: Canopy control-plane hub"};
  std::string config_path, durability;
  std::vector<std::string> nats;
  bool version = false;
  app.add_flag("--version", version, "print the version and exit");
  app.add_option("-c,--config", config_path, "YAML config file");
  app.add_option("--name", cfg.name, "hub name (DNS-1123 label)");
  app.add_option("--data", cfg.data_dir, "data directory (RocksDB)");
  app.add_option("--nats", nats, "NATS URL(s)");
  app.add_option("--grpc", cfg.grpc_listen, "gRPC listen address host:port");
  app.add_option("--health", cfg.health_listen, "health HTTP listen address host:port");
  app.add_option("--durability", durability, "sync | group");
  app.add_option("--log-level", cfg.log_level, "trace|debug|info|warn|error");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (version) {
    std::printf("canopy-hub %s\n", CANOPY_VERSION);
    return 0;
  }
  // The file first, then flags given on the command line override it.
  if (!config_path.empty()) {
    canopy::hub::HubConfig from_file;
    if (auto s = canopy::hub::load_hub_config(config_path, &from_file); !s.ok()) {
      std::fprintf(stderr, "canopy-hub: %s\n", s.message().c_str());
      return 2;
    }
    if (app.count("--name") == 0) cfg.name = from_file.name;
    if (app.count("--data") == 0) cfg.data_dir = from_file.data_dir;
    if (app.count("--grpc") == 0) cfg.grpc_listen = from_file.grpc_listen;
    if (app.count("--health") == 0) cfg.health_listen = from_file.health_listen;
    if (app.count("--log-level") == 0) cfg.log_level = from_file.log_level;
    cfg.nats_urls = from_file.nats_urls;
    cfg.durability = from_file.durability;
    cfg.max_concurrent_catchups = from_file.max_concurrent_catchups;
    cfg.away_after_s = from_file.away_after_s;
    cfg.session_timeout_s = from_file.session_timeout_s;
    cfg.log_retention_hours = from_file.log_retention_hours;
  }
  if (!nats.empty()) cfg.nats_urls = nats;
  if (!durability.empty()) {
    auto d = canopy::parse_durability(durability);
    if (!d.ok()) {
      std::fprintf(stderr, "canopy-hub: --%s\n", d.status().message().c_str());
      return 2;
    }
    cfg.durability = *d;
  }
  if (auto s = canopy::hub::validate_hub_config(cfg); !s.ok()) {
    std::fprintf(stderr, "canopy-hub: %s\n", s.message().c_str());
    return 2;
  }
  return canopy::hub::run(cfg);
}

// canopy-spoke: the daemon at a site.
//
// Keeps the site's scope in its own store, so that it works on while cut off
// (across its own restarts too); renders the desired state and applies it
// with the manifests-dir applier (the directory k3s deploys from); writes a
// status document per object, which flows up; syncs with its hub over NATS.
// Its local API (HTTP on loopback) serves site operators while the uplink is
// down: /healthz, /v1/status, and PUT/DELETE /v1/overrides/<tenant>/<template>
// for local overrides.
//
//   canopy-spoke --config spoke.yaml
//   canopy-spoke --site shop-1 --label region=eu --data DIR --manifests DIR --nats URL
//   canopy-spoke --version
//
// At start it applies what its store holds before it even connects. SIGTERM
// or SIGINT stops it cleanly. Exit codes: 0 clean, 2 bad configuration, 1 a
// failure at start.
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

#include "spoke/config.h"
#include "spoke/manifests_dir_applier.h"
#include "spoke/reconciler.h"
#include "store/store.h"
#include "sync/engine/node.h"
#include "sync/nats_transport.h"
#include "sync/subjects.h"

#ifndef CANOPY_VERSION
#define CANOPY_VERSION "0.0.0"
#endif

namespace canopy::spoke {
namespace {

using json = nlohmann::json;

int run(const SpokeConfig& cfg) {
  const auto started = std::chrono::steady_clock::now();
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

  ManifestsDirOptions mo;
  mo.dir = cfg.manifests_dir;
  auto applier_or = ManifestsDirApplier::open(mo);
  if (!applier_or.ok()) {
    spdlog::critical("manifests directory: {}", applier_or.status().to_string());
    return 1;
  }
  std::unique_ptr<ManifestsDirApplier> applier = std::move(applier_or).value();
  Reconciler reconciler(store.get(), cfg.site, applier.get());

  // Autonomy first: apply what the local store holds, before any network.
  if (Status s = reconciler.reconcile_once(); !s.ok()) {
    spdlog::error("first reconcile: {}", s.to_string());
  }
  spdlog::info("site {}: {} objects applied from the local store {} ms after start", cfg.site,
               reconciler.last_stats().rendered,
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count());

  // Reconcile again whenever the store changes (debounced) and every
  // resync_seconds (repairs drift in the manifests directory).
  std::mutex mu;
  std::condition_variable cv;
  bool dirty = false;
  std::atomic<bool> stopping{false};
  const uint64_t listener = store->subscribe([&](const v1::LogEntry&) {
    {
      std::lock_guard lock(mu);
      dirty = true;
    }
    cv.notify_one();
  });
  std::thread reconcile_thread([&] {
    std::unique_lock lock(mu);
    auto last_housekeeping = std::chrono::steady_clock::now();
    while (!stopping) {
      // Housekeeping, every ten minutes: the log and tombstones older than
      // the retention window go, as at the hub.
      if (std::chrono::steady_clock::now() - last_housekeeping >= std::chrono::minutes(10)) {
        last_housekeeping = std::chrono::steady_clock::now();
        lock.unlock();
        store->expire_older_than(cfg.log_retention_hours * 3600 * 1000);
        lock.lock();
      }
      cv.wait_for(lock, std::chrono::seconds(cfg.resync_seconds),
                  [&] { return dirty || stopping.load(); });
      if (stopping) break;
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let a burst settle
      lock.lock();
      dirty = false;
      lock.unlock();
      if (Status s = reconciler.reconcile_once(); !s.ok()) {
        spdlog::error("reconcile: {}", s.to_string());
      } else if (reconciler.last_stats().changed > 0 || reconciler.last_stats().pruned > 0) {
        spdlog::info("site {}: applied {} changes, pruned {}", cfg.site,
                     reconciler.last_stats().changed, reconciler.last_stats().pruned);
      }
      lock.lock();
    }
  });

  sync::NatsOptions no;
  no.urls = cfg.nats_urls;
  no.name = "canopy-spoke-" + cfg.site;
  auto nats_or = sync::NatsTransport::connect(no);
  if (!nats_or.ok()) {
    spdlog::critical("cannot set up NATS: {}", nats_or.status().to_string());
    stopping = true;
    cv.notify_all();
    reconcile_thread.join();
    return 1;
  }
  std::unique_ptr<sync::NatsTransport> nats = std::move(nats_or).value();
  std::mt19937_64 rng(std::random_device{}());
  sync::Env env{SystemClock::instance(), [&rng] { return rng(); }};
  sync::ChildOptions co;
  co.labels = cfg.labels;
  co.software_version = CANOPY_VERSION;
  sync::SyncNode node(store.get(), nats.get());
  node.set_child_engine(
      std::make_unique<sync::ChildSync>(cfg.site, cfg.parent, store.get(), env, co));
  if (Status s = node.attach(); !s.ok()) {
    spdlog::critical("cannot subscribe: {}", s.to_string());
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    cv.notify_all();
    reconcile_thread.join();
    return 1;
  }
  sync::SyncRuntime runtime(&node);
  runtime.start();

  httplib::Server api;
  api.Get("/healthz", [&](const httplib::Request&, httplib::Response& res) {
    bool in_sync = false, active = false;
    runtime.call([&] {
      in_sync = node.child()->in_sync();
      active = node.child()->active();
    });
    json j = {{"site", cfg.site},
              {"role", "spoke"},
              {"version", CANOPY_VERSION},
              {"replica_id", store->replica_id()},
              {"nats_connected", nats->connected()},
              {"session_open", active && nats->connected()},
              {"in_sync", in_sync},
              {"objects", reconciler.last_stats().rendered},
              {"failed", reconciler.last_stats().failed}};
    res.set_content(j.dump() + "\n", "application/json");
  });
  api.Get("/v1/status", [&](const httplib::Request&, httplib::Response& res) {
    json arr = json::array();
    auto page = store->scan("sites/" + cfg.site + "/status/", "", 100'000);
    if (page.ok()) {
      for (const auto& item : page->items) {
        arr.push_back({{"key", item.key}, {"status", json::parse(item.json)}});
      }
    }
    res.set_content(arr.dump() + "\n", "application/json");
  });
  // Local overrides: a site operator patches a template for this site, also
  // while the uplink is down; the override flows up when it returns.
  auto override_key = [&](const httplib::Request& req, std::string* key, std::string* err) {
    const std::string tenant = req.matches[1], tmpl = req.matches[2];
    for (const auto* n : {&tenant, &tmpl}) {
      if (Status s = sync::validate_node_name(*n); !s.ok()) {
        *err = s.message();
        return false;
      }
    }
    *key = "sites/" + cfg.site + "/overrides/" + tenant + "/" + tmpl;
    return true;
  };
  api.Put(
      R"(/v1/overrides/([^/]+)/([^/]+))", [&](const httplib::Request& req, httplib::Response& res) {
        std::string key, err;
        if (!override_key(req, &key, &err)) {
          res.status = 400;
          res.set_content(json{{"error", err}}.dump() + "\n", "application/json");
          return;
        }
        json patch = json::parse(req.body, nullptr, false);
        if (patch.is_discarded() || !patch.is_object()) {
          res.status = 400;
          res.set_content(
              json{{"error", "body must be a JSON object (a JSON merge patch)"}}.dump() + "\n",
              "application/json");
          return;
        }
        auto r = store->put_value(key, json{{"patch", patch}});
        if (!r.ok()) {
          res.status = r.status().code() == StatusCode::kInvalidArgument ? 400 : 500;
          res.set_content(json{{"error", r.status().message()}}.dump() + "\n", "application/json");
          return;
        }
        res.set_content(json{{"key", key}}.dump() + "\n", "application/json");
      });
  api.Delete(
      R"(/v1/overrides/([^/]+)/([^/]+))", [&](const httplib::Request& req, httplib::Response& res) {
        std::string key, err;
        if (!override_key(req, &key, &err)) {
          res.status = 400;
          res.set_content(json{{"error", err}}.dump() + "\n", "application/json");
          return;
        }
        auto r = store->remove(key);
        if (!r.ok()) {
          res.status = r.status().code() == StatusCode::kNotFound ? 404 : 500;
          res.set_content(json{{"error", r.status().message()}}.dump() + "\n", "application/json");
          return;
        }
        res.set_content(json{{"key", key}}.dump() + "\n", "application/json");
      });
  std::thread api_thread;
  if (!cfg.health_listen.empty()) {
    const size_t colon = cfg.health_listen.rfind(':');
    const std::string host = cfg.health_listen.substr(0, colon);
    const int port = std::atoi(cfg.health_listen.c_str() + colon + 1);
    if (!api.bind_to_port(host.c_str(), port)) {
      spdlog::critical("cannot listen on {}", cfg.health_listen);
      runtime.stop();
      stopping = true;
      cv.notify_all();
      reconcile_thread.join();
      return 1;
    }
    api_thread = std::thread([&] { api.listen_after_bind(); });
    spdlog::info("local API on http://{}/healthz", cfg.health_listen);
  }

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: shutting down", sig);
  // stop() is a no-op until the server runs: wait for it, briefly.
  for (int i = 0; i < 1000 && api_thread.joinable() && !api.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  api.stop();
  if (api_thread.joinable()) api_thread.join();
  runtime.stop();
  store->unsubscribe(listener);
  {
    std::lock_guard lock(mu);
    stopping = true;
  }
  cv.notify_all();
  reconcile_thread.join();
  spdlog::info("site {} stopped", cfg.site);
  return 0;
}

}  // namespace
}  // namespace canopy::spoke

int main(int argc, char** argv) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  canopy::spoke::SpokeConfig cfg;
  CLI::App app{"canopy-spoke: Canopy site daemon"};
  std::string config_path, durability;
  std::vector<std::string> nats, labels;
  bool version = false;
  app.add_flag("--version", version, "print the version and exit");
  app.add_option("-c,--config", config_path, "YAML config file");
  app.add_option("--site", cfg.site, "site name (DNS-1123 label)");
  app.add_option("--label", labels, "site label key=value (repeatable)");
  app.add_option("--parent", cfg.parent, "name of the hub to sync with");
  app.add_option("--data", cfg.data_dir, "data directory (RocksDB)");
  app.add_option("--manifests", cfg.manifests_dir, "manifests directory (k3s deploys from it)");
  app.add_option("--nats", nats, "NATS URL(s)");
  app.add_option("--health", cfg.health_listen, "local API listen address host:port");
  app.add_option("--durability", durability, "sync | group");
  app.add_option("--log-level", cfg.log_level, "trace|debug|info|warn|error");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (version) {
    std::printf("canopy-spoke %s\n", CANOPY_VERSION);
    return 0;
  }
  if (!config_path.empty()) {
    canopy::spoke::SpokeConfig f;
    if (auto s = canopy::spoke::load_spoke_config(config_path, &f); !s.ok()) {
      std::fprintf(stderr, "canopy-spoke: %s\n", s.message().c_str());
      return 2;
    }
    if (app.count("--site") == 0) cfg.site = f.site;
    if (app.count("--parent") == 0) cfg.parent = f.parent;
    if (app.count("--data") == 0) cfg.data_dir = f.data_dir;
    if (app.count("--manifests") == 0) cfg.manifests_dir = f.manifests_dir;
    if (app.count("--health") == 0) cfg.health_listen = f.health_listen;
    if (app.count("--log-level") == 0) cfg.log_level = f.log_level;
    cfg.labels = f.labels;
    cfg.nats_urls = f.nats_urls;
    cfg.durability = f.durability;
    cfg.resync_seconds = f.resync_seconds;
    cfg.log_retention_hours = f.log_retention_hours;
  }
  for (const auto& l : labels) {
    if (auto s = canopy::spoke::parse_label(l, &cfg.labels); !s.ok()) {
      std::fprintf(stderr, "canopy-spoke: %s\n", s.message().c_str());
      return 2;
    }
  }
  if (!nats.empty()) cfg.nats_urls = nats;
  if (!durability.empty()) {
    auto d = canopy::parse_durability(durability);
    if (!d.ok()) {
      std::fprintf(stderr, "canopy-spoke: --%s\n", d.status().message().c_str());
      return 2;
    }
    cfg.durability = *d;
  }
  if (auto s = canopy::spoke::validate_spoke_config(cfg); !s.ok()) {
    std::fprintf(stderr, "canopy-spoke: %s\n", s.message().c_str());
    return 2;
  }
  return canopy::spoke::run(cfg);
}

// api.write and api.watch: the hub's user API on loopback, the real parts of
// canopy-hub (Store with group commit on a temporary RocksDB directory,
// placement index, status aggregate, Authenticator, CatalogService behind a
// real gRPC server and the real REST routes on cpp-httplib).
//
//   --case write  authenticated template writes per second over gRPC and over
//                 REST with 1, 8 and 64 concurrent clients, p50/p99 latency;
//                 in the same run the store's own ingest of the same
//                 documents (put_value from as many threads), and the API's
//                 throughput as a ratio of it. Every acknowledged write is
//                 durable (group commit).
//                 --clients 1,8,64 and --only store|grpc|rest select
//                 a part of it (for profiling).
//   --case watch  N gRPC watchers of one tenant (--watchers, 1,000 by
//                 default; the registry runs 200), writes at 1,000/s;
//                 delay from the write's acknowledgement (it is committed
//                 then) to each delivery, p50/p99/max.
//
// One JSON line per figure on stdout; progress on stderr.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "api/auth.h"
#include "api/catalog_service.h"
#include "api/grpc_server.h"
#include "api/http_server.h"
#include "api/rest.h"
#include "bench/report.h"
#include "hub/placement_index.h"
#include "hub/status_aggregate.h"
#include "store/clock.h"
#include "store/store.h"

namespace canopy::bench {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// `metric` is "<bench>:<metric>" (the bench under api.).
void emit(const std::string& metric, double value, const std::string& target = "") {
  emit_figure("api." + metric.substr(0, metric.find(':')), metric.substr(metric.find(':') + 1),
              value, target);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

std::string temp_dir() {
  char tmpl[] = "/tmp/canopy-api-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  return tmpl;
}

// A ConfigMap template of about 600 bytes; `round` changes its content.
json manifest(int client, int i, int round) {
  json data = json::object();
  for (int k = 0; k < 8; ++k) {
    data["key-" + std::to_string(k)] = "value " + std::to_string(round) + " of client " +
                                       std::to_string(client) + " item " + std::to_string(i) +
                                       " padding-padding-padding";
  }
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata",
           {{"name", "c" + std::to_string(client) + "-" + std::to_string(i)},
            {"namespace", "bench"},
            {"labels", {{"app", "bench"}, {"client", std::to_string(client)}}}}},
          {"data", data}};
}

// The hub's API parts over one store.
struct Hub {
  std::string dir = temp_dir();
  std::unique_ptr<Store> store;
  std::unique_ptr<hub::PlacementIndex> index;
  std::unique_ptr<hub::StatusAggregate> status;
  std::unique_ptr<api::Authenticator> auth;
  std::unique_ptr<api::CatalogService> catalog;
  std::unique_ptr<grpc::Server> grpc_server;
  api::HttpServer http;
  int grpc_port = 0;
  std::string bearer;

  Hub() {
    StoreOptions o;
    o.path = dir + "/hub";
    o.durability = Durability::kGroupCommit;
    store = std::move(Store::open(o)).value();
    index = std::move(hub::PlacementIndex::attach(store.get())).value();
    status = std::move(hub::StatusAggregate::attach(store.get(), index.get())).value();
    auth = std::make_unique<api::Authenticator>(store.get(), SystemClock::instance());
    bearer = auth->issue({model::Role::kEditor, "bench", 0, "bench"})->bearer;
    catalog =
        std::make_unique<api::CatalogService>(store.get(), index.get(), status.get(), auth.get());
    grpc_server = api::start_grpc_server("127.0.0.1:0", {catalog.get()}, &grpc_port);
    api::RestOptions rest;
    rest.max_watches = 8;
    api::add_rest_routes(
        http.server(), [this] { return catalog.get(); }, rest);
    http.server().new_task_queue = [] { return new httplib::ThreadPool(80); };
    if (!http.start("127.0.0.1:0").ok()) std::exit(1);
  }
  ~Hub() {
    http.stop();
    catalog->shutdown();
    grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc_server.reset();
    catalog.reset();
    auth.reset();
    status.reset();
    index.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
};

struct Run {
  double per_second = 0;
  std::vector<double> latency_ms;
};

// Runs `clients` threads for `seconds`, each calling `write(client, i)` in a
// loop (false: a failure, which aborts the benchmark).
template <typename Write>
Run drive(int clients, double seconds, Write write) {
  std::vector<std::vector<double>> lat(clients);
  std::atomic<uint64_t> done{0};
  std::atomic<bool> failed{false};
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (int i = 0; Clock::now() < end && !failed; ++i) {
        const auto t0 = Clock::now();
        if (!write(c, i)) {
          failed = true;
          return;
        }
        lat[c].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        done.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& t : threads) t.join();
  if (failed) {
    std::fprintf(stderr, "api_bench: a write failed\n");
    std::exit(1);
  }
  Run r;
  r.per_second = static_cast<double>(done.load()) /
                 std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& l : lat) r.latency_ms.insert(r.latency_ms.end(), l.begin(), l.end());
  return r;
}

// `clients`: the client counts to run; `only`: "" for every transport, else
// one of store, grpc, rest (the store's reference is then run only when asked:
// the ratios need it).
int case_write(double seconds, const std::vector<int>& client_counts, const std::string& only) {
  int round = 0;
  for (int clients : client_counts) {
    ++round;
    // Reference: the store's own ingest of the same documents.
    double store_rate = 0;
    if (only.empty() || only == "store") {
      Hub hub;
      Run r = drive(clients, seconds, [&](int c, int i) {
        return hub.store
            ->put_value("t/bench/templates/c" + std::to_string(c) + "-" + std::to_string(i % 500),
                        manifest(c, i % 500, round * 1000 + i))
            .ok();
      });
      store_rate = r.per_second;
      emit("write:store_writes_per_s_c" + std::to_string(clients), r.per_second);
    }
    if (only.empty() || only == "grpc") {
      Hub hub;
      std::vector<std::unique_ptr<v1::Catalog::Stub>> stubs;
      // One channel per 8 clients, as separate client processes would have.
      std::vector<std::shared_ptr<grpc::Channel>> channels;
      for (int c = 0; c < clients; ++c) {
        if (c % 8 == 0) {
          grpc::ChannelArguments args;
          args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
          channels.push_back(grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(hub.grpc_port),
                                                       grpc::InsecureChannelCredentials(), args));
        }
        stubs.push_back(v1::Catalog::NewStub(channels.back()));
      }
      Run r = drive(clients, seconds, [&](int c, int i) {
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", "Bearer " + hub.bearer);
        v1::PutRequest req;
        v1::Object* o = req.mutable_object();
        o->set_kind("template");
        o->set_tenant("bench");
        o->set_name("c" + std::to_string(c) + "-" + std::to_string(i % 500));
        o->set_json(manifest(c, i % 500, round * 1000 + i).dump());
        v1::PutResponse resp;
        return stubs[c]->Put(&ctx, req, &resp).ok();
      });
      const std::string n = std::to_string(clients);
      emit("write:grpc_writes_per_s_c" + n, r.per_second, clients == 64 ? ">=10000" : "");
      emit("write:grpc_p50_ms_c" + n, percentile(r.latency_ms, 0.5));
      emit("write:grpc_p99_ms_c" + n, percentile(r.latency_ms, 0.99));
      if (store_rate > 0) emit("write:grpc_ratio_vs_store_c" + n, r.per_second / store_rate);
    }
    if (only.empty() || only == "rest") {
      Hub hub;
      const int port = hub.http.port();
      std::vector<std::unique_ptr<httplib::Client>> cli;
      for (int c = 0; c < clients; ++c) {
        cli.push_back(std::make_unique<httplib::Client>("127.0.0.1", port));
        cli.back()->set_keep_alive(true);
        cli.back()->set_tcp_nodelay(true);
        cli.back()->set_read_timeout(30, 0);
        cli.back()->set_default_headers({{"Authorization", "Bearer " + hub.bearer}});
      }
      std::atomic<uint64_t> rest_errors{0};
      Run r = drive(clients, seconds, [&](int c, int i) {
        auto res = cli[c]->Put(
            "/v1/tenants/bench/templates/c" + std::to_string(c) + "-" + std::to_string(i % 500),
            manifest(c, i % 500, round * 1000 + i).dump(), "application/json");
        if (res && res->status == 200) return true;
        if (res) {
          std::fprintf(stderr, "api_bench: REST PUT: %d %s\n", res->status, res->body.c_str());
          return false;
        }
        // A connection the server dropped: counted, and the client reconnects.
        rest_errors.fetch_add(1);
        std::fprintf(stderr, "api_bench: REST PUT: %s\n", httplib::to_string(res.error()).c_str());
        return true;
      });
      const std::string n = std::to_string(clients);
      emit("write:rest_writes_per_s_c" + n, r.per_second, clients == 64 ? ">=5000" : "");
      emit("write:rest_p50_ms_c" + n, percentile(r.latency_ms, 0.5));
      emit("write:rest_p99_ms_c" + n, percentile(r.latency_ms, 0.99));
      if (store_rate > 0) emit("write:rest_ratio_vs_store_c" + n, r.per_second / store_rate);
      emit("write:rest_dropped_connections_c" + n, static_cast<double>(rest_errors.load()), "0");
    }
  }
  return 0;
}

int case_watch(int watchers, double rate, double seconds) {
  Hub hub;
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(hub.grpc_port),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Catalog::NewStub(channel);
  // Write acknowledgement times by object name and round.
  std::mutex mu;
  std::map<std::string, Clock::time_point> acked;  // json "data.seq" -> time
  std::vector<double> delays;
  std::atomic<int> established{0};
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::thread> readers;
  for (int w = 0; w < watchers; ++w) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->AddMetadata("authorization", "Bearer " + hub.bearer);
  }
  // The server holds one thread per open stream; so does this client.
  for (int w = 0; w < watchers; ++w) {
    readers.emplace_back([&, w] {
      v1::WatchRequest req;
      req.set_kind("template");
      req.set_tenant("bench");
      auto reader = stub->Watch(contexts[w].get(), req);
      reader->WaitForInitialMetadata();
      established.fetch_add(1);
      v1::WatchEvent ev;
      std::vector<std::pair<std::string, Clock::time_point>> got;
      while (reader->Read(&ev)) {
        const auto now = Clock::now();
        const json doc = json::parse(ev.object().json(), nullptr, false);
        if (doc.is_object()) got.emplace_back(doc["data"]["seq"].get<std::string>(), now);
      }
      reader->Finish();
      std::lock_guard lock(mu);
      for (const auto& [seq, at] : got) {
        auto it = acked.find(seq);
        if (it != acked.end()) {
          delays.push_back(std::chrono::duration<double, std::milli>(at - it->second).count());
        }
      }
    });
  }
  while (established.load() < watchers) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::fprintf(stderr, "api_bench: %d watchers established\n", watchers);
  const int writes = static_cast<int>(rate * seconds);
  const auto start = Clock::now();
  int failures = 0;
  for (int i = 0; i < writes; ++i) {
    std::this_thread::sleep_until(start + std::chrono::duration<double>(i / rate));
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + hub.bearer);
    v1::PutRequest req;
    v1::Object* o = req.mutable_object();
    o->set_kind("template");
    o->set_tenant("bench");
    o->set_name("w" + std::to_string(i % 100));
    json doc = manifest(0, i % 100, i);
    doc["metadata"]["name"] = o->name();
    doc["data"]["seq"] = std::to_string(i);
    o->set_json(doc.dump());
    v1::PutResponse resp;
    // The delay is counted from just before the write is sent, so it
    // includes the write's own commit (an upper bound on commit-to-delivery).
    const auto before = Clock::now();
    {
      std::lock_guard lock(mu);
      acked[std::to_string(i)] = before;
    }
    if (!stub->Put(&ctx, req, &resp).ok()) ++failures;
  }
  const double achieved = writes / std::chrono::duration<double>(Clock::now() - start).count();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  for (auto& c : contexts) c->TryCancel();
  for (auto& t : readers) t.join();
  const double expected = static_cast<double>(writes) * watchers;
  emit("watch:watchers", watchers);
  emit("watch:write_rate_per_s", achieved, ">=" + std::to_string(static_cast<int>(rate)));
  emit("watch:delivered_fraction", static_cast<double>(delays.size()) / expected);
  emit("watch:p50_delay_ms", percentile(delays, 0.5));
  emit("watch:p99_delay_ms", percentile(delays, 0.99), "<50");
  emit("watch:max_delay_ms", percentile(delays, 1.0));
  if (failures > 0) std::fprintf(stderr, "api_bench: %d writes failed\n", failures);
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) {
  // stdout carries the figures only.
  spdlog::set_default_logger(spdlog::stderr_color_mt("api_bench"));
  spdlog::set_level(spdlog::level::warn);
  std::string which = "write";
  double seconds = 3;
  int watchers = 1000;
  std::vector<int> clients = {1, 8, 64};
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--case") == 0) which = argv[i + 1];
    if (std::strcmp(argv[i], "--clients") == 0) {
      clients.clear();
      for (const char* p = argv[i + 1]; *p != '\0';) {
        char* end = nullptr;
        const long n = std::strtol(p, &end, 10);
        if (end == p || n <= 0) {
          std::fprintf(stderr, "api_bench: --clients takes counts like 1,8,64\n");
          return 2;
        }
        clients.push_back(static_cast<int>(n));
        p = *end == ',' ? end + 1 : end;
      }
    }
    if (std::strcmp(argv[i], "--only") == 0) {
      only = argv[i + 1];
      if (only != "store" && only != "grpc" && only != "rest") {
        std::fprintf(stderr, "api_bench: --only store|grpc|rest\n");
        return 2;
      }
    }
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[i + 1]);
    if (std::strcmp(argv[i], "--watchers") == 0) watchers = std::atoi(argv[i + 1]);
  }
  if (which == "write") return canopy::bench::case_write(seconds, clients, only);
  if (which == "watch") return canopy::bench::case_watch(watchers, 1000, seconds);
  std::fprintf(stderr, "api_bench: --case write|watch\n");
  return 2;
}

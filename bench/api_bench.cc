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
//                 durable (group commit). The gRPC clients are calls kept in
//                 flight on gRPC's callback client API (drive_grpc), not
//                 threads in blocking stubs.
//                 --clients 1,8,64 and --only store|grpc|rest select
//                 a part of it (for profiling).
//   --case watch  N gRPC watchers of one tenant (--watchers, 1,000 by
//                 default), writes at 1,000/s (8 writer threads, each write
//                 a new object, so none can be coalesced with another);
//                 delay from just before each write is sent (so it includes
//                 the commit) to each delivery of it, p50/p99/max, the same
//                 from the write's acknowledgement, and the fraction of
//                 (watcher, write) pairs delivered (each counted once). The
//                 drain waits until every event arrived or none did for
//                 10 s. The watchers are read by gRPC's callback API, so the
//                 client needs no thread per stream; the process's CPU per
//                 delivered event (hub and client) is reported too.
//                 --metadata-only 1: the watchers ask for events without the
//                 documents (WatchRequest.metadata_only); every figure's
//                 name then ends in _metadata_only.
//
// One JSON line per figure on stdout; progress on stderr.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <httplib.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
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

// User and system CPU time of this process so far.
double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return secs(u.ru_utime) + secs(u.ru_stime);
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
  std::unique_ptr<api::GrpcServer> grpc_server;
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

// The end of a run: aborts the benchmark if a write failed, else the rate of
// `done` writes since `start` and every client's latencies.
Run finish_run(bool failed, uint64_t done, Clock::time_point start,
               const std::vector<std::vector<double>>& lat) {
  if (failed) {
    std::fprintf(stderr, "api_bench: a write failed\n");
    std::exit(1);
  }
  Run r;
  r.per_second =
      static_cast<double>(done) / std::chrono::duration<double>(Clock::now() - start).count();
  for (const auto& l : lat) r.latency_ms.insert(r.latency_ms.end(), l.begin(), l.end());
  return r;
}

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
  return finish_run(failed, done.load(), start, lat);
}

// Keeps `clients` gRPC Puts in flight for `seconds` on gRPC's callback API:
// each client issues its next call from the completion of the one before, as
// a client with its own process would, but without a thread per client
// waiting in a blocking call (the client's CPU is on the hub's two cores
// here; a blocking stub spends a completion queue and a thread wake-up on
// every call). `fill(client, i, request)` builds call i of a client.
template <typename Fill>
Run drive_grpc(int clients, double seconds, Fill fill,
               const std::vector<std::unique_ptr<v1::Catalog::Stub>>& stubs,
               const std::string& authorization) {
  struct Client {
    int c = 0;
    int i = 0;
    std::unique_ptr<grpc::ClientContext> ctx;
    v1::PutRequest req;
    v1::PutResponse resp;
    Clock::time_point t0;
    std::vector<double> lat;
  };
  std::vector<Client> all(clients);
  std::atomic<uint64_t> done{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::condition_variable cv;
  int running = clients;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::function<void(Client*)> issue = [&](Client* cl) {
    if (Clock::now() >= end || failed) {
      std::lock_guard lock(mu);
      --running;
      cv.notify_all();
      return;
    }
    cl->ctx = std::make_unique<grpc::ClientContext>();
    cl->ctx->AddMetadata("authorization", authorization);
    cl->req.Clear();
    fill(cl->c, cl->i, &cl->req);
    cl->t0 = Clock::now();
    stubs[cl->c]->async()->Put(cl->ctx.get(), &cl->req, &cl->resp, [&, cl](grpc::Status st) {
      if (!st.ok()) {
        std::fprintf(stderr, "api_bench: Put: %s\n", st.error_message().c_str());
        failed = true;
      } else {
        cl->lat.push_back(std::chrono::duration<double, std::milli>(Clock::now() - cl->t0).count());
        done.fetch_add(1, std::memory_order_relaxed);
        ++cl->i;
      }
      issue(cl);
    });
  };
  for (int c = 0; c < clients; ++c) {
    all[c].c = c;
    issue(&all[c]);
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return running == 0; });
  }
  std::vector<std::vector<double>> lat;
  for (auto& cl : all) lat.push_back(std::move(cl.lat));
  return finish_run(failed, done.load(), start, lat);
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
      Run r = drive_grpc(
          clients, seconds,
          [&](int c, int i, v1::PutRequest* req) {
            v1::Object* o = req->mutable_object();
            o->set_kind("template");
            o->set_tenant("bench");
            o->set_name("c" + std::to_string(c) + "-" + std::to_string(i % 500));
            o->set_json(manifest(c, i % 500, round * 1000 + i).dump());
          },
          stubs, "Bearer " + hub.bearer);
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

// The object versions of the events in one WatchResponse, read off its
// wire bytes without building the messages (the client must not be what
// limits the benchmark). False when the bytes are not a WatchResponse.
bool event_versions(grpc::ByteBuffer* message, std::vector<uint64_t>* out) {
  using google::protobuf::internal::WireFormatLite;
  // Read in place, slice by slice (no copy of the message).
  grpc::ProtoBufferReader bytes(message);
  google::protobuf::io::CodedInputStream in(&bytes);
  // Descends into field `number` (length-delimited) of each message at this
  // level, calling `inside` there; skips every other field.
  auto each = [&in](int number, auto&& inside) {
    while (uint32_t tag = in.ReadTag()) {
      if (WireFormatLite::GetTagFieldNumber(tag) == number &&
          WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        uint32_t length = 0;
        if (!in.ReadVarint32(&length)) return false;
        const auto limit = in.PushLimit(static_cast<int>(length));
        if (!inside()) return false;
        in.PopLimit(limit);
      } else if (!WireFormatLite::SkipField(&in, tag)) {
        return false;
      }
    }
    return true;
  };
  return each(1, [&] {       // WatchResponse.events
    return each(2, [&] {     // WatchEvent.object
      uint64_t version = 0;  // Object.version (5)
      while (uint32_t tag = in.ReadTag()) {
        if (WireFormatLite::GetTagFieldNumber(tag) == 5 &&
            WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_VARINT) {
          if (!in.ReadVarint64(&version)) return false;
        } else if (!WireFormatLite::SkipField(&in, tag)) {
          return false;
        }
      }
      out->push_back(version);
      return true;
    });
  });
}

// One watch stream read by gRPC's callback API (no thread of its own), its
// messages taken as bytes: each event is recorded as (object version,
// arrival time) and matched to the writes after the run. The version
// identifies the write: each write's acknowledgement carries its version.
class WatchReader final : public grpc::ClientReadReactor<grpc::ByteBuffer> {
 public:
  WatchReader(const std::shared_ptr<grpc::Channel>& channel, const std::string& bearer,
              std::atomic<int>* established, std::atomic<uint64_t>* events, bool metadata_only)
      : established_(established),
        events_(events),
        method_("/canopy.v1.Catalog/Watch", grpc::internal::RpcMethod::SERVER_STREAMING, channel) {
    context_.AddMetadata("authorization", "Bearer " + bearer);
    v1::WatchRequest req;
    req.set_kind("template");
    req.set_tenant("bench");
    req.set_metadata_only(metadata_only);
    grpc::internal::ClientCallbackReaderFactory<grpc::ByteBuffer>::Create(channel.get(), method_,
                                                                          &context_, &req, this);
    StartCall();
    StartRead(&message_);
  }
  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) established_->fetch_add(1);
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    const auto now = Clock::now();
    messages_ += 1;
    bytes_ += message_.Length();
    versions_.clear();
    if (!event_versions(&message_, &versions_)) bad_messages_ += 1;
    for (uint64_t v : versions_) got_.emplace_back(v, now);
    events_->fetch_add(versions_.size(), std::memory_order_relaxed);
    StartRead(&message_);
  }
  void OnDone(const grpc::Status& status) override {
    std::lock_guard lock(mu_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }
  void cancel() { context_.TryCancel(); }
  grpc::Status wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    return status_;
  }
  // Valid once wait() returned.
  const std::vector<std::pair<uint64_t, Clock::time_point>>& got() const { return got_; }
  uint64_t messages() const { return messages_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t bad_messages() const { return bad_messages_; }

 private:
  std::atomic<int>* established_;
  std::atomic<uint64_t>* events_;
  grpc::internal::RpcMethod method_;
  grpc::ClientContext context_;
  grpc::ByteBuffer message_;
  std::vector<uint64_t> versions_;
  std::vector<std::pair<uint64_t, Clock::time_point>> got_;
  uint64_t messages_ = 0;
  uint64_t bytes_ = 0;
  uint64_t bad_messages_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  grpc::Status status_;
};

int case_watch(int watchers, double rate, double seconds, bool metadata_only) {
  const std::string sfx = metadata_only ? "_metadata_only" : "";
  Hub hub;
  // A few connections, as many clients would have (streams share each
  // connection's HTTP/2 flow control otherwise).
  constexpr int kChannels = 4;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::Catalog::Stub>> stubs;
  for (int c = 0; c < kChannels; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("canopy.bench.channel", c);  // a connection of its own
    channels.push_back(grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(hub.grpc_port),
                                                 grpc::InsecureChannelCredentials(), args));
    stubs.push_back(v1::Catalog::NewStub(channels.back()));
  }
  std::atomic<int> established{0};
  std::atomic<uint64_t> received{0};
  std::vector<std::unique_ptr<WatchReader>> readers;
  for (int w = 0; w < watchers; ++w) {
    readers.push_back(std::make_unique<WatchReader>(channels[w % kChannels], hub.bearer,
                                                    &established, &received, metadata_only));
  }
  const auto wait_start = Clock::now();
  while (established.load() < watchers) {
    if (Clock::now() - wait_start > std::chrono::seconds(60)) {
      std::fprintf(stderr, "api_bench: only %d of %d watchers established\n", established.load(),
                   watchers);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fprintf(stderr, "api_bench: %d watchers established\n", watchers);
  const int writes = static_cast<int>(rate * seconds);
  // Writes i = 0, 1, ... each at start + i / rate, spread over a few writer
  // threads (one sequential writer would wait for every write's own fsync;
  // concurrent ones share them, as the hub's clients do).
  constexpr int kWriters = 8;
  // Each write: its version (from the acknowledgement) and when it was sent.
  std::vector<std::pair<uint64_t, Clock::time_point>> sent(writes);
  std::vector<double> write_ms(writes, -1);
  std::vector<Clock::time_point> acked_at(writes);
  const double cpu_before = process_cpu_seconds();
  std::atomic<int> failures{0};
  const auto start = Clock::now();
  std::vector<std::thread> writer_threads;
  for (int t = 0; t < kWriters; ++t) {
    writer_threads.emplace_back([&, t] {
      auto& writer = stubs[t % kChannels];
      for (int i = t; i < writes; i += kWriters) {
        std::this_thread::sleep_until(start + std::chrono::duration<double>(i / rate));
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", "Bearer " + hub.bearer);
        v1::PutRequest req;
        v1::Object* o = req.mutable_object();
        o->set_kind("template");
        o->set_tenant("bench");
        // A name of its own: no two writes of one object that the fan-out
        // could coalesce into one event, so every write is an event that
        // every watcher must get.
        std::string name = "w";  // (not "w" + ...: GCC 12 warns falsely, -Wrestrict)
        name += std::to_string(i);
        o->set_name(std::move(name));
        json doc = manifest(0, i, i);
        doc["metadata"]["name"] = o->name();
        doc["data"]["seq"] = std::to_string(i);
        o->set_json(doc.dump());
        v1::PutResponse resp;
        // The delay is counted from just before the write is sent, so it
        // includes the write's own commit (an upper bound on
        // commit-to-delivery).
        const auto before = Clock::now();
        if (!writer->Put(&ctx, req, &resp).ok()) {
          failures.fetch_add(1);
          continue;
        }
        const auto acked = Clock::now();
        write_ms[i] = std::chrono::duration<double, std::milli>(acked - before).count();
        sent[i] = {resp.object().version(), before};
        acked_at[i] = acked;
      }
    });
  }
  for (auto& t : writer_threads) t.join();
  const double achieved = writes / std::chrono::duration<double>(Clock::now() - start).count();
  // Until every watcher has had an event per write, or nothing more arrived
  // for 10 s: an event late by more than the run is counted as not
  // delivered (the watches are then cancelled), not waited for forever.
  uint64_t expected_events = 0;
  for (const auto& s : sent) expected_events += s.first != 0 ? watchers : 0;
  uint64_t seen = received.load();
  auto progress = Clock::now();
  while (seen < expected_events && Clock::now() - progress < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (received.load() != seen) {
      seen = received.load();
      progress = Clock::now();
    }
  }
  const double cpu_seconds = process_cpu_seconds() - cpu_before;
  for (auto& r : readers) r->cancel();
  std::erase_if(write_ms, [](double ms) { return ms < 0; });
  // Each acknowledged write: when it was sent and when its acknowledgement
  // came back. The commit (and its notification to the fan-out) happened
  // between the two.
  std::map<uint64_t, std::pair<Clock::time_point, Clock::time_point>> when;
  for (int i = 0; i < writes; ++i) {
    if (sent[i].first != 0)
      when.emplace(sent[i].first, std::make_pair(sent[i].second, acked_at[i]));
  }
  std::vector<double> delays, after_ack;
  delays.reserve(when.size() * readers.size());
  after_ack.reserve(when.size() * readers.size());
  uint64_t events = 0, messages = 0, bytes = 0, bad = 0, unmatched = 0, ended_early = 0,
           duplicates = 0;
  for (auto& r : readers) {
    const grpc::Status st = r->wait();
    if (st.error_code() != grpc::StatusCode::CANCELLED) {
      ++ended_early;
      std::fprintf(stderr, "api_bench: a watch ended: %d %s\n", st.error_code(),
                   st.error_message().c_str());
    }
    messages += r->messages();
    bytes += r->bytes();
    bad += r->bad_messages();
    std::set<uint64_t> got;
    for (const auto& [version, at] : r->got()) {
      ++events;
      auto it = when.find(version);
      if (it == when.end()) {
        ++unmatched;
        continue;
      }
      if (!got.insert(version).second) {
        ++duplicates;
        continue;
      }
      delays.push_back(std::chrono::duration<double, std::milli>(at - it->second.first).count());
      after_ack.push_back(
          std::chrono::duration<double, std::milli>(at - it->second.second).count());
    }
  }
  const double expected = static_cast<double>(when.size()) * watchers;
  emit("watch:watchers" + sfx, watchers);
  emit("watch:write_rate_per_s" + sfx, achieved, ">=" + std::to_string(static_cast<int>(rate)));
  emit("watch:write_p99_ms" + sfx, percentile(write_ms, 0.99));
  emit("watch:delivered_fraction" + sfx, static_cast<double>(delays.size()) / expected, "1");
  emit("watch:events_per_message" + sfx,
       messages == 0 ? 0 : static_cast<double>(events) / static_cast<double>(messages));
  emit("watch:bytes_per_event" + sfx,
       events == 0 ? 0 : static_cast<double>(bytes) / static_cast<double>(events));
  // A million delays: sorted once, not once a percentile.
  std::sort(delays.begin(), delays.end());
  auto at = [&delays](double p) {
    return delays.empty()
               ? 0.0
               : delays[std::min(delays.size() - 1,
                                 static_cast<size_t>(p * static_cast<double>(delays.size())))];
  };
  emit("watch:p50_delay_ms" + sfx, at(0.5));
  emit("watch:p99_delay_ms" + sfx, at(0.99), "<50");
  emit("watch:max_delay_ms" + sfx, at(1.0));
  // The same deliveries timed from the acknowledgement of their write (a
  // lower bound of commit to delivery; negative when the event arrived
  // first), so that a slow write does not pass for a slow watch.
  std::sort(after_ack.begin(), after_ack.end());
  delays.swap(after_ack);
  emit("watch:p50_delay_after_ack_ms" + sfx, at(0.5));
  emit("watch:p99_delay_after_ack_ms" + sfx, at(0.99));
  // The whole process's CPU (hub and client) per event delivered, while
  // writing and draining: what 1,000 watchers x 1,000 writes/s would need.
  emit("watch:cpu_us_per_event" + sfx,
       events == 0 ? 0 : cpu_seconds * 1e6 / static_cast<double>(events));
  emit("watch:watches_ended" + sfx, static_cast<double>(ended_early), "0");
  if (duplicates > 0) std::fprintf(stderr, "api_bench: %lu events delivered twice\n", duplicates);
  if (bad > 0) std::fprintf(stderr, "api_bench: %lu messages were not WatchResponses\n", bad);
  if (unmatched > 0) std::fprintf(stderr, "api_bench: %lu events of no write\n", unmatched);
  if (ended_early > 0) std::fprintf(stderr, "api_bench: %lu watches ended early\n", ended_early);
  if (failures > 0) std::fprintf(stderr, "api_bench: %d writes failed\n", failures.load());
  return failures == 0 && ended_early == 0 && bad == 0 ? 0 : 1;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) {
  // stdout carries the figures only.
  spdlog::set_default_logger(spdlog::stderr_color_mt("api_bench"));
  spdlog::set_level(spdlog::level::warn);
  canopy::api::keep_freed_memory();  // as canopy-hub does
  std::string which = "write";
  double seconds = 3;
  int watchers = 1000;
  bool metadata_only = false;
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
    if (std::strcmp(argv[i], "--metadata-only") == 0) metadata_only = std::atoi(argv[i + 1]) != 0;
  }
  if (which == "write") return canopy::bench::case_write(seconds, clients, only);
  if (which == "watch") return canopy::bench::case_watch(watchers, 1000, seconds, metadata_only);
  std::fprintf(stderr, "api_bench: --case write|watch\n");
  return 2;
}

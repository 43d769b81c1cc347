// device.twin: a device twin's two round trips through the real canopy-hub,
// canopy-spoke and the site's nats-server, with N devices each subscribed at
// QoS 1 to its own desired topic (issue 14, benchmark 3).
//
// Set-up, for each device count: a nats-server for the hub, canopy-hub,
// canopy-spoke (site shop-1) running its bus (Debian's nats-server with
// MQTT, configured and supervised by the spoke), tenant acme with a grant,
// and N devices dev-<i> written at the hub's gRPC API (one Put each; bcrypt
// cost 4, so that connecting is cheap), each with desired {"n":0}. Once the
// bus admits them, every device connects (persistent session: clean session
// 0, as a QoS 1 device does) as dev-<i>@acme and subscribes at QoS 1 to
// t/acme/d/dev-<i>/desired; the run waits until each has its retained
// {"n":0}. One thread then reads every connection through epoll,
// acknowledges each QoS 1 PUBLISH and pings each device every 30 s, as a
// device would.
//
// Desired (--samples, one at a time, spread over the devices, 0-50 ms
// apart): a Put of the device's document with desired {"n":k} at the hub's
// gRPC API. The clock starts just before the Put and stops when the event
// loop reads the PUBLISH carrying k from that device's connection. The path:
// the hub's store, the sync session down to the spoke's store, the spoke's
// DeviceDocumentsWatch (which reads the one changed document and, since only
// its `desired` changed, leaves the bus config alone), its retained QoS 1
// publish to the bus, the device's JetStream consumer. Both readings are this
// process's steady clock: the error is the event loop's wake-up, microseconds.
//
// Report (--reports, at random times, --report-rate a second on average,
// each from a different device): a device publishes {"n":k} at QoS 1 on
// t/acme/d/dev-<i>/reported; the clock stops when the hub's REST API shows
// reported.n = k in the device's twin. A poller reads the twins of the
// outstanding reports in turn (as this bench did before the hub could watch
// devices; kept so the figures compare), a round every kPollPause: late by
// at most the time since its previous read began (report_poll_gap_max_ms,
// printed with the figures). The pause keeps the poller from taking a core
// of the hub's machine (a read takes ~0.1 ms: without it, thousands a
// second) away from the path it measures. The spoke coalesces reports at the
// leading edge (spoke/bus/report_coalescer.h: a device's report after a quiet
// interval, 1 s, is written at once, later ones within the interval at its
// end); each device here reports once, so every sample is a leading edge.
// Reports are sent at random times all the same.
//
// Figures per device count N: desired_p50_ms_N, desired_p99_ms_N (target
// < 100 ms for 1,000, < 250 ms for 10,000), report_p50_ms_N, report_p99_ms_N
// (the same targets), samples lost (no answer in 10 s), connections lost,
// and the time to connect and subscribe every device.
//
// With --qos 0 the devices subscribe at QoS 0 instead (no JetStream
// consumer each; docs/device-bus.md proposes it for twins), and the figures'
// names say qos0.
//
//   canopy_device_twin_bench [--devices 1000[,10000...]] [--qos 1]
//                            [--samples 200] [--reports 200]
//                            [--report-rate 10] [--seed 1]
//
// Every process is a child of this one (Process kills it on exit and, by
// PR_SET_PDEATHSIG, if this one dies; the spoke's nats-server dies with the
// spoke the same way); the temporary directories go with a normal exit or
// a failure, not with a signal. Removing one after 10,000 QoS 1 sessions
// (10,000 consumer stores) may take minutes on a disk mounted with discard.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/mqtt_client.h"
#include "bench/report.h"
#include "canopy/v1/hub.grpc.pb.h"
#include "daemon/password_hash.h"
#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

#ifndef CANOPY_HUB_BINARY
#error "CANOPY_HUB_BINARY must name the canopy-hub binary"
#endif
#ifndef CANOPY_SPOKE_BINARY
#error "CANOPY_SPOKE_BINARY must name the canopy-spoke binary"
#endif

namespace canopy::bench {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
using namespace std::chrono_literals;
namespace mqtt = spoke::bus::mqtt;

constexpr char kBench[] = "device.twin";
constexpr char kTenant[] = "acme";
constexpr char kSite[] = "shop-1";
constexpr char kPassword[] = "device-secret";
// How long one sample may take before it counts as lost.
constexpr auto kSampleTimeout = 10s;
// Threads that connect and subscribe the devices (the server does the work).
constexpr int kConnectThreads = 4;
// Each device pings this often (its CONNECT's keep-alive is 60 s: the server
// drops a silent connection after 90 s), the pings spread evenly.
constexpr auto kPingEvery = 30s;
// Between two rounds of twin reads (report samples).
constexpr auto kPollPause = 2ms;

struct Args {
  std::vector<int> devices = {1000};
  int samples = 200;
  int reports = 200;
  double report_rate = 10;
  uint32_t seed = 1;
  int qos = 1;  // of the desired subscriptions
};

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

std::string device_id(int i) { return "dev-" + std::to_string(i); }
std::string topic(int i, const char* leaf) {
  return std::string("t/") + kTenant + "/d/" + device_id(i) + "/" + leaf;
}

// The value n of a twin payload {"n":k}, or -1.
int64_t value_of(std::string_view payload) {
  const json j = json::parse(payload, nullptr, false);
  if (!j.is_object() || !j.contains("n") || !j["n"].is_number_integer()) return -1;
  return j["n"].get<int64_t>();
}

// One device count's run: the processes, the devices' connections, the
// samples. Everything it started ends with it.
class TwinRun {
 public:
  TwinRun(int devices, const Args& args) : n_(devices), args_(args) {}
  ~TwinRun() { stop_loop(); }

  // Sets everything up; false (with *error) if something did not come up.
  bool start(std::string* error);
  // The desired latencies in ms; lost samples counted in *lost.
  std::vector<double> desired_samples(int* lost);
  // The report latencies in ms; *gap_max: the longest time between two
  // reads of one outstanding twin (each sample's error bound).
  std::vector<double> report_samples(int* lost, double* gap_max);

  double connect_s() const { return connect_s_; }
  int connections_lost() const { return connections_lost_.load(); }

 private:
  bool start_hub(std::string* error);
  bool start_spoke(std::string* error);
  bool put_devices(std::string* error);
  bool connect_devices(std::string* error);
  grpc::Status put(const std::string& kind, const std::string& tenant, const std::string& site,
                   const std::string& name, const json& doc);
  json device_doc(int64_t n) const {
    return {
        {"credential", {{"passwordHash", hash_}}}, {"scope", "device"}, {"desired", {{"n", n}}}};
  }
  std::optional<json> twin(httplib::Client* cli, int i);
  // The event loop: reads every connection, acknowledges QoS 1 PUBLISHes,
  // records each device's latest desired value.
  void loop();
  void stop_loop();
  // Waits until device i has received desired value k; its arrival time.
  std::optional<Clock::time_point> await_desired(int i, int64_t k, Clock::duration timeout);
  // A report from device i, sent under its connection's lock.
  bool send_report(int i, int64_t k);

  const int n_;
  const Args args_;
  testing::TempDir dir_{"canopy-bench-twin-"};
  std::unique_ptr<testing::NatsServer> nats_;
  testing::Process hub_;
  testing::Process spoke_;
  int grpc_port_ = 0;
  int hub_http_port_ = 0;
  int spoke_http_port_ = 0;
  int mqtt_port_ = 0;
  std::string token_;
  std::string hash_;
  std::unique_ptr<v1::Catalog::Stub> stub_;
  double connect_s_ = 0;

  // The devices' connections; send_mu_[i] serializes writes to clients_[i]
  // (the loop's PUBACKs, the reports); reads are the loop's alone.
  std::vector<std::unique_ptr<MqttClient>> clients_;
  std::unique_ptr<std::mutex[]> send_mu_;
  int epoll_fd_ = -1;
  std::thread loop_thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_lost_{0};
  // Each device's latest desired value and when it arrived; guarded by mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int64_t> desired_;
  std::vector<Clock::time_point> desired_at_;
};

bool TwinRun::start(std::string* error) {
  auto hash = daemon::bcrypt_hash(kPassword, daemon::kMinBcryptCost);
  if (!hash.ok()) {
    *error = "bcrypt: " + hash.status().to_string();
    return false;
  }
  hash_ = *hash;
  desired_.assign(static_cast<size_t>(n_), -1);
  desired_at_.assign(static_cast<size_t>(n_), Clock::time_point());
  send_mu_ = std::make_unique<std::mutex[]>(static_cast<size_t>(n_));
  nats_ = std::make_unique<testing::NatsServer>(testing::NatsServerOptions{});
  if (!nats_->start(error)) return false;
  return start_hub(error) && start_spoke(error) && put_devices(error) && connect_devices(error);
}

// Runs `step` for devices 0..n-1 on kConnectThreads threads, until the
// first failure (a non-empty reason, left in *error).
bool for_each_device(int n, std::string* error, const std::function<std::string(int)>& step) {
  std::atomic<int> next{0};
  std::atomic<bool> ok{true};
  std::mutex error_mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < kConnectThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < n && ok.load(); i = next++) {
        if (std::string why = step(i); !why.empty()) {
          std::lock_guard lock(error_mu);
          if (ok.exchange(false)) *error = std::move(why);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  return ok.load();
}

// Whether a daemon's /healthz on `port` shows every one of `fields` true
// within `timeout`.
bool healthz_shows(int port, std::initializer_list<const char*> fields,
                   std::chrono::milliseconds timeout) {
  httplib::Client cli("127.0.0.1", port);
  return testing::wait_until(
      [&] {
        auto res = cli.Get("/healthz");
        if (!res || res->status != 200) return false;
        const json j = json::parse(res->body, nullptr, false);
        if (!j.is_object()) return false;
        for (const char* f : fields) {
          if (!j.value(f, false)) return false;
        }
        return true;
      },
      timeout, 50ms);
}

bool TwinRun::start_hub(std::string* error) {
  grpc_port_ = testing::pick_free_port();
  hub_http_port_ = testing::pick_free_port();
  testing::ProcessOptions po;
  po.log_path = dir_.file("hub.log");
  const std::string data = dir_.file("hub");
  if (!hub_.start({CANOPY_HUB_BINARY, "--name", "hub", "--data", data, "--nats", nats_->url(),
                   "--grpc", "127.0.0.1:" + std::to_string(grpc_port_), "--health",
                   "127.0.0.1:" + std::to_string(hub_http_port_)},
                  po, error)) {
    return false;
  }
  if (!healthz_shows(hub_http_port_, {"nats_connected"}, 30s)) {
    *error = "canopy-hub did not come up (log " + po.log_path + ")";
    return false;
  }
  std::ifstream(data + "/admin.token") >> token_;
  stub_ = v1::Catalog::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port_),
                                                   grpc::InsecureChannelCredentials()));
  for (const auto& [kind, tenant, name, doc] :
       {std::tuple<std::string, std::string, std::string, json>{"tenant", "", kTenant,
                                                                json::object()},
        {"grant", kTenant, "all", {{"allSites", true}}}}) {
    if (grpc::Status st = put(kind, tenant, "", name, doc); !st.ok()) {
      *error = kind + " " + name + ": " + st.error_message();
      return false;
    }
  }
  return true;
}

bool TwinRun::start_spoke(std::string* error) {
  spoke_http_port_ = testing::pick_free_port();
  mqtt_port_ = testing::pick_free_port();
  const std::string config = dir_.file("spoke.yaml");
  std::ofstream(config) << "bus:\n"
                        << "  enabled: true\n"
                        << "  mqtt_port: " << mqtt_port_ << "\n"
                        << "  client_port: " << testing::pick_free_port() << "\n"
                        << "  monitor_port: " << testing::pick_free_port() << "\n";
  testing::ProcessOptions po;
  po.log_path = dir_.file("spoke.log");
  if (!spoke_.start(
          {CANOPY_SPOKE_BINARY, "--site", kSite, "--parent", "hub", "--data", dir_.file("spoke"),
           "--manifests", dir_.file("manifests"), "--nats", nats_->url(), "--health",
           "127.0.0.1:" + std::to_string(spoke_http_port_), "--config", config},
          po, error)) {
    return false;
  }
  if (!healthz_shows(spoke_http_port_, {"session_open", "in_sync"}, 60s)) {
    *error = "canopy-spoke did not come up in sync (log " + po.log_path + ")";
    return false;
  }
  return true;
}

grpc::Status TwinRun::put(const std::string& kind, const std::string& tenant,
                          const std::string& site, const std::string& name, const json& doc) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  ctx.AddMetadata("authorization", "Bearer " + token_);
  v1::PutRequest req;
  v1::Object* o = req.mutable_object();
  o->set_kind(kind);
  o->set_tenant(tenant);
  o->set_site(site);
  o->set_name(name);
  o->set_json(doc.dump());
  v1::PutResponse resp;
  return stub_->Put(&ctx, req, &resp);
}

bool TwinRun::put_devices(std::string* error) {
  const auto t0 = Clock::now();
  const bool written = for_each_device(n_, error, [&](int i) -> std::string {
    grpc::Status st = put("device", kTenant, kSite, device_id(i), device_doc(0));
    return st.ok() ? "" : "device " + device_id(i) + ": " + st.error_message();
  });
  if (!written) return false;
  spdlog::warn("{} devices written at the hub in {:.1f} s", n_, ms(Clock::now() - t0) / 1000);
  // The bus admits the last device once its document has reached the spoke
  // and the spoke has reloaded its nats-server with it.
  const auto t1 = Clock::now();
  const bool admitted = testing::wait_until(
      [&] {
        MqttClient probe;
        return probe.connect(mqtt_port_, "probe", device_id(n_ - 1) + "@" + kTenant, kPassword);
      },
      300s, 200ms);
  if (!admitted) {
    *error = "the bus did not admit " + device_id(n_ - 1) + " in 300 s";
    return false;
  }
  spdlog::warn("the bus admitted them {:.1f} s later", ms(Clock::now() - t1) / 1000);
  return true;
}

bool TwinRun::connect_devices(std::string* error) {
  clients_.resize(static_cast<size_t>(n_));
  const auto t0 = Clock::now();
  const bool connected = for_each_device(n_, error, [&](int i) -> std::string {
    auto c = std::make_unique<MqttClient>();
    if (!c->connect(mqtt_port_, device_id(i), device_id(i) + "@" + kTenant, kPassword,
                    /*clean_session=*/false)) {
      return device_id(i) + ": cannot connect";
    }
    if (int granted = c->subscribe(topic(i, "desired"), args_.qos); granted != args_.qos) {
      return device_id(i) + ": SUBSCRIBE granted " + std::to_string(granted) + ", not QoS " +
             std::to_string(args_.qos);
    }
    clients_[static_cast<size_t>(i)] = std::move(c);
    return "";
  });
  if (!connected) return false;
  connect_s_ = ms(Clock::now() - t0) / 1000;
  spdlog::warn("{} devices connected and subscribed at QoS {} in {:.1f} s", n_, args_.qos,
               connect_s_);

  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < n_; ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, clients_[static_cast<size_t>(i)]->fd(), &ev) != 0) {
      *error = "epoll_ctl failed";
      return false;
    }
  }
  loop_thread_ = std::thread([this] { loop(); });
  // Every subscription works: each device has its retained {"n":0}.
  std::unique_lock lock(mu_);
  const bool all = cv_.wait_for(lock, 120s, [&] {
    return std::all_of(desired_.begin(), desired_.end(), [](int64_t v) { return v == 0; });
  });
  if (!all) {
    *error = std::to_string(std::count(desired_.begin(), desired_.end(), -1)) +
             " devices did not receive their retained desired in 120 s";
    return false;
  }
  return true;
}

void TwinRun::loop() {
  // What the connections read before the loop (with a SUBACK) goes first.
  std::vector<int> ready(static_cast<size_t>(n_));
  for (int i = 0; i < n_; ++i) ready[static_cast<size_t>(i)] = i;
  std::vector<epoll_event> events(256);
  const auto start = Clock::now();
  int64_t pinged = 0;  // pings sent since start, device pinged % n_
  while (!stopping_.load()) {
    const auto due = static_cast<int64_t>(std::chrono::duration<double>(Clock::now() - start) /
                                          std::chrono::duration<double>(kPingEvery) * n_);
    for (; pinged < due; ++pinged) {
      const auto i = static_cast<size_t>(pinged % n_);
      std::lock_guard lock(send_mu_[i]);
      clients_[i]->pingreq();
    }
    for (const int i : ready) {
      MqttClient& c = *clients_[static_cast<size_t>(i)];
      const bool alive = c.read_available([&](const mqtt::Frame& f) {
        if (f.type() != mqtt::kPublish) return;  // PUBACKs of reports, PINGRESPs
        const auto at = Clock::now();
        mqtt::PublishView p;
        if (!mqtt::parse_publish(f, &p)) return;
        if (p.qos == 1) {
          std::lock_guard lock(send_mu_[static_cast<size_t>(i)]);
          c.puback(p.id);
        }
        const int64_t v = value_of(p.payload);
        std::lock_guard lock(mu_);
        desired_[static_cast<size_t>(i)] = v;
        desired_at_[static_cast<size_t>(i)] = at;
        cv_.notify_all();
      });
      if (!alive) {
        ++connections_lost_;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd(), nullptr);
        spdlog::error("{}: connection lost", device_id(i));
      }
    }
    const int got = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 100);
    ready.clear();
    for (int e = 0; e < got; ++e) {
      ready.push_back(static_cast<int>(events[static_cast<size_t>(e)].data.u32));
    }
  }
}

void TwinRun::stop_loop() {
  stopping_.store(true);
  if (loop_thread_.joinable()) loop_thread_.join();
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  epoll_fd_ = -1;
}

std::optional<Clock::time_point> TwinRun::await_desired(int i, int64_t k, Clock::duration timeout) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return desired_[static_cast<size_t>(i)] == k; })) {
    return std::nullopt;
  }
  return desired_at_[static_cast<size_t>(i)];
}

std::vector<double> TwinRun::desired_samples(int* lost) {
  std::mt19937 rng(args_.seed);
  std::uniform_int_distribution<int> gap_ms(0, 50);
  std::vector<double> out;
  std::vector<double> put_ms;  // for the diagnostics on stderr
  *lost = 0;
  for (int s = 0; s < args_.samples; ++s) {
    // A stride coprime with the counts spreads the samples over the devices.
    const int i = static_cast<int>((static_cast<int64_t>(s) * 7919 + 13) % n_);
    const int64_t k = s + 1;
    const json doc = device_doc(k);
    const auto t0 = Clock::now();
    if (grpc::Status st = put("device", kTenant, kSite, device_id(i), doc); !st.ok()) {
      spdlog::error("desired {} of {}: Put failed: {}", k, device_id(i), st.error_message());
      ++*lost;
      continue;
    }
    put_ms.push_back(ms(Clock::now() - t0));
    const auto at = await_desired(i, k, kSampleTimeout);
    if (!at) {
      spdlog::error("desired {} of {}: not received in {} s", k, device_id(i),
                    std::chrono::duration_cast<std::chrono::seconds>(kSampleTimeout).count());
      ++*lost;
      continue;
    }
    out.push_back(ms(*at - t0));
    std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms(rng)));
  }
  std::fprintf(stderr, "%d devices, desired: the hub's Put p50 %.1f ms p99 %.1f ms\n", n_,
               percentile(put_ms, 0.5), percentile(put_ms, 0.99));
  return out;
}

bool TwinRun::send_report(int i, int64_t k) {
  std::lock_guard lock(send_mu_[static_cast<size_t>(i)]);
  MqttClient& c = *clients_[static_cast<size_t>(i)];
  c.publish(topic(i, "reported"), json{{"n", k}}.dump(), 1);
  return c.flush();
}

std::optional<json> TwinRun::twin(httplib::Client* cli, int i) {
  auto res = cli->Get(std::string("/v1/tenants/") + kTenant + "/sites/" + kSite + "/devices/" +
                          device_id(i) + "/twin",
                      {{"Authorization", "Bearer " + token_}});
  if (!res || res->status != 200) return std::nullopt;
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

std::vector<double> TwinRun::report_samples(int* lost, double* gap_max) {
  struct Outstanding {
    int64_t k = 0;
    Clock::time_point sent;
    Clock::time_point last_read;  // when the latest read that missed it began
    int64_t sent_wall_ms = 0;     // the system clock, to compare with the twin's atMs
  };
  std::mutex mu;
  // For the diagnostics on stderr: each twin read's duration, and each
  // sample split at the spoke's reception (the twin's atMs, same machine).
  std::vector<double> read_ms, to_spoke_ms, from_spoke_ms, gap_ms;
  std::map<int, Outstanding> outstanding;  // by device
  std::vector<double> out;
  std::atomic<bool> sending{true};
  *lost = 0;
  *gap_max = 0;
  // The poller: reads each outstanding twin in turn, a round every kPollPause.
  std::thread poller([&] {
    httplib::Client cli("127.0.0.1", hub_http_port_);
    cli.set_keep_alive(true);
    cli.set_read_timeout(5, 0);
    while (true) {
      std::vector<std::pair<int, Outstanding>> todo;
      {
        std::lock_guard lock(mu);
        if (outstanding.empty() && !sending.load()) return;
        todo.assign(outstanding.begin(), outstanding.end());
      }
      std::this_thread::sleep_for(kPollPause);
      for (const auto& [i, o] : todo) {
        const auto began = Clock::now();
        const auto t = twin(&cli, i);
        const bool seen = t && (*t)["reported"].contains("n") &&
                          (*t)["reported"]["n"].value("value", int64_t{-1}) == o.k;
        std::lock_guard lock(mu);
        read_ms.push_back(ms(Clock::now() - began));
        auto it = outstanding.find(i);
        if (seen) {
          const int64_t at_ms = (*t)["reported"]["n"].value("atMs", int64_t{0});
          to_spoke_ms.push_back(static_cast<double>(at_ms - o.sent_wall_ms));
          from_spoke_ms.push_back(static_cast<double>(wall_ms() - at_ms));
          // The store had it when this read ran, not when the previous one
          // began: the sample is late by at most the gap between the two.
          out.push_back(ms(Clock::now() - o.sent));
          gap_ms.push_back(ms(Clock::now() - it->second.last_read));
          *gap_max = std::max(*gap_max, gap_ms.back());
          outstanding.erase(it);
        } else if (Clock::now() - o.sent > kSampleTimeout) {
          spdlog::error("report {} of {}: not at the hub in 10 s", o.k, device_id(i));
          ++*lost;
          outstanding.erase(it);
        } else {
          it->second.last_read = began;
        }
      }
    }
  });
  std::mt19937 rng(args_.seed + 1);
  std::exponential_distribution<double> gap_s(args_.report_rate);
  for (int s = 0; s < args_.reports; ++s) {
    std::this_thread::sleep_for(std::chrono::duration<double>(gap_s(rng)));
    int i = static_cast<int>((static_cast<int64_t>(s) * 104729 + 7) % n_);
    const int64_t k = 1'000'000 + s;
    std::lock_guard lock(mu);
    while (outstanding.contains(i)) i = (i + 1) % n_;  // one report a device at a time
    const auto now = Clock::now();
    outstanding[i] = {k, now, now, wall_ms()};
    if (!send_report(i, k)) {
      spdlog::error("report {} of {}: send failed", k, device_id(i));
      ++*lost;
      outstanding.erase(i);
    }
  }
  sending.store(false);
  poller.join();
  std::fprintf(stderr,
               "%d devices, reports: twin read p50 %.1f ms max %.1f ms; device to spoke p50 %.0f "
               "ms p99 %.0f ms; spoke to hub store (coalescing included) p50 %.0f ms p99 %.0f "
               "ms\n",
               n_, percentile(read_ms, 0.5), percentile(read_ms, 1), percentile(to_spoke_ms, 0.5),
               percentile(to_spoke_ms, 0.99), percentile(from_spoke_ms, 0.5),
               percentile(from_spoke_ms, 0.99));
  std::fprintf(stderr, "%d devices, reports: error bound (poll gap) p50 %.1f ms p99 %.1f ms\n", n_,
               percentile(gap_ms, 0.5), percentile(gap_ms, 0.99));
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const std::string v = argv[i + 1];
    if (k == "--devices") {
      a.devices.clear();
      size_t pos = 0;
      while (pos <= v.size()) {
        const size_t comma = std::min(v.find(',', pos), v.size());
        a.devices.push_back(std::atoi(v.substr(pos, comma - pos).c_str()));
        pos = comma + 1;
      }
    } else if (k == "--samples") {
      a.samples = std::atoi(v.c_str());
    } else if (k == "--reports") {
      a.reports = std::atoi(v.c_str());
    } else if (k == "--report-rate") {
      a.report_rate = std::atof(v.c_str());
    } else if (k == "--qos") {
      a.qos = std::atoi(v.c_str());
    } else if (k == "--seed") {
      a.seed = static_cast<uint32_t>(std::atoi(v.c_str()));
    } else {
      fail_bench(kBench, "unknown argument " + k);
    }
  }
  const bool counts_ok =
      std::all_of(a.devices.begin(), a.devices.end(), [](int n) { return n >= 1; });
  if (!counts_ok || a.devices.empty() || a.samples < 1 || a.reports < 1 || a.report_rate <= 0 ||
      (a.qos != 0 && a.qos != 1)) {
    fail_bench(kBench, "bad arguments");
  }
  return a;
}

// Each device and its connection at the site take two descriptors here and
// at the servers; the children inherit the raised limit.
void raise_fd_limit(int devices) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  const rlim_t want = static_cast<rlim_t>(devices) * 2 + 1024;
  if (r.rlim_cur < want) {
    r.rlim_cur = std::min(std::max(want, r.rlim_cur), r.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
}

// The target for a device count: the issue's, for the counts it names.
std::string target_for(int devices) {
  if (devices <= 1000) return "< 100";
  if (devices <= 10000) return "< 250";
  return "";
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) {
  using namespace canopy::bench;
  spdlog::set_default_logger(spdlog::stderr_color_mt("bench"));
  spdlog::set_level(spdlog::level::warn);
  const Args a = parse(argc, argv);
  raise_fd_limit(*std::max_element(a.devices.begin(), a.devices.end()));
  for (int n : a.devices) {
    std::string error;
    {
      TwinRun run(n, a);
      if (run.start(&error)) {
        int desired_lost = 0;
        int report_lost = 0;
        double gap_max = 0;
        const std::vector<double> desired = run.desired_samples(&desired_lost);
        const std::vector<double> reports = run.report_samples(&report_lost, &gap_max);
        const std::string sfx = (a.qos == 1 ? "_" : "_qos0_") + std::to_string(n);
        const std::string target = target_for(n);
        std::fprintf(stderr,
                     "%d devices: desired p50 %.1f ms p99 %.1f ms max %.1f ms (%zu, %d lost); "
                     "report p50 %.1f ms p99 %.1f ms max %.1f ms (%zu, %d lost), poll gap max "
                     "%.1f ms\n",
                     n, percentile(desired, 0.5), percentile(desired, 0.99), percentile(desired, 1),
                     desired.size(), desired_lost, percentile(reports, 0.5),
                     percentile(reports, 0.99), percentile(reports, 1), reports.size(), report_lost,
                     gap_max);
        emit_figure(kBench, "connect_subscribe_s" + sfx, run.connect_s());
        emit_figure(kBench, "desired_p50_ms" + sfx, percentile(desired, 0.5));
        emit_figure(kBench, "desired_p99_ms" + sfx, percentile(desired, 0.99), target);
        emit_figure(kBench, "desired_lost" + sfx, desired_lost, "0");
        emit_figure(kBench, "report_p50_ms" + sfx, percentile(reports, 0.5));
        emit_figure(kBench, "report_p99_ms" + sfx, percentile(reports, 0.99), target);
        emit_figure(kBench, "report_lost" + sfx, report_lost, "0");
        emit_figure(kBench, "report_poll_gap_max_ms" + sfx, gap_max);
        emit_figure(kBench, "connections_lost" + sfx, run.connections_lost(), "0");
      }
    }  // every process of the run ends here
    if (!error.empty()) fail_bench(kBench, std::to_string(n) + " devices: " + error);
  }
  return 0;
}

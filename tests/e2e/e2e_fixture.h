// The end-to-end fixture: a real nats-server, the real canopy-hub and
// canopy-spoke binaries (CANOPY_HUB_BIN, CANOPY_SPOKE_BIN) on free loopback
// ports, each with its own data and manifests directories; helpers to drive
// the hub through its gRPC Catalog API and to observe spokes through their
// manifests directories and local API. Shared by the e2e test files.
#pragma once

#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <nats/nats.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "canopy/v1/hub.grpc.pb.h"
#include "canopy/v1/sync.pb.h"
#include "gtest/gtest.h"
#include "sync/protocol.h"
#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

#ifndef CANOPY_HUB_BIN
#error "CANOPY_HUB_BIN must name the canopy-hub binary"
#endif
#ifndef CANOPY_SPOKE_BIN
#error "CANOPY_SPOKE_BIN must name the canopy-spoke binary"
#endif

namespace canopy::e2e {

namespace fs = std::filesystem;
using canopy::testing::NatsServer;
using canopy::testing::NatsServerOptions;
using canopy::testing::Process;
using canopy::testing::ProcessOptions;
using canopy::testing::TempDir;
using canopy::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr auto kTimeout = std::chrono::milliseconds(20'000);
constexpr auto kPoll = std::chrono::milliseconds(50);
constexpr int64_t kNatsMaxPayload = 8 << 20;
constexpr const char* kHubName = "hub";
constexpr const char* kTenant = "acme";

// --- Small helpers.

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string tail(const std::string& text, size_t max_bytes) {
  return text.size() <= max_bytes ? text : "..." + text.substr(text.size() - max_bytes);
}

inline size_t count_lines_with(const std::string& text, const std::vector<std::string>& needles) {
  size_t n = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    bool all = true;
    for (const auto& needle : needles) all = all && line.find(needle) != std::string::npos;
    if (all) ++n;
  }
  return n;
}

// Scrapes `port`'s /metrics and returns the value of the sample written
// exactly as `series` (name and labels: `canopy_hub_redirects_total`,
// `..._total{result="ok"}`); nullopt when the page or the sample is missing.
inline std::optional<double> scrape_metric(int port, const std::string& series) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(1, 0);
  cli.set_read_timeout(3, 0);
  auto res = cli.Get("/metrics");
  if (!res || res->status != 200) return std::nullopt;
  std::istringstream in(res->body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(series + " ")) return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

// GET http://127.0.0.1:port/path as JSON; nullopt unless it answers 200 with JSON.
inline std::optional<json> http_get_json(int port, const std::string& path) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(1, 0);
  cli.set_read_timeout(3, 0);
  auto res = cli.Get(path);
  if (!res || res->status != 200) return std::nullopt;
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// Catalog gRPC calls as a client holding `token`, with a 5 s deadline; the
// kind "site" has no tenant, every other kind is tenant kTenant's.
inline grpc::Status catalog_put(v1::Catalog::Stub* stub, const std::string& token,
                                const std::string& kind, const std::string& name, const json& doc) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ctx.AddMetadata("authorization", "Bearer " + token);
  v1::PutRequest req;
  req.mutable_object()->set_kind(kind);
  req.mutable_object()->set_tenant(kind == "site" ? "" : kTenant);
  req.mutable_object()->set_name(name);
  req.mutable_object()->set_json(doc.dump());
  v1::PutResponse resp;
  return stub->Put(&ctx, req, &resp);
}
// The status of kTenant's `placement` (first 1,000 sites), or nullopt.
inline std::optional<v1::GetStatusResponse> catalog_status(v1::Catalog::Stub* stub,
                                                           const std::string& token,
                                                           const std::string& placement) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ctx.AddMetadata("authorization", "Bearer " + token);
  v1::GetStatusRequest req;
  req.set_tenant(kTenant);
  req.set_placement(placement);
  req.set_page_size(1000);
  v1::GetStatusResponse resp;
  if (!stub->GetStatus(&ctx, req, &resp).ok()) return std::nullopt;
  return resp;
}

inline json deployment(const std::string& name, int replicas, const std::string& image) {
  return {{"apiVersion", "apps/v1"},
          {"kind", "Deployment"},
          {"metadata", {{"name", name}, {"namespace", "shop"}}},
          {"spec",
           {{"replicas", replicas},
            {"selector", {{"matchLabels", {{"app", name}}}}},
            {"template",
             {{"metadata", {{"labels", {{"app", name}}}}},
              {"spec", {{"containers", json::array({{{"name", name}, {"image", image}}})}}}}}}}};
}

inline json placement_by_region(const std::vector<std::string>& templates,
                                const std::string& region) {
  return {{"templates", templates}, {"selector", {{"matchLabels", {{"region", region}}}}}};
}

inline std::string template_key(const std::string& name) {
  return std::string("t/") + kTenant + "/templates/" + name;
}

// A manifest file a spoke wrote, keyed by its canopy.io/template annotation.
struct Manifest {
  std::string file;
  json object;
  std::string hash() const {
    return object["metadata"]["annotations"].value("canopy.io/hash", std::string());
  }
};

// Reads every manifest k3s would deploy from `dir` (files ending in .json,
// .yaml or .yml that are not dot files), skipping canopy's tombstones (empty
// v1/List). Keyed by the canopy.io/template annotation; a file that is not
// valid JSON or lacks the annotation is keyed "?<file name>".
inline std::map<std::string, Manifest> read_manifests(const std::string& dir) {
  std::map<std::string, Manifest> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(".")) continue;
    if (!name.ends_with(".json") && !name.ends_with(".yaml") && !name.ends_with(".yml")) continue;
    json obj = json::parse(read_file(entry.path().string()), nullptr, false);
    if (obj.is_object() && obj.value("kind", "") == "List" && obj.contains("items") &&
        obj["items"].empty()) {
      continue;  // a tombstone: no objects
    }
    std::string key = "?" + name;
    if (obj.is_object() && obj.contains("metadata") && obj["metadata"].is_object() &&
        obj["metadata"].contains("annotations") && obj["metadata"]["annotations"].is_object()) {
      key = obj["metadata"]["annotations"].value("canopy.io/template", key);
    }
    out[key] = Manifest{name, obj};
  }
  return out;
}

// --- Raw NATS.c, for hostile publishers.

struct NatsConnDeleter {
  void operator()(natsConnection* c) const { natsConnection_Destroy(c); }
};
struct NatsSubDeleter {
  void operator()(natsSubscription* s) const { natsSubscription_Destroy(s); }
};
struct NatsMsgDeleter {
  void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
};
using NatsConn = std::unique_ptr<natsConnection, NatsConnDeleter>;
using NatsSub = std::unique_ptr<natsSubscription, NatsSubDeleter>;
using NatsMsg = std::unique_ptr<natsMsg, NatsMsgDeleter>;

inline NatsConn nats_connect(const std::string& url) {
  natsConnection* c = nullptr;
  if (natsConnection_ConnectTo(&c, url.c_str()) != NATS_OK) return nullptr;
  return NatsConn(c);
}

inline natsStatus nats_publish(natsConnection* c, const std::string& subject,
                               const std::string& data) {
  natsStatus s =
      natsConnection_Publish(c, subject.c_str(), data.data(), static_cast<int>(data.size()));
  if (s == NATS_OK) s = natsConnection_FlushTimeout(c, 5000);
  return s;
}

inline std::string up_subject(const std::string& site) {
  return std::string("canopy.v1.") + kHubName + "." + site + ".up";
}
inline std::string down_subject(const std::string& site) {
  return std::string("canopy.v1.") + kHubName + "." + site + ".down";
}

// --- Daemons.

// A device bus for a spoke (docs/device-bus.md): MQTT on `mqtt_port`, its
// NATS clients on `client_port`, a leaf link to `leaf_url`, tenant acme with device pump-1
// (password kPumpPassword). Written into the spoke's directory; the path, for --config.
inline constexpr char kPumpPassword[] = "pump-secret";
inline std::string write_bus_config(const std::string& dir, int mqtt_port, int client_port,
                                    const std::string& leaf_url) {
  const std::string path = dir + "/bus.yaml";
  // bcrypt (cost 4) of kPumpPassword.
  std::ofstream(path) << "bus:\n  enabled: true\n  mqtt_port: " << mqtt_port
                      << "\n  client_port: " << client_port << "\n  leaf_remote: " << leaf_url
                      << "\n  tenants:\n    - name: acme\n      devices: [{id: pump-1, "
                         "password_hash: "
                         "\"$2b$04$UrDXCYlPNQURswfF2MBrOuNJzRtHfFCBQ52iWsLO/KBXfxi89YwZC\"}]\n";
  return path;
}

// Device pump-1 of tenant acme (write_bus_config) publishes `payload` with
// Debian's mosquitto_pub, QoS 1, on its telemetry topic t/acme/d/pump-1/
// telemetry/temp at the bus's MQTT port; the client's output goes to
// `log_path`. True when the bus acknowledged it.
inline bool publish_pump_telemetry(int mqtt_port, const std::string& payload,
                                   const std::string& client_id, const std::string& log_path) {
  Process p;
  ProcessOptions o;
  o.log_path = log_path;
  std::string error;
  if (!p.start({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(mqtt_port), "-u",
                "pump-1@acme", "-P", kPumpPassword, "-i", client_id, "-q", "1", "-t",
                "t/acme/d/pump-1/telemetry/temp", "-m", payload},
               o, &error)) {
    std::ofstream(log_path) << "cannot start mosquitto_pub: " << error;
    return false;
  }
  auto status = p.wait_exit(std::chrono::seconds(15));
  if (!status) p.kill(SIGKILL);
  return status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

struct Hub {
  TempDir dir{"canopy-e2e-hub-"};
  int grpc_port = 0;
  int health_port = 0;
  std::vector<std::string> extra_args;  // appended to canopy-hub's command line
  Process proc;
  std::string data() const { return dir.file("data"); }
  std::string log_path() const { return dir.file("hub.log"); }
  // The fleet-admin token the hub wrote when it first started.
  std::string admin_token() const {
    std::string token;
    std::ifstream in(data() + "/admin.token");
    std::getline(in, token);
    return token;
  }
};

struct CliRun {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

#ifdef KUBECTL_CANOPY_BIN
// Starts `kubectl canopy <args>` through the real kubectl (the plugin found
// on PATH) in `p`, against the hub's gRPC port with `token`; its output in
// `log`, its config directory `home`. `stdin_file`: given on stdin (for
// `-f -`); `env` overrides the environment it is given.
inline bool start_kubectl_canopy(Process& p, int grpc_port, const std::string& log,
                                 const std::string& home, std::vector<std::string> args,
                                 const std::string& token, std::string* err,
                                 const std::string& stdin_file = "",
                                 const std::vector<std::pair<std::string, std::string>>& env = {}) {
  std::vector<std::string> argv = {"kubectl", "canopy"};
  for (auto& a : args) argv.push_back(std::move(a));
  ProcessOptions po;
  po.log_path = log;
  const std::string plugin_dir = std::filesystem::path(KUBECTL_CANOPY_BIN).parent_path();
  po.env = {{"PATH", plugin_dir + ":" + std::string(std::getenv("PATH"))},
            {"CANOPY_HUB", "127.0.0.1:" + std::to_string(grpc_port)},
            {"CANOPY_TOKEN", token},
            {"CANOPY_TOKEN_FILE", ""},
            {"HOME", home},
            {"XDG_CONFIG_HOME", ""}};
  for (const auto& [k, v] : env) {
    for (auto& e : po.env) {
      if (e.first == k) e.second = v;
    }
  }
  if (!stdin_file.empty()) {
    // Through a shell, for `-f -` with a file on stdin.
    std::string cmd;
    for (const auto& a : argv) cmd += "'" + a + "' ";
    argv = {"/bin/sh", "-c", cmd + "< '" + stdin_file + "'"};
  }
  return p.start(argv, po, err);
}

// The same, run to its end (30 s at most).
inline CliRun run_kubectl_canopy(int grpc_port, const std::string& log, const std::string& home,
                                 std::vector<std::string> args, const std::string& token,
                                 const std::string& stdin_file = "",
                                 const std::vector<std::pair<std::string, std::string>>& env = {}) {
  CliRun run;
  Process p;
  std::string err;
  if (!start_kubectl_canopy(p, grpc_port, log, home, std::move(args), token, &err, stdin_file,
                            env)) {
    run.out = "cannot start kubectl: " + err;
    return run;
  }
  auto status = p.wait_exit(30s);
  if (status && WIFEXITED(*status)) run.exit_code = WEXITSTATUS(*status);
  run.out = read_file(log);
  return run;
}
#endif

struct Spoke {
  std::string site;
  std::map<std::string, std::string> labels;
  TempDir dir{"canopy-e2e-spoke-"};
  int health_port = 0;
  std::vector<std::string> extra_args;  // appended to canopy-spoke's command line
  Process proc;
  std::string data() const { return dir.file("data"); }
  std::string manifests() const { return dir.file("manifests"); }
  std::string log_path() const { return dir.file("spoke.log"); }
  std::map<std::string, Manifest> read() const { return read_manifests(manifests()); }
};

class E2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    NatsServerOptions o;
    o.max_payload = nats_max_payload_;
    nats_ = std::make_unique<NatsServer>(o);
    std::string err;
    ASSERT_TRUE(nats_->start(&err)) << err;
  }

  void TearDown() override {
    if (HasFailure()) dump_logs();
  }

  void dump_logs() {
    if (hub_) {
      std::cerr << "----- hub log (" << hub_->log_path() << ")\n"
                << tail(read_file(hub_->log_path()), 6000) << "\n";
    }
    for (const auto& s : spokes_) {
      std::cerr << "----- spoke " << s->site << " log (" << s->log_path() << ")\n"
                << tail(read_file(s->log_path()), 6000) << "\n";
    }
    if (nats_) std::cerr << "----- nats log\n" << nats_->log_tail(2000) << "\n";
  }

  // A free port not handed out before in this test.
  int port() {
    for (int i = 0; i < 100; ++i) {
      const int p = canopy::testing::pick_free_port();
      if (p > 0 && used_ports_.insert(p).second) return p;
    }
    ADD_FAILURE() << "no free port";
    return -1;
  }

  // --- Hub.

  Hub& create_hub() {
    hub_ = std::make_unique<Hub>();
    hub_->grpc_port = port();
    hub_->health_port = port();
    return *hub_;
  }

  // Starts (or restarts, on the same data directory and ports) the hub and
  // waits until its health endpoint answers and it is connected to NATS
  // (unless `expect_nats` is false).
  void launch_hub(bool expect_nats = true) {
    Hub& h = *hub_;
    std::vector<std::string> argv = {CANOPY_HUB_BIN,
                                     "--name",
                                     kHubName,
                                     "--data",
                                     h.data(),
                                     "--nats",
                                     nats_->url(),
                                     "--grpc",
                                     "127.0.0.1:" + std::to_string(h.grpc_port),
                                     "--health",
                                     "127.0.0.1:" + std::to_string(h.health_port)};
    argv.insert(argv.end(), h.extra_args.begin(), h.extra_args.end());
    ProcessOptions po;
    po.log_path = h.log_path();
    std::string err;
    ASSERT_TRUE(h.proc.start(argv, po, &err)) << err;
    const bool up = wait_until(
        [&] {
          if (!h.proc.running()) return true;  // fail fast below
          auto j = http_get_json(h.health_port, "/healthz");
          return j && (!expect_nats || j->value("nats_connected", false));
        },
        kTimeout, kPoll);
    ASSERT_TRUE(h.proc.running()) << "canopy-hub exited at start";
    ASSERT_TRUE(up) << "canopy-hub /healthz did not answer (connected) in time";
    // A fresh channel for the fresh process.
    stub_ = make_stub(h.grpc_port);
    token_ = h.admin_token();
    ASSERT_FALSE(token_.empty()) << "canopy-hub wrote no admin token to " << h.data();
    // acme may place on every site: these tests are about other things
    // (grants are tested in rest_e2e and cli_e2e). Idempotent on a restart.
    const grpc::Status g = put("grant", "all", {{"allSites", true}});
    ASSERT_TRUE(g.ok()) << g.error_message();
  }

  // A stub on a channel of its own (own subchannel pool, so that no backoff
  // state of a channel to a killed process is shared).
  static std::unique_ptr<v1::Catalog::Stub> make_stub(int grpc_port) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    return v1::Catalog::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(grpc_port), grpc::InsecureChannelCredentials(), args));
  }

  void kill_hub() {
    ASSERT_TRUE(hub_->proc.kill(SIGKILL));
    ASSERT_TRUE(hub_->proc.wait_exit(10s).has_value());
  }

  // The hub's session of `site`, if any.
  std::optional<json> hub_session(const std::string& site) {
    auto j = http_get_json(hub_->health_port, "/v1/sessions");
    if (!j || !j->is_array()) return std::nullopt;
    for (const auto& s : *j) {
      if (s.value("site", "") == site) return s;
    }
    return std::nullopt;
  }

  // --- Spokes.

  Spoke& create_spoke(const std::string& site, std::map<std::string, std::string> labels) {
    auto s = std::make_unique<Spoke>();
    s->site = site;
    s->labels = std::move(labels);
    s->health_port = port();
    fs::create_directories(s->manifests());
    spokes_.push_back(std::move(s));
    return *spokes_.back();
  }

  // Starts (or restarts, same directories and port) a spoke and waits until
  // its local API answers; with `expect_session`, also until its session is
  // open and in sync and the hub lists it as connected.
  // Starts canopy-spoke for `s` without waiting for anything.
  void start_spoke_process(Spoke& s) {
    std::vector<std::string> argv = {CANOPY_SPOKE_BIN,
                                     "--site",
                                     s.site,
                                     "--parent",
                                     kHubName,
                                     "--data",
                                     s.data(),
                                     "--manifests",
                                     s.manifests(),
                                     "--nats",
                                     nats_->url(),
                                     "--health",
                                     "127.0.0.1:" + std::to_string(s.health_port)};
    for (const auto& [k, v] : s.labels) {
      argv.push_back("--label");
      argv.push_back(k + "=" + v);
    }
    argv.insert(argv.end(), s.extra_args.begin(), s.extra_args.end());
    ProcessOptions po;
    po.log_path = s.log_path();
    std::string err;
    ASSERT_TRUE(s.proc.start(argv, po, &err)) << err;
  }

  void launch_spoke(Spoke& s, bool expect_session = true) {
    ASSERT_NO_FATAL_FAILURE(start_spoke_process(s));
    const bool up = wait_until(
        [&] {
          if (!s.proc.running()) return true;
          auto j = http_get_json(s.health_port, "/healthz");
          if (!j) return false;
          if (!expect_session) return true;
          if (!j->value("session_open", false) || !j->value("in_sync", false)) return false;
          auto hs = hub_session(s.site);
          return hs && hs->value("connected", false);
        },
        kTimeout, kPoll);
    ASSERT_TRUE(s.proc.running()) << "canopy-spoke " << s.site << " exited at start";
    ASSERT_TRUE(up) << "canopy-spoke " << s.site << " not ready in time";
  }

  void kill_spoke(Spoke& s) {
    ASSERT_TRUE(s.proc.kill(SIGKILL));
    ASSERT_TRUE(s.proc.wait_exit(10s).has_value());
  }

  std::optional<json> spoke_health(const Spoke& s) {
    return http_get_json(s.health_port, "/healthz");
  }

  // Waits until the spoke's /healthz says `want` for the boolean `field`.
  bool wait_spoke_health(const Spoke& s, const std::string& field, bool want,
                         std::chrono::milliseconds interval = kPoll) {
    return wait_until(
        [&] {
          auto h = spoke_health(s);
          return h && h->value(field, !want) == want;
        },
        kTimeout, interval);
  }

  // The spoke's status document for `tmpl` from its local API.
  std::optional<json> spoke_status(const Spoke& s, const std::string& tmpl) {
    auto j = http_get_json(s.health_port, "/v1/status");
    if (!j || !j->is_array()) return std::nullopt;
    const std::string key = "sites/" + s.site + "/status/" + kTenant + "/" + tmpl;
    for (const auto& item : *j) {
      if (item.value("key", "") == key) return item["status"];
    }
    return std::nullopt;
  }

  // --- gRPC.

  grpc::Status put(v1::Catalog::Stub* stub, const std::string& kind, const std::string& name,
                   const json& doc) {
    return catalog_put(stub, token_, kind, name, doc);
  }
  grpc::Status put(const std::string& kind, const std::string& name, const json& doc) {
    return put(stub_.get(), kind, name, doc);
  }

  grpc::Status remove(const std::string& kind, const std::string& name) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    ctx.AddMetadata("authorization", "Bearer " + token_);
    v1::DeleteRequest req;
    req.set_kind(kind);
    req.set_tenant(kind == "site" ? "" : kTenant);
    req.set_name(name);
    v1::DeleteResponse resp;
    return stub_->Delete(&ctx, req, &resp);
  }

  // Get: the object's JSON, or nullopt with the status in *status.
  std::optional<json> get(const std::string& kind, const std::string& name,
                          grpc::Status* status = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    ctx.AddMetadata("authorization", "Bearer " + token_);
    v1::GetRequest req;
    req.set_kind(kind);
    req.set_tenant(kind == "site" ? "" : kTenant);
    req.set_name(name);
    v1::GetResponse resp;
    grpc::Status st = stub_->Get(&ctx, req, &resp);
    if (status != nullptr) *status = st;
    if (!st.ok()) return std::nullopt;
    return json::parse(resp.object().json(), nullptr, false);
  }

  // Every object of `kind` (all pages), by name.
  std::optional<std::map<std::string, json>> list(const std::string& kind) {
    std::map<std::string, json> out;
    std::string token;
    do {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 5s);
      ctx.AddMetadata("authorization", "Bearer " + token_);
      v1::ListRequest req;
      req.set_kind(kind);
      req.set_tenant(kind == "site" ? "" : kTenant);
      req.set_page_size(1000);
      req.set_page_token(token);
      v1::ListResponse resp;
      if (!stub_->List(&ctx, req, &resp).ok()) return std::nullopt;
      for (const auto& o : resp.objects()) out[o.name()] = json::parse(o.json(), nullptr, false);
      token = resp.next_page_token();
    } while (!token.empty());
    return out;
  }

  std::optional<v1::GetStatusResponse> get_status(const std::string& placement) {
    return catalog_status(stub_.get(), token_, placement);
  }

  // The hub's view of `tmpl` at `site` for `placement`: (outcome, hash).
  std::optional<std::pair<std::string, std::string>> hub_template_status(
      const std::string& placement, const std::string& site, const std::string& tmpl) {
    auto st = get_status(placement);
    if (!st) return std::nullopt;
    for (const auto& row : st->sites()) {
      if (row.site() != site) continue;
      for (const auto& t : row.templates()) {
        if (t.template_() == tmpl) return std::make_pair(t.outcome(), t.hash());
      }
    }
    return std::nullopt;
  }

  // Waits until the hub shows `tmpl` at `site` for `placement` applied (with
  // `hash`, when one is given).
  bool wait_hub_applied(const std::string& placement, const std::string& site,
                        const std::string& tmpl, const std::string& hash = "") {
    return wait_until(
        [&] {
          auto st = hub_template_status(placement, site, tmpl);
          return st && st->first == "applied" && (hash.empty() || st->second == hash);
        },
        kTimeout, kPoll);
  }

  int64_t nats_max_payload_ = kNatsMaxPayload;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<Hub> hub_;
  std::vector<std::unique_ptr<Spoke>> spokes_;
  std::unique_ptr<v1::Catalog::Stub> stub_;
  std::string token_;  // the hub's admin token, sent on every call
  std::set<int> used_ports_;
};

}  // namespace canopy::e2e

// Devices end to end: device documents written at the real canopy-hub's API
// reach the real canopy-spoke's site bus (Debian's nats-server with MQTT),
// where real MQTT clients (mosquitto_pub/mosquitto_sub) connect with the
// device's password, stay within their tenant's topics, and lose access when
// the device is deleted at the hub.
//
// On a failure, the tails of every daemon's log are printed.
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <regex>

#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

// bcrypt (cost 4) of "pump-secret", made once with libxcrypt.
constexpr char kHash[] = "$2b$04$UrDXCYlPNQURswfF2MBrOuNJzRtHfFCBQ52iWsLO/KBXfxi89YwZC";
constexpr char kPassword[] = "pump-secret";
constexpr char kSite[] = "shop-1";

// python3-paho-mqtt: connects as argv[3]/argv[4] and publishes each of
// argv[6:] at QoS 1 on the topic argv[5], in order, each acknowledged, then
// prints "done N".
constexpr char kPahoPublish[] = R"PY(
import sys, threading
import paho.mqtt.client as mqtt
host, port, user, pw, topic = sys.argv[1:6]
payloads = sys.argv[6:]
c = mqtt.Client(client_id="paho-" + user, clean_session=True)
c.username_pw_set(user, pw)
connected = threading.Event()
c.on_connect = lambda cl, ud, fl, rc: (print("connack", rc, flush=True), connected.set())
c.connect(host, int(port))
c.loop_start()
if not connected.wait(10):
    sys.exit(3)
n = 0
for p in payloads:
    info = c.publish(topic, p, qos=1)
    info.wait_for_publish(10)
    n += 1 if info.is_published() else 0
print("done", n, flush=True)
c.loop_stop()
c.disconnect()
sys.exit(0 if n == len(payloads) else 4)
)PY";

struct ToolRun {
  int exit_code = -1;  // -1: did not finish in time
  std::string output;
};

class DeviceTest : public E2ETest {
 protected:
  void SetUp() override {
    E2ETest::SetUp();
    if (HasFatalFailure()) return;
    create_hub();
    ASSERT_NO_FATAL_FAILURE(launch_hub());
    // globex too may use every site (acme may: the fixture's grant).
    for (const auto& [kind, tenant, name, doc] :
         {std::tuple<std::string, std::string, std::string, std::string>{"tenant", "", "globex",
                                                                         "{}"},
          {"grant", "globex", "all", R"({"allSites": true})"}}) {
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer " + token_);
      v1::PutRequest req;
      req.mutable_object()->set_kind(kind);
      req.mutable_object()->set_tenant(tenant);
      req.mutable_object()->set_name(name);
      req.mutable_object()->set_json(doc);
      v1::PutResponse resp;
      const grpc::Status st = stub_->Put(&ctx, req, &resp);
      ASSERT_TRUE(st.ok()) << kind << " " << name << ": " << st.error_message();
    }

    mqtt_port_ = port();
    Spoke& s = create_spoke(kSite, {{"region", "eu"}});
    const std::string config = s.dir.file("bus.yaml");
    std::ofstream(config) << "bus:\n"
                          << "  enabled: true\n"
                          << "  mqtt_port: " << mqtt_port_ << "\n"
                          << "  client_port: " << port() << "\n"
                          << "  monitor_port: " << port() << "\n";
    s.extra_args = {"--config", config};
    spoke_ = &s;
    ASSERT_NO_FATAL_FAILURE(launch_spoke(s));
  }

  // Writes (or deletes, `doc` null) a device at the hub's API as the admin.
  grpc::Status put_device(const std::string& tenant, const std::string& id, const json& doc) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    ctx.AddMetadata("authorization", "Bearer " + token_);
    if (doc.is_null()) {
      v1::DeleteRequest req;
      req.set_kind("device");
      req.set_tenant(tenant);
      req.set_site(kSite);
      req.set_name(id);
      v1::DeleteResponse resp;
      return stub_->Delete(&ctx, req, &resp);
    }
    v1::PutRequest req;
    v1::Object* o = req.mutable_object();
    o->set_kind("device");
    o->set_tenant(tenant);
    o->set_site(kSite);
    o->set_name(id);
    o->set_json(doc.dump());
    v1::PutResponse resp;
    return stub_->Put(&ctx, req, &resp);
  }
  static json device(const std::string& scope = "device") {
    return {{"credential", {{"passwordHash", kHash}}}, {"scope", scope}};
  }

  ToolRun run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 15s) {
    const std::string log = spoke_->dir.file("tool-" + std::to_string(++runs_) + ".log");
    Process p;
    ProcessOptions o;
    o.log_path = log;
    std::string error;
    ToolRun r;
    if (!p.start(argv, o, &error)) {
      r.output = error;
      return r;
    }
    auto status = p.wait_exit(timeout);
    if (!status) p.kill(SIGKILL);
    if (status && WIFEXITED(*status)) r.exit_code = WEXITSTATUS(*status);
    r.output = read_file(log);
    return r;
  }
  std::vector<std::string> mqtt(const std::string& tool, const std::string& user,
                                const std::string& topic, const std::string& password = kPassword) {
    return {tool, "-h", "127.0.0.1", "-p", std::to_string(mqtt_port_),     "-u",
            user, "-P", password,    "-i", "c-" + std::to_string(++runs_), "-q",
            "1",  "-t", topic};
  }
  ToolRun pub(const std::string& user, const std::string& topic, const std::string& msg,
              const std::string& password = kPassword) {
    auto a = mqtt("mosquitto_pub", user, topic, password);
    a.insert(a.end(), {"-m", msg});
    return run(a);
  }
  // mosquitto_sub in the background until one message or `wait_s` seconds.
  std::unique_ptr<Process> sub_start(const std::string& user, const std::string& topic,
                                     const std::string& log, int wait_s = 10) {
    auto a = mqtt("mosquitto_sub", user, topic);
    a.insert(a.end(), {"-C", "1", "-W", std::to_string(wait_s), "-v"});
    auto p = std::make_unique<Process>();
    ProcessOptions o;
    o.log_path = log;
    std::string error;
    EXPECT_TRUE(p->start(a, o, &error)) << error;
    return p;
  }

  // paho publishing `payloads` in order on `topic` as `user`.
  ToolRun paho_pub(const std::string& user, const std::string& topic,
                   const std::vector<std::string>& payloads) {
    const std::string script = spoke_->dir.file("paho_pub.py");
    std::ofstream(script) << kPahoPublish;
    std::vector<std::string> a = {
        "/usr/bin/python3", script, "127.0.0.1", std::to_string(mqtt_port_), user,
        kPassword,          topic};
    a.insert(a.end(), payloads.begin(), payloads.end());
    return run(a, 60s);
  }

  // The device's twin at the hub's REST API, as the fleet admin.
  std::optional<json> twin(const std::string& tenant, const std::string& id) {
    httplib::Client cli("127.0.0.1", hub_->health_port);
    cli.set_read_timeout(3, 0);
    auto res = cli.Get("/v1/tenants/" + tenant + "/sites/" + kSite + "/devices/" + id + "/twin",
                       {{"Authorization", "Bearer " + token_}});
    if (!res || res->status != 200) return std::nullopt;
    json j = json::parse(res->body, nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return j;
  }
  uint64_t hub_log_index() {
    auto j = http_get_json(hub_->health_port, "/healthz");
    return j ? j->value("log_index", uint64_t{0}) : 0;
  }

  // mosquitto_sub for one message on the device's desired topic: "<retain
  // flag> <payload>", empty if none came within `wait_s`, "error: ..." if
  // it could not subscribe.
  std::string desired_once(const std::string& user, const std::string& topic, int wait_s = 3) {
    auto a = mqtt("mosquitto_sub", user, topic);
    a.insert(a.end(), {"-C", "1", "-W", std::to_string(wait_s), "-F", "%r %p"});
    ToolRun r = run(a);
    std::string out = r.output;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (out.find("Timed out") != std::string::npos) return "";  // connected, nothing retained
    if (r.exit_code != 0) return "error: " + out;               // refused, or another failure
    return out;
  }

  int mqtt_port_ = 0;
  Spoke* spoke_ = nullptr;
  int runs_ = 0;
};

TEST_F(DeviceTest, ADeviceCreatedAtTheHubConnectsAtTheSiteUntilDeleted) {
  // Before the document: the site's nats-server does not know the user.
  ToolRun r = pub("pump-1@acme", "t/acme/d/pump-1/temp", "20");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("not authorised"), std::string::npos) << r.output;

  ASSERT_TRUE(put_device("acme", "pump-1", device()).ok());
  // The document reaches the site and the bus is reloaded with the device.
  ASSERT_TRUE(
      wait_until([&] { return pub("pump-1@acme", "t/acme/d/pump-1/temp", "21").exit_code == 0; },
                 kTimeout, 200ms))
      << pub("pump-1@acme", "t/acme/d/pump-1/temp", "21").output;
  // A wrong password is refused.
  r = pub("pump-1@acme", "t/acme/d/pump-1/temp", "22", "not-the-password");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("not authorised"), std::string::npos) << r.output;

  // It publishes under its own topics, and a subscriber of its tenant gets it.
  ASSERT_TRUE(put_device("acme", "gw", device("tenant")).ok());
  ASSERT_TRUE(wait_until([&] { return pub("gw@acme", "t/acme/hello", "x").exit_code == 0; },
                         kTimeout, 200ms));
  const std::string sub_log = spoke_->dir.file("sub-acme.log");
  auto sub = sub_start("gw@acme", "t/acme/#", sub_log);
  // Published until the subscriber has one (-C 1): when its SUBSCRIBE is in
  // place is not known from outside (under sanitizers it took over 500 ms).
  ASSERT_TRUE(wait_until(
      [&] {
        EXPECT_EQ(pub("pump-1@acme", "t/acme/d/pump-1/temp", "23").exit_code, 0);
        return !sub->running();
      },
      kTimeout, 300ms));
  EXPECT_NE(read_file(sub_log).find("t/acme/d/pump-1/temp 23"), std::string::npos)
      << read_file(sub_log);

  // Deleting it at the hub cuts its access; the other device keeps its own.
  ASSERT_TRUE(put_device("acme", "pump-1", nullptr).ok());
  ASSERT_TRUE(
      wait_until([&] { return pub("pump-1@acme", "t/acme/d/pump-1/temp", "24").exit_code != 0; },
                 kTimeout, 200ms));
  EXPECT_NE(pub("pump-1@acme", "t/acme/d/pump-1/temp", "25").output.find("not authorised"),
            std::string::npos);
  EXPECT_EQ(pub("gw@acme", "t/acme/hello", "still here").exit_code, 0);
}

TEST_F(DeviceTest, ATenantsDeviceCannotReachAnotherTenantsTopics) {
  ASSERT_TRUE(put_device("acme", "gw", device("tenant")).ok());
  ASSERT_TRUE(put_device("globex", "gw", device("tenant")).ok());
  ASSERT_TRUE(wait_until(
      [&] {
        return pub("gw@acme", "t/acme/x", "1").exit_code == 0 &&
               pub("gw@globex", "t/globex/x", "1").exit_code == 0;
      },
      kTimeout, 200ms));

  // Subscribing to acme's topics as globex: refused by nats-server (SUBACK
  // 0x80), seen by mosquitto_sub.
  auto a = mqtt("mosquitto_sub", "gw@globex", "t/acme/#");
  a.insert(a.end(), {"-C", "1", "-W", "5"});
  ToolRun r = run(a);
  EXPECT_NE(r.output.find("All subscription requests were denied"), std::string::npos) << r.output;

  // Publishing on acme's topics as globex: dropped (MQTT 3.1.1 has no
  // refusal of a PUBLISH); acme's subscriber never sees it, and the site
  // nats-server logs the violation. Each forbidden publish is followed by
  // acme's own on the same topic tree until the subscriber (-C 1) has one:
  // the subscription was in place, and the first message it got is acme's.
  const std::string sub_log = spoke_->dir.file("sub-acme.log");
  auto sub = sub_start("gw@acme", "t/acme/#", sub_log, 20);
  ASSERT_TRUE(wait_until(
      [&] {
        EXPECT_EQ(pub("gw@globex", "t/acme/d/pump-1/desired", "evil").exit_code, 0);
        EXPECT_EQ(pub("gw@acme", "t/acme/x", "own").exit_code, 0);
        return !sub->running();
      },
      kTimeout, 300ms));
  EXPECT_NE(read_file(sub_log).find("t/acme/x own"), std::string::npos) << read_file(sub_log);
  EXPECT_EQ(read_file(sub_log).find("evil"), std::string::npos) << read_file(sub_log);
  EXPECT_TRUE(wait_until(
      [&] {
        return read_file(spoke_->log_path()).find("Publish Violation - User \"gw@globex\"") !=
               std::string::npos;
      },
      5s, kPoll));
}

// Desired twins: written at the hub, published by the spoke retained on
// t/<tenant>/d/<id>/desired; a device gets it when it subscribes, however
// late, and live changes while it is subscribed.
TEST_F(DeviceTest, DesiredWrittenAtTheHubReachesTheDeviceRetained) {
  json doc = device();
  doc["desired"] = {{"speed", 3}, {"mode", "eco"}};
  ASSERT_TRUE(put_device("acme", "pump-1", doc).ok());
  const std::string topic = "t/acme/d/pump-1/desired";
  std::string got;
  ASSERT_TRUE(
      wait_until([&] { return (got = desired_once("pump-1@acme", topic)).starts_with("1 "); },
                 kTimeout, 100ms))
      << read_file(spoke_->log_path());
  EXPECT_EQ(got, R"(1 {"mode":"eco","speed":3})");  // retained, canonical JSON

  // A change while the device is subscribed arrives live; a device that
  // subscribes afterwards gets the new value retained.
  const std::string live_log = spoke_->dir.file("live.log");
  auto a = mqtt("mosquitto_sub", "pump-1@acme", topic);
  a.insert(a.end(), {"-C", "2", "-W", "20", "-F", "%r %p"});
  Process live;
  ProcessOptions po;
  po.log_path = live_log;
  ASSERT_TRUE(live.start(a, po));
  ASSERT_TRUE(
      wait_until([&] { return read_file(live_log).find("eco") != std::string::npos; }, 10s, kPoll));
  doc["desired"] = {{"speed", 5}};
  ASSERT_TRUE(put_device("acme", "pump-1", doc).ok());
  ASSERT_TRUE(live.wait_exit(25s).has_value());
  EXPECT_NE(read_file(live_log).find(R"(0 {"speed":5})"), std::string::npos) << read_file(live_log);
  EXPECT_EQ(desired_once("pump-1@acme", topic), R"(1 {"speed":5})");

  // Another device of the tenant cannot read it (device scope), and deleting
  // the device clears its retained desired.
  ASSERT_TRUE(put_device("acme", "pump-2", device()).ok());
  ASSERT_TRUE(
      wait_until([&] { return pub("pump-2@acme", "t/acme/d/pump-2/x", "1").exit_code == 0; },
                 kTimeout, 200ms));
  auto denied = mqtt("mosquitto_sub", "pump-2@acme", topic);
  denied.insert(denied.end(), {"-C", "1", "-W", "3"});
  EXPECT_NE(run(denied).output.find("All subscription requests were denied"), std::string::npos);
  ASSERT_TRUE(put_device("acme", "gw", device("tenant")).ok());
  ASSERT_TRUE(wait_until([&] { return desired_once("gw@acme", topic) == R"(1 {"speed":5})"; },
                         kTimeout, 100ms));
  ASSERT_TRUE(put_device("acme", "pump-1", nullptr).ok());
  ASSERT_TRUE(
      wait_until([&] { return desired_once("gw@acme", topic, 2).empty(); }, kTimeout, 100ms));
}

// Reported twins: a device's reports (paho, QoS 1) reach the hub's store,
// coalesced; the hub shows each field's value and when it was reported.
TEST_F(DeviceTest, ReportsReachTheHubCoalesced) {
  ASSERT_TRUE(put_device("acme", "pump-1", device()).ok());
  ASSERT_TRUE(
      wait_until([&] { return pub("pump-1@acme", "t/acme/d/pump-1/hello", "1").exit_code == 0; },
                 kTimeout, 200ms));
  const uint64_t before_ms =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  ToolRun r =
      paho_pub("pump-1@acme", "t/acme/d/pump-1/reported", {R"({"temp": 21.5, "door": "open"})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::optional<json> t;
  ASSERT_TRUE(wait_until(
      [&] {
        t = twin("acme", "pump-1");
        return t && (*t)["reported"].contains("temp");
      },
      kTimeout, 100ms))
      << (t ? t->dump() : "no twin") << "\n"
      << read_file(spoke_->log_path());
  EXPECT_EQ((*t)["reported"]["temp"]["value"], 21.5);
  EXPECT_EQ((*t)["reported"]["door"]["value"], "open");
  const uint64_t temp_at = (*t)["reported"]["temp"]["atMs"];
  EXPECT_GE(temp_at, before_ms);

  // A chatty device: 300 reports as fast as paho sends them. The latest
  // wins, fields not reported again keep their value and time, and the hub
  // receives a handful of writes, not 300.
  std::this_thread::sleep_for(1500ms);  // the first report's write is behind us
  const uint64_t log_before = hub_log_index();
  std::vector<std::string> burst;
  for (int i = 1; i <= 300; ++i) burst.push_back(R"({"temp": )" + std::to_string(i) + "}");
  r = paho_pub("pump-1@acme", "t/acme/d/pump-1/reported", burst);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(wait_until(
      [&] {
        t = twin("acme", "pump-1");
        return t && (*t)["reported"]["temp"]["value"] == 300;
      },
      kTimeout, 100ms))
      << (t ? t->dump() : "no twin");
  EXPECT_EQ((*t)["reported"]["door"]["value"], "open");
  EXPECT_GT((*t)["reported"]["temp"]["atMs"].get<uint64_t>(), temp_at);
  std::this_thread::sleep_for(1500ms);
  const uint64_t writes = hub_log_index() - log_before;
  EXPECT_GE(writes, 1u);
  EXPECT_LE(writes, 30u) << "300 reports must be coalesced";

  // The same twin over gRPC.
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token_);
    v1::GetTwinRequest req;
    req.set_tenant("acme");
    req.set_site(kSite);
    req.set_device("pump-1");
    v1::GetTwinResponse resp;
    const grpc::Status st = stub_->GetTwin(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(json::parse(resp.desired()), (*t)["desired"]);
    ASSERT_EQ(resp.reported().count("temp"), 1u);
    EXPECT_EQ(json::parse(resp.reported().at("temp").value()), 300);
    EXPECT_EQ(resp.reported().at("temp").at_ms(), (*t)["reported"]["temp"]["atMs"].get<int64_t>());
    EXPECT_EQ(json::parse(resp.reported().at("door").value()), "open");
    grpc::ClientContext missing_ctx;
    missing_ctx.AddMetadata("authorization", "Bearer " + token_);
    req.set_device("pump-9");
    EXPECT_EQ(stub_->GetTwin(&missing_ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
    grpc::ClientContext bad_ctx;
    bad_ctx.AddMetadata("authorization", "Bearer " + token_);
    req.set_device("Pump");
    EXPECT_EQ(stub_->GetTwin(&bad_ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }

  // And through the real kubectl: a row per field, desired beside reported.
  {
    const std::string home = spoke_->dir.file("kubectl-home");
    fs::create_directories(home);
    int n = 0;
    auto kc = [&](std::vector<std::string> args) {
      return run_kubectl_canopy(hub_->grpc_port,
                                spoke_->dir.file("kubectl-" + std::to_string(++n) + ".log"), home,
                                std::move(args), token_);
    };
    // `get -w`: the list, then each change as it happens.
    Process watch;
    const std::string watch_log = spoke_->dir.file("kubectl-watch.log");
    std::string err;
    ASSERT_TRUE(start_kubectl_canopy(watch, hub_->grpc_port, watch_log, home,
                                     {"get", "devices", "acme", "--site", kSite, "-w"}, token_,
                                     &err))
        << err;
    ASSERT_TRUE(wait_until(
        [&] {
          return std::regex_search(
              read_file(watch_log),
              std::regex(R"(EVENT +NAME +LABELS +DESIRED +CHANGED\nADDED +pump-1 )"));
        },
        kTimeout, kPoll))
        << read_file(watch_log);
    json with_desired = device();
    with_desired["desired"] = {{"speed", 5}};
    ASSERT_TRUE(put_device("acme", "pump-1", with_desired).ok());
    ASSERT_TRUE(put_device("acme", "pump-2", device()).ok());
    // (Seen before it is deleted: a change and a deletion in one batch of
    // the hub's fan-out reach a watcher as the deletion alone.)
    ASSERT_TRUE(wait_until(
        [&] { return std::regex_search(read_file(watch_log), std::regex(R"(\nADDED +pump-2 )")); },
        kTimeout, kPoll))
        << read_file(watch_log);
    ASSERT_TRUE(put_device("acme", "pump-2", nullptr).ok());
    ASSERT_TRUE(wait_until(
        [&] { return read_file(watch_log).find("DELETED") != std::string::npos; }, kTimeout, kPoll))
        << read_file(watch_log);
    EXPECT_TRUE(std::regex_search(read_file(watch_log),
                                  std::regex(R"(\nMODIFIED +pump-1 +<none> +\{"speed":5\} +)")))
        << read_file(watch_log);
    EXPECT_TRUE(std::regex_search(read_file(watch_log),
                                  std::regex(R"(\nADDED +pump-2 +[^\n]*\nDELETED +pump-2\n)")))
        << read_file(watch_log);
    EXPECT_TRUE(watch.running()) << read_file(watch_log);
    watch.kill(SIGTERM);

    CliRun k = kc({"twin", "acme/pump-1", "--site", kSite});
    EXPECT_EQ(k.exit_code, 0) << k.out;
    EXPECT_TRUE(std::regex_search(k.out, std::regex(R"(FIELD +DESIRED +REPORTED +REPORTED-AGO)")))
        << k.out;
    EXPECT_TRUE(std::regex_search(k.out, std::regex(R"(\ntemp +- +300 +[0-9]+[smhd] +-\n)")))
        << k.out;
    EXPECT_TRUE(std::regex_search(k.out, std::regex(R"(\ndoor +- +"open" +[0-9]+[smhd] +-\n)")))
        << k.out;
    k = kc({"twin", "acme/pump-1", "--site", kSite, "-o", "json"});
    ASSERT_EQ(k.exit_code, 0) << k.out;
    const json j = json::parse(k.out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << k.out;
    EXPECT_EQ(j["reported"]["temp"]["value"], 300);
    EXPECT_EQ(j["reported"]["temp"]["atMs"], (*t)["reported"]["temp"]["atMs"]);
    k = kc({"get", "devices", "acme", "--site", kSite});
    EXPECT_EQ(k.exit_code, 0) << k.out;
    EXPECT_TRUE(
        std::regex_search(k.out, std::regex(R"(\npump-1 +<none> +\{"speed":5\} +[0-9]+[smhd]\n)")))
        << k.out;
    k = kc({"get", "devices", "acme"});
    EXPECT_EQ(k.exit_code, 1) << k.out;
    EXPECT_NE(k.out.find("devices belong to a site"), std::string::npos) << k.out;
    k = kc({"twin", "acme/pump-1"});
    EXPECT_EQ(k.exit_code, 2) << k.out;
    k = kc({"twin", "acme/pump-9", "--site", kSite});
    EXPECT_EQ(k.exit_code, 1) << k.out;
    EXPECT_NE(k.out.find("not found"), std::string::npos) << k.out;
  }

  // The twin is the tenant's: another tenant's token cannot read it.
  httplib::Client cli("127.0.0.1", hub_->health_port);
  auto res = cli.Get(std::string("/v1/tenants/acme/sites/") + kSite + "/devices/pump-1/twin",
                     {{"Authorization", "Bearer not-a-token"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
}

// Bad reports are refused with a log line naming the reason, counted, and
// disturb nothing: a good report after them still arrives.
TEST_F(DeviceTest, BadReportsAreRefusedLoggedAndCounted) {
  ASSERT_TRUE(put_device("acme", "gw", device("tenant")).ok());
  ASSERT_TRUE(wait_until([&] { return pub("gw@acme", "t/acme/hello", "1").exit_code == 0; },
                         kTimeout, 200ms));
  const std::string topic = "t/acme/d/gw/reported";
  EXPECT_EQ(pub("gw@acme", topic, "{not json").exit_code, 0);
  EXPECT_EQ(pub("gw@acme", topic, "[1, 2]").exit_code, 0);
  EXPECT_EQ(pub("gw@acme", topic, R"({"a.b": 1})").exit_code, 0);
  EXPECT_EQ(pub("gw@acme", topic, R"({"x": ")" + std::string(20'000, 'x') + R"("})").exit_code, 0);
  EXPECT_EQ(pub("gw@acme", "t/acme/d/ghost/reported", R"({"temp": 1})").exit_code, 0);
  EXPECT_EQ(pub("gw@acme", topic, R"({"temp": 7})").exit_code, 0);
  std::optional<json> t;
  ASSERT_TRUE(wait_until(
      [&] {
        t = twin("acme", "gw");
        return t && (*t)["reported"].contains("temp");
      },
      kTimeout, 100ms))
      << read_file(spoke_->log_path());
  EXPECT_EQ((*t)["reported"].size(), 1u) << t->dump();
  EXPECT_EQ((*t)["reported"]["temp"]["value"], 7);
  const std::string log = read_file(spoke_->log_path());
  for (const char* why :
       {"report on t.acme.d.gw.reported refused: not valid JSON",
        "refused: a report is a JSON object of fields, not array",
        "refused: field \"a.b\" is not a twin field name", "bytes exceed the limit of 16384",
        "report on t.acme.d.ghost.reported refused: unknown device ghost of tenant acme",
        "(5 refused since start)"}) {
    EXPECT_NE(log.find(why), std::string::npos) << why;
  }
  EXPECT_TRUE(spoke_->proc.running());
  EXPECT_FALSE(twin("acme", "ghost"));
  // The same counts on the spoke's /metrics, linted by promtool.
  httplib::Client cli("127.0.0.1", spoke_->health_port);
  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res && res->status == 200);
  for (const char* line :
       {"\ncanopy_spoke_devices 1\n", "\ncanopy_spoke_twin_reports_accepted_total 1\n",
        "\ncanopy_spoke_twin_reports_refused_total{reason=\"malformed\"} 3\n",
        "\ncanopy_spoke_twin_reports_refused_total{reason=\"oversized\"} 1\n",
        "\ncanopy_spoke_twin_reports_refused_total{reason=\"unknown_device\"} 1\n",
        "\ncanopy_spoke_twin_reported_writes_total 1\n",
        "\ncanopy_spoke_twin_desired_failed_total 0\n", "\ncanopy_spoke_bus_ready 1\n",
        // Present; their values depend on the bus's history (a restart is
        // the spoke working, session_store_watch.h).
        "\ncanopy_spoke_bus_starts_total ", "\ncanopy_spoke_bus_restarts_total ",
        "\ncanopy_spoke_bus_reloads_total "}) {
    EXPECT_NE(res->body.find(line), std::string::npos) << line << "\n" << res->body;
  }
  const std::string prom = spoke_->dir.file("metrics.prom");
  { std::ofstream(prom) << res->body; }
  EXPECT_EQ(std::system(("promtool check metrics < " + prom + " > /dev/null 2>&1").c_str()), 0)
      << res->body;
}

}  // namespace
}  // namespace canopy::e2e

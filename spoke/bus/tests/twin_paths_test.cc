// The two twin paths of the spoke with real parts: a real Store (RocksDB), the
// BusSupervisor running Debian's nats-server with MQTT, mosquitto_sub as the
// device, and a NATS.c client publishing reports in the spoke's account.
//   - DeviceDocumentsWatch is incremental: a change of `desired` alone is
//     published without handing the device list to the bus (no config
//     render, no reload); a change of credential is applied by reload.
//   - TwinReports writes a quiet device's report at once and coalesces a
//     burst within the interval to one write of the latest values.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <sys/wait.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "daemon/password_hash.h"
#include "model/keys.h"
#include "spoke/bus/bus_spec.h"
#include "spoke/bus/device_tenants.h"
#include "spoke/bus/supervisor.h"
#include "spoke/bus/twin_reports.h"
#include "store/store.h"
#include "tests/support/free_port.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace canopy::spoke::bus {
namespace {

using canopy::testing::pick_free_port;
using canopy::testing::Process;
using canopy::testing::ProcessOptions;
using canopy::testing::TempDir;
using canopy::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr char kSite[] = "shop-1";

class TwinPathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions so;
    so.path = dir_.file("store");
    so.durability = Durability::kNone;
    auto store = Store::open(so);
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    store_ = std::move(*store);

    BusSpec spec;
    spec.site = kSite;
    spec.dir = dir_.file("bus");
    spec.client_port = pick_free_port();
    spec.mqtt_port = pick_free_port();
    spec.monitor_port = pick_free_port();
    spoke_password_ = daemon::random_password(32);
    auto spoke_hash = daemon::bcrypt_hash(spoke_password_, daemon::kMinBcryptCost);
    ASSERT_TRUE(spoke_hash.ok());
    spec.spoke_password_hash = *spoke_hash;
    sup_ = std::make_unique<BusSupervisor>(spec);
    Status st = sup_->start();
    ASSERT_TRUE(st.ok()) << st.to_string();
    sources_ = std::make_unique<BusTenantSources>(sup_.get(), std::vector<BusTenant>{});
  }

  void TearDown() override {
    reports_.reset();
    watch_.reset();
    sources_.reset();
    sup_.reset();
  }

  void start_watch() {
    DesiredTwinOptions d;
    d.mqtt_host = "127.0.0.1";
    d.mqtt_port = sup_->spec().mqtt_port;
    d.password = spoke_password_;
    auto w = DeviceDocumentsWatch::start(store_.get(), kSite, sources_.get(), d);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    watch_ = std::move(*w);
  }

  void put_device(const std::string& id, const std::string& password, const json& desired) {
    auto hash = daemon::bcrypt_hash(password, daemon::kMinBcryptCost);
    ASSERT_TRUE(hash.ok());
    json doc = {{"scope", "device"}, {"credential", {{"passwordHash", *hash}}}};
    if (!desired.empty()) doc["desired"] = desired;
    auto st = store_->put_value(model::device_key(kSite, "acme", id), doc);
    ASSERT_TRUE(st.ok()) << st.status().to_string();
  }

  // mosquitto_sub as the device: the first message on its desired topic
  // (the retained value), or the tool's error.
  std::string desired_seen(const std::string& id, const std::string& password) {
    const std::string log = dir_.file("sub-" + std::to_string(++runs_) + ".log");
    Process p;
    ProcessOptions o;
    o.log_path = log;
    std::string error;
    if (!p.start(
            {"mosquitto_sub", "-h", "127.0.0.1", "-p", std::to_string(sup_->spec().mqtt_port), "-u",
             device_user("acme", id), "-P", password, "-i", id + "-" + std::to_string(runs_), "-q",
             "1", "-t", desired_topic("acme", id), "-C", "1", "-W", "5"},
            o, &error)) {
      return error;
    }
    if (!p.wait_exit(10s)) p.kill(SIGKILL);
    std::ifstream in(log);
    std::string out((std::istreambuf_iterator<char>(in)), {});
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  TempDir dir_{"canopy-twin-paths-"};
  std::unique_ptr<Store> store_;
  std::string spoke_password_;
  std::unique_ptr<BusSupervisor> sup_;
  std::unique_ptr<BusTenantSources> sources_;
  std::unique_ptr<DeviceDocumentsWatch> watch_;
  std::unique_ptr<TwinReports> reports_;
  int runs_ = 0;
};

TEST_F(TwinPathsTest, ADesiredChangeIsPublishedWithoutTouchingTheBusConfig) {
  put_device("pump-1", "pw-1", json{{"speed", 1}});
  start_watch();
  ASSERT_TRUE(watch_->known("acme", "pump-1"));
  EXPECT_EQ(desired_seen("pump-1", "pw-1"), R"({"speed":1})");
  const DeviceWatchStats before = watch_->stats();
  EXPECT_EQ(before.bus_updates, 1u);  // the first pass
  const uint64_t reloads = sup_->reloads();
  auto read_config = [&] {
    std::ifstream in(sup_->config_path());
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  const std::string config = read_config();

  // Only `desired` changes (the same credential).
  const std::string key = model::device_key(kSite, "acme", "pump-1");
  auto doc = json::parse(*store_->get(key));
  doc["desired"] = {{"speed", 2}};
  ASSERT_TRUE(store_->put_value(key, doc).ok());
  ASSERT_TRUE(
      wait_until([&] { return watch_->stats().desired_published > before.desired_published; }, 5s));
  EXPECT_EQ(desired_seen("pump-1", "pw-1"), R"({"speed":2})");
  const DeviceWatchStats after = watch_->stats();
  EXPECT_EQ(after.bus_updates, before.bus_updates) << "a desired change went to the bus config";
  EXPECT_EQ(sup_->reloads(), reloads);
  EXPECT_EQ(read_config(), config);
  EXPECT_EQ(after.desired_failed, 0u);
  EXPECT_EQ(after.devices, 1u);

  // Emptied: the retained message is cleared, still without the bus.
  doc["desired"] = json::object();
  ASSERT_TRUE(store_->put_value(key, doc).ok());
  ASSERT_TRUE(
      wait_until([&] { return watch_->stats().desired_published > after.desired_published; }, 5s));
  // Nothing retained: mosquitto_sub gets no message (-W 5 ends it).
  EXPECT_EQ(desired_seen("pump-1", "pw-1").find("speed"), std::string::npos);
  EXPECT_EQ(watch_->stats().bus_updates, before.bus_updates);
}

TEST_F(TwinPathsTest, ACredentialChangeIsAppliedByReload) {
  put_device("pump-1", "pw-old", json{{"speed", 1}});
  start_watch();
  EXPECT_EQ(desired_seen("pump-1", "pw-old"), R"({"speed":1})");
  const DeviceWatchStats before = watch_->stats();
  const uint64_t reloads = sup_->reloads();

  put_device("pump-1", "pw-new", json{{"speed", 1}});
  ASSERT_TRUE(wait_until(
      [&] {
        return sup_->reloads() > reloads && watch_->stats().bus_updates >= before.bus_updates + 1;
      },
      10s));
  EXPECT_EQ(watch_->stats().bus_updates, before.bus_updates + 1);
  EXPECT_EQ(desired_seen("pump-1", "pw-new"), R"({"speed":1})");
  EXPECT_NE(desired_seen("pump-1", "pw-old"), R"({"speed":1})");

  // A new device: a bus update, and its desired published once it can connect.
  put_device("pump-2", "pw-2", json{{"mode", "eco"}});
  // (known() turns true as the pass takes the document, before its bus update.)
  ASSERT_TRUE(wait_until(
      [&] {
        return watch_->known("acme", "pump-2") &&
               watch_->stats().bus_updates >= before.bus_updates + 2;
      },
      10s));
  EXPECT_EQ(watch_->stats().bus_updates, before.bus_updates + 2);
  EXPECT_EQ(desired_seen("pump-2", "pw-2"), R"({"mode":"eco"})");

  // Deleted: its retained desired is cleared and its user removed.
  ASSERT_TRUE(store_->remove(model::device_key(kSite, "acme", "pump-2")).ok());
  ASSERT_TRUE(wait_until(
      [&] {
        return !watch_->known("acme", "pump-2") &&
               watch_->stats().bus_updates >= before.bus_updates + 3;
      },
      10s));
  EXPECT_EQ(watch_->stats().bus_updates, before.bus_updates + 3);
  EXPECT_NE(desired_seen("pump-2", "pw-2"), R"({"mode":"eco"})");
  EXPECT_EQ(desired_seen("pump-1", "pw-new"), R"({"speed":1})");
}

TEST_F(TwinPathsTest, AQuietDevicesReportIsWrittenAtOnceAndABurstCoalesced) {
  put_device("pump-1", "pw-1", json::object());
  start_watch();
  TwinReportOptions o;
  o.nats_url = sup_->client_url();
  o.user = kSpokeUser;
  o.password = spoke_password_;
  o.site = kSite;
  // Long, so that "at once" and "at the interval's end" differ, and so that
  // a loaded machine (sanitizers, CI) still takes the whole burst below
  // inside one interval.
  o.interval = 10s;
  auto r = TwinReports::start(store_.get(), o, [this](std::string_view t, std::string_view d) {
    return watch_->known(t, d);
  });
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  reports_ = std::move(*r);

  // A report in the spoke's account, as the tenant's export delivers it.
  natsConnection* nc = nullptr;
  natsOptions* no = nullptr;
  ASSERT_EQ(natsOptions_Create(&no), NATS_OK);
  natsOptions_SetURL(no, o.nats_url.c_str());
  natsOptions_SetUserInfo(no, kSpokeUser, spoke_password_.c_str());
  ASSERT_EQ(natsConnection_Connect(&nc, no), NATS_OK);
  natsOptions_Destroy(no);
  const std::string subject = "t.acme.d.pump-1.reported";
  auto report = [&](const json& fields) {
    const std::string p = fields.dump();
    ASSERT_EQ(natsConnection_Publish(nc, subject.c_str(), p.data(), static_cast<int>(p.size())),
              NATS_OK);
    ASSERT_EQ(natsConnection_Flush(nc), NATS_OK);
  };
  const std::string key = model::reported_key(kSite, "acme", "pump-1");
  auto value_of = [&](const std::string& field) -> json {
    auto got = store_->get(key);
    if (!got.ok()) return nullptr;
    const json doc = json::parse(*got);
    return doc.contains(field) ? doc[field]["value"] : json(nullptr);
  };

  // The device is known at the site (its document applied) before it reports.
  ASSERT_TRUE(wait_until([&] { return watch_->known("acme", "pump-1"); }, 10s));
  // Written well before the interval could have ended.
  const auto sent = std::chrono::steady_clock::now();
  report({{"temp", 20}});
  // The stats are counted just after the store commit, so both are awaited.
  ASSERT_TRUE(wait_until(
      [&] { return value_of("temp") == json(20) && reports_->stats().writes == 1u; }, 4s))
      << reports_->stats().writes << " writes, " << reports_->stats().accepted << " accepted, "
      << reports_->stats().refused_unknown << " refused as unknown";
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 4s);

  // A burst inside the interval: nothing written until it ends, then one
  // write with the latest values.
  for (int i = 21; i <= 80; ++i) report({{"temp", i}, {"door", i % 2 == 0 ? "open" : "shut"}});
  ASSERT_TRUE(wait_until([&] { return reports_->stats().accepted == 61; }, 4s));
  EXPECT_EQ(reports_->stats().writes, 1u);
  EXPECT_EQ(value_of("temp"), json(20));
  ASSERT_TRUE(wait_until(
      [&] { return value_of("temp") == json(80) && reports_->stats().writes >= 2u; }, 15s))
      << reports_->stats().writes;
  EXPECT_EQ(value_of("door"), json("open"));
  EXPECT_EQ(reports_->stats().writes, 2u);

  natsConnection_Destroy(nc);
}

// Many devices' reports due at once are written in a few store commits
// (Store::put_values), each device's document still its own write.
TEST_F(TwinPathsTest, ReportsDueTogetherShareStoreCommits) {
  TwinReportOptions o;
  o.nats_url = sup_->client_url();
  o.user = kSpokeUser;
  o.password = spoke_password_;
  o.site = kSite;
  o.interval = 5s;
  auto r =
      TwinReports::start(store_.get(), o, [](std::string_view, std::string_view) { return true; });
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  reports_ = std::move(*r);
  const uint64_t index = store_->last_log_index();
  constexpr int kDevices = 2000;
  for (int i = 0; i < kDevices; ++i) {
    reports_->ingest("t.acme.d.dev-" + std::to_string(i) + ".reported", json{{"temp", i}}.dump(),
                     1'000'000 + static_cast<uint64_t>(i));
  }
  ASSERT_TRUE(wait_until([&] { return reports_->stats().writes == kDevices; }, 20s))
      << reports_->stats().writes;
  const TwinReportStats st = reports_->stats();
  EXPECT_EQ(st.write_failures, 0u);
  EXPECT_LE(st.commits, static_cast<uint64_t>(kDevices / 4)) << "one commit per device or so";
  EXPECT_GE(st.commits, static_cast<uint64_t>(kDevices / 512));
  EXPECT_EQ(store_->last_log_index(), index + kDevices) << "each device its own write";
  auto doc = store_->get(model::reported_key(kSite, "acme", "dev-1999"));
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(json::parse(*doc)["temp"]["value"], 1999);
}

}  // namespace
}  // namespace canopy::spoke::bus

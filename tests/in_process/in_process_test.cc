// A hub and several spokes in one process: the Hub and Spoke objects with a
// real nats-server and real RocksDB directories, as the binaries compose them
// but without processes. A placement written at the hub reaches exactly the
// spokes it selects, their status flows up into the hub's status aggregate,
// and the api/ HTTP servers answer over the same objects.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "api/http_server.h"
#include "api/hub_http.h"
#include "api/spoke_http.h"
#include "hub/hub.h"
#include "model/documents.h"
#include "model/keys.h"
#include "spoke/spoke.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr auto kTimeout = 20s;

json config_map(const std::string& name) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", "shop"}}},
          {"data", {{"greeting", "hello"}}}};
}

// Manifest files a spoke wrote (k3s ignores dot files: temporaries).
size_t manifest_files(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file() && !e.path().filename().string().starts_with(".")) ++n;
  }
  return n;
}

class InProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(nats_.start(&error)) << error;
    hub::HubConfig hc;
    hc.name = "hub";
    hc.data_dir = dir_.file("hub");
    hc.nats_urls = {nats_.url()};
    hc.durability = Durability::kNone;
    hub_ = std::make_unique<hub::Hub>(hc);
    ASSERT_TRUE(hub_->start().ok());
  }

  spoke::Spoke* add_spoke(const std::string& site, const std::string& region) {
    spoke::SpokeConfig sc;
    sc.site = site;
    sc.labels = {{"region", region}};
    sc.data_dir = dir_.file(site + "-data");
    sc.manifests_dir = dir_.file(site + "-manifests");
    std::filesystem::create_directories(sc.manifests_dir);
    sc.nats_urls = {nats_.url()};
    sc.durability = Durability::kNone;
    spokes_.push_back(std::make_unique<spoke::Spoke>(sc));
    Status s = spokes_.back()->start();
    EXPECT_TRUE(s.ok()) << s.to_string();
    return spokes_.back().get();
  }

  StatusOr<v1::GetStatusResponse> status(const std::string& placement) {
    return hub_->status()->placement_status("acme", placement, "", 100);
  }

  canopy::testing::TempDir dir_;
  canopy::testing::NatsServer nats_;
  std::unique_ptr<hub::Hub> hub_;
  std::vector<std::unique_ptr<spoke::Spoke>> spokes_;
};

TEST_F(InProcessTest, PlacementReachesTheSelectedSpokesAndStatusFlowsUp) {
  spoke::Spoke* eu1 = add_spoke("eu-1", "eu");
  spoke::Spoke* eu2 = add_spoke("eu-2", "eu");
  spoke::Spoke* us1 = add_spoke("us-1", "us");
  ASSERT_TRUE(canopy::testing::wait_until([&] { return hub_->index()->known_sites().size() == 3; },
                                          kTimeout))
      << "the sites never registered";

  Store* store = hub_->store();
  ASSERT_TRUE(store->put_value(model::grant_key("acme", "all"), {{"allSites", true}}).ok());
  ASSERT_TRUE(
      store->put_value(model::template_key("acme", "greeting"), config_map("greeting")).ok());
  ASSERT_TRUE(store
                  ->put_value(model::placement_key("acme", "eu"),
                              {{"templates", {"greeting"}},
                               {"selector", {{"matchLabels", {{"region", "eu"}}}}}})
                  .ok());

  ASSERT_TRUE(canopy::testing::wait_until(
      [&] {
        auto st = status("eu");
        return st.ok() && st->targeted() == 2 && st->applied() == 2;
      },
      kTimeout))
      << "the hub never saw both eu sites applied";
  EXPECT_EQ(manifest_files(eu1->config().manifests_dir), 1u);
  EXPECT_EQ(manifest_files(eu2->config().manifests_dir), 1u);
  EXPECT_EQ(manifest_files(us1->config().manifests_dir), 0u);
  EXPECT_TRUE(eu1->health().in_sync || eu1->health().session_open);
  EXPECT_EQ(eu1->health().objects, 1u);

  // The api/ servers over the same objects.
  api::HttpServer hub_http, spoke_http;
  api::add_hub_routes(hub_http.server(), hub_.get());
  api::add_spoke_routes(spoke_http.server(), eu1);
  ASSERT_TRUE(hub_http.start("127.0.0.1:0").ok());
  ASSERT_TRUE(spoke_http.start("127.0.0.1:0").ok());
  httplib::Client hub_client("127.0.0.1", hub_http.port());
  auto res = hub_client.Get("/v1/sessions");
  ASSERT_TRUE(res);
  const json sessions = json::parse(res->body);
  EXPECT_EQ(sessions.size(), 3u);
  for (const json& s : sessions) {
    EXPECT_TRUE(s.contains("acked_index") && s.contains("unacked")) << s.dump();
  }
  httplib::Client spoke_client("127.0.0.1", spoke_http.port());
  res = spoke_client.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body).value("site", ""), "eu-1");
  res = spoke_client.Get("/v1/status");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body).size(), 1u);
  spoke_http.stop();
  hub_http.stop();
  hub_http.stop();  // idempotent
}

// Two hubs of one level (active-active) and a site that moves from one to
// the other. The hub it left, once its session there goes away, must not
// write "disconnected" over the presence the other hub wrote: it reads a
// site's presence again when a commit from its peer changed it (not every
// site's every second).
TEST_F(InProcessTest, APeerDoesNotOverwriteThePresenceOfASiteThatMovedAway) {
  hub_->stop();
  auto make_hub = [&](const std::string& name, const std::string& peer) {
    hub::HubConfig hc;
    hc.name = name;
    hc.peers = peer;
    hc.data_dir = dir_.file(name);
    hc.nats_urls = {nats_.url()};
    hc.durability = Durability::kNone;
    hc.away_after_s = 3;  // over the spoke's 2 s heartbeat
    auto h = std::make_unique<hub::Hub>(hc);
    Status st = h->start();
    EXPECT_TRUE(st.ok()) << st.to_string();
    return h;
  };
  auto a = make_hub("hub-a", "hub-b");
  auto b = make_hub("hub-b", "hub-a");
  auto presence = [](hub::Hub* h) -> std::optional<model::SitePresence> {
    auto raw = h->store()->get(model::presence_key("s1"));
    if (!raw.ok()) return std::nullopt;
    auto p = model::parse_presence(json::parse(*raw, nullptr, false));
    return p.ok() ? std::optional<model::SitePresence>(*p) : std::nullopt;
  };
  auto is = [&](hub::Hub* h, const std::string& by, bool connected) {
    auto p = presence(h);
    return p && p->hub == by && p->connected == connected;
  };
  auto start_spoke = [&](const std::string& parent) {
    spoke::SpokeConfig sc;
    sc.site = "s1";
    sc.parent = parent;
    sc.data_dir = dir_.file("s1-data");
    sc.manifests_dir = dir_.file("s1-manifests");
    std::filesystem::create_directories(sc.manifests_dir);
    sc.nats_urls = {nats_.url()};
    sc.durability = Durability::kNone;
    auto sp = std::make_unique<spoke::Spoke>(sc);
    Status st = sp->start();
    EXPECT_TRUE(st.ok()) << st.to_string();
    return sp;
  };

  auto on_a = start_spoke("hub-a");
  ASSERT_TRUE(canopy::testing::wait_until(
      [&] { return is(a.get(), "hub-a", true) && is(b.get(), "hub-a", true); }, kTimeout))
      << "hub-a never wrote the site's presence, or it never reached hub-b";
  on_a->stop();
  on_a.reset();
  auto on_b = start_spoke("hub-b");
  ASSERT_TRUE(canopy::testing::wait_until(
      [&] { return is(a.get(), "hub-b", true) && is(b.get(), "hub-b", true); }, kTimeout))
      << "hub-b's presence of the site never stood at both hubs";
  // hub-a's session with the site goes away after away_after_s (3 s), and
  // its presence thread looks every second: give it three more.
  std::this_thread::sleep_for(6s);
  EXPECT_TRUE(is(a.get(), "hub-b", true)) << presence(a.get())->hub;
  EXPECT_TRUE(is(b.get(), "hub-b", true)) << presence(b.get())->hub;
  on_b->stop();
  b->stop();
  a->stop();
}

TEST_F(InProcessTest, StopIsIdempotentAndAFailedStartCleansUp) {
  spoke::Spoke* s = add_spoke("eu-1", "eu");
  s->stop();
  s->stop();
  hub_->stop();
  hub_->stop();

  // A spoke whose manifests directory is a file fails at start, after its
  // store opened, and closes the store again.
  spoke::SpokeConfig sc;
  sc.site = "broken";
  sc.data_dir = dir_.file("broken-data");
  sc.manifests_dir = dir_.file("a-file");
  { std::ofstream(sc.manifests_dir) << "not a directory"; }
  sc.nats_urls = {nats_.url()};
  spoke::Spoke broken(sc);
  EXPECT_FALSE(broken.start().ok());
  broken.stop();
}

}  // namespace
}  // namespace canopy

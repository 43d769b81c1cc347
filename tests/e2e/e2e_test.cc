// End-to-end tests of Canopy with the real parts: a real nats-server, the real
// canopy-hub and canopy-spoke binaries (CANOPY_HUB_BIN, CANOPY_SPOKE_BIN) on
// free loopback ports, each with its own data (RocksDB) and manifests
// directories, killed (SIGKILL) and restarted on the same directories.
//
// Every TEST starts its own nats-server and daemons, so the tests are
// independent and may run in any order or alone. The hub is driven through
// its gRPC Catalog API and observed through /healthz, /v1/sessions and
// GetStatus; a spoke is observed through its manifests directory (what k3s
// would deploy) and its local API (/healthz, /v1/status, /v1/overrides).
// Hostile bytes and large writes on the bus are in bus_e2e_test.cc.
//
// On a failure, the tails of every daemon's log are printed.
#include "store/store.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/support/small_disk.h"

namespace canopy::e2e {
namespace {

// 1. A placement reaches the sites it selects and no other; the status the
// spoke writes flows up and the hub aggregates it.
TEST_F(E2ETest, PlacementReachesSelectedSitesOnlyAndStatusFlowsUp) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
  Spoke& us = create_spoke("us-1", {{"region", "us"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));
  ASSERT_NO_FATAL_FAILURE(launch_spoke(us));

  // Both sites registered themselves at the hub, with their labels.
  ASSERT_TRUE(wait_until(
      [&] {
        auto sites = list("site");
        return sites && sites->count("eu-1") && sites->count("us-1") &&
               (*sites)["eu-1"]["labels"].value("region", "") == "eu" &&
               (*sites)["us-1"]["labels"].value("region", "") == "us";
      },
      kTimeout, kPoll));

  const json web = deployment("web", 2, "nginx:1.27");
  ASSERT_TRUE(put("template", "web", web).ok());
  ASSERT_TRUE(put("placement", "web-eu", placement_by_region({"web"}, "eu")).ok());

  ASSERT_TRUE(
      wait_until([&] { return eu.read().count(template_key("web")) == 1; }, kTimeout, kPoll))
      << "eu-1 never got the manifest";
  const auto eu_files = eu.read();
  ASSERT_EQ(eu_files.size(), 1u);
  const Manifest& m = eu_files.at(template_key("web"));
  EXPECT_EQ(m.object["kind"], "Deployment");
  EXPECT_EQ(m.object["metadata"]["name"], "web");
  EXPECT_EQ(m.object["spec"], web["spec"]);
  EXPECT_EQ(m.object["metadata"]["labels"].value("app.kubernetes.io/managed-by", ""), "canopy");
  EXPECT_FALSE(m.hash().empty());

  // A grace period for anything misrouted to arrive: us-1 gets nothing.
  std::this_thread::sleep_for(1500ms);
  EXPECT_TRUE(us.read().empty()) << "us-1 received a manifest it is not targeted by";
  auto us_health = spoke_health(us);
  ASSERT_TRUE(us_health);
  EXPECT_EQ(us_health->value("objects", -1), 0);

  // Status flows up: the hub shows eu-1 applied with the hash of the file.
  ASSERT_TRUE(wait_hub_applied("web-eu", "eu-1", "web", m.hash()))
      << "the hub never saw eu-1's status";
  auto st = get_status("web-eu");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->targeted(), 1u);
  EXPECT_EQ(st->applied(), 1u);
  EXPECT_EQ(st->failed(), 0u);
  ASSERT_EQ(st->sites_size(), 1);
  EXPECT_EQ(st->sites(0).site(), "eu-1");
  EXPECT_EQ(st->sites(0).state(), "applied");
  // The spoke's own status document says the same.
  auto local = spoke_status(eu, "web");
  ASSERT_TRUE(local);
  EXPECT_EQ(local->value("outcome", ""), "applied");
  EXPECT_EQ(local->value("hash", ""), m.hash());
  EXPECT_EQ(local->value("file", ""), m.file);
}

// 1b. A placement that moves away from a site: the new site gets the object,
// the old one removes it (its file becomes a tombstone) promptly.
//
// BUG (store/store.cc Store::Impl::drop, spoke/spoke.cc): keys that leave a
// site's scope reach the spoke as `Changes.drop`; ChildSync::apply_changes
// removes them with Store::drop, which commits without a log entry and
// without calling the store's listeners. The spoke reconciles only when a
// listener fires or every resync_seconds (30 s by default), so the object of
// a placement that no longer targets the site stays deployed for up to 30 s
// (observed: removed after ~30 s, by the periodic resync). Expected: removed
// as soon as the drop arrives, like any other change.
// The failure depends on timing: if the old site also receives the
// placement's own delta (presumably when the hub's sync thread routes the
// commit, ParentSync::on_commit -> children_for, before the placement index
// has moved the scope), that delta does fire the spoke's listener and the
// object goes at once. Seen under load (2 of 3 runs passed); on an idle
// machine the drop arrives alone and the test fails every time.
TEST_F(E2ETest, PlacementMovedAwayIsRemovedFromTheOldSite) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
  Spoke& us = create_spoke("us-1", {{"region", "us"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));
  ASSERT_NO_FATAL_FAILURE(launch_spoke(us));
  const json web = deployment("web", 2, "nginx:1.27");
  ASSERT_TRUE(put("template", "web", web).ok());
  ASSERT_TRUE(put("placement", "web-eu", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(
      wait_until([&] { return eu.read().count(template_key("web")) == 1; }, kTimeout, kPoll));
  ASSERT_TRUE(wait_hub_applied("web-eu", "eu-1", "web"));

  ASSERT_TRUE(put("placement", "web-eu", placement_by_region({"web"}, "us")).ok());
  ASSERT_TRUE(wait_until(
      [&] {
        auto us_files = us.read();
        return us_files.size() == 1 && us_files.count(template_key("web")) &&
               us_files.at(template_key("web")).object["spec"] == web["spec"];
      },
      kTimeout, kPoll))
      << "us-1 did not get the object";
  ASSERT_TRUE(wait_until(
      [&] {
        auto s = get_status("web-eu");
        return s && s->targeted() == 1 && s->applied() == 1 && s->sites_size() == 1 &&
               s->sites(0).site() == "us-1";
      },
      kTimeout, kPoll));
  // Well under the spoke's 30 s periodic resync: see BUG above.
  EXPECT_TRUE(wait_until([&] { return eu.read().empty(); }, 15s, kPoll))
      << "eu-1 still deploys the object of a placement that no longer targets it";
}

// 1c. A new hub writes one fleet-admin token to <data>/admin.token (0600),
// logs only that path, and refuses calls without it; a restart keeps it.
TEST_F(E2ETest, HubWritesItsFirstAdminTokenAndRefusesCallsWithoutOne) {
  Hub& h = create_hub();
  launch_hub();
  const std::string path = h.data() + "/admin.token";
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string first = h.admin_token();
  ASSERT_EQ(first.rfind("canopy_", 0), 0u) << first;
  const std::string log = read_file(h.log_path());
  EXPECT_NE(log.find("wrote a fleet-admin API token to " + path), std::string::npos) << log;
  EXPECT_EQ(log.find(first.substr(24)), std::string::npos) << "the token's secret is in the log";

  ASSERT_TRUE(put(stub_.get(), "template", "web", deployment("web", 1, "nginx:1.27")).ok());
  for (const std::string& bad : {std::string(), first + "x", std::string("canopy_nope")}) {
    token_ = bad;
    grpc::Status st;
    EXPECT_FALSE(get("template", "web", &st).has_value());
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  }

  kill_hub();
  launch_hub();
  EXPECT_EQ(h.admin_token(), first) << "a restart must not issue another token";
  EXPECT_TRUE(get("template", "web").has_value());
}

// 2. A spoke killed while the hub's state changes catches up when it returns.
TEST_F(E2ETest, KilledSpokeCatchesUpAfterRestart) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));

  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.26")).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(
      wait_until([&] { return eu.read().count(template_key("web")) == 1; }, kTimeout, kPoll));
  const std::string old_hash = eu.read().at(template_key("web")).hash();

  ASSERT_NO_FATAL_FAILURE(kill_spoke(eu));
  // While it is down: the template changes, a second one joins the placement.
  const json web2 = deployment("web", 3, "nginx:1.27");
  const json api = deployment("api", 2, "shop/api:7");
  ASSERT_TRUE(put("template", "web", web2).ok());
  ASSERT_TRUE(put("template", "api", api).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web", "api"}, "eu")).ok());
  // The old file is still what the (dead) spoke left.
  EXPECT_EQ(eu.read().at(template_key("web")).hash(), old_hash);

  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu, /*expect_session=*/false));
  ASSERT_TRUE(wait_until(
      [&] {
        auto files = eu.read();
        return files.size() == 2 && files.count(template_key("web")) &&
               files.count(template_key("api")) &&
               files.at(template_key("web")).object["spec"] == web2["spec"] &&
               files.at(template_key("api")).object["spec"] == api["spec"];
      },
      kTimeout, kPoll))
      << "eu-1 did not catch up";
  const auto files = eu.read();
  EXPECT_NE(files.at(template_key("web")).hash(), old_hash);

  // And its status for both flows up, with the hashes of the new files.
  const bool status_up = wait_until(
      [&] {
        auto st = get_status("shop");
        if (!st || st->applied() != 1 || st->sites_size() != 1) return false;
        for (const std::string t : {"web", "api"}) {
          auto hs = hub_template_status("shop", "eu-1", t);
          if (!hs || hs->first != "applied" || hs->second != files.at(template_key(t)).hash())
            return false;
        }
        return true;
      },
      kTimeout, kPoll);
  EXPECT_TRUE(status_up) << "the hub does not show eu-1's new status";
}

// 2c. A site's disk fills up (its data directory is a tmpfs of 16 MB, mounted
// for the test; where it cannot be, the test says so and is skipped): the
// spoke keeps what it applied, says why it is not ready, does not make the
// hub send the same changes again and again, and once the disk has room
// again takes the change and reports it, with no restart.
TEST_F(E2ETest, ASpokeWhoseDiskFillsKeepsWhatItAppliedAndCatchesUpAfter) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
  fs::create_directories(eu.data());
  testing::SmallDisk disk;
  if (std::string why = disk.mount(eu.data(), "16m"); !why.empty()) GTEST_SKIP() << why;
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.26")).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(
      wait_until([&] { return eu.read().count(template_key("web")) == 1; }, kTimeout, kPoll));
  const std::string old_hash = eu.read().at(template_key("web")).hash();

  ASSERT_EQ(disk.fill(0), "");
  // A change larger than what is left of any page the store's files hold.
  json web2 = deployment("web", 3, "nginx:1.27");
  web2["metadata"]["annotations"] = {{"note", std::string(200'000, 'n')}};
  ASSERT_TRUE(put("template", "web", web2).ok());
  ASSERT_TRUE(wait_spoke_health(eu, "store_writable", false))
      << "the spoke never said its store cannot write";
  auto h = spoke_health(eu);
  ASSERT_TRUE(h.has_value());
  // Its store's reserve (4.25 MiB for a spoke) refuses the write before
  // RocksDB meets the full disk.
  EXPECT_NE(h->value("store_error", "").find("below the store's reserve of 4.2 MiB"),
            std::string::npos)
      << h->dump();
  httplib::Client cli("127.0.0.1", eu.health_port);
  auto ready = cli.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  EXPECT_NE(ready->body.find("the store cannot write"), std::string::npos) << ready->body;
  // Ten seconds with a full disk: what was applied stays, and the spoke
  // backs off (without it, a new session at once after each failure: hundreds).
  std::this_thread::sleep_for(10s);
  EXPECT_EQ(eu.read().at(template_key("web")).hash(), old_hash);
  const std::string log = read_file(eu.log_path());
  size_t sessions = 0;
  for (size_t at = log.find("a new session in"); at != std::string::npos;
       at = log.find("a new session in", at + 1)) {
    ++sessions;
  }
  EXPECT_GE(sessions, 2u);
  EXPECT_LE(sessions, 20u) << "the spoke did not back off";

  ASSERT_EQ(disk.empty(), "");
  ASSERT_TRUE(wait_until(
      [&] {
        auto files = eu.read();
        return files.count(template_key("web")) == 1 &&
               files.at(template_key("web")).object["spec"] == web2["spec"];
      },
      60s, kPoll))
      << "eu-1 did not take the change once its disk had room";
  const std::string new_hash = eu.read().at(template_key("web")).hash();
  EXPECT_NE(new_hash, old_hash);
  EXPECT_TRUE(wait_hub_applied("shop", "eu-1", "web", new_hash))
      << "the hub does not show eu-1's new status";
  h = spoke_health(eu);
  ASSERT_TRUE(h.has_value());
  EXPECT_TRUE(h->value("store_writable", false)) << h->dump();
  ASSERT_NO_FATAL_FAILURE(kill_spoke(eu));
}

// 2b. A spoke whose data directory an operator puts back from a backup (with
// the restore marker, store/store.h) comes back as a new replica and syncs on:
// its new writes reach the hub, and what it wrote after the backup comes back.
TEST_F(E2ETest, SpokeRestoredFromABackupTakesANewReplicaIdAndSyncsOn) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.26")).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web"}, "eu")).ok());
  auto hub_shows = [&](const std::string& tmpl) {
    return wait_until(
        [&] {
          auto files = eu.read();
          if (!files.count(template_key(tmpl))) return false;
          auto hs = hub_template_status("shop", "eu-1", tmpl);
          return hs && hs->first == "applied" && hs->second == files.at(template_key(tmpl)).hash();
        },
        kTimeout, kPoll);
  };
  ASSERT_TRUE(hub_shows("web"));

  ASSERT_NO_FATAL_FAILURE(kill_spoke(eu));
  const std::string backup = eu.dir.file("backup");
  std::filesystem::copy(eu.data(), backup, std::filesystem::copy_options::recursive);
  // After the backup the spoke writes more: the status of a second template.
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu, /*expect_session=*/false));
  ASSERT_TRUE(put("template", "api", deployment("api", 2, "shop/api:7")).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web", "api"}, "eu")).ok());
  ASSERT_TRUE(hub_shows("api"));

  ASSERT_NO_FATAL_FAILURE(kill_spoke(eu));
  std::filesystem::remove_all(eu.data());
  std::filesystem::copy(backup, eu.data(), std::filesystem::copy_options::recursive);
  std::ofstream(eu.data() + "/" + kRestoredMarker).put('\n');
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu, /*expect_session=*/false));
  EXPECT_TRUE(
      wait_until([&] { return !std::filesystem::exists(eu.data() + "/" + kRestoredMarker); },
                 kTimeout, kPoll));
  EXPECT_NE(read_file(eu.log_path()).find("restored from a backup"), std::string::npos);
  // The restored spoke holds the second template again and writes as its new
  // self: a third template's status reaches the hub.
  ASSERT_TRUE(put("template", "db", deployment("db", 1, "postgres:16")).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web", "api", "db"}, "eu")).ok());
  EXPECT_TRUE(hub_shows("api"));
  EXPECT_TRUE(hub_shows("db")) << "the restored spoke's new writes do not reach the hub";
  EXPECT_EQ(eu.read().size(), 3u);
}

// 3. Cut off from NATS, a spoke keeps serving: its manifests stay, a restart
// re-creates a deleted manifest from its local store, and a local override
// changes the rendered manifest at once; when NATS returns, what it wrote
// while cut off reaches the hub.
TEST_F(E2ETest, SpokeWorksWhileNatsIsDownAndCatchesUpAfter) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));

  const json web = deployment("web", 2, "nginx:1.27");
  ASSERT_TRUE(put("template", "web", web).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(
      wait_until([&] { return eu.read().count(template_key("web")) == 1; }, kTimeout, kPoll));
  const Manifest before = eu.read().at(template_key("web"));
  ASSERT_TRUE(wait_hub_applied("shop", "eu-1", "web", before.hash()));

  // The bus goes away.
  nats_->kill();
  ASSERT_TRUE(wait_spoke_health(eu, "nats_connected", false))
      << "the spoke does not notice NATS is gone";
  EXPECT_EQ(eu.read().at(template_key("web")).object, before.object);
  // The hub keeps running too.
  auto hub_health = http_get_json(hub_->health_port, "/healthz");
  ASSERT_TRUE(hub_health);
  EXPECT_FALSE(hub_health->value("nats_connected", true));

  // A manifest deleted behind the spoke's back comes back from its local
  // store when the spoke restarts, still cut off.
  ASSERT_TRUE(fs::remove(fs::path(eu.manifests()) / before.file));
  ASSERT_NO_FATAL_FAILURE(kill_spoke(eu));
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu, /*expect_session=*/false));
  ASSERT_TRUE(
      wait_until([&] { return eu.read().count(template_key("web")) == 1; }, kTimeout, kPoll))
      << "the restarted spoke did not re-create the manifest from its store";
  EXPECT_EQ(eu.read().at(template_key("web")).object, before.object);
  EXPECT_EQ(eu.read().at(template_key("web")).file, before.file);

  // A local override while cut off changes the manifest at once.
  {
    httplib::Client cli("127.0.0.1", eu.health_port);
    cli.set_connection_timeout(2, 0);
    cli.set_read_timeout(5, 0);
    auto res = cli.Put("/v1/overrides/acme/web", R"({"spec":{"replicas":5}})", "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    // Bad input at the local API: refused with a reason, nothing written.
    auto bad = cli.Put("/v1/overrides/acme/web", "[1,2]", "application/json");
    ASSERT_TRUE(bad);
    EXPECT_EQ(bad->status, 400);
    EXPECT_NE(bad->body.find("merge patch"), std::string::npos) << bad->body;
    auto bad_name = cli.Put("/v1/overrides/ACME/web", "{}", "application/json");
    ASSERT_TRUE(bad_name);
    EXPECT_EQ(bad_name->status, 400);
  }
  std::string new_hash;
  ASSERT_TRUE(wait_until(
      [&] {
        auto files = eu.read();
        if (!files.count(template_key("web"))) return false;
        const Manifest& m = files.at(template_key("web"));
        if (m.object["spec"].value("replicas", 0) != 5) return false;
        new_hash = m.hash();
        return true;
      },
      kTimeout, kPoll))
      << "the local override did not change the manifest";
  EXPECT_NE(new_hash, before.hash());
  // The rest of the template is untouched by the patch.
  EXPECT_EQ(eu.read().at(template_key("web")).object["spec"]["template"], web["spec"]["template"]);
  // The spoke's status document records the new hash.
  ASSERT_TRUE(wait_until(
      [&] {
        auto st = spoke_status(eu, "web");
        return st && st->value("hash", "") == new_hash && st->value("outcome", "") == "applied";
      },
      kTimeout, kPoll));
  // The hub, cut off, still has the old one.
  auto hs = hub_template_status("shop", "eu-1", "web");
  ASSERT_TRUE(hs);
  EXPECT_EQ(hs->second, before.hash());

  // The bus returns on the same port: the new status reaches the hub.
  std::string err;
  ASSERT_TRUE(nats_->start(&err)) << err;
  ASSERT_TRUE(wait_until(
      [&] {
        auto h = spoke_health(eu);
        return h && h->value("nats_connected", false) && h->value("in_sync", false);
      },
      kTimeout, kPoll))
      << "the spoke did not resync after NATS returned";
  ASSERT_TRUE(wait_hub_applied("shop", "eu-1", "web", new_hash))
      << "the status written while cut off never reached the hub";
  // The override is still in force at the spoke after the resync.
  EXPECT_EQ(eu.read().at(template_key("web")).object["spec"].value("replicas", 0), 5);

  // Removing the local override, now connected, restores the template as the
  // hub has it, at the site and in the hub's status.
  {
    httplib::Client cli("127.0.0.1", eu.health_port);
    cli.set_read_timeout(5, 0);
    auto res = cli.Delete("/v1/overrides/acme/web");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
  }
  ASSERT_TRUE(wait_until(
      [&] {
        auto files = eu.read();
        return files.count(template_key("web")) &&
               files.at(template_key("web")).object == before.object;
      },
      kTimeout, kPoll))
      << "removing the local override did not restore the manifest";
  ASSERT_TRUE(wait_hub_applied("shop", "eu-1", "web", before.hash()))
      << "the hub does not see the restored manifest";
}

// 4. The hub is SIGKILLed in the middle of a stream of writes: every write it
// acknowledged survives, and the spoke converges to the final state.
TEST_F(E2ETest, HubKilledDuringWritesLosesNoAcknowledgedWrite) {
  constexpr int kN = 200;
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& eu = create_spoke("eu-1", {{"region", "eu"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu));

  auto name_of = [](int i) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "t-%03d", i);
    return std::string(buf);
  };
  auto config_map = [&](int i) {
    return json{{"apiVersion", "v1"},
                {"kind", "ConfigMap"},
                {"metadata", {{"name", name_of(i)}, {"namespace", "shop"}}},
                {"data", {{"index", std::to_string(i)}, {"payload", std::string(200, 'x')}}}};
  };
  std::vector<std::string> names;
  for (int i = 0; i < kN; ++i) names.push_back(name_of(i));
  // The placement names every template from the start: the spoke follows the
  // stream live (templates not yet written fail to render until they are).
  ASSERT_TRUE(put("placement", "bulk", placement_by_region(names, "eu")).ok());

  // The writer: its own channel, made anew after a failure (gRPC's reconnect
  // backoff would otherwise keep it failing for seconds after the hub is back).
  auto writer_stub = make_stub(hub_->grpc_port);
  std::vector<std::atomic<bool>> acked(kN);
  std::atomic<int> acked_count{0};
  std::atomic<int> attempted{0};
  std::thread writer([&] {
    for (int i = 0; i < kN; ++i) {
      grpc::Status st = put(writer_stub.get(), "template", name_of(i), config_map(i));
      attempted = i + 1;
      if (st.ok()) {
        acked[i] = true;
        ++acked_count;
      } else {
        std::this_thread::sleep_for(20ms);  // the hub is down: keep the stream going slowly
        writer_stub = make_stub(hub_->grpc_port);
      }
    }
  });

  // Kill the hub when about a third of the stream is acknowledged.
  const bool midway = wait_until([&] { return acked_count.load() >= kN / 3; }, kTimeout, 5ms);
  if (midway) kill_hub();
  const int acked_before_kill = acked_count.load();
  const int attempted_before_kill = attempted.load();
  if (midway) launch_hub();
  writer.join();
  ASSERT_TRUE(midway) << "the writer never got a third of the way";
  ASSERT_FALSE(HasFatalFailure());
  std::cerr << "acknowledged before the kill: " << acked_before_kill << " of "
            << attempted_before_kill << " attempted; in total " << acked_count.load() << " of "
            << kN << "\n";
  EXPECT_LT(attempted_before_kill, kN) << "the kill did not land mid-stream";

  // Every acknowledged write is there, with the content that was written.
  auto listed = list("template");
  ASSERT_TRUE(listed);
  for (int i = 0; i < kN; ++i) {
    if (!acked[i]) continue;
    grpc::Status st;
    auto doc = get("template", name_of(i), &st);
    ASSERT_TRUE(doc) << name_of(i) << " was acknowledged but is lost: " << st.error_message();
    EXPECT_EQ(*doc, config_map(i)) << name_of(i);
    EXPECT_TRUE(listed->count(name_of(i))) << name_of(i) << " missing from List";
  }

  // Complete the stream (writes that failed while the hub was down), then the
  // spoke must converge to all of it.
  for (int i = 0; i < kN; ++i) {
    if (!listed->count(name_of(i))) {
      grpc::Status st = put("template", name_of(i), config_map(i));
      ASSERT_TRUE(st.ok()) << name_of(i) << ": " << st.error_message();
    }
  }
  ASSERT_TRUE(wait_until(
      [&] {
        auto files = eu.read();
        if (files.size() != static_cast<size_t>(kN)) return false;
        for (int i = 0; i < kN; ++i) {
          auto it = files.find(template_key(name_of(i)));
          if (it == files.end() || it->second.object["data"] != config_map(i)["data"]) return false;
        }
        return true;
      },
      kTimeout * 2, 200ms))
      << "the spoke did not converge: it holds " << eu.read().size() << " of " << kN;
  // And the status of all of them reaches the restarted hub.
  ASSERT_TRUE(wait_until(
      [&] {
        auto st = get_status("bulk");
        return st && st->applied() == 1 && st->sites_size() == 1;
      },
      kTimeout * 2, 200ms))
      << "the restarted hub does not see every template applied at eu-1";
  auto files = eu.read();
  auto st = get_status("bulk");
  ASSERT_TRUE(st);
  ASSERT_EQ(st->sites(0).templates_size(), kN);
  for (const auto& t : st->sites(0).templates()) {
    EXPECT_EQ(t.outcome(), "applied") << t.template_();
    EXPECT_EQ(t.hash(), files.at(template_key(t.template_())).hash()) << t.template_();
  }
}

// 6. Configuration errors: exit code 2 and a stderr line naming the problem;
// --version prints the version and exits 0.
struct RunResult {
  int status = -1;
  std::string output;
};

RunResult run_to_exit(const std::vector<std::string>& argv, const TempDir& dir) {
  static int counter = 0;
  const std::string log = dir.file("run-" + std::to_string(++counter) + ".log");
  Process p;
  ProcessOptions po;
  po.log_path = log;
  std::string err;
  RunResult r;
  if (!p.start(argv, po, &err)) {
    r.output = "cannot start: " + err;
    return r;
  }
  auto status = p.wait_exit(15s);
  if (!status) {
    p.kill(SIGKILL);
    r.output = "did not exit; output: " + read_file(log);
    return r;
  }
  r.status = *status;
  r.output = read_file(log);
  return r;
}

void expect_exit(const RunResult& r, int code, const std::string& needle, const std::string& what) {
  ASSERT_TRUE(WIFEXITED(r.status))
      << what << ": " << canopy::testing::describe_wait_status(r.status) << "\n"
      << r.output;
  EXPECT_EQ(WEXITSTATUS(r.status), code) << what << ": " << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos)
      << what << ": output does not mention \"" << needle << "\":\n"
      << r.output;
}

TEST(E2EConfigTest, BadConfigurationExitsWithCode2AndSaysWhy) {
  TempDir dir("canopy-e2e-config-");
  const std::string hub = CANOPY_HUB_BIN, spoke = CANOPY_SPOKE_BIN;
  const std::string data = dir.file("data");
  const std::string nats = "nats://127.0.0.1:1";  // never reached: config fails first

  // --version.
  {
    auto r = run_to_exit({hub, "--version"}, dir);
    ASSERT_NO_FATAL_FAILURE(expect_exit(r, 0, "canopy-hub ", "hub --version"));
    EXPECT_NE(r.output.find_first_of("0123456789"), std::string::npos) << r.output;
    r = run_to_exit({spoke, "--version"}, dir);
    ASSERT_NO_FATAL_FAILURE(expect_exit(r, 0, "canopy-spoke ", "spoke --version"));
    EXPECT_NE(r.output.find_first_of("0123456789"), std::string::npos) << r.output;
  }

  // Hub: a bad name.
  expect_exit(run_to_exit({hub, "--name", "Bad_Name", "--data", data, "--nats", nats}, dir), 2,
              "name", "hub --name Bad_Name");
  expect_exit(run_to_exit({hub, "--name", "Bad_Name", "--data", data, "--nats", nats}, dir), 2,
              "Bad_Name", "hub --name Bad_Name (names the value)");
  // Hub: no data directory.
  expect_exit(run_to_exit({hub, "--name", "hub", "--nats", nats}, dir), 2, "data_dir",
              "hub without --data");
  // Hub: a region without a parent, or not a DNS-1123 label.
  expect_exit(
      run_to_exit({hub, "--name", "eu-a", "--data", data, "--nats", nats, "--region", "eu"}, dir),
      2, "region: only for a regional hub", "hub --region without --parent");
  expect_exit(run_to_exit({hub, "--name", "eu-a", "--data", data, "--nats", nats, "--parent",
                           "root", "--region", "EU_1"},
                          dir),
              2, "EU_1", "hub --region EU_1");
  // Hub: a config file that cannot be read.
  const std::string missing = dir.file("no-such-hub.yaml");
  expect_exit(run_to_exit({hub, "--config", missing}, dir), 2, missing, "hub missing config");
  if (::geteuid() != 0) {  // root reads anything
    const std::string unreadable = dir.file("unreadable.yaml");
    std::ofstream(unreadable) << "name: hub\n";
    ::chmod(unreadable.c_str(), 0);
    expect_exit(run_to_exit({hub, "--config", unreadable}, dir), 2, unreadable,
                "hub unreadable config");
  }
  // Hub: an unknown key in the config file.
  const std::string typo = dir.file("typo.yaml");
  std::ofstream(typo) << "name: hub\ndata_dir: " << data << "\nnmae: oops\n";
  expect_exit(run_to_exit({hub, "--config", typo}, dir), 2, "nmae", "hub unknown YAML key");
  // Hub: session timeouts that cannot work.
  const std::string hasty = dir.file("hasty.yaml");
  std::ofstream(hasty) << "name: hub\ndata_dir: " << data << "\naway_after_s: 1\n";
  expect_exit(run_to_exit({hub, "--config", hasty}, dir), 2, "away_after_s",
              "hub away_after_s below the heartbeat");
  const std::string inverted = dir.file("inverted.yaml");
  std::ofstream(inverted) << "name: hub\ndata_dir: " << data
                          << "\naway_after_s: 60\nsession_timeout_s: 30\n";
  expect_exit(run_to_exit({hub, "--config", inverted}, dir), 2, "session_timeout_s",
              "hub session_timeout_s shorter than away_after_s");
  const std::string reserve = dir.file("reserve.yaml");
  std::ofstream(reserve) << "name: hub\ndata_dir: " << data << "\ndisk_reserve_mb: plenty\n";
  expect_exit(run_to_exit({hub, "--config", reserve}, dir), 2, reserve,
              "hub disk_reserve_mb not a number");
  const std::string wordy = dir.file("wordy.yaml");
  std::ofstream(wordy) << "name: hub\ndata_dir: " << data << "\nsession_timeout_s: ten\n";
  expect_exit(run_to_exit({hub, "--config", wordy}, dir), 2, wordy,
              "hub session_timeout_s not a number");
  // Hub: not YAML at all.
  const std::string junk = dir.file("junk.yaml");
  std::ofstream(junk) << "name: [unclosed\n";
  expect_exit(run_to_exit({hub, "--config", junk}, dir), 2, junk, "hub invalid YAML");
  // Hub: an unknown flag.
  {
    auto r = run_to_exit({hub, "--nmae", "hub"}, dir);
    ASSERT_TRUE(WIFEXITED(r.status)) << r.output;
    EXPECT_EQ(WEXITSTATUS(r.status), 2) << r.output;
    EXPECT_NE(r.output.find("nmae"), std::string::npos) << r.output;
  }

  // Spoke: a label that is not key=value, an empty key, an over-long value.
  const std::string mdir = dir.file("manifests");
  fs::create_directories(mdir);
  const std::vector<std::string> spoke_ok = {spoke,         "--site", "shop-1", "--data", data,
                                             "--manifests", mdir,     "--nats", nats};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = spoke_ok;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  };
  expect_exit(run_to_exit(with({"--label", "region"}), dir), 2, "region", "spoke --label region");
  expect_exit(run_to_exit(with({"--label", "=eu"}), dir), 2, "=eu", "spoke --label =eu");
  expect_exit(run_to_exit(with({"--label", "region=" + std::string(64, 'x')}), dir), 2, "label",
              "spoke over-long label value");
  // Spoke: no manifests directory.
  expect_exit(run_to_exit({spoke, "--site", "shop-1", "--data", data, "--nats", nats}, dir), 2,
              "manifests", "spoke without --manifests");
  // Spoke: a bad site name, and none at all.
  expect_exit(run_to_exit({spoke, "--site", "Shop_1", "--data", data, "--manifests", mdir}, dir), 2,
              "site", "spoke --site Shop_1");
  expect_exit(run_to_exit({spoke, "--data", data, "--manifests", mdir}, dir), 2, "site",
              "spoke without --site");
  // Spoke: unknown config key, unreadable config.
  const std::string spoke_typo = dir.file("spoke-typo.yaml");
  std::ofstream(spoke_typo) << "site: shop-1\nlabelz:\n  region: eu\n";
  expect_exit(run_to_exit({spoke, "--config", spoke_typo}, dir), 2, "labelz",
              "spoke unknown YAML key");
  // Spoke: a retention of zero would trim what was just written.
  const std::string spoke_zero = dir.file("spoke-zero-retention.yaml");
  std::ofstream(spoke_zero) << "site: shop-1\ndata_dir: " << data << "\nmanifests_dir: " << mdir
                            << "\nlog_retention_hours: 0\n";
  expect_exit(run_to_exit({spoke, "--config", spoke_zero}, dir), 2, "log_retention_hours",
              "spoke zero log retention");
  const std::string spoke_missing = dir.file("no-such-spoke.yaml");
  expect_exit(run_to_exit({spoke, "--config", spoke_missing}, dir), 2, spoke_missing,
              "spoke missing config");
  // Nothing was created by refused starts.
  EXPECT_FALSE(fs::exists(data)) << "a refused start created the data directory";
}

}  // namespace
}  // namespace canopy::e2e

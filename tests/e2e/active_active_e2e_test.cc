// End-to-end test of active-active hubs (docs/hierarchy.md, "Active-active")
// with the real parts: three Debian nats-server processes clustered by routes
// on loopback, two canopy-hub processes of one level (root-a, root-b), each
// with its own RocksDB, naming each other as peers, and three canopy-spokes
// whose parent is "root-a,root-b".
//
//   nats n1 ── n2 ── n3        (a full mesh of routes; every process is given
//                               all three URLs and reconnects to a live one)
//   root-a  <──peers──>  root-b
//      s1  s2  s3               (each starts at one of the hubs, fails over)
//
// Writes go to both hubs at once; one hub and one NATS node are SIGKILLed
// mid-stream. Every write a hub acknowledged must end up on both hubs and at
// every spoke once the killed parts are back; the spokes keep syncing through
// the surviving hub meanwhile; a key written at both hubs concurrently ends
// the same on both, its losing value recorded as a conflict.
#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

constexpr const char* kSites[] = {"s1", "s2", "s3"};

struct Node {
  std::unique_ptr<NatsServer> nats;
  int cluster_port = 0;
};

struct RootHub {
  std::string name;
  std::string peers;
  std::unique_ptr<Hub> hub;
  std::unique_ptr<v1::Catalog::Stub> stub;
  std::string token;
};

class ActiveActiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto& n : nodes_) n.cluster_port = port();
    for (size_t i = 0; i < nodes_.size(); ++i) {
      std::string routes;
      for (size_t j = 0; j < nodes_.size(); ++j) {
        if (j == i) continue;
        if (!routes.empty()) routes += ",";
        routes += " \"nats-route://127.0.0.1:" + std::to_string(nodes_[j].cluster_port) + "\"";
      }
      NatsServerOptions o;
      o.max_payload = kNatsMaxPayload;
      o.extra_config = "cluster {\n  name: canopy\n  listen: \"127.0.0.1:" +
                       std::to_string(nodes_[i].cluster_port) + "\"\n  routes: [" + routes +
                       " ]\n}\n";
      nodes_[i].nats = std::make_unique<NatsServer>(o);
      std::string err;
      ASSERT_TRUE(nodes_[i].nats->start(&err)) << err;
    }
    // The cluster is formed when every node has routes to the two others.
    for (auto& n : nodes_) {
      ASSERT_TRUE(wait_until(
          [&] {
            auto j = http_get_json(n.nats->monitor_port(), "/routez");
            return j && j->value("num_routes", 0) >= 2;
          },
          kTimeout, kPoll))
          << "nats cluster did not form:\n"
          << n.nats->log_tail(2000);
    }
    hubs_[0].name = "root-a";
    hubs_[0].peers = "root-b";
    hubs_[1].name = "root-b";
    hubs_[1].peers = "root-a";
  }

  void TearDown() override {
    if (!HasFailure()) return;
    for (const auto& h : hubs_) {
      if (h.hub) {
        std::cerr << "----- hub " << h.name << "\n"
                  << tail(read_file(h.hub->log_path()), 6000) << "\n";
      }
    }
    for (const auto& s : spokes_) {
      std::cerr << "----- spoke " << s->site << "\n"
                << tail(read_file(s->log_path()), 3000) << "\n";
    }
  }

  int port() {
    for (int i = 0; i < 100; ++i) {
      const int p = canopy::testing::pick_free_port();
      if (p > 0 && used_ports_.insert(p).second) return p;
    }
    ADD_FAILURE() << "no free port";
    return -1;
  }

  // Every process gets every node's URL, in a different order, so that
  // they do not all sit on the node that will die.
  std::vector<std::string> nats_args(size_t first) {
    std::vector<std::string> out;
    for (size_t k = 0; k < nodes_.size(); ++k) {
      out.push_back("--nats");
      out.push_back(nodes_[(first + k) % nodes_.size()].nats->url());
    }
    return out;
  }

  void launch_hub(size_t i) {
    RootHub& r = hubs_[i];
    if (!r.hub) {
      r.hub = std::make_unique<Hub>();
      r.hub->grpc_port = port();
      r.hub->health_port = port();
    }
    Hub& h = *r.hub;
    std::vector<std::string> argv = {CANOPY_HUB_BIN,
                                     "--name",
                                     r.name,
                                     "--peers",
                                     r.peers,
                                     "--data",
                                     h.data(),
                                     "--grpc",
                                     "127.0.0.1:" + std::to_string(h.grpc_port),
                                     "--health",
                                     "127.0.0.1:" + std::to_string(h.health_port)};
    auto nats = nats_args(i);
    argv.insert(argv.end(), nats.begin(), nats.end());
    ProcessOptions po;
    po.log_path = h.log_path();
    std::string err;
    ASSERT_TRUE(h.proc.start(argv, po, &err)) << err;
    ASSERT_TRUE(wait_until(
        [&] {
          auto j = http_get_json(h.health_port, "/healthz");
          return !h.proc.running() || (j && j->value("nats_connected", false));
        },
        kTimeout, kPoll));
    ASSERT_TRUE(h.proc.running()) << "canopy-hub " << r.name << " exited at start";
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    r.stub = v1::Catalog::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(h.grpc_port), grpc::InsecureChannelCredentials(), args));
    r.token = h.admin_token();
    ASSERT_FALSE(r.token.empty());
  }

  // Whether hub `i` follows its peer and is caught up with it.
  bool peer_in_sync(size_t i) {
    auto j = http_get_json(hubs_[i].hub->health_port, "/healthz");
    return j && j->contains("peer") && (*j)["peer"].value("in_sync", false);
  }

  void launch_spoke(Spoke& s, size_t first_node) {
    std::vector<std::string> argv = {CANOPY_SPOKE_BIN,
                                     "--site",
                                     s.site,
                                     "--parent",
                                     "root-a,root-b",
                                     "--data",
                                     s.data(),
                                     "--manifests",
                                     s.manifests(),
                                     "--health",
                                     "127.0.0.1:" + std::to_string(s.health_port)};
    auto nats = nats_args(first_node);
    argv.insert(argv.end(), nats.begin(), nats.end());
    ProcessOptions po;
    po.log_path = s.log_path();
    std::string err;
    ASSERT_TRUE(s.proc.start(argv, po, &err)) << err;
  }

  bool spoke_session_open(const Spoke& s) {
    auto j = http_get_json(s.health_port, "/healthz");
    return j && j->value("session_open", false);
  }

  grpc::Status put(size_t hub, const std::string& kind, const std::string& name, const json& doc) {
    return catalog_put(hubs_[hub].stub.get(), hubs_[hub].token, kind, name, doc);
  }

  // The object's canonical JSON at hub `i`; nullopt when absent or unreachable.
  std::optional<std::string> get(size_t i, const std::string& kind, const std::string& name) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ctx.AddMetadata("authorization", "Bearer " + hubs_[i].token);
    v1::GetRequest req;
    req.set_kind(kind);
    req.set_tenant(kind == "site" || kind == "tenant" ? "" : kTenant);
    req.set_name(name);
    v1::GetResponse resp;
    if (!hubs_[i].stub->Get(&ctx, req, &resp).ok()) return std::nullopt;
    return resp.object().json();
  }

  size_t conflicts(size_t i, const std::string& kind, const std::string& name) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ctx.AddMetadata("authorization", "Bearer " + hubs_[i].token);
    v1::ListConflictsRequest req;
    req.set_tenant(kTenant);
    req.set_kind(kind);
    req.set_name(name);
    v1::ListConflictsResponse resp;
    if (!hubs_[i].stub->ListConflicts(&ctx, req, &resp).ok()) return 0;
    return static_cast<size_t>(resp.conflicts_size());
  }

  Spoke& add_spoke(const std::string& site) {
    auto s = std::make_unique<Spoke>();
    s->site = site;
    s->health_port = port();
    fs::create_directories(s->manifests());
    spokes_.push_back(std::move(s));
    return *spokes_.back();
  }

  std::array<Node, 3> nodes_;
  std::array<RootHub, 2> hubs_;
  std::vector<std::unique_ptr<Spoke>> spokes_;
  std::set<int> used_ports_;
};

json placement_of(const std::string& tmpl) {
  return {{"templates", {tmpl}}, {"sites", {"s1", "s2", "s3"}}};
}

TEST_F(ActiveActiveTest, EveryAcknowledgedWriteSurvivesAHubAndANatsNodeKilled) {
  ASSERT_NO_FATAL_FAILURE(launch_hub(0));
  ASSERT_NO_FATAL_FAILURE(launch_hub(1));
  // The grant written at one hub reaches the other: the peers replicate.
  ASSERT_TRUE(put(0, "grant", "all", {{"allSites", true}}).ok());
  ASSERT_TRUE(wait_until([&] { return get(1, "grant", "all").has_value(); }, kTimeout, kPoll))
      << "root-b never received the grant written at root-a";
  ASSERT_TRUE(wait_until([&] { return peer_in_sync(0) && peer_in_sync(1); }, kTimeout, kPoll))
      << "the peers never caught up with each other";

  for (size_t i = 0; i < std::size(kSites); ++i) {
    Spoke& s = add_spoke(kSites[i]);
    ASSERT_NO_FATAL_FAILURE(launch_spoke(s, i));
  }
  for (const auto& s : spokes_) {
    ASSERT_TRUE(wait_until([&] { return spoke_session_open(*s); }, kTimeout, kPoll))
        << "spoke " << s->site << " opened no session";
  }
  // The sites spread over both hubs (sync::preferred_order of s1, s2, s3).
  auto sessions_at = [&](size_t i) {
    auto j = http_get_json(hubs_[i].hub->health_port, "/healthz");
    return j ? j->value("sessions", 0) : 0;
  };
  EXPECT_TRUE(
      wait_until([&] { return sessions_at(0) >= 2 && sessions_at(1) >= 2; }, kTimeout, kPoll))
      << "sessions at root-a " << sessions_at(0) << ", at root-b " << sessions_at(1)
      << " (each holds its peer's and at least one site's)";

  // Writers at both hubs at once: a template and the placement that puts it
  // on every site, again and again. A write counts once both puts were
  // acknowledged.
  std::mutex mu;
  std::vector<std::string> acked;
  std::atomic<bool> stop{false};
  auto writer = [&](size_t hub, const std::string& prefix) {
    for (int k = 0; !stop && k < 400; ++k) {
      const std::string name = prefix + "-" + std::to_string(k);
      if (!put(hub, "template", name, deployment(name, 1, "nginx:" + std::to_string(k))).ok() ||
          !put(hub, "placement", name, placement_of(name)).ok()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      {
        std::lock_guard lock(mu);
        acked.push_back(name);
      }
      // One key both writers write: concurrent writes at two replicas.
      (void)put(hub, "template", "shared", deployment("shared", 1, name));
    }
  };

  std::thread wa([&] { writer(0, "wa"); });
  std::thread wb([&] { writer(1, "wb"); });
  auto acked_count = [&] {
    std::lock_guard lock(mu);
    return acked.size();
  };
  ASSERT_TRUE(wait_until([&] { return acked_count() >= 20; }, kTimeout, kPoll));
  // Mid-stream: root-a and one NATS node die.
  hubs_[0].hub->proc.kill(SIGKILL);
  ASSERT_TRUE(hubs_[0].hub->proc.wait_exit(std::chrono::seconds(10)).has_value());
  nodes_[2].nats->kill();
  const size_t acked_at_kill = acked_count();
  // root-b goes on taking writes and every spoke keeps syncing through it.
  ASSERT_TRUE(wait_until([&] { return acked_count() >= acked_at_kill + 20; }, kTimeout, kPoll));
  stop = true;
  wa.join();
  wb.join();
  std::vector<std::string> written;
  {
    std::lock_guard lock(mu);
    written = acked;
  }
  std::vector<std::string> from_b;
  for (const auto& n : written) {
    if (n.starts_with("wb-")) from_b.push_back(n);
  }
  auto holds = [&](const Spoke& s, const std::vector<std::string>& names) {
    auto have = s.read();
    for (const auto& n : names) {
      if (!have.contains(template_key(n))) return false;
    }
    return true;
  };
  for (const auto& s : spokes_) {
    EXPECT_TRUE(wait_until([&] { return holds(*s, from_b); }, kTimeout, kPoll))
        << "spoke " << s->site << " did not receive root-b's writes while root-a was down";
  }
  // The spokes that were on root-a failed over: their logs say so.
  size_t failed_over = 0;
  for (const auto& s : spokes_) {
    failed_over += count_lines_with(read_file(s->log_path()), {"failing over to root-b"});
  }
  EXPECT_GE(failed_over, 1u) << "no spoke failed over from root-a";
  std::cerr << "acknowledged writes: " << written.size() << " (" << from_b.size() << " at root-b), "
            << acked_at_kill << " before the kill; spokes failed over: " << failed_over << "\n";

  // Heal: the NATS node and root-a come back (same data, same ports).
  std::string err;
  ASSERT_TRUE(nodes_[2].nats->start(&err)) << err;
  ASSERT_NO_FATAL_FAILURE(launch_hub(0));
  ASSERT_TRUE(wait_until([&] { return peer_in_sync(0) && peer_in_sync(1); }, kTimeout, kPoll))
      << "the peers never caught up after healing";
  for (size_t i = 0; i < 2; ++i) {
    for (const auto& n : written) {
      EXPECT_TRUE(wait_until([&] { return get(i, "template", n).has_value(); }, kTimeout, kPoll))
          << hubs_[i].name << " lacks acknowledged template " << n;
      if (HasFailure()) return;
    }
  }
  for (const auto& s : spokes_) {
    EXPECT_TRUE(wait_until([&] { return holds(*s, written); }, kTimeout, kPoll))
        << "spoke " << s->site << " lacks some acknowledged write";
  }
  // The key written at both: one value on both hubs, the other recorded.
  ASSERT_TRUE(
      wait_until([&] { return get(0, "template", "shared") == get(1, "template", "shared"); },
                 kTimeout, kPoll));
  EXPECT_GE(conflicts(0, "template", "shared"), 1u);
  EXPECT_GE(conflicts(1, "template", "shared"), 1u);
}

}  // namespace
}  // namespace canopy::e2e

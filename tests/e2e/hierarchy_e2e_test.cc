// End-to-end tests of a three-level hierarchy with the real parts: a root
// canopy-hub, two regional canopy-hubs (--parent root) and four canopy-spokes,
// each regional level on its own real nats-server that is a leaf node of the
// root's (so the sync subjects of every level meet on one NATS namespace, as
// docs/hierarchy.md describes).
//
//   root hub                         on nats "root"
//   eu, us     --parent root         on nats "eu", "us"
//   eu-1 ...   --parent eu | us      on their region's nats
//
// The root holds the catalogue and the site records, whose `region` field
// makes a site a member of a regional hub; the regional hubs hold what their
// sites need; status written at a site reaches the root through its
// regional hub. Cutting the root's NATS (SIGKILL) cuts every root-region link:
// the regions keep serving their sites, and everything converges after it is
// back on the same port.
#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

json placement_by_tier(const std::vector<std::string>& templates, const std::string& tier) {
  return {{"templates", templates}, {"selector", {{"matchLabels", {{"tier", tier}}}}}};
}

struct Level {
  std::string name;
  std::unique_ptr<NatsServer> nats;
  std::unique_ptr<Hub> hub;
  std::vector<std::string> hub_args;  // beyond name, data, nats, listeners
  const Level* nats_of = nullptr;     // set: on that level's NATS, not its own
  const NatsServer& server() const { return nats_of != nullptr ? *nats_of->nats : *nats; }
};

class HierarchyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The root's NATS takes leaf connections; each region's NATS is a leaf
    // of it, reconnecting every second while it is gone.
    leaf_port_ = port();
    root_.name = "root";
    root_.nats =
        start_nats("leafnodes {\n  listen: \"127.0.0.1:" + std::to_string(leaf_port_) + "\"\n}\n");
    for (const char* region : {"eu", "us"}) {
      auto level = std::make_unique<Level>();
      level->name = region;
      level->nats = start_nats(
          "leafnodes {\n  reconnect: 1\n  remotes: [ { url: "
          "\"nats-leaf://127.0.0.1:" +
          std::to_string(leaf_port_) + "\" } ]\n}\n");
      level->hub_args = {"--parent", "root"};
      regions_.push_back(std::move(level));
    }
  }

  void TearDown() override {
    if (!HasFailure()) return;
    auto dump = [](const std::string& what, const std::string& path) {
      std::cerr << "----- " << what << " (" << path << ")\n" << tail(read_file(path), 5000) << "\n";
    };
    if (root_.hub) dump("root hub", root_.hub->log_path());
    for (const auto& r : regions_) {
      if (r->hub) dump(r->name + " hub", r->hub->log_path());
      if (r->nats) std::cerr << "----- " << r->name << " nats\n" << r->nats->log_tail(1500) << "\n";
    }
    for (const auto& s : spokes_) dump("spoke " + s->site, s->log_path());
    std::cerr << "----- root nats\n" << root_.nats->log_tail(1500) << "\n";
  }

  int port() {
    for (int i = 0; i < 100; ++i) {
      const int p = canopy::testing::pick_free_port();
      if (p > 0 && used_ports_.insert(p).second) return p;
    }
    ADD_FAILURE() << "no free port";
    return -1;
  }

  std::unique_ptr<NatsServer> start_nats(const std::string& extra) {
    NatsServerOptions o;
    o.extra_config = extra;
    auto nats = std::make_unique<NatsServer>(o);
    std::string err;
    EXPECT_TRUE(nats->start(&err)) << err;
    return nats;
  }

  Level& region(const std::string& name) {
    if (name == root_.name) return root_;
    for (auto& r : regions_) {
      if (r->name == name) return *r;
    }
    ADD_FAILURE() << "no region " << name;
    return root_;
  }

  // Starts (or restarts on the same data and ports) the hub of `level`.
  void launch_hub(Level& level) {
    if (!level.hub) {
      level.hub = std::make_unique<Hub>();
      level.hub->grpc_port = port();
      level.hub->health_port = port();
    }
    Hub& h = *level.hub;
    std::vector<std::string> argv = {CANOPY_HUB_BIN,
                                     "--name",
                                     level.name,
                                     "--data",
                                     h.data(),
                                     "--nats",
                                     level.server().url(),
                                     "--grpc",
                                     "127.0.0.1:" + std::to_string(h.grpc_port),
                                     "--health",
                                     "127.0.0.1:" + std::to_string(h.health_port)};
    argv.insert(argv.end(), level.hub_args.begin(), level.hub_args.end());
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
    ASSERT_TRUE(h.proc.running()) << "canopy-hub " << level.name << " exited at start";
  }

  // The regional hub's view of its parent session (/healthz "parent").
  std::optional<json> upstream(const Level& level) {
    auto j = http_get_json(level.hub->health_port, "/healthz");
    if (!j || !j->contains("parent")) return std::nullopt;
    return (*j)["parent"];
  }

  bool region_in_sync(const Level& level) {
    auto up = upstream(level);
    return up && up->value("in_sync", false);
  }

  Spoke& create_spoke(const std::string& site, const std::string& parent) {
    auto s = std::make_unique<Spoke>();
    s->site = site;
    s->health_port = port();
    s->extra_args = {"--parent", parent};
    fs::create_directories(s->manifests());
    spokes_.push_back(std::move(s));
    parents_[site] = parent;
    return *spokes_.back();
  }

  Spoke& spoke(const std::string& site) {
    for (auto& s : spokes_) {
      if (s->site == site) return *s;
    }
    throw std::runtime_error("no spoke " + site);
  }

  void launch_spoke(Spoke& s) {
    Level& parent = region(parents_[s.site]);
    std::vector<std::string> argv = {CANOPY_SPOKE_BIN,
                                     "--site",
                                     s.site,
                                     "--data",
                                     s.data(),
                                     "--manifests",
                                     s.manifests(),
                                     "--nats",
                                     parent.server().url(),
                                     "--health",
                                     "127.0.0.1:" + std::to_string(s.health_port)};
    argv.insert(argv.end(), s.extra_args.begin(), s.extra_args.end());
    ProcessOptions po;
    po.log_path = s.log_path();
    std::string err;
    ASSERT_TRUE(s.proc.start(argv, po, &err)) << err;
    ASSERT_TRUE(wait_until(
        [&] {
          auto j = http_get_json(s.health_port, "/healthz");
          return !s.proc.running() || (j && j->value("session_open", false));
        },
        kTimeout, kPoll))
        << "spoke " << s.site << " opened no session with " << parents_[s.site];
    ASSERT_TRUE(s.proc.running()) << "canopy-spoke " << s.site << " exited at start";
  }

  // --- The root's Catalog API.

  void connect_root() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    stub_ = v1::Catalog::NewStub(
        grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(root_.hub->grpc_port),
                                  grpc::InsecureChannelCredentials(), args));
    std::ifstream in(root_.hub->data() + "/admin.token");
    std::getline(in, token_);
    ASSERT_FALSE(token_.empty());
  }

  grpc::Status put(const std::string& kind, const std::string& name, const json& doc) {
    return catalog_put(stub_.get(), token_, kind, name, doc);
  }

  // The root's status row of `site` for `placement`.
  std::optional<v1::SiteStatus> root_status(const std::string& placement, const std::string& site,
                                            v1::GetStatusResponse* whole = nullptr) {
    auto resp = catalog_status(stub_.get(), token_, placement);
    if (!resp) return std::nullopt;
    if (whole != nullptr) *whole = *resp;
    for (const auto& row : resp->sites()) {
      if (row.site() == site) return row;
    }
    return std::nullopt;
  }

  // The outcome and hash the root shows for `tmpl` at `site`.
  std::optional<std::pair<std::string, std::string>> root_outcome(const std::string& placement,
                                                                  const std::string& site,
                                                                  const std::string& tmpl) {
    auto row = root_status(placement, site);
    if (!row) return std::nullopt;
    for (const auto& t : row->templates()) {
      if (t.template_() == tmpl) return std::make_pair(t.outcome(), t.hash());
    }
    return std::nullopt;
  }

  // Every site holds exactly the templates `want` says (site -> templates).
  bool sites_hold(const std::map<std::string, std::set<std::string>>& want) {
    for (const auto& [site, templates] : want) {
      std::set<std::string> have;
      for (const auto& [key, m] : spoke(site).read()) have.insert(key);
      std::set<std::string> keys;
      for (const auto& t : templates) keys.insert(template_key(t));
      if (have != keys) return false;
    }
    return true;
  }

  bool sites_hold_eventually(const std::map<std::string, std::set<std::string>>& want) {
    return wait_until([&] { return sites_hold(want); }, kTimeout, kPoll);
  }

  std::string describe_holdings() {
    std::string out;
    for (const auto& s : spokes_) {
      out += s->site + ":";
      for (const auto& [key, m] : s->read()) out += " " + key;
      out += "\n";
    }
    return out;
  }

  // Brings the whole hierarchy up: hubs, site records and grant at the root,
  // then the four spokes.
  void start_hierarchy() {
    ASSERT_NO_FATAL_FAILURE(launch_hub(root_));
    ASSERT_NO_FATAL_FAILURE(connect_root());
    ASSERT_TRUE(put("grant", "all", {{"allSites", true}}).ok());
    // Sites and their labels are the root's records; regional hubs get
    // their members' records from it.
    const std::map<std::string, std::string> tier = {
        {"eu-1", "gold"}, {"eu-2", "silver"}, {"us-1", "silver"}, {"us-2", "gold"}};
    for (const auto& [site, t] : tier) {
      ASSERT_TRUE(
          put("site", site, {{"labels", {{"tier", t}}}, {"region", site.substr(0, 2)}}).ok());
    }
    for (auto& r : regions_) ASSERT_NO_FATAL_FAILURE(launch_hub(*r));
    for (auto& r : regions_) {
      ASSERT_TRUE(wait_until([&] { return region_in_sync(*r); }, kTimeout, kPoll))
          << r->name << " never caught up with the root";
    }
    for (const auto& [site, t] : tier) {
      Spoke& s = create_spoke(site, site.substr(0, 2));
      ASSERT_NO_FATAL_FAILURE(launch_spoke(s));
    }
  }

  // Templates app-0 .. app-<n-1>, placed on tier=silver (eu-2 and us-1).
  void place_apps_on_silver(int n, std::vector<std::string>* names) {
    for (int i = 0; i < n; ++i) {
      names->push_back("app-" + std::to_string(i));
      ASSERT_TRUE(put("template", names->back(), deployment(names->back(), 1, "app:1")).ok());
    }
    ASSERT_TRUE(put("placement", "apps-silver", placement_by_tier(*names, "silver")).ok());
  }

  // The fewest manifests a spoke held while watched (every 10 ms).
  class ManifestCountWatch {
   public:
    explicit ManifestCountWatch(Spoke& s) : fewest_(s.read().size()) {
      thread_ = std::thread([this, &s] {
        while (watching_) {
          const size_t n = s.read().size();
          if (n < fewest_) fewest_ = n;
          std::this_thread::sleep_for(10ms);
        }
      });
    }
    ~ManifestCountWatch() { stop(); }
    size_t stop() {
      watching_ = false;
      if (thread_.joinable()) thread_.join();
      return fewest_;
    }

   private:
    std::atomic<bool> watching_{true};
    std::atomic<size_t> fewest_;
    std::thread thread_;
  };

  // eu-2, moved to us, takes a new template of apps-silver there, and the
  // root sees it live and applied through us.
  void takes_new_work_through_us(Spoke& mover, std::vector<std::string>* names) {
    const size_t before = mover.read().size();
    ASSERT_TRUE(put("template", "extra", deployment("extra", 1, "extra:1")).ok());
    names->push_back("extra");
    ASSERT_TRUE(put("placement", "apps-silver", placement_by_tier(*names, "silver")).ok());
    ASSERT_TRUE(wait_until([&] { return mover.read().size() == before + 1; }, kTimeout, kPoll));
    ASSERT_TRUE(wait_until(
        [&] {
          auto row = root_status("apps-silver", "eu-2");
          return row && row->connected() && row->state() == "applied";
        },
        kTimeout, kPoll))
        << "the root never saw eu-2 live and applied through us";
  }

  // Waits until `s` is in session with `parent` and caught up, holding
  // `manifests` manifests when that is not 0; `*health` (if given) is then
  // its /healthz.
  void wait_in_sync_with(Spoke& s, const std::string& parent, size_t manifests,
                         json* health = nullptr) {
    std::optional<json> h;
    ASSERT_TRUE(wait_until(
        [&] {
          h = http_get_json(s.health_port, "/healthz");
          return h && h->value("parent", "") == parent && h->value("in_sync", false) &&
                 (manifests == 0 || s.read().size() == manifests);
        },
        kTimeout, kPoll))
        << s.site << " not in sync with " << parent << ": " << (h ? h->dump() : "no health");
    if (health != nullptr) *health = *h;
  }

  Level root_;
  std::vector<std::unique_ptr<Level>> regions_;
  std::vector<std::unique_ptr<Spoke>> spokes_;
  std::map<std::string, std::string> parents_;  // site -> its regional hub
  std::unique_ptr<v1::Catalog::Stub> stub_;
  std::string token_;
  std::set<int> used_ports_;
  int leaf_port_ = 0;
};

// A placement written at the root reaches exactly the sites it selects,
// through their regional hubs; their status reaches the root. Then the root's
// NATS dies: the regions keep serving their sites (a site that loses its
// whole store is served again by its region alone), the root still answers
// with what it last knew, and after the root's NATS is back every write made
// on either side of the cut converges.
TEST_F(HierarchyTest, ThreeLevelsPlaceReportAndSurviveACutRootLink) {
  ASSERT_NO_FATAL_FAILURE(start_hierarchy());

  ASSERT_TRUE(put("template", "web", deployment("web", 2, "nginx:1.27")).ok());
  ASSERT_TRUE(put("placement", "web-gold", placement_by_tier({"web"}, "gold")).ok());
  const std::map<std::string, std::set<std::string>> gold_web = {
      {"eu-1", {"web"}}, {"eu-2", {}}, {"us-1", {}}, {"us-2", {"web"}}};
  ASSERT_TRUE(wait_until([&] { return sites_hold(gold_web); }, kTimeout, kPoll))
      << describe_holdings();
  // A grace period for anything misrouted: still exactly the gold sites.
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(sites_hold(gold_web)) << describe_holdings();

  // Status flows up two levels: the root sees both sites applied, with the
  // hash of the file each wrote.
  for (const std::string site : {"eu-1", "us-2"}) {
    const std::string hash = spoke(site).read().at(template_key("web")).hash();
    ASSERT_TRUE(wait_until(
        [&] {
          auto o = root_outcome("web-gold", site, "web");
          return o && o->first == "applied" && o->second == hash;
        },
        kTimeout, kPoll))
        << "the root never saw " << site << "'s status";
  }
  v1::GetStatusResponse whole;
  ASSERT_TRUE(root_status("web-gold", "eu-1", &whole));
  EXPECT_EQ(whole.targeted(), 2u);
  // Live through their regions (presence documents).
  ASSERT_TRUE(wait_until(
      [&] {
        auto row = root_status("web-gold", "eu-1");
        return row && row->connected() && row->state() == "applied";
      },
      kTimeout, kPoll))
      << "the root never saw eu-1 live through eu";

  // --- Cut every root-region link. (A region cannot tell a silent parent
  // from an idle one: its session stays open, and resumes after the cut.)
  root_.nats->kill();

  // The root keeps answering with what it last knew, and says how old it
  // is: the site is offline, last seen applied, at a time before the cut.
  auto last = root_outcome("web-gold", "eu-1", "web");
  ASSERT_TRUE(last);
  EXPECT_EQ(last->first, "applied");
  ASSERT_TRUE(wait_until(
      [&] {
        auto row = root_status("web-gold", "eu-1");
        return row && row->state() == "offline";
      },
      kTimeout, kPoll))
      << "the root still shows eu-1 live through a region it cannot reach";
  auto row = root_status("web-gold", "eu-1");
  ASSERT_TRUE(row);
  EXPECT_EQ(row->last_state(), "applied");
  EXPECT_GT(row->last_seen_ms(), 0u);

  // A write at the root meanwhile: it waits for the link.
  ASSERT_TRUE(put("template", "api", deployment("api", 1, "api:2")).ok());
  ASSERT_TRUE(put("placement", "api-silver", placement_by_tier({"api"}, "silver")).ok());

  // eu-1 loses its whole store and manifests: its region alone serves it again.
  Spoke& eu1 = spoke("eu-1");
  ASSERT_TRUE(eu1.proc.kill(SIGKILL));
  ASSERT_TRUE(eu1.proc.wait_exit(10s).has_value());
  fs::remove_all(eu1.data());
  for (const auto& entry : fs::directory_iterator(eu1.manifests())) fs::remove(entry.path());
  ASSERT_TRUE(eu1.read().empty());
  ASSERT_NO_FATAL_FAILURE(launch_spoke(eu1));
  ASSERT_TRUE(
      wait_until([&] { return eu1.read().count(template_key("web")) == 1; }, kTimeout, kPoll))
      << "eu never served eu-1 while cut off from the root";
  // Nothing written at the root crossed the cut.
  EXPECT_TRUE(sites_hold(gold_web)) << describe_holdings();

  // --- Heal: the root's NATS is back on the same port.
  std::string err;
  ASSERT_TRUE(root_.nats->start(&err)) << err;
  for (auto& r : regions_) {
    ASSERT_TRUE(wait_until([&] { return region_in_sync(*r); }, 30s, kPoll))
        << r->name << " never caught up with the root after the cut";
  }
  const std::map<std::string, std::set<std::string>> after = {
      {"eu-1", {"web"}}, {"eu-2", {"api"}}, {"us-1", {"api"}}, {"us-2", {"web"}}};
  ASSERT_TRUE(wait_until([&] { return sites_hold(after); }, kTimeout, kPoll))
      << describe_holdings();
  // The statuses written during and after the cut reach the root.
  for (const std::string site : {"eu-2", "us-1"}) {
    ASSERT_TRUE(wait_until(
        [&] {
          auto o = root_outcome("api-silver", site, "api");
          return o && o->first == "applied";
        },
        kTimeout, kPoll))
        << "the root never saw " << site << "'s status for api";
  }
  const std::string hash = eu1.read().at(template_key("web")).hash();
  ASSERT_TRUE(wait_until(
      [&] {
        auto o = root_outcome("web-gold", "eu-1", "web");
        return o && o->first == "applied" && o->second == hash;
      },
      kTimeout, kPoll));
}

// A site moves from one regional hub to another with one write at the root
// (its record's region), and its spoke, given only its old region as parent,
// follows by itself: the old region ends its session without drops and
// redirects it to the root, the root redirects it to us, and us's
// reconciliation sends it nothing it already holds. Its objects stay applied
// throughout; no restart, no operator step, no wait for silence. Restarted
// with `--parent eu`, it finds us again through the root it remembers.
TEST_F(HierarchyTest, ASiteMovesBetweenRegionsWithoutLosingOrResendingItsScope) {
  ASSERT_NO_FATAL_FAILURE(start_hierarchy());
  constexpr int kTemplates = 20;
  std::vector<std::string> names;
  ASSERT_NO_FATAL_FAILURE(place_apps_on_silver(kTemplates, &names));
  Spoke& mover = spoke("eu-2");
  json before;
  ASSERT_NO_FATAL_FAILURE(wait_in_sync_with(mover, "eu", kTemplates, &before));
  ASSERT_TRUE(wait_until([&] { return region_in_sync(region("us")); }, kTimeout, kPoll));
  const uint64_t received_before = before.value("documents_received", uint64_t{0});
  const uint64_t failovers_before = before.value("failovers", uint64_t{0});
  EXPECT_EQ(scrape_metric(root_.hub->health_port, "canopy_hub_redirects_total"), 0);

  // Watch the mover's manifests for the whole move.
  ManifestCountWatch watch(mover);

  ASSERT_TRUE(put("site", "eu-2", {{"labels", {{"tier", "silver"}}}, {"region", "us"}}).ok());
  // The old region lets it go: no session, and no drop reached the spoke.
  auto eu_has_session = [&] {
    auto j = http_get_json(region("eu").hub->health_port, "/v1/sessions");
    if (!j || !j->is_array()) return true;
    for (const auto& s : *j) {
      if (s.value("site", "") == "eu-2") return true;
    }
    return false;
  };
  EXPECT_TRUE(wait_until([&] { return !eu_has_session(); }, kTimeout, kPoll))
      << "eu kept serving a site that moved away";
  // The spoke, whose only parent is eu, is redirected to us by the root.
  json h;
  ASSERT_NO_FATAL_FAILURE(wait_in_sync_with(mover, "us", 0, &h));
  EXPECT_EQ(watch.stop(), static_cast<size_t>(kTemplates))
      << "the mover's objects were not applied throughout the move";
  EXPECT_EQ(mover.read().size(), static_cast<size_t>(kTemplates));
  // Sent on by eu and then the root, not moved by a silence.
  EXPECT_EQ(h.value("redirects", uint64_t{0}), 2u) << h.dump();
  EXPECT_EQ(h.value("failovers", uint64_t{0}), failovers_before) << h.dump();
  EXPECT_EQ(scrape_metric(region("eu").hub->health_port, "canopy_hub_redirects_total"), 1);
  EXPECT_EQ(scrape_metric(root_.hub->health_port, "canopy_hub_redirects_total"), 1);
  // No whole-scope transfer: of its 20 templates, its placement and its
  // record, the new region sent only what changed (the record, presence).
  EXPECT_LE(h.value("documents_received", uint64_t{999}) - received_before, 4u) << h.dump();

  // It is live in us's view and in the root's, and takes new work there.
  ASSERT_NO_FATAL_FAILURE(takes_new_work_through_us(mover, &names));

  // A restart with the same flags (`--parent eu`) finds us again: eu does not
  // answer, the root (remembered from eu's welcome) redirects it.
  ASSERT_TRUE(mover.proc.kill(SIGTERM));
  ASSERT_TRUE(mover.proc.wait_exit(10s).has_value());
  ASSERT_NO_FATAL_FAILURE(launch_spoke(mover));
  ASSERT_NO_FATAL_FAILURE(wait_in_sync_with(mover, "us", 0));
  EXPECT_EQ(mover.read().size(), static_cast<size_t>(kTemplates + 1));
}

// A spoke given both regional hubs as its parents (`--parent eu,us`) follows
// its record the same way: moved at the root, the old region ends its
// session (without drops) with a redirect to the root, which sends it to us,
// one of its own parents, where the session reconciles — no restart, no
// operator step, objects applied throughout, no whole-scope transfer.
TEST_F(HierarchyTest, ASpokeWithBothRegionsAsParentsFollowsAMoveByItself) {
  ASSERT_NO_FATAL_FAILURE(start_hierarchy());
  constexpr int kTemplates = 10;
  std::vector<std::string> names;
  ASSERT_NO_FATAL_FAILURE(place_apps_on_silver(kTemplates, &names));
  Spoke& mover = spoke("eu-2");
  ASSERT_TRUE(mover.proc.kill(SIGTERM));
  ASSERT_TRUE(mover.proc.wait_exit(10s).has_value());
  mover.extra_args = {"--parent", "eu,us"};  // still on eu's NATS (a leaf, like us's)
  ASSERT_NO_FATAL_FAILURE(launch_spoke(mover));
  json before;
  ASSERT_NO_FATAL_FAILURE(wait_in_sync_with(mover, "eu", kTemplates, &before));
  ASSERT_TRUE(wait_until([&] { return region_in_sync(region("us")); }, kTimeout, kPoll));
  const uint64_t received_before = before.value("documents_received", uint64_t{0});
  const uint64_t failovers_before = before.value("failovers", uint64_t{0});
  const uint64_t redirects_before = before.value("redirects", uint64_t{0});

  ManifestCountWatch watch(mover);
  ASSERT_TRUE(put("site", "eu-2", {{"labels", {{"tier", "silver"}}}, {"region", "us"}}).ok());
  // Redirected by eu to the root, by the root to us, which serves it now.
  json h;
  ASSERT_NO_FATAL_FAILURE(wait_in_sync_with(mover, "us", 0, &h));
  EXPECT_EQ(watch.stop(), static_cast<size_t>(kTemplates))
      << "the mover's objects were not applied throughout the move";
  EXPECT_EQ(h.value("redirects", uint64_t{0}) - redirects_before, 2u) << h.dump();
  EXPECT_EQ(h.value("failovers", uint64_t{0}), failovers_before) << h.dump();
  EXPECT_LE(h.value("documents_received", uint64_t{999}) - received_before, 4u)
      << "a whole-scope transfer: " << h.dump();
  // It takes new work through us, and the root sees it live there.
  ASSERT_NO_FATAL_FAILURE(takes_new_work_through_us(mover, &names));
}

// Region eu served by two hubs, eu-a and eu-b (--region eu, peers of each
// other, on one NATS): the root gives each eu's scope; its sites name both
// and start at one each. SIGKILL the hub eu-1 is with: both sites sync
// through the other, take new work written at the root, and the root shows
// them live and applied through it. The killed hub comes back and catches
// up with its peer.
TEST_F(HierarchyTest, ARegionServedByTwoHubsKeepsItsSitesWhenOneDies) {
  Level& eu_a = region("eu");
  eu_a.name = "eu-a";
  eu_a.hub_args = {"--parent", "root", "--region", "eu", "--peers", "eu-b"};
  auto eu_b = std::make_unique<Level>();
  eu_b->name = "eu-b";
  eu_b->nats_of = &eu_a;
  eu_b->hub_args = {"--parent", "root", "--region", "eu", "--peers", "eu-a"};
  regions_.push_back(std::move(eu_b));

  ASSERT_NO_FATAL_FAILURE(launch_hub(root_));
  ASSERT_NO_FATAL_FAILURE(connect_root());
  ASSERT_TRUE(put("grant", "all", {{"allSites", true}}).ok());
  ASSERT_TRUE(put("site", "eu-1", {{"labels", {{"tier", "gold"}}}, {"region", "eu"}}).ok());
  ASSERT_TRUE(put("site", "eu-2", {{"labels", {{"tier", "silver"}}}, {"region", "eu"}}).ok());
  for (const char* name : {"eu-a", "eu-b"}) {
    ASSERT_NO_FATAL_FAILURE(launch_hub(region(name)));
  }
  for (const char* name : {"eu-a", "eu-b"}) {
    ASSERT_TRUE(wait_until([&] { return region_in_sync(region(name)); }, kTimeout, kPoll))
        << name << " never caught up with the root";
  }
  for (const char* site : {"eu-1", "eu-2"}) {
    Spoke& s = create_spoke(site, "eu-a");  // on eu's NATS
    s.extra_args = {"--parent", "eu-a,eu-b"};
    ASSERT_NO_FATAL_FAILURE(launch_spoke(s));
  }
  // A site of the root's that says in its hello that it is a hub of eu is
  // not given eu's scope: a label is a claim, and it is a site here.
  ASSERT_TRUE(put("site", "shop-9", {{"labels", {{"kind", "shop"}}}}).ok());
  Spoke& intruder = create_spoke("shop-9", "root");
  intruder.extra_args = {"--parent",           "root",    "--label",
                         "canopy.io/role=hub", "--label", "canopy.io/region=eu"};
  ASSERT_NO_FATAL_FAILURE(launch_spoke(intruder));
  ASSERT_TRUE(put("template", "app", deployment("app", 1, "app:1")).ok());
  ASSERT_TRUE(
      put("placement", "everywhere",
          {{"templates", {"app"}},
           {"selector", {{"matchExpressions", {{{"key", "tier"}, {"operator", "Exists"}}}}}}})
          .ok());
  auto live_and_applied = [&](const std::string& site) {
    auto row = root_status("everywhere", site);
    return row && row->connected() && row->state() == "applied";
  };
  ASSERT_TRUE(sites_hold_eventually({{"eu-1", {"app"}}, {"eu-2", {"app"}}})) << describe_holdings();
  EXPECT_NE(read_file(root_.hub->log_path())
                .find("hello from shop-9 says it is a hub of region \"eu\", but it is a site here"),
            std::string::npos);
  for (const char* site : {"eu-1", "eu-2"}) {
    ASSERT_TRUE(wait_until([&] { return live_and_applied(site); }, kTimeout, kPoll))
        << "the root never saw " << site << " live and applied through its regional hub";
  }
  // The sites spread over the region's hubs (preferred_order of their names).
  std::map<std::string, std::string> hub_of;
  for (const char* site : {"eu-1", "eu-2"}) {
    auto h = http_get_json(spoke(site).health_port, "/healthz");
    ASSERT_TRUE(h.has_value());
    hub_of[site] = h->value("parent", "");
  }
  EXPECT_NE(hub_of["eu-1"], hub_of["eu-2"]) << "both sites start at " << hub_of["eu-1"];

  Level& dead = region(hub_of["eu-1"]);
  const std::string survivor = dead.name == "eu-a" ? "eu-b" : "eu-a";
  ASSERT_TRUE(dead.hub->proc.kill(SIGKILL));
  ASSERT_TRUE(dead.hub->proc.wait_exit(10s).has_value());
  for (const char* site : {"eu-1", "eu-2"}) {
    json h;
    ASSERT_NO_FATAL_FAILURE(wait_in_sync_with(spoke(site), survivor, 1, &h));
    if (hub_of[site] == dead.name) {
      EXPECT_EQ(h.value("failovers", uint64_t{0}), 1u) << site << ": " << h.dump();
    }
  }
  ASSERT_TRUE(put("template", "after", deployment("after", 1, "after:1")).ok());
  ASSERT_TRUE(
      put("placement", "everywhere",
          {{"templates", {"app", "after"}},
           {"selector", {{"matchExpressions", {{{"key", "tier"}, {"operator", "Exists"}}}}}}})
          .ok());
  ASSERT_TRUE(sites_hold_eventually({{"eu-1", {"app", "after"}}, {"eu-2", {"app", "after"}}}))
      << describe_holdings();
  for (const char* site : {"eu-1", "eu-2"}) {
    ASSERT_TRUE(wait_until([&] { return live_and_applied(site); }, kTimeout, kPoll))
        << "the root never saw " << site << " live and applied through " << survivor;
  }
  // The root's own site, in sync with it, received its record alone: no
  // record of eu's sites, no grant, no template.
  json ih;
  ASSERT_NO_FATAL_FAILURE(wait_in_sync_with(intruder, "root", 0, &ih));
  EXPECT_EQ(ih.value("documents_received", uint64_t{99}), 1u) << ih.dump();
  EXPECT_TRUE(intruder.read().empty()) << describe_holdings();
  // The dead hub comes back on its store and catches up with the root and
  // its peer; the sites stay where they are.
  ASSERT_NO_FATAL_FAILURE(launch_hub(dead));
  ASSERT_TRUE(wait_until([&] { return region_in_sync(dead); }, kTimeout, kPoll));
  ASSERT_TRUE(wait_until(
      [&] {
        auto j = http_get_json(dead.hub->health_port, "/healthz");
        return j && j->contains("peer") && (*j)["peer"].value("in_sync", false);
      },
      kTimeout, kPoll))
      << dead.name << " never caught up with its peer";
  for (const char* site : {"eu-1", "eu-2"}) {
    auto h = http_get_json(spoke(site).health_port, "/healthz");
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->value("parent", ""), survivor) << site;
  }
}

}  // namespace
}  // namespace canopy::e2e

// Metrics, liveness and readiness end to end (docs/metrics.md): real
// nats-server, canopy-hub and canopy-spoke processes, scraped by a real
// Prometheus (Debian's `prometheus`) on loopback. The test places a known
// number of objects on a site and asks Prometheus's query API for the numbers
// it caused; `promtool check metrics` lints both endpoints; /readyz answers
// 503 with the reason while NATS is down, and 200 again once it is back; a
// spoke whose cluster does not answer is not ready until a pass completes.
#include <cstdlib>

#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

constexpr int kObjects = 3;
constexpr const char* kSite = "eu-1";

struct HttpReply {
  int status = 0;
  std::string body;
  std::string content_type;
};

std::optional<HttpReply> http_get(int port, const std::string& path,
                                  const httplib::Params& params = {}) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(1, 0);
  cli.set_read_timeout(5, 0);
  auto res = cli.Get(path, params, httplib::Headers{});
  if (!res) return std::nullopt;
  return HttpReply{res->status, res->body, res->get_header_value("Content-Type")};
}

// Runs `promtool check metrics` on `page`; returns its exit status and sets
// *output to what it printed.
int promtool_check(const TempDir& dir, const std::string& name, const std::string& page,
                   std::string* output) {
  const std::string in = dir.file(name + ".prom"), out = dir.file(name + ".promtool");
  std::ofstream(in) << page;
  const std::string cmd = "promtool check metrics < " + in + " > " + out + " 2>&1";
  const int status = std::system(cmd.c_str());
  *output = read_file(out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class MetricsE2ETest : public E2ETest {
 protected:
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "----- prometheus log\n"
                << tail(read_file(prom_dir_.file("prometheus.log")), 4000) << "\n";
    }
    E2ETest::TearDown();
  }

  // Starts Prometheus scraping the hub's and the spoke's /metrics every
  // 500 ms, and waits until it is ready.
  void launch_prometheus(int hub_port, int spoke_port) {
    prom_port_ = port();
    std::ofstream(prom_dir_.file("prometheus.yml")) << "global:\n"
                                                       "  scrape_interval: 500ms\n"
                                                       "  scrape_timeout: 400ms\n"
                                                       "scrape_configs:\n"
                                                       "  - job_name: hub\n"
                                                       "    static_configs:\n"
                                                       "      - targets: ['127.0.0.1:"
                                                    << hub_port
                                                    << "']\n"
                                                       "  - job_name: spoke\n"
                                                       "    static_configs:\n"
                                                       "      - targets: ['127.0.0.1:"
                                                    << spoke_port << "']\n";
    const std::vector<std::string> argv = {
        "prometheus", "--config.file=" + prom_dir_.file("prometheus.yml"),
        "--storage.tsdb.path=" + prom_dir_.file("tsdb"),
        "--web.listen-address=127.0.0.1:" + std::to_string(prom_port_), "--log.level=warn"};
    ProcessOptions po;
    po.log_path = prom_dir_.file("prometheus.log");
    std::string err;
    ASSERT_TRUE(prom_.start(argv, po, &err)) << err;
    const bool ready = wait_until(
        [&] {
          if (!prom_.running()) return true;
          auto r = http_get(prom_port_, "/-/ready");
          return r && r->status == 200;
        },
        kTimeout, kPoll);
    ASSERT_TRUE(prom_.running()) << "prometheus exited at start";
    ASSERT_TRUE(ready) << "prometheus not ready in time";
  }

  // The value of the one series `query` returns now, from Prometheus's query
  // API; nullopt unless it returns exactly one.
  std::optional<double> query(const std::string& q) {
    auto r = http_get(prom_port_, "/api/v1/query", {{"query", q}});
    if (!r || r->status != 200) return std::nullopt;
    json j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || j.value("status", "") != "success") return std::nullopt;
    const json& result = j["data"]["result"];
    if (!result.is_array() || result.size() != 1) return std::nullopt;
    return std::stod(result[0]["value"][1].get<std::string>());
  }

  // Waits until `q` returns one series whose value `ok` accepts; the last
  // value seen goes in the failure message.
  void expect_query(const std::string& q, const std::function<bool(double)>& ok,
                    const std::string& what) {
    std::optional<double> last;
    const bool held = wait_until(
        [&] {
          last = query(q);
          return last && ok(*last);
        },
        kTimeout, kPoll);
    EXPECT_TRUE(held) << q << ": expected " << what << ", last "
                      << (last ? std::to_string(*last) : std::string("no single series"));
  }
  void expect_query_eq(const std::string& q, double want) {
    expect_query(
        q, [want](double v) { return v == want; }, "== " + std::to_string(want));
  }

  TempDir prom_dir_{"canopy-e2e-prometheus-"};
  Process prom_;
  int prom_port_ = 0;
};

TEST_F(MetricsE2ETest, PrometheusScrapesWhatTheRunCaused) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& site = create_spoke(kSite, {{"region", "eu"}});
  ASSERT_NO_FATAL_FAILURE(launch_spoke(site));

  std::vector<std::string> names;
  for (int i = 0; i < kObjects; ++i) {
    names.push_back("web-" + std::to_string(i));
    ASSERT_TRUE(put("template", names.back(), deployment(names.back(), 1, "nginx:1.25")).ok());
  }
  ASSERT_TRUE(put("placement", "web-eu", placement_by_region(names, "eu")).ok());
  ASSERT_TRUE(wait_until([&] { return site.read().size() == kObjects; }, kTimeout, kPoll))
      << "the spoke did not write " << kObjects << " manifests";

  // Both endpoints: the exposition format, accepted by promtool's linter.
  for (auto [name, port] : {std::pair<std::string, int>{"hub", hub_->health_port},
                            std::pair<std::string, int>{"spoke", site.health_port}}) {
    auto r = http_get(port, "/metrics");
    ASSERT_TRUE(r) << name << " /metrics did not answer";
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->content_type, "text/plain; version=0.0.4; charset=utf-8");
    std::string lint;
    EXPECT_EQ(promtool_check(prom_dir_, name, r->body, &lint), 0) << name << ":\n" << lint;
    EXPECT_EQ(lint, "") << name << " /metrics:\n" << r->body;
    // Probes.
    auto live = http_get(port, "/livez");
    ASSERT_TRUE(live);
    EXPECT_EQ(live->status, 200);
    EXPECT_EQ(live->body, "live\n");
    auto ready = http_get(port, "/readyz");
    ASSERT_TRUE(ready);
    EXPECT_EQ(ready->status, 200) << ready->body;
    EXPECT_EQ(ready->body, "ready\n");
  }

  ASSERT_NO_FATAL_FAILURE(launch_prometheus(hub_->health_port, site.health_port));
  const std::string site_sel = std::string("{site=\"") + kSite + "\"}";
  // The spoke: its objects, each applied (changed) exactly once, none failed.
  expect_query_eq("canopy_spoke_objects", kObjects);
  expect_query_eq("canopy_spoke_objects_failed", 0);
  expect_query_eq("canopy_spoke_apply_outcomes_total{outcome=\"applied\"}", kObjects);
  expect_query_eq("canopy_spoke_apply_outcomes_total{outcome=\"failed\"}", 0);
  expect_query_eq("canopy_spoke_session_open", 1);
  expect_query_eq("canopy_spoke_in_sync", 1);
  expect_query_eq("canopy_spoke_applied_once", 1);
  // Templates and the placement came down whole as they entered the site's
  // scope; each object's status document went up as a delta.
  expect_query(
      "canopy_sync_documents_persisted_total{job=\"spoke\"}",
      [](double v) { return v >= kObjects + 1; }, ">= objects + placement");
  expect_query(
      "canopy_spoke_deltas_sent_total", [](double v) { return v >= kObjects; }, ">= objects");
  // The hub: one session, live and connected, no catch-up left running; its
  // placements, sites and the deltas it sent and received.
  expect_query_eq("sum(canopy_hub_sessions)", 1);
  expect_query_eq("canopy_hub_sessions{mode=\"live\"}", 1);
  expect_query_eq("canopy_hub_sessions_connected", 1);
  expect_query_eq("canopy_hub_catchups_running", 0);
  expect_query_eq("canopy_hub_site_connected" + site_sel, 1);
  expect_query(
      "canopy_hub_site_last_seen_age_seconds" + site_sel, [](double v) { return v >= 0 && v < 10; },
      "heard from within 10 s");
  // Caught up: the site's acknowledged position reaches the log's end (an
  // idle site learns it within ParentOptions::idle_position_ms).
  expect_query_eq("canopy_hub_site_lag_entries" + site_sel, 0);
  // And it acknowledged every message sent (delayed acks come within 100 ms).
  expect_query_eq("canopy_hub_site_unacked_messages" + site_sel, 0);
  expect_query_eq("canopy_hub_placements", 1);
  expect_query_eq("canopy_hub_known_sites", 1);
  expect_query(
      "canopy_hub_documents_sent_total", [](double v) { return v >= kObjects + 1; },
      ">= objects + placement");
  expect_query(
      "canopy_sync_deltas_persisted_total{job=\"hub\"}", [](double v) { return v >= kObjects; },
      ">= the site's status documents");
  expect_query(
      "canopy_sync_messages_received_total{job=\"hub\"}", [](double v) { return v > 0; }, "> 0");
  expect_query(
      "canopy_sync_messages_published_total{job=\"hub\"}", [](double v) { return v > 0; }, "> 0");
  // Both: NATS up, something stored, nothing refused or dropped.
  expect_query_eq("sum(canopy_nats_connected)", 2);
  expect_query(
      "min(canopy_store_log_index)", [](double v) { return v > 0; }, "> 0");
  expect_query(
      "min(canopy_store_live_data_bytes + canopy_store_memtable_bytes)",
      [](double v) { return v > 0; }, "> 0");
  expect_query_eq("sum(canopy_sync_dropped_messages_total)", 0);
  expect_query_eq("sum(canopy_hub_refused_writes_total)", 0);
  expect_query_eq("canopy_hub_watches", 0);
  expect_query_eq("canopy_hub_watches_fell_behind_total", 0);
  expect_query_eq("count(canopy_build_info{version!=\"\"})", 2);

  // A template edited: one delta down, one more object applied (changed),
  // its new status document one more delta up.
  const auto hub_deltas = query("canopy_hub_deltas_sent_total");
  const auto hub_in = query("canopy_sync_deltas_persisted_total{job=\"hub\"}");
  ASSERT_TRUE(hub_deltas && hub_in);
  ASSERT_TRUE(put("template", names[0], deployment(names[0], 1, "nginx:1.26")).ok());
  expect_query_eq("canopy_spoke_apply_outcomes_total{outcome=\"applied\"}", kObjects + 1);
  expect_query(
      "canopy_hub_deltas_sent_total", [&](double v) { return v >= *hub_deltas + 1; }, "one more");
  expect_query(
      "canopy_sync_deltas_persisted_total{job=\"hub\"}", [&](double v) { return v >= *hub_in + 1; },
      "one more");
  expect_query_eq("canopy_spoke_objects", kObjects);

  // Without NATS: not ready, and says why; still live. Prometheus sees it.
  nats_->kill();
  for (int port : {hub_->health_port, site.health_port}) {
    std::optional<HttpReply> r;
    EXPECT_TRUE(wait_until(
        [&] {
          r = http_get(port, "/readyz");
          return r && r->status == 503;
        },
        kTimeout, kPoll))
        << "port " << port << ": " << (r ? r->body : "no answer");
    ASSERT_TRUE(r);
    // The reason may carry the client's last connection error once a
    // reconnect attempt has failed; the words that name the cause lead.
    EXPECT_TRUE(r->body.starts_with("not ready: NATS not connected")) << r->body;
    EXPECT_TRUE(r->body.ends_with("\n")) << r->body;
    auto live = http_get(port, "/livez");
    ASSERT_TRUE(live);
    EXPECT_EQ(live->status, 200);
  }
  expect_query_eq("sum(canopy_nats_connected)", 0);

  // NATS back: ready again.
  std::string err;
  ASSERT_TRUE(nats_->start(&err)) << err;
  for (int port : {hub_->health_port, site.health_port}) {
    EXPECT_TRUE(wait_until(
        [&] {
          auto r = http_get(port, "/readyz");
          return r && r->status == 200 && r->body == "ready\n";
        },
        kTimeout, kPoll))
        << "port " << port << " not ready again";
  }
  expect_query_eq("sum(canopy_nats_connected)", 2);
}

// A spoke whose cluster does not answer: once it holds objects, a restart
// finds every pass failing, and it is not ready until one completes.
TEST_F(MetricsE2ETest, ASpokeIsNotReadyUntilAPassCompletes) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  const int dead = port();  // nothing listens here
  Spoke& site = create_spoke(kSite, {{"region", "eu"}});
  const std::string kubeconfig = site.dir.file("kubeconfig");
  std::ofstream(kubeconfig) << "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
                               "contexts:\n- name: dead\n  context: {cluster: dead}\n"
                               "clusters:\n- name: dead\n  cluster: {server: \"http://127.0.0.1:"
                            << dead << "\"}\n";
  site.extra_args = {"--applier", "kube", "--kubeconfig", kubeconfig};
  ASSERT_NO_FATAL_FAILURE(launch_spoke(site));
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1.25")).ok());
  ASSERT_TRUE(put("placement", "web-eu", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(wait_until(
      [&] {
        auto v = scrape_metric(site.health_port,
                               "canopy_spoke_reconcile_passes_total{result=\"error\"}");
        return v && *v >= 1;
      },
      kTimeout, kPoll))
      << "no failed pass counted";

  ASSERT_NO_FATAL_FAILURE(kill_spoke(site));
  ASSERT_NO_FATAL_FAILURE(launch_spoke(site, /*expect_session=*/false));
  std::optional<HttpReply> r;
  EXPECT_TRUE(wait_until(
      [&] {
        r = http_get(site.health_port, "/readyz");
        return r && r->body == "not ready: no reconcile pass has completed\n";
      },
      kTimeout, kPoll))
      << (r ? r->body : "no answer");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(scrape_metric(site.health_port, "canopy_spoke_applied_once"), 0);
  EXPECT_EQ(scrape_metric(site.health_port, "canopy_spoke_reconcile_passes_total{result=\"ok\"}"),
            0);
  auto live = http_get(site.health_port, "/livez");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
}

}  // namespace
}  // namespace canopy::e2e

// canopy_sync_bench: the sync engine at fleet scale, over a real nats-server.
//
//   canopy_sync_bench --case fanout|session_memory|storm|failover|hier|hier_scale [options]
//
// Results: one JSON line per figure on stdout,
//   {"bench":"sync.fanout","metric":"p99_ms_s10000","value":812,"target":"<2000"}
// everything else (progress, breakdowns, which kind of child a figure used) on
// stderr.
//
// Set-up (every case):
//   - a real nats-server on a free 127.0.0.1 port (tests/support NatsServer,
//     max_payload 8 MiB);
//   - the HUB runs in its own process (this executable re-executed with
//     --hub-role, talking to the bench over two pipes; sync_bench_hub.cc), so
//     that its memory (VmRSS, VmHWM, malloc heap) is the hub's alone. It is
//     the real hub::Hub, as canopy-hub runs it (store on RocksDB with
//     kGroupCommit, placement index, status aggregate, rollout controller,
//     housekeeping, ParentSync in a SyncNode over NATS), over a catalogue
//     written before it starts: S `sites/<site>` records with labels, a ~2 KB
//     Deployment template `t/acme/templates/web`, a placement
//     `t/acme/placements/web` selecting every site by label, and a grant. Its
//     hello hook re-writes `sites/<child>` from the hello's labels (a no-op
//     write here: the labels are the same). Its session timeout is 30 s
//     (kBenchSessionTimeoutMs) instead of 10 min. Its transport is wrapped
//     (HubHooks) in a pass-through that only timestamps publishes, to split
//     the fan-out time into "engine until the first publish" and "publishing
//     S messages".
//   - the SPOKES are simulated in the bench process: S children spread over G
//     NatsTransports (default 8 connections), each child on its own subjects
//     (canopy.v1.hub.<site>.up/down), driven by W worker threads (default 4):
//     a child is processed when its NATS handler queued something, and every
//     child is ticked every 100 ms. A child receives through a wildcard
//     subscription shared by all (the fair fan-out run) or through one
//     subscription of its own (NATS.c runs one delivery thread per
//     subscription, so S subscriptions are S threads in this process: on a
//     2-CPU box that, not the hub, dominates the 10,000-child fan-out).
//   - LIGHT children start WARM by default (--join warm): before their hello
//     they hold what a spoke that was in sync holds (the hub's states of their
//     3 scope documents and a position at the hub's log end with their scope
//     version, exported by the hub), as after a hub restart; their sessions
//     then open by catch-up. --join cold starts them empty: every session
//     opens by reconciliation (an empty child asks for its whole scope at the
//     first sketch message). REAL children always start cold (empty stores).
//
// Every child is the real ChildSync in a SyncNode (sync_bench_fleet.h), as in
// canopy-spoke; two kinds of persistence (stderr says which one each figure
// used):
//   - REAL: its own Store (RocksDB, kGroupCommit) in a temp dir: exactly what
//     canopy-spoke runs. Used up to --real-limit children (default 1,000).
//   - LIGHT: a MemoryReplica (sync/memory_replica.h): the same engine and
//     node, persisting into memory. Used above --real-limit: 10,000 RocksDB
//     instances do not fit in one process here (each holds several file
//     descriptors open, the fanout case measures the count, and
//     RLIMIT_NOFILE's hard limit on this box is 20,000), and StoreOptions has
//     no knob for RocksDB's memtables, caches or max_open_files. A LIGHT
//     child persists nothing (no fsync), which makes it cheaper than a spoke;
//     a real spoke fsyncs on its own disk, in parallel with the others.
//
// Cases:
//   fanout          S = 1,000 (REAL children) and S = 10,000 (LIGHT): with all
//                   sessions live, the template is updated at the hub (one
//                   Store::put of the whole document, changing one annotation);
//                   latency = from the hub's commit (its store listener saw
//                   the entry, i.e. durable; put() returns ~0.05 ms later) until
//                   each child has the change in its store (REAL: the child
//                   store's commit listener) or replica (LIGHT: its
//                   MemoryReplica merged it). --rounds updates (default 5);
//                   p50/p99/max are the medians over the rounds. Then raw NATS, in the same run
//                   and process: one payload of the size of the hub's Changes
//                   message, published once to each of S subjects from one
//                   connection; time until each subscriber's handler has it;
//                   median p50/p99 over rounds.
//                   The fair comparison, which `p99_vs_raw_nats_s<S>` (target
//                   <= 2 at S = 10,000) uses: on BOTH sides the subscribers are
//                   demultiplexed per connection. Canopy's children receive
//                   through one wildcard subscription (canopy.v1.hub.*.down)
//                   on one extra connection, handed to each child by subject
//                   (Demux); the raw subscribers receive exactly so
//                   (canopy.v1.rawd.*.down, the same Demux). A process that
//                   holds many sessions does this; a spoke holds one.
//                   Diagnostics (--no-diagnostics skips them; no targets):
//                   raw NATS with one wildcard subscription on each of the G
//                   connections (raw_nats_wildcard_per_connection_*), and a
//                   second run per S whose children, and raw subscribers,
//                   hold one NATS subscription each (*_sub_per_child): NATS.c
//                   runs one delivery thread per subscription, so that is S
//                   threads in this process, which on a 2-CPU box dominates
//                   both figures (raw NATS suffers more than Canopy).
//                   hub_first_publish_ms / hub_last_publish_ms: the hub's
//                   share, from its commit to its first and last publish
//                   (medians over the rounds). Every round also prints the
//                   CPU time used by the hub, nats-server and this process;
//                   cpu_ms_per_round_{hub,nats_server,children} and the
//                   reference's raw_nats_cpu_ms_per_round_* are their means.
//                   The update's Changes message is ~160 bytes: put() of the
//                   whole template commits only the changed field.
//   session_memory  S = 10,000 LIGHT children: the hub's heap in use
//                   (mallinfo2 uordblks + hblkhd, read inside the hub process)
//                   before any hello (all site records, the index and the NATS
//                   connection already in place) and after every session went
//                   live and stayed idle for 10 s, divided by S. The RSS delta
//                   per session is printed on stderr too (malloc_trim(0) before
//                   both readings).
//   storm           S = 10,000 LIGHT children, all live; then every child's
//                   connection is closed (the G NatsTransports are destroyed),
//                   10 changes are made at the hub (10 annotations patched into
//                   the template), the hub forgets the sessions (its
//                   session_timeout_ms passes: 30 s here, kBenchSessionTimeoutMs,
//                   instead of the daemon's 10 min, so that the run need not
//                   wait that long; the storm is one of hellos, as after a hub
//                   restart or an outage longer than the timeout), and all
//                   children reconnect at once (new connections, resubscribe,
//                   then each child, cut off for longer than the hub's
//                   session timeout, says hello with its old position, and
//                   catches up from the hub's log under
//                   max_concurrent_catchups). Figures: time from the start
//                   of the reconnection until every child holds all 10 changes,
//                   and the hub's peak RSS during it (VmHWM of the hub process,
//                   reset through /proc/<hub>/clear_refs just before; also
//                   sampled every 10 ms).
//   failover        (registered as hier.failover, --sites 1000) two hubs of
//                   one level, active-active (HubConfig::peers), each the real
//                   hub::Hub in its own process; S LIGHT children name both
//                   (half start on each); one hub is SIGKILLed: time until
//                   every child that was on it is in sync with the other
//                   (target < 5 s), p50 too.
//   hier            (registered as hier.fanout, --sizes 100000) depth 3: a
//   hier_scale      root, R regional hubs (--regions, default 100) and S
//                   LIGHT sites, cold; see case_hier. hier.scale runs it at
//                   S = 1,000, 10,000 and 100,000 with R fixed, to show how
//                   the root's and the regions' memory and CPU grow with S.
#include "bench/sync_bench_cases.h"
#include "bench/sync_bench_fleet.h"
#include "tests/support/tls_certs.h"

namespace canopy::bench_sync {
namespace {

std::unique_ptr<testing::NatsServer> start_nats() {
  testing::NatsServerOptions no;
  no.max_payload = 8 << 20;
  auto server = std::make_unique<testing::NatsServer>(no);
  std::string err;
  if (!server->start(&err)) die("nats-server: " + err);
  g_nats_pid = server->process().pid();
  logf("nats-server on %s (max_payload 8 MiB), pid %d", server->url().c_str(), g_nats_pid);
  return server;
}

// ================================================================== cases

// How raw NATS subscribers receive.
enum class RawMode {
  // One subscription per subscriber, spread over the fleet's G connections
  // (NATS.c: one delivery thread each, S threads).
  kPerSubscriber,
  // One wildcard subscription per fleet connection covering its share of
  // the subjects (G delivery threads), demultiplexed by subject.
  kWildcardPerConnection,
  // Exactly as Canopy's children receive in the fair run: one wildcard
  // subscription on one extra connection, through a Demux.
  kDemux,
};

const char* raw_mode_name(RawMode m) {
  switch (m) {
    case RawMode::kPerSubscriber:
      return "one subscription per subscriber";
    case RawMode::kWildcardPerConnection:
      return "one wildcard subscription per connection";
    case RawMode::kDemux:
      return "one wildcard subscription on one connection, demultiplexed as Canopy's children";
  }
  return "?";
}

struct RawRound {
  double p50 = 0;
  double p99 = 0;
  // CPU time used during the round (from the first publish until the last
  // subscriber had it), read from /proc in 10 ms ticks.
  double cpu_nats_ms = 0;
  double cpu_self_ms = 0;
};

// Raw NATS: one payload to each of S subjects from one connection; time until
// each subscriber's handler has it, per round.
std::vector<RawRound> raw_nats(Fleet& fleet, const std::string& url, int n, size_t bytes,
                               int rounds, RawMode mode) {
  std::vector<std::atomic<int64_t>> at(static_cast<size_t>(n));
  std::atomic<int> got{0};
  std::vector<std::string> subjects;
  std::vector<std::pair<Group*, uint64_t>> subs;
  const size_t groups = fleet.groups().size();
  Demux demux;
  std::unique_ptr<sync::NatsTransport> demux_nats;
  for (int i = 0; i < n; ++i) {
    auto mark = [&at, &got, i](const sync::Message&) {
      at[static_cast<size_t>(i)].store(now_ns());
      got.fetch_add(1);
    };
    switch (mode) {
      case RawMode::kWildcardPerConnection:
        subjects.push_back("canopy.v1.rawg" + std::to_string(static_cast<size_t>(i) % groups) +
                           "." + site_name(i) + ".down");
        break;
      case RawMode::kDemux:
        subjects.push_back("canopy.v1.rawd." + site_name(i) + ".down");
        demux.add(subjects.back(), mark);
        break;
      case RawMode::kPerSubscriber: {
        subjects.push_back("canopy.v1.raw." + site_name(i) + ".down");
        Group* g = fleet.group_of(i);
        std::shared_lock lock(g->mu);
        auto id = g->nats->subscribe(subjects.back(), mark);
        if (!id.ok()) die("raw subscribe: " + id.status().to_string());
        subs.emplace_back(g, *id);
        break;
      }
    }
  }
  if (mode == RawMode::kWildcardPerConnection) {
    for (size_t gi = 0; gi < groups; ++gi) {
      Group* g = fleet.groups()[gi].get();
      std::shared_lock lock(g->mu);
      auto id = g->nats->subscribe(
          "canopy.v1.rawg" + std::to_string(gi) + ".*.down",
          [&at, &got, n](const sync::Message& m) {
            // canopy.v1.rawgG.site-NNNNN.down
            const size_t p = m.subject.find("site-");
            const int i = p == std::string::npos ? -1 : std::atoi(m.subject.c_str() + p + 5);
            if (i >= 0 && i < n) at[static_cast<size_t>(i)].store(now_ns());
            got.fetch_add(1);
          });
      if (!id.ok()) die("raw subscribe: " + id.status().to_string());
      subs.emplace_back(g, *id);
    }
  }
  if (mode == RawMode::kDemux) {
    demux_nats = connect_group(url, "canopy-bench-raw-demux");
    demux.listen(demux_nats.get(), "canopy.v1.rawd.*.down");
  }
  for (auto& g : fleet.groups()) (void)g->nats->flush(std::chrono::seconds(10));
  auto pub = connect_group(url, "canopy-bench-raw-publisher");
  const std::string payload(bytes, 'x');
  std::vector<RawRound> out;
  for (int r = 0; r < rounds; ++r) {
    for (auto& a : at) a.store(0);
    got = 0;
    const double cpu_nats0 = cpu_ms(g_nats_pid), cpu_self0 = cpu_ms(getpid());
    const int64_t t0 = now_ns();
    for (int i = 0; i < n; ++i) {
      Status s = pub->publish(subjects[static_cast<size_t>(i)], payload);
      if (!s.ok()) die("raw publish: " + s.to_string());
    }
    const int64_t published = now_ns();
    const int64_t deadline = t0 + 30'000'000'000;
    while (got.load() < n && now_ns() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::vector<double> lat;
    for (auto& a : at) {
      const int64_t t = a.load();
      if (t != 0) lat.push_back(static_cast<double>(t - t0) / 1e6);
    }
    RawRound rr{percentile(lat, 0.5), percentile(lat, 0.99), cpu_ms(g_nats_pid) - cpu_nats0,
                cpu_ms(getpid()) - cpu_self0};
    out.push_back(rr);
    logf(
        "  CPU used in %.0f ms: nats-server %.0f ms, this process (publisher and subscribers) %.0f "
        "ms",
        static_cast<double>(now_ns() - t0) / 1e6, rr.cpu_nats_ms, rr.cpu_self_ms);
    logf(
        "raw NATS (%s) S=%d round %d: %zu/%d received; publish loop %.1f ms; p50 %.1f p99 %.1f "
        "max %.1f ms",
        raw_mode_name(mode), n, r + 1, lat.size(), n, static_cast<double>(published - t0) / 1e6,
        rr.p50, rr.p99, percentile(lat, 1.0));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  for (auto& [g, id] : subs) {
    std::shared_lock lock(g->mu);
    g->nats->unsubscribe(id);
  }
  demux_nats.reset();  // waits out running handlers: `demux` outlives them
  return out;
}

double median_p50(const std::vector<RawRound>& v) {
  std::vector<double> x;
  for (const auto& r : v) x.push_back(r.p50);
  return median(x);
}
double median_p99(const std::vector<RawRound>& v) {
  std::vector<double> x;
  for (const auto& r : v) x.push_back(r.p99);
  return median(x);
}
// Mean CPU per round: /proc counts in 10 ms ticks, too coarse for a median
// of rounds that each use a few tens of ms.
double mean_of(const std::vector<RawRound>& v, double RawRound::*field) {
  double sum = 0;
  for (const auto& r : v) sum += r.*field;
  return v.empty() ? 0 : sum / static_cast<double>(v.size());
}

// The fair comparison (the `ratio` figures): Canopy's children and the raw
// NATS subscribers both receive through one wildcard subscription on one
// connection, demultiplexed by subject (Demux), in the same run. Diagnostics
// (no targets): the same with one subscription per child/subscriber
// (*_sub_per_child), which NATS.c serves with one thread each, and raw NATS
// with one wildcard subscription on each of the G connections.
// Returns each S's p99 of the fair (demultiplexed) run. `tag` is appended
// to every metric's S suffix ("_tcp", "_tls" for --tls-compare).
std::map<int, double> case_fanout(const Options& opt, const std::string& url,
                                  const std::string& bench = "sync.fanout",
                                  const std::string& tag = "") {
  std::map<int, double> p99_of;
  if (opt.rounds >= Track::kTrackedRevs) {
    die("--rounds must be below " + std::to_string(Track::kTrackedRevs));
  }
  std::vector<std::pair<int, bool>> phases;  // (S, demultiplexed)
  for (int n : opt.sizes) {
    phases.emplace_back(n, true);
    if (opt.diagnostics) phases.emplace_back(n, false);
  }
  for (const auto& [n, demux] : phases) {
    const bool real = n <= opt.real_limit;
    const std::string suffix = "_s" + std::to_string(n) + tag + (demux ? "" : "_sub_per_child");
    logf("=== fanout S=%d (%s): %s; %zu NATS connections, %zu worker threads, hub in pid below", n,
         demux ? "the fair run: children demultiplexed on one connection"
               : "DIAGNOSTIC: one NATS subscription per child",
         kind_name(real), opt.groups, opt.workers);
    HubProcess hub(url, n, opt.max_catchups);
    logf("hub pid %d ready: %s", hub.pid(), Fleet::summary(hub.ready()).c_str());
    Fleet fleet(opt, url, n, real, demux);
    if (real && demux) {
      emit(bench, "child_store_fds_per_store",
           std::round(100.0 * static_cast<double>(fleet.store_fds()) / n) / 100.0);
      emit(bench, "child_store_rss_kb_per_store",
           std::round(static_cast<double>(fleet.store_rss_kb()) / n));
    }
    if (!opt.cold_join) fleet.seed_from(hub);
    fleet.connect();
    const double join_ms = fleet.wait_all_live(hub, ("fanout S=" + std::to_string(n)).c_str());
    if (join_ms < 0) die("the children did not all go live");
    emit(bench, "join_ms" + suffix, std::round(join_ms));
    std::this_thread::sleep_for(std::chrono::seconds(2));

    std::vector<double> p50s, p99s, maxs, first_pubs, last_pubs;
    double cpu_hub_sum = 0, cpu_nats_sum = 0, cpu_self_sum = 0;
    size_t msg_bytes = 0;
    for (int r = 1; r <= opt.rounds; ++r) {
      const double cpu_hub0 = cpu_ms(hub.pid()), cpu_nats0 = cpu_ms(g_nats_pid),
                   cpu_self0 = cpu_ms(getpid());
      auto put = hub.call("put_rev=" + std::to_string(r));
      const int64_t t0 = num(put, "t0");
      const size_t have = fleet.wait_reached(r);
      const double cpu_hub = cpu_ms(hub.pid()) - cpu_hub0,
                   cpu_nats = cpu_ms(g_nats_pid) - cpu_nats0,
                   cpu_self = cpu_ms(getpid()) - cpu_self0;
      const double wall = static_cast<double>(now_ns() - t0) / 1e6;
      cpu_hub_sum += cpu_hub;
      cpu_nats_sum += cpu_nats;
      cpu_self_sum += cpu_self;
      auto pub = hub.call("pubstats");
      std::vector<double> lat, recv_lat, apply_lat;
      for (auto& c : fleet.children()) {
        if (c->track.rev.load() < r) continue;
        lat.push_back(std::max<double>(0, static_cast<double>(c->track.rev_ns.load() - t0) / 1e6));
        const int64_t rc = c->track.rev_recv_ns.load();
        if (rc != 0) {
          recv_lat.push_back(static_cast<double>(rc - t0) / 1e6);
          apply_lat.push_back(static_cast<double>(c->track.rev_ns.load() - rc) / 1e6);
        }
        msg_bytes = std::max<size_t>(msg_bytes, c->track.rev_msg_bytes.load());
      }
      const double p50 = percentile(lat, 0.5), p99 = percentile(lat, 0.99),
                   mx = percentile(lat, 1.0);
      p50s.push_back(p50);
      p99s.push_back(p99);
      maxs.push_back(mx);
      first_pubs.push_back(static_cast<double>(num(pub, "first") - t0) / 1e6);
      last_pubs.push_back(static_cast<double>(num(pub, "last") - t0) / 1e6);
      logf(
          "fanout S=%d round %d: %zu/%d children have it; put() %.1f ms (returned %.2f ms after "
          "the commit listener ran); latency p50 %.1f p99 "
          "%.1f max %.1f ms | hub: first publish +%.1f ms, last publish +%.1f ms, %lld messages "
          "%lld bytes | children: received p99 +%.1f ms, received->applied p99 %.2f ms; Changes "
          "message %zu bytes",
          n, r, have, n, static_cast<double>(num(put, "put_ns")) / 1e6,
          static_cast<double>(num(put, "returned") - num(put, "committed")) / 1e6, p50, p99, mx,
          static_cast<double>(num(pub, "first") - t0) / 1e6,
          static_cast<double>(num(pub, "last") - t0) / 1e6,
          static_cast<long long>(num(pub, "published")), static_cast<long long>(num(pub, "bytes")),
          percentile(recv_lat, 0.99), percentile(apply_lat, 0.99), msg_bytes);
      logf(
          "  CPU used in the %.0f ms until the last child had it (2 CPUs = %.0f ms): hub %.0f ms, "
          "nats-server %.0f ms, simulated children (this process) %.0f ms",
          wall, 2 * wall, cpu_hub, cpu_nats, cpu_self);
      if (have != static_cast<size_t>(n)) die("round did not complete within 60 s");
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    logf("fanout S=%d%s figures below are from %s", n, demux ? "" : " (diagnostic)",
         kind_name(real));
    const double p99 = median(p99s);
    if (demux) p99_of[n] = p99;
    emit(bench, "p50_ms" + suffix, round1(median(p50s)));
    emit(bench, "p99_ms" + suffix, round1(p99), n == 10000 && demux ? "<2000" : "");
    emit(bench, "max_ms" + suffix, round1(median(maxs)));
    // The hub's share: from the commit to its first and last publish.
    emit(bench, "hub_first_publish_ms" + suffix, round1(median(first_pubs)));
    emit(bench, "hub_last_publish_ms" + suffix, round1(median(last_pubs)));
    // Where the CPU of a round goes (mean per round, until the last child
    // had the change): the hub, nats-server, and this process, whose
    // simulated children decode, merge and ack what a real site would on
    // its own CPU. On two cores the p99 follows the sum.
    emit(bench, "cpu_ms_per_round_hub" + suffix, round1(cpu_hub_sum / opt.rounds));
    emit(bench, "cpu_ms_per_round_nats_server" + suffix, round1(cpu_nats_sum / opt.rounds));
    emit(bench, "cpu_ms_per_round_children" + suffix, round1(cpu_self_sum / opt.rounds));
    if (demux) {
      // The reference, received exactly as the children above received.
      auto raw = raw_nats(fleet, url, n, msg_bytes, opt.rounds, RawMode::kDemux);
      emit(bench, "raw_nats_p50_ms" + suffix, round1(median_p50(raw)));
      emit(bench, "raw_nats_p99_ms" + suffix, round1(median_p99(raw)));
      emit(bench, "p99_vs_raw_nats" + suffix, ratio(p99, median_p99(raw)), n == 10000 ? "<=2" : "");
      emit(bench, "raw_nats_cpu_ms_per_round_nats_server" + suffix,
           round1(mean_of(raw, &RawRound::cpu_nats_ms)));
      emit(bench, "raw_nats_cpu_ms_per_round_publisher_and_subscribers" + suffix,
           round1(mean_of(raw, &RawRound::cpu_self_ms)));
      if (opt.diagnostics) {
        auto wild = raw_nats(fleet, url, n, msg_bytes, opt.rounds, RawMode::kWildcardPerConnection);
        emit(bench, "raw_nats_wildcard_per_connection_p50_ms" + suffix, round1(median_p50(wild)));
        emit(bench, "raw_nats_wildcard_per_connection_p99_ms" + suffix, round1(median_p99(wild)));
        emit(bench, "p99_vs_raw_nats_wildcard_per_connection" + suffix,
             ratio(p99, median_p99(wild)));
      }
    } else {
      auto raw = raw_nats(fleet, url, n, msg_bytes, opt.rounds, RawMode::kPerSubscriber);
      emit(bench, "raw_nats_p50_ms" + suffix, round1(median_p50(raw)));
      emit(bench, "raw_nats_p99_ms" + suffix, round1(median_p99(raw)));
      emit(bench, "p99_vs_raw_nats" + suffix, ratio(p99, median_p99(raw)));
    }
    auto st = hub.call("stats");
    logf("hub at the end of S=%d: %s", n, Fleet::summary(st).c_str());
  }
  return p99_of;
}

// security.handshake's fan-out figure: the same fan-out over plain TCP and
// over mutual TLS (nats-server `verify`, every connection with a client
// certificate, the hub's too), one after the other in this run; the ratio
// of the p99s (target: TLS at most 1.5x).
void case_tls_compare(Options opt, const std::string& plain_url) {
  const std::string bench = "security.handshake";
  opt.diagnostics = false;
  testing::TestCertificates certs;
  std::string err;
  const auto ca = certs.make_ca("bench", &err);
  if (!ca.ok()) die("CA: " + err);
  const auto server = certs.issue_server(ca, "nats-server", {"localhost"}, {"127.0.0.1"}, &err);
  const auto client =
      certs.issue_client(ca, "bench-client", std::chrono::hours(24), std::chrono::hours(-1), &err);
  if (!server.ok() || !client.ok()) die("certificates: " + err);
  g_tls = {ca.cert, client.cert, client.key};
  testing::NatsServerOptions no;
  no.max_payload = 8 << 20;
  no.tls = {server.cert, server.key, ca.cert, true, false, 5};
  testing::NatsServer tls_nats(no);
  if (!tls_nats.start(&err)) die("nats-server with TLS: " + err);
  logf("nats-server with mTLS on %s", tls_nats.url().c_str());
  const auto tcp = case_fanout(opt, plain_url, bench, "_tcp");
  g_nats_pid = tls_nats.process().pid();
  const auto tls = case_fanout(opt, tls_nats.url(), bench, "_tls");
  for (const auto& [n, p99] : tls) {
    const auto it = tcp.find(n);
    if (it == tcp.end() || it->second <= 0) continue;
    emit(bench, "fanout_p99_tls_vs_tcp_s" + std::to_string(n), ratio(p99, it->second), "<=1.5");
  }
}

void case_session_memory(const Options& opt, const std::string& url) {
  const std::string bench = "sync.session_memory";
  const int n = opt.sites;
  const bool real = n <= opt.real_limit;
  logf("=== session_memory S=%d: %s; hub in its own process", n, kind_name(real));
  HubProcess hub(url, n, opt.max_catchups);
  Fleet fleet(opt, url, n, real);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto before = hub.call("trim");
  logf("hub before any hello (site records, index, NATS in place): %s",
       Fleet::summary(before).c_str());
  if (!opt.cold_join) fleet.seed_from(hub);
  fleet.connect();
  const double join_ms = fleet.wait_all_live(hub, "session_memory");
  if (join_ms < 0) die("the children did not all go live");
  logf("idle for 10 s (heartbeats flowing, idle position updates)");
  std::this_thread::sleep_for(std::chrono::seconds(10));
  auto st = hub.call("stats modes");
  auto after = hub.call("trim");
  const double heap_per = static_cast<double>(num(after, "heap") - num(before, "heap")) / n;
  const double rss_per =
      static_cast<double>(num(after, "rss_kb") - num(before, "rss_kb")) * 1024.0 / n;
  logf(
      "hub after %d live idle sessions (%s): heap %lld -> %lld bytes (%.0f per session); RSS "
      "%lld -> %lld kB (%.0f bytes per session); figures from %s",
      n, Fleet::summary(st).c_str(), static_cast<long long>(num(before, "heap")),
      static_cast<long long>(num(after, "heap")), heap_per,
      static_cast<long long>(num(before, "rss_kb")), static_cast<long long>(num(after, "rss_kb")),
      rss_per, kind_name(real));
  emit(bench, "bytes_per_idle_session", std::round(heap_per), "<16384");
  emit(bench, "rss_bytes_per_idle_session", std::round(rss_per));
  emit(bench, "join_ms_s" + std::to_string(n), std::round(join_ms));
}

void case_storm(const Options& opt, const std::string& url) {
  const std::string bench = "sync.storm";
  const int n = opt.sites;
  if (n <= opt.real_limit) die("storm uses LIGHT children; raise --sites above --real-limit");
  logf("=== storm S=%d: %s; max_concurrent_catchups %zu", n, kind_name(false), opt.max_catchups);
  HubProcess hub(url, n, opt.max_catchups);
  Fleet fleet(opt, url, n, false);
  if (!opt.cold_join) fleet.seed_from(hub);
  fleet.connect();
  if (fleet.wait_all_live(hub, "storm join") < 0) die("the children did not all go live");
  std::this_thread::sleep_for(std::chrono::seconds(2));

  logf("closing all %zu child connections", fleet.groups().size());
  fleet.disconnect_all();
  const int64_t t_disc = now_ns();
  for (int k = 1; k <= kStormChanges; ++k) hub.call("storm_patch=" + std::to_string(k));
  logf(
      "made %d changes at the hub; waiting for the hub to forget the sessions "
      "(session_timeout_ms here 30 s)",
      kStormChanges);
  for (;;) {
    auto st = hub.call("stats");
    if (num(st, "sessions") == 0) break;
    if (now_ns() - t_disc > 120'000'000'000) die("the hub kept the sessions for 120 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  logf("hub forgot all sessions after %.1f s", static_cast<double>(now_ns() - t_disc) / 1e9);
  size_t early = 0;
  for (auto& c : fleet.children()) early += c->track.storm.load() == kStormAll ? 1 : 0;
  if (early != 0) logf("WARNING: %zu children had the changes before reconnecting", early);
  uint64_t hellos0 = 0;
  for (auto& c : fleet.children()) hellos0 += c->hellos();
  const int64_t catchups0 = num(hub.call("stats"), "catchups");
  auto base = hub.call("reset_peak");
  logf("hub before the reconnection: %s", Fleet::summary(base).c_str());

  const int64_t t0 = now_ns();
  fleet.reconnect_all();
  logf("reconnected %zu connections and %d subscriptions in %.2f s", fleet.groups().size(), n,
       static_cast<double>(now_ns() - t0) / 1e9);
  const int64_t deadline = t0 + 170'000'000'000;
  int64_t last_log = now_ns();
  size_t have = 0;
  while (now_ns() < deadline) {
    have = 0;
    for (auto& c : fleet.children()) have += c->track.storm.load() == kStormAll ? 1 : 0;
    if (have == static_cast<size_t>(n)) break;
    if (now_ns() - last_log > 2'000'000'000) {
      last_log = now_ns();
      auto st = hub.call("stats");
      logf("storm: %zu/%d converged after %.1f s; hub: %s", have, n,
           static_cast<double>(now_ns() - t0) / 1e9, Fleet::summary(st).c_str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::vector<double> lat;
  for (auto& c : fleet.children()) {
    const int64_t t = c->track.storm_ns.load();
    if (t != 0) lat.push_back(static_cast<double>(t - t0) / 1e6);
  }
  auto st = hub.call("stats modes");
  const double converge = percentile(lat, 1.0);
  logf("storm: %zu/%d converged; p50 %.0f p99 %.0f max %.0f ms after the reconnection; hub: %s",
       have, n, percentile(lat, 0.5), percentile(lat, 0.99), converge, Fleet::summary(st).c_str());
  uint64_t hellos = 0, resets = 0;
  for (auto& c : fleet.children()) {
    hellos += c->hellos();
    resets += c->resets();
  }
  logf(
      "storm: during the storm the children sent %llu hellos for %d children (a hello retried "
      "before its welcome came keeps its session), the hub ran %lld catch-ups",
      static_cast<unsigned long long>(hellos - hellos0), n,
      static_cast<long long>(num(st, "catchups") - catchups0));
  logf(
      "storm: children sent %llu hellos and got %llu resets in all; hub catch-ups %lld, "
      "reconciliations %lld (since start); peak RSS: VmHWM %lld kB, sampled %lld kB, baseline "
      "%lld kB; figures from %s",
      static_cast<unsigned long long>(hellos), static_cast<unsigned long long>(resets),
      static_cast<long long>(num(st, "catchups")),
      static_cast<long long>(num(st, "reconciliations")), static_cast<long long>(num(st, "hwm_kb")),
      static_cast<long long>(num(st, "sampled_peak_kb")),
      static_cast<long long>(num(base, "rss_kb")), kind_name(false));
  if (have != static_cast<size_t>(n)) {
    logf("storm: NOT CONVERGED within 170 s");
    emit(bench, "storm_converged_children_s" + std::to_string(n), static_cast<double>(have));
  }
  emit(bench, "storm_converge_ms_s" + std::to_string(n),
       have == static_cast<size_t>(n) ? std::round(converge) : -1);
  emit(bench, "storm_hub_peak_rss_mb",
       std::round(static_cast<double>(std::max(num(st, "hwm_kb"), num(st, "sampled_peak_kb"))) /
                  1024.0 * 10) /
           10);
  emit(bench, "max_concurrent_catchups", static_cast<double>(opt.max_catchups));
}

std::vector<int> parse_sizes(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  std::string tok;
  while (std::getline(in, tok, ',')) out.push_back(std::atoi(tok.c_str()));
  return out;
}

int usage() {
  std::fprintf(
      stderr,
      "usage: canopy_sync_bench --case fanout|session_memory|storm|failover|hier|hier_scale "
      "[--regions R] [--groups G] "
      "[--workers W] [--rounds R] [--sizes 1000,10000] [--sites S] [--real-limit N] "
      "[--max-catchups K] [--join warm|cold] [--join-timeout S] [--join-wave N] "
      "[--heartbeat-ms MS] [--no-diagnostics]\n");
  return 2;
}

}  // namespace
}  // namespace canopy::bench_sync

int main(int argc, char** argv) {
  using namespace canopy::bench_sync;
  signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  auto value = [&](size_t& i) -> std::string {
    if (i + 1 >= args.size()) {
      std::fprintf(stderr, "%s needs a value\n", args[i].c_str());
      std::exit(2);
    }
    return args[++i];
  };
  bool hub_role = false, regions_role = false;
  HubArgs ha;
  Options opt;
  opt.sizes = {1000, 10000};
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--hub-role") {
      hub_role = true;
    } else if (a == "--regions-role") {
      regions_role = true;
    } else if (a == "--regions") {
      ha.regions = opt.regions = std::atoi(value(i).c_str());
    } else if (a == "--parent") {
      ha.parent = value(i);
    } else if (a == "--in-fd") {
      ha.in_fd = std::atoi(value(i).c_str());
    } else if (a == "--out-fd") {
      ha.out_fd = std::atoi(value(i).c_str());
    } else if (a == "--sites") {
      ha.sites = opt.sites = std::atoi(value(i).c_str());
    } else if (a == "--nats") {
      ha.nats_url = value(i);
    } else if (a == "--dir") {
      ha.dir = value(i);
    } else if (a == "--hub-name") {
      ha.name = value(i);
    } else if (a == "--hub-peers") {
      ha.peers = value(i);
    } else if (a == "--max-catchups") {
      ha.max_catchups = opt.max_catchups = std::strtoull(value(i).c_str(), nullptr, 10);
    } else if (a == "--case") {
      opt.which = value(i);
    } else if (a == "--groups") {
      opt.groups = std::strtoull(value(i).c_str(), nullptr, 10);
    } else if (a == "--workers") {
      opt.workers = std::strtoull(value(i).c_str(), nullptr, 10);
    } else if (a == "--rounds") {
      opt.rounds = std::atoi(value(i).c_str());
    } else if (a == "--sizes") {
      opt.sizes = parse_sizes(value(i));
    } else if (a == "--real-limit") {
      opt.real_limit = std::atoi(value(i).c_str());
    } else if (a == "--join") {
      const std::string j = value(i);
      if (j != "warm" && j != "cold") return usage();
      opt.cold_join = j == "cold";
    } else if (a == "--tls-compare") {
      opt.tls_compare = true;
    } else if (a == "--tls-ca") {
      ha.tls_ca = value(i);
    } else if (a == "--tls-cert") {
      ha.tls_cert = value(i);
    } else if (a == "--tls-key") {
      ha.tls_key = value(i);
    } else if (a == "--no-diagnostics") {
      opt.diagnostics = false;
    } else if (a == "--heartbeat-ms") {
      heartbeat_ms() = std::strtoull(value(i).c_str(), nullptr, 10);
    } else if (a == "--join-wave") {
      opt.join_wave = std::atoi(value(i).c_str());
    } else if (a == "--join-timeout") {
      opt.join_timeout_s = std::atoi(value(i).c_str());
    } else {
      return usage();
    }
  }
  if (regions_role) regions_main(ha);
  if (hub_role) hub_main(ha);
  raise_nofile();
  spdlog::set_level(spdlog::level::warn);
  if (opt.which != "fanout" && opt.which != "session_memory" && opt.which != "storm" &&
      opt.which != "failover" && opt.which != "hier" && opt.which != "hier_scale") {
    return usage();
  }
  if ((opt.which == "hier" || opt.which == "hier_scale") && opt.regions <= 0) return usage();
  logf("case %s; RLIMIT_NOFILE %s; %u CPUs", opt.which.c_str(), Fleet::nofile_limit().c_str(),
       std::thread::hardware_concurrency());
  auto nats = start_nats();
  if (opt.which == "fanout" && opt.tls_compare) {
    case_tls_compare(opt, nats->url());
  } else if (opt.which == "fanout") {
    case_fanout(opt, nats->url());
  }
  if (opt.which == "session_memory") case_session_memory(opt, nats->url());
  if (opt.which == "storm") case_storm(opt, nats->url());
  if (opt.which == "failover") case_failover(opt, nats->url());
  if (opt.which == "hier" || opt.which == "hier_scale") case_hier(opt, nats->url());
  cleanup_join();
  logf("done");
  return 0;
}

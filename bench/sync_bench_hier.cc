// canopy_sync_bench's cases for more than one hub (see sync_bench.cc):
// hier.failover (two hubs of one level, one killed) and hier.fanout /
// hier.scale (root, regional hubs, sites).
#include "bench/sync_bench_cases.h"
#include "bench/sync_bench_fleet.h"

namespace canopy::bench_sync {

// hier.failover: two hubs of one level (the real hub::Hub, each in its own
// process with its own store, `peers` naming the other) and S LIGHT
// children whose parents are both, each starting at its
// sync::preferred_order choice (about half on each). Once every child is in
// sync, one hub is SIGKILLed; measured: the time from the kill until every
// child that was on it is in sync with the other (its silence noticed after
// three 1 s heartbeats, a hello, a reconciliation). Target: under 5 s for
// 1,000 sites.
void case_failover(const Options& opt, const std::string& url) {
  const std::string bench = "hier.failover";
  const int n = opt.sites;
  child_parents() = {kHubName, "hub2"};
  // Each child logs its failover as a warning, on spdlog's stdout sink: not
  // among the JSON lines.
  spdlog::set_level(spdlog::level::err);
  logf("=== failover S=%d: %s children, hubs %s and hub2 (peers), %zu workers", n, kind_name(false),
       kHubName, opt.workers);
  HubProcess a(url, n, opt.max_catchups, kHubName, "hub2");
  HubProcess b(url, n, opt.max_catchups, "hub2", kHubName);
  Fleet fleet(opt, url, n, false, /*demux=*/true);
  fleet.connect();
  const int64_t join0 = now_ns();
  auto count = [&](auto pred) {
    size_t k = 0;
    for (auto& c : fleet.children()) k += pred(*c) ? 1 : 0;
    return k;
  };
  while (count([](const BenchChild& c) { return c.in_sync(); }) < static_cast<size_t>(n)) {
    if (now_ns() - join0 > static_cast<int64_t>(opt.join_timeout_s) * 1'000'000'000) {
      die("the children did not all get in sync");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::vector<bool> on_a(fleet.children().size());
  for (size_t i = 0; i < on_a.size(); ++i) on_a[i] = fleet.children()[i]->parent_index() == 0;
  const size_t moving = static_cast<size_t>(std::count(on_a.begin(), on_a.end(), true));
  logf("all %d children in sync after %.1f s: %zu on %s, %zu on hub2", n,
       static_cast<double>(now_ns() - join0) / 1e9, moving, kHubName, n - moving);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  // Idle: what two peers cost each other with every session live and
  // nothing changing (heartbeats, presence, the peer link).
  {
    const double cpu_a0 = cpu_ms(a.pid()), cpu_b0 = cpu_ms(b.pid());
    const int64_t i0 = now_ns();
    std::this_thread::sleep_for(std::chrono::seconds(5));
    const double s = static_cast<double>(now_ns() - i0) / 1e9;
    const double idle_a = (cpu_ms(a.pid()) - cpu_a0) / s, idle_b = (cpu_ms(b.pid()) - cpu_b0) / s;
    logf("idle: %s %.0f, hub2 %.0f ms of CPU per s", kHubName, idle_a, idle_b);
    emit(bench, "idle_cpu_ms_per_s_s" + std::to_string(n), std::round((idle_a + idle_b) / 2));
  }

  const int64_t t0 = now_ns();
  a.kill_now();
  logf("SIGKILLed %s", kHubName);
  std::vector<double> lat(on_a.size(), -1);
  size_t done = 0;
  const int64_t deadline = t0 + 60'000'000'000;
  while (done < moving && now_ns() < deadline) {
    for (size_t i = 0; i < on_a.size(); ++i) {
      if (!on_a[i] || lat[i] >= 0) continue;
      const auto& c = *fleet.children()[i];
      if (c.parent_index() == 1 && c.in_sync()) {
        lat[i] = static_cast<double>(now_ns() - t0) / 1e6;
        ++done;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::vector<double> moved;
  for (size_t i = 0; i < lat.size(); ++i) {
    if (on_a[i] && lat[i] >= 0) moved.push_back(lat[i]);
  }
  const size_t stayed_in_sync = count([](const BenchChild& c) { return c.in_sync(); });
  logf("failover: %zu/%zu children moved to hub2; p50 %.0f, p99 %.0f, max %.0f ms; %zu/%d in sync",
       done, moving, percentile(moved, 0.5), percentile(moved, 0.99), percentile(moved, 1.0),
       stayed_in_sync, n);
  if (done < moving) logf("failover: NOT all moved within 60 s");
  emit(bench, "failover_all_ms_s" + std::to_string(n),
       done == moving ? std::round(percentile(moved, 1.0)) : -1, "<5000");
  emit(bench, "failover_p50_ms_s" + std::to_string(n), std::round(percentile(moved, 0.5)));
  emit(bench, "sites_moved_s" + std::to_string(n), static_cast<double>(done));
}

// hier.fanout / hier.scale: depth 3. The root (the real hub::Hub, own
// process) holds the catalogue and S site records whose `region` names one
// of R regional hubs (region_name(i % R)); the R regional hubs (the real
// hub::Hub with `parent`, each with its own RocksDB store and NATS
// connection, all in one second process) sync their sites' scopes from the
// root; S LIGHT children, cold (empty), each syncing with its regional hub,
// in this process (G connections to publish, one wildcard subscription per
// region on one more to receive). Processes: nats-server, the root, the
// regions' process, this one; NATS connections: 1 + R + G + 1 (+ the raw
// reference's none: there is no raw reference here).
// Per S: the join (regions in sync with the root, then every site in sync
// with its region) with the CPU each process used; the root's and the
// regions' memory once all is idle (heap in use after malloc_trim, RSS);
// then --rounds template updates at the root: latency from the root's
// commit until each site holds the change (two hops, each hub committing
// it durably before it sends it on), p50/p99 (medians over the rounds), with
// each process's CPU per round.
void case_hier(const Options& opt, const std::string& url) {
  const int regions = opt.regions;
  const std::string root_name = "root";
  child_region() = [regions](int i) { return region_name(i % regions); };
  spdlog::set_level(spdlog::level::err);
  const std::string bench = opt.which == "hier_scale" ? "hier.scale" : "hier.fanout";
  struct Mem {
    int n = 0;
    double root_heap_mb = 0, root_rss_mb = 0, regions_heap_mb = 0, regions_rss_mb = 0;
  };
  std::vector<Mem> mems;
  for (int n : opt.sizes) {
    const std::string sfx = "_s" + std::to_string(n);
    logf("=== hier S=%d: root + %d regional hubs (real hub::Hub, two processes), %s, cold", n,
         regions, kind_name(false));
    HubProcess root(url, n, opt.max_catchups, root_name, "",
                    {"--regions", std::to_string(regions)});
    logf("root pid %d ready: %s", root.pid(), Fleet::summary(root.ready()).c_str());
    const double cpu_root0 = cpu_ms(root.pid()), cpu_nats0 = cpu_ms(g_nats_pid);
    const int64_t t0 = now_ns();
    HubProcess regs(
        url, 0, opt.max_catchups, root_name, "",
        {"--regions-role", "--regions", std::to_string(regions), "--parent", root_name});
    const int64_t deadline = t0 + int64_t{opt.join_timeout_s} * 1'000'000'000;
    std::map<std::string, std::string> st;
    while (true) {
      st = regs.call("stats");
      if (num(st, "upstream_in_sync") == regions) break;
      if (now_ns() > deadline) die("the regional hubs did not get in sync with the root");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const double regions_ms = static_cast<double>(now_ns() - t0) / 1e6;
    logf("all %d regional hubs in sync with the root %.1f s after they started", regions,
         regions_ms / 1000);
    emit(bench, "regions_in_sync_ms" + sfx, std::round(regions_ms));

    Fleet fleet(opt, url, n, false, /*demux=*/true);
    const double cpu_regs1 = cpu_ms(regs.pid()), cpu_self1 = cpu_ms(getpid());
    // Sites start all at once, or in waves of --join-wave: each wave once
    // the sites before it are in sync.
    const size_t wave = opt.join_wave > 0 ? static_cast<size_t>(opt.join_wave) : SIZE_MAX;
    fleet.set_admitted(wave);
    const int64_t join0 = now_ns();
    fleet.connect();
    for (size_t admitted = wave; admitted < static_cast<size_t>(n); admitted += wave) {
      while (fleet.count_in_sync() < admitted) {
        if (now_ns() > deadline + int64_t{opt.join_timeout_s} * 1'000'000'000) {
          die("a wave of sites did not get in sync");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      logf("hier S=%d: %zu sites in sync after %.1f s; starting %zu more", n, admitted,
           static_cast<double>(now_ns() - join0) / 1e9,
           std::min(wave, static_cast<size_t>(n) - admitted));
      fleet.set_admitted(admitted + wave);
    }
    if (fleet.wait_all_live(regs, ("hier S=" + std::to_string(n)).c_str()) < 0) {
      die("the sites did not all go live");
    }
    const double join_ms = static_cast<double>(now_ns() - join0) / 1e6;
    // The regions report their sites' presence to the root: wait until
    // each region is in sync with the root again.
    while (num(regs.call("stats"), "upstream_in_sync") != regions) {
      if (now_ns() > deadline + 60'000'000'000) die("the regions did not get in sync again");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const double settle_ms = static_cast<double>(now_ns() - t0) / 1e6;
    logf(
        "join: every site live at its region after %.1f s; everything settled %.1f s after the "
        "regions started; CPU meanwhile: root %.0f ms, regions %.0f ms, nats-server %.0f ms, "
        "sites (this process) %.0f ms",
        join_ms / 1000, settle_ms / 1000, cpu_ms(root.pid()) - cpu_root0,
        cpu_ms(regs.pid()) - cpu_regs1, cpu_ms(g_nats_pid) - cpu_nats0,
        cpu_ms(getpid()) - cpu_self1);
    emit(bench, "join_ms" + sfx, std::round(join_ms));
    {
      // What an idle fleet of this size costs (heartbeats, presence): CPU
      // per second of each process over 3 s.
      const double r0 = cpu_ms(root.pid()), g0 = cpu_ms(regs.pid()), n0 = cpu_ms(g_nats_pid),
                   s0 = cpu_ms(getpid());
      const int64_t i0 = now_ns();
      std::this_thread::sleep_for(std::chrono::seconds(3));
      const double secs = static_cast<double>(now_ns() - i0) / 1e9;
      const double regs_idle = (cpu_ms(regs.pid()) - g0) / secs;
      logf(
          "idle, CPU ms per s: root %.0f, regions %.0f, nats-server %.0f, sites (this process) "
          "%.0f",
          (cpu_ms(root.pid()) - r0) / secs, regs_idle, (cpu_ms(g_nats_pid) - n0) / secs,
          (cpu_ms(getpid()) - s0) / secs);
      emit(bench, "regions_idle_cpu_ms_per_s" + sfx, std::round(regs_idle));
    }

    // Memory, all idle.
    Mem m;
    m.n = n;
    auto rt = root.call("trim");
    auto rg = regs.call("trim");
    m.root_heap_mb = static_cast<double>(num(rt, "heap")) / 1048576.0;
    m.root_rss_mb = static_cast<double>(num(rt, "rss_kb")) / 1024.0;
    m.regions_heap_mb = static_cast<double>(num(rg, "heap")) / 1048576.0;
    m.regions_rss_mb = static_cast<double>(num(rg, "rss_kb")) / 1024.0;
    mems.push_back(m);
    logf("memory idle: root heap %.1f MB RSS %.1f MB; %d regions: heap %.1f MB RSS %.1f MB (%s)",
         m.root_heap_mb, m.root_rss_mb, regions, m.regions_heap_mb, m.regions_rss_mb,
         Fleet::summary(regs.call("stats")).c_str());
    emit(bench, "root_heap_mb" + sfx, round1(m.root_heap_mb));
    emit(bench, "root_rss_mb" + sfx, round1(m.root_rss_mb));
    emit(bench, "region_heap_mb_per_hub" + sfx,
         std::round(m.regions_heap_mb / regions * 100) / 100);
    emit(bench, "regions_rss_mb_all" + sfx, round1(m.regions_rss_mb));

    std::vector<double> p50s, p99s, maxs, cpu_root, cpu_regs, cpu_nats, cpu_self;
    for (int r = 1; r <= opt.rounds; ++r) {
      const double cr0 = cpu_ms(root.pid()), cg0 = cpu_ms(regs.pid()), cn0 = cpu_ms(g_nats_pid),
                   cs0 = cpu_ms(getpid());
      auto put = root.call("put_rev=" + std::to_string(r));
      const int64_t c0 = num(put, "t0");
      const size_t have = fleet.wait_reached(r);
      cpu_root.push_back(cpu_ms(root.pid()) - cr0);
      cpu_regs.push_back(cpu_ms(regs.pid()) - cg0);
      cpu_nats.push_back(cpu_ms(g_nats_pid) - cn0);
      cpu_self.push_back(cpu_ms(getpid()) - cs0);
      std::vector<double> lat;
      for (auto& c : fleet.children()) {
        if (c->track.rev.load() < r) continue;
        lat.push_back(std::max<double>(0, static_cast<double>(c->track.rev_ns.load() - c0) / 1e6));
      }
      p50s.push_back(percentile(lat, 0.5));
      p99s.push_back(percentile(lat, 0.99));
      maxs.push_back(percentile(lat, 1.0));
      logf(
          "hier S=%d round %d: %zu/%d sites have it; p50 %.1f p99 %.1f max %.1f ms | CPU: root "
          "%.0f ms, regions %.0f ms, nats-server %.0f ms, sites %.0f ms",
          n, r, have, n, p50s.back(), p99s.back(), maxs.back(), cpu_root.back(), cpu_regs.back(),
          cpu_nats.back(), cpu_self.back());
      if (have != static_cast<size_t>(n)) die("round did not complete within 60 s");
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    emit(bench, "p50_ms" + sfx, round1(median(p50s)));
    emit(bench, "p99_ms" + sfx, round1(median(p99s)), n == 100000 ? "<3000" : "");
    emit(bench, "max_ms" + sfx, round1(median(maxs)));
    emit(bench, "root_cpu_ms_per_update" + sfx, std::round(median(cpu_root)));
    emit(bench, "regions_cpu_ms_per_update" + sfx, std::round(median(cpu_regs)));
  }
  if (mems.size() >= 2) {
    const Mem& lo = mems.front();
    const Mem& hi = mems.back();
    const std::string span = "_s" + std::to_string(hi.n) + "_vs_s" + std::to_string(lo.n);
    // Sites below the regions, per site: what the root and a region hold
    // more for each more site.
    const double per = static_cast<double>(hi.n - lo.n);
    emit(bench, "root_heap_bytes_per_site" + span,
         std::round((hi.root_heap_mb - lo.root_heap_mb) * 1048576.0 / per));
    emit(bench, "regions_heap_bytes_per_site" + span,
         std::round((hi.regions_heap_mb - lo.regions_heap_mb) * 1048576.0 / per));
    emit(bench, "root_heap_ratio" + span, ratio(hi.root_heap_mb, lo.root_heap_mb), "<=1.1");
  }
}

}  // namespace canopy::bench_sync

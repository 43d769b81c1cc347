// The hub process of canopy_sync_bench (see sync_bench_hub.h): the real
// hub::Hub over the catalogue the bench needs, answering the bench's command
// lines on its pipe:
//   stats [modes]   sessions (and their modes), the parent engine's and the
//                   node's counters, memory
//   put_rev=R       puts the template whole with annotation bench/rev=R;
//                   replies with the commit time
//   pubstats        the hub's publishes since the last put_rev
//   storm_patch=K   patches annotation bench/storm-K into the template
//   seed=PATH       writes what each site holds when in sync at the log's end
//   trim, reset_peak, quit
#include "bench/sync_bench_hub.h"

#include "hub/config.h"
#include "hub/hub.h"

namespace canopy::bench_sync {

namespace {

// A role process's side of its two command pipes.
class RolePipes {
 public:
  // Starts a role process: its name in the log lines, the file limit raised,
  // killed with its parent, warnings only; then opens the pipes.
  RolePipes(const HubArgs& a, const char* role) {
    g_role = role;
    raise_nofile();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    spdlog::set_level(spdlog::level::warn);
    in_ = fdopen(a.in_fd, "r");
    out_ = fdopen(a.out_fd, "w");
    if (in_ == nullptr || out_ == nullptr) {
      die(std::string(role) + ": cannot open the command pipes");
    }
  }
  ~RolePipes() { free(line_); }
  RolePipes(const RolePipes&) = delete;
  RolePipes& operator=(const RolePipes&) = delete;

  void reply(const std::string& s) const {
    std::fprintf(out_, "%s\n", s.c_str());
    std::fflush(out_);
  }
  // The next command line, without its end; false when the bench closed
  // the pipe.
  bool next(std::string* cmd) {
    if (getline(&line_, &cap_, in_) <= 0) return false;
    cmd->assign(line_);
    while (!cmd->empty() && (cmd->back() == '\n' || cmd->back() == '\r')) cmd->pop_back();
    return true;
  }

 private:
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
  char* line_ = nullptr;
  size_t cap_ = 0;
};

// Sessions by mode and the parent engines' counters, of one hub or summed
// over several.
struct SessionCounts {
  uint64_t sessions = 0, live = 0, waiting = 0, catchup = 0, reconcile = 0;
  uint64_t catchups = 0, reconciliations = 0, refused = 0, publish_failures = 0;
  // `modes`: count the sessions by mode too (a pass over them).
  void add(const hub::HubSyncSnapshot& snap, bool modes) {
    sessions += snap.sessions.size();
    if (modes) {
      for (const auto& c : snap.sessions) {
        if (c.mode == "live") ++live;
        if (c.mode == "waiting") ++waiting;
        if (c.mode == "catch-up") ++catchup;
        if (c.mode == "reconcile") ++reconcile;
      }
    }
    catchups += snap.parent.catchups;
    reconciliations += snap.parent.reconciliations;
    refused += snap.parent.refused_messages;
    publish_failures += snap.node.publish_failures;
  }
  std::string text() const {
    std::ostringstream o;
    o << "sessions=" << sessions << " live=" << live << " waiting=" << waiting
      << " catchup=" << catchup << " reconcile=" << reconcile << " catchups=" << catchups
      << " reconciliations=" << reconciliations << " refused=" << refused
      << " publish_failures=" << publish_failures;
    return o.str();
  }
};

// This process's memory: RSS, its peak, the heap in use, threads.
std::string memory_text() {
  std::ostringstream o;
  o << "rss_kb=" << proc_status_kb("VmRSS") << " hwm_kb=" << proc_status_kb("VmHWM")
    << " heap=" << heap_bytes() << " threads=" << proc_status_kb("Threads");
  return o.str();
}

}  // namespace

void hub_main(const HubArgs& a) {
  RolePipes pipes(a, "hub");
  auto reply = [&](const std::string& s) { pipes.reply(s); };

  // The catalogue and the site registry, written before the hub starts (as
  // a hub restarted over its catalogue): a template, a placement selecting
  // every site, a grant, and S site records.
  std::unique_ptr<Store> writer;
  {
    StoreOptions so;
    so.path = a.dir + "/hub-store";
    so.durability = Durability::kGroupCommit;
    auto s = Store::open(so);
    if (!s.ok()) die("hub store: " + s.status().to_string());
    writer = std::move(s).value();
  }
  Store* store = writer.get();
  const std::string tkey = template_key_str();
  if (auto r = store->put_value(tkey, template_doc(0)); !r.ok()) die(r.status().to_string());
  json placement = {{"templates", json::array({kTemplate})},
                    {"selector", {{"matchLabels", {{"fleet", "bench"}}}}}};
  if (auto r = store->put_value(model::placement_key(kTenant, "web"), placement); !r.ok()) {
    die(r.status().to_string());
  }
  if (auto r = store->put_value(model::grant_key(kTenant, "all"), json{{"allSites", true}});
      !r.ok()) {
    die(r.status().to_string());
  }
  {
    const int64_t t0 = now_ns();
    std::atomic<int> next{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < 16; ++w) {
      writers.emplace_back([&] {
        for (int i = next++; i < a.sites; i = next++) {
          json doc = {{"name", site_name(i)}, {"labels", json::object()}};
          for (const auto& [k, v] : site_labels(i)) doc["labels"][k] = v;
          if (a.regions > 0) doc["region"] = region_name(i % a.regions);
          auto r = store->put_value(model::site_key(site_name(i)), doc);
          if (!r.ok()) die("writing site: " + r.status().to_string());
        }
      });
    }
    for (auto& t : writers) t.join();
    logf("wrote %d site records, the template and the placement in %.1f s (log index %llu)",
         a.sites, static_cast<double>(now_ns() - t0) / 1e9,
         static_cast<unsigned long long>(store->last_log_index()));
  }
  writer.reset();
  hub::HubConfig config;
  config.name = a.name.empty() ? std::string(kHubName) : a.name;
  config.peers = a.peers;
  config.data_dir = a.dir + "/hub-store";
  config.nats_urls = {a.nats_url};
  config.nats_ca_file = a.tls_ca;
  config.nats_cert_file = a.tls_cert;
  config.nats_key_file = a.tls_key;
  config.durability = Durability::kGroupCommit;
  config.max_concurrent_catchups = a.max_catchups;
  config.session_timeout_s = kBenchSessionTimeoutMs / 1000;
  if (Status s = hub::validate_hub_config(config); !s.ok()) die("hub config: " + s.to_string());
  TimedTransport* timed_ptr = nullptr;
  hub::HubHooks hooks;
  hooks.wrap_transport = [&timed_ptr](sync::Transport* inner) {
    auto t = std::make_unique<TimedTransport>(inner);
    timed_ptr = t.get();
    return std::unique_ptr<sync::Transport>(std::move(t));
  };
  hub::Hub hub(config, hooks);
  if (Status s = hub.start(); !s.ok()) die("hub start: " + s.to_string());
  store = hub.store();
  hub::PlacementIndex* index = hub.index();
  TimedTransport& timed = *timed_ptr;

  // The hub that wrote the records holds them decoded in its store's cache;
  // a hub restarted over them reads each once at its site's first hello.
  // Read them now, so that the per-session figures count sessions, not the
  // cache filling.
  for (int i = 0; i < a.sites; ++i) (void)store->get(model::site_key(site_name(i)));
  {
    auto keys = index->scope_keys(site_name(0));
    std::string s;
    for (const auto& k : keys) s += k + " ";
    logf("scope of %s: %s+ its own subtree", site_name(0).c_str(), s.c_str());
  }

  // Timestamps the template's commit: listeners run once the write is
  // durable, just before put() returns (on the writer or the fsync leader).
  std::atomic<int64_t> template_commit_ns{0};
  const uint64_t commit_listener = store->subscribe([&](const v1::LogEntry& e) {
    if (e.has_delta() && e.delta().key() == tkey) template_commit_ns.store(now_ns());
  });
  (void)commit_listener;

  // The peak RSS since reset_peak: the kernel's VmHWM, which reset_peak
  // restarts through /proc/self/clear_refs. Where that file cannot be
  // written, a sampler thread keeps the peak instead, from reset_peak on
  // only: it reads /proc/self/status every 10 ms, which cost this hub 12 %
  // of its CPU during sync.fanout's rounds when it always ran.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> sampled_peak_kb{0};
  std::thread sampler;
  auto sample = [&] {
    while (!stop.load()) {
      const int64_t rss = proc_status_kb("VmRSS");
      int64_t cur = sampled_peak_kb.load();
      while (rss > cur && !sampled_peak_kb.compare_exchange_weak(cur, rss)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };

  auto mem = [&] {
    return memory_text() + " sampled_peak_kb=" + std::to_string(sampled_peak_kb.load());
  };
  reply("ready log_index=" + std::to_string(store->last_log_index()) +
        " max_payload=" + std::to_string(timed.max_payload()) + " " + mem());

  int rev = 0;
  std::string cmd;
  while (pipes.next(&cmd)) {
    auto kv = parse_kv(cmd);
    if (kv.count("quit")) break;
    if (kv.count("stats")) {
      const hub::HubSyncSnapshot snap = hub.sync_snapshot();
      SessionCounts counts;
      counts.add(snap, kv.count("modes") > 0);
      std::ostringstream o;
      o << counts.text() << " bytes_sent=" << snap.parent.bytes_sent
        << " documents_sent=" << snap.parent.documents_sent
        << " dropped=" << snap.node.dropped_messages << " log_index=" << store->last_log_index()
        << " " << mem();
      reply(o.str());
    } else if (kv.count("put_rev")) {
      rev = std::atoi(kv["put_rev"].c_str());
      timed.mark();
      const int64_t before = now_ns();
      auto r = store->put_value(tkey, template_doc(rev));
      const int64_t after = now_ns();
      if (!r.ok()) die("put: " + r.status().to_string());
      const int64_t committed = template_commit_ns.load();
      reply("t0=" + std::to_string(std::min(after, committed)) +
            " returned=" + std::to_string(after) + " committed=" + std::to_string(committed) +
            " put_ns=" + std::to_string(after - before) + " ops=" + std::to_string(r->ops_size()));
    } else if (kv.count("pubstats")) {
      reply("first=" + std::to_string(timed.first_after_mark()) +
            " last=" + std::to_string(timed.last()) +
            " published=" + std::to_string(timed.published_since_mark()) +
            " bytes=" + std::to_string(timed.bytes_since_mark()));
    } else if (kv.count("storm_patch")) {
      const int k = std::atoi(kv["storm_patch"].c_str());
      json patch = {{"metadata",
                     {{"annotations", {{"bench/storm-" + std::to_string(k), std::to_string(k)}}}}}};
      auto r = store->patch(tkey, patch.dump());
      if (!r.ok()) die("patch: " + r.status().to_string());
      reply("t0=" + std::to_string(now_ns()));
    } else if (kv.count("seed")) {
      // What every site holds when it is in sync at the log's end: the
      // template, the placement and its own record, and its position.
      std::ofstream f(kv["seed"], std::ios::binary);
      auto put64 = [&](uint64_t v) { f.write(reinterpret_cast<const char*>(&v), 8); };
      auto put_bytes = [&](const std::string& b) {
        const uint32_t n = static_cast<uint32_t>(b.size());
        f.write(reinterpret_cast<const char*>(&n), 4);
        f.write(b.data(), n);
      };
      put64(store->log_epoch());
      put64(store->last_log_index());
      for (const std::string& k : {tkey, model::placement_key(kTenant, "web")}) {
        auto d = store->state(k);
        if (!d.ok() || !d->has_value()) die("seed: no state for " + k);
        put_bytes((*d)->SerializeAsString());
      }
      put64(static_cast<uint64_t>(a.sites));
      for (int i = 0; i < a.sites; ++i) {
        auto d = store->state(model::site_key(site_name(i)));
        if (!d.ok() || !d->has_value()) die("seed: no state for a site");
        put64(index->version(site_name(i)));
        put_bytes((*d)->SerializeAsString());
      }
      f.close();
      reply(f ? "ok index=" + std::to_string(store->last_log_index()) : "error writing the seed");
    } else if (kv.count("trim")) {
      malloc_trim(0);
      reply(mem());
    } else if (kv.count("reset_peak")) {
      std::ofstream clear_refs("/proc/self/clear_refs");
      clear_refs << "5" << std::flush;
      sampled_peak_kb.store(proc_status_kb("VmRSS"));
      if (!clear_refs && !sampler.joinable()) sampler = std::thread(sample);
      reply(mem());
    } else {
      reply("error unknown command");
    }
  }
  const int64_t q0 = now_ns();
  stop = true;
  if (sampler.joinable()) sampler.join();
  hub.stop();
  logf("hub stopped in %.1f s", static_cast<double>(now_ns() - q0) / 1e9);
  reply("bye");
  // Leave without tearing down (the bench removes the directory).
  std::fflush(nullptr);
  std::_Exit(0);
}

void regions_main(const HubArgs& a) {
  RolePipes pipes(a, "regions");
  auto reply = [&](const std::string& s) { pipes.reply(s); };
  // Each regional hub as canopy-hub --parent runs it: its own store (empty:
  // everything comes from the root), its own NATS connection.
  std::vector<std::unique_ptr<hub::Hub>> hubs;
  const int64_t t0 = now_ns();
  for (int r = 0; r < a.regions; ++r) {
    hub::HubConfig config;
    config.name = region_name(r);
    config.parent = a.parent;
    config.data_dir = a.dir + "/" + config.name;
    config.nats_urls = {a.nats_url};
    config.durability = Durability::kGroupCommit;
    config.max_concurrent_catchups = a.max_catchups;
    config.session_timeout_s = kBenchSessionTimeoutMs / 1000;
    if (Status s = hub::validate_hub_config(config); !s.ok())
      die("region config: " + s.to_string());
    hubs.push_back(std::make_unique<hub::Hub>(config));
    if (Status s = hubs.back()->start(); !s.ok()) die("region start: " + s.to_string());
  }
  logf("%d regional hubs started in %.1f s (children of %s)", a.regions,
       static_cast<double>(now_ns() - t0) / 1e9, a.parent.c_str());
  reply("ready regions=" + std::to_string(a.regions) + " " + memory_text());

  std::string cmd;
  while (pipes.next(&cmd)) {
    auto kv = parse_kv(cmd);
    if (kv.count("quit")) break;
    if (kv.count("stats")) {
      // Summed over the regional hubs; "live" counts their sites' sessions.
      SessionCounts counts;
      size_t up_open = 0, up_in_sync = 0;
      for (auto& h : hubs) {
        counts.add(h->sync_snapshot(), true);
        if (auto up = h->upstream()) {
          up_open += up->session_open ? 1 : 0;
          up_in_sync += up->in_sync ? 1 : 0;
        }
      }
      reply(counts.text() + " upstream_open=" + std::to_string(up_open) +
            " upstream_in_sync=" + std::to_string(up_in_sync) + " " + memory_text());
    } else if (kv.count("trim")) {
      malloc_trim(0);
      reply(memory_text());
    } else {
      reply("error unknown command");
    }
  }
  const int64_t q0 = now_ns();
  for (auto& h : hubs) h->stop();
  logf("regional hubs stopped in %.1f s", static_cast<double>(now_ns() - q0) / 1e9);
  reply("bye");
  std::fflush(nullptr);
  std::_Exit(0);
}

}  // namespace canopy::bench_sync

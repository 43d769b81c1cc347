// canopy_sync_bench's simulated spokes: S children over G shared NATS
// connections (Group), driven by W worker threads (Workers), each the real
// ChildSync in a SyncNode (BenchChild) on a Store (REAL) or a MemoryReplica
// (LIGHT); the Fleet sets them up, joins them and cuts their connections.
#pragma once

#include <array>
#include <atomic>

#include "bench/sync_bench_hub.h"
#include "sync/memory_replica.h"

namespace canopy::bench_sync {

// G shared connections; children are spread over them.
struct Group {
  std::shared_mutex mu;  // exclusive while the connection is replaced
  std::unique_ptr<sync::NatsTransport> nats;
  std::string name;

  Status publish(std::string_view subject, std::string_view data) {
    std::shared_lock lock(mu);
    if (!nats) return unavailable("disconnected");
    return nats->publish(subject, data);
  }
};

inline std::unique_ptr<sync::NatsTransport> connect_group(const std::string& url,
                                                          const std::string& name) {
  sync::NatsOptions no;
  no.urls = {url};
  no.name = name;
  if (url.rfind("tls://", 0) == 0) {
    no.tls_ca_file = g_tls.ca_file;
    no.tls_cert_file = g_tls.cert_file;
    no.tls_key_file = g_tls.key_file;
  }
  auto t = sync::NatsTransport::connect(no);
  if (!t.ok()) die("nats connect " + name + ": " + t.status().to_string());
  return std::move(t).value();
}

// Subscribers demultiplexed per connection: ONE wildcard subscription on one
// connection receives every subject of a set, and hands each message to the
// handler registered for its exact subject. NATS.c then runs one delivery
// thread for all of them, as a real process holding many sessions would
// arrange it (a spoke holds one). The fair fan-out comparison uses it on both
// sides: Canopy's children, and raw NATS subscribers.
class Demux {
 public:
  uint64_t add(const std::string& subject, sync::Transport::Handler handler) {
    std::unique_lock lock(mu_);
    const uint64_t id = next_id_++;
    handlers_[subject] = Entry{id, std::move(handler)};
    subjects_[id] = subject;
    return id;
  }
  void remove(uint64_t id) {
    std::unique_lock lock(mu_);
    auto it = subjects_.find(id);
    if (it == subjects_.end()) return;
    auto h = handlers_.find(it->second);
    if (h != handlers_.end() && h->second.id == id) handlers_.erase(h);
    subjects_.erase(it);
  }
  void dispatch(sync::Message& m) {
    std::shared_lock lock(mu_);
    auto it = handlers_.find(m.subject);
    if (it != handlers_.end()) it->second.handler(m);
  }
  // Subscribes `pattern` on `nats` and dispatches what it receives.
  void listen(sync::NatsTransport* nats, const std::string& pattern) {
    auto id = nats->subscribe(pattern, [this](sync::Message& m) { dispatch(m); });
    if (!id.ok()) die("demux subscribe: " + id.status().to_string());
    (void)nats->flush(std::chrono::seconds(10));
  }

 private:
  struct Entry {
    uint64_t id = 0;
    sync::Transport::Handler handler;
  };
  std::shared_mutex mu_;
  std::unordered_map<std::string, Entry> handlers_;
  std::unordered_map<uint64_t, std::string> subjects_;  // id -> subject
  uint64_t next_id_ = 1;
};

// The hubs the children sync with: one, or the hubs of an active-active
// level (the failover case), tried in sync::preferred_order.
inline std::vector<std::string>& child_parents() {
  static std::vector<std::string> parents = {kHubName};
  return parents;
}

// The hier case: child i's parent is a regional hub (region_of(i)); unset:
// every child's parents are child_parents().
inline std::function<std::string(int)>& child_region() {
  static std::function<std::string(int)> f;
  return f;
}
// The children's idle heartbeat (ChildOptions::heartbeat_ms); 0: the
// engine's default (2 s). --heartbeat-ms, a diagnostic.
inline uint64_t& heartbeat_ms() {
  static uint64_t ms = 0;
  return ms;
}

inline std::vector<std::string> parents_of(int i) {
  if (child_region()) return {child_region()(i)};
  return child_parents();
}

inline std::mutex& cleanup_mu() {
  static std::mutex mu;
  return mu;
}
inline std::vector<std::thread>& cleanup_threads() {
  static std::vector<std::thread> ts;
  return ts;
}
inline void cleanup_join() {
  std::lock_guard lock(cleanup_mu());
  for (auto& t : cleanup_threads()) t.join();
  cleanup_threads().clear();
}

class SimChild {
 public:
  virtual ~SimChild() = default;
  // Runs only on the owning worker thread.
  virtual void process(bool tick) = 0;
  virtual bool in_sync() const = 0;

  int id = 0;
  size_t worker = 0;
  std::atomic<bool> queued{false};
  // When the child's next tick is due (SystemClock ms; 0: every tick): a
  // tick before it would do nothing, so the worker skips it without touching
  // the engine, as a runtime sleeping until its engine's deadline would.
  // Set by process(); worker thread only.
  uint64_t due_ms = 0;
  Track track;
};

// W threads; each owns a fixed share of the children, processes the ones whose
// handler queued something, and ticks all of its own every tick_ms (a child
// whose engine has no timer due skips its tick).
class Workers {
 public:
  Workers(size_t n, uint64_t tick_ms) : tick_ms_(tick_ms) {
    for (size_t i = 0; i < n; ++i) ws_.push_back(std::make_unique<W>());
  }
  ~Workers() { stop(); }
  void add(SimChild* c) {
    c->worker = static_cast<size_t>(c->id) % ws_.size();
    ws_[c->worker]->owned.push_back(c);
  }
  void notify(SimChild* c) {
    if (c->queued.exchange(true)) return;
    W& w = *ws_[c->worker];
    {
      std::lock_guard lock(w.mu);
      w.ready.push_back(c);
    }
    w.cv.notify_one();
  }
  void start() {
    for (size_t i = 0; i < ws_.size(); ++i) {
      ws_[i]->th = std::thread([this, i] { loop(*ws_[i], i); });
    }
  }
  void stop() {
    stop_ = true;
    for (auto& w : ws_) {
      { std::lock_guard lock(w->mu); }
      w->cv.notify_all();
      if (w->th.joinable()) w->th.join();
    }
  }
  // Ticks can be paused (the children are processed on messages only).
  void set_ticking(bool on) { ticking_ = on; }
  // Only children whose id is below `n` are ticked: the others have not
  // started (their first tick says hello). Children start in waves this way.
  void set_admitted(size_t n) { admitted_ = n; }

 private:
  struct W {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<SimChild*> ready;
    std::vector<SimChild*> owned;
    std::thread th;
  };
  void loop(W& w, size_t index) {
    using clock = std::chrono::steady_clock;
    // Stagger the workers' ticks.
    auto next_tick = clock::now() + std::chrono::milliseconds(tick_ms_ * (index + 1) / ws_.size());
    std::vector<SimChild*> batch;
    while (!stop_) {
      {
        std::unique_lock lock(w.mu);
        w.cv.wait_until(lock, next_tick, [&] { return stop_.load() || !w.ready.empty(); });
        batch.swap(w.ready);
      }
      for (SimChild* c : batch) {
        c->queued = false;
        c->process(false);
      }
      batch.clear();
      if (clock::now() >= next_tick) {
        if (ticking_) {
          const uint64_t now_ms = SystemClock::instance()->now_ms();
          const size_t admitted = admitted_.load();
          for (SimChild* c : w.owned) {
            if (now_ms >= c->due_ms && static_cast<size_t>(c->id) < admitted) c->process(true);
          }
        }
        next_tick = clock::now() + std::chrono::milliseconds(tick_ms_);
      }
    }
  }

  uint64_t tick_ms_;
  std::vector<std::unique_ptr<W>> ws_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> ticking_{true};
  std::atomic<size_t> admitted_{SIZE_MAX};
};

// ------------------------------------------------------------- children

// A child's transport: publishes through its group's connection, receives
// through the Demux or a subscription of its own on that connection, and
// wakes the child's worker after each delivery. It keeps its subscriptions
// and its state handler itself, so that the fleet can cut every child's
// connection and restore it (set_connected, resubscribe_locked), as a
// NatsTransport does across a reconnection.
class ChildLink final : public sync::Transport {
 public:
  ChildLink(Group* group, Demux* demux, std::function<void()> notify, Track* track)
      : group_(group), demux_(demux), notify_(std::move(notify)), track_(track) {}
  Status publish(std::string_view subject, std::string_view data) override {
    return group_->publish(subject, data);
  }
  StatusOr<uint64_t> subscribe(std::string_view pattern, Handler handler) override {
    auto wrapped = [h = std::move(handler), this](sync::Message& m) {
      track_->received(m.data.size());
      h(m);
      notify_();
    };
    std::lock_guard lock(mu_);
    Sub sub{std::string(pattern), std::move(wrapped), 0};
    if (demux_ != nullptr) {
      sub.remote = demux_->add(sub.pattern, sub.handler);
    } else {
      std::shared_lock glock(group_->mu);
      if (group_->nats) {
        auto id = group_->nats->subscribe(sub.pattern, sub.handler);
        if (!id.ok()) return id.status();
        sub.remote = *id;
      }
    }
    const uint64_t id = next_id_++;
    subs_.emplace(id, std::move(sub));
    return id;
  }
  void unsubscribe(uint64_t id) override {
    std::lock_guard lock(mu_);
    auto it = subs_.find(id);
    if (it == subs_.end()) return;
    if (demux_ != nullptr) {
      demux_->remove(it->second.remote);
    } else {
      std::shared_lock glock(group_->mu);
      if (group_->nats && it->second.remote != 0) group_->nats->unsubscribe(it->second.remote);
    }
    subs_.erase(it);
  }
  size_t max_payload() const override {
    std::shared_lock lock(group_->mu);
    return group_->nats ? group_->nats->max_payload() : sync::NatsTransport::kDefaultMaxPayload;
  }
  bool connected() const override {
    std::shared_lock lock(group_->mu);
    return connected_.load() && group_->nats && group_->nats->connected();
  }
  void on_state_change(StateHandler handler) override {
    std::lock_guard lock(mu_);
    state_handler_ = std::move(handler);
  }
  // The fleet cut (false) or restored (true) the group's connection.
  void set_connected(bool connected) {
    connected_ = connected;
    StateHandler h;
    {
      std::lock_guard lock(mu_);
      h = state_handler_;
    }
    if (h) h(connected);
    notify_();
  }
  // Subscribes again on the group's new connection; call with the group's
  // lock held exclusively (not needed through a Demux).
  Status resubscribe_locked() {
    if (demux_ != nullptr) return ok_status();
    std::lock_guard lock(mu_);
    for (auto& [id, sub] : subs_) {
      auto remote = group_->nats->subscribe(sub.pattern, sub.handler);
      if (!remote.ok()) return remote.status();
      sub.remote = *remote;
    }
    return ok_status();
  }

 private:
  struct Sub {
    std::string pattern;
    Handler handler;
    uint64_t remote = 0;  // the id on the connection or in the Demux
  };
  Group* group_;
  Demux* demux_;
  std::function<void()> notify_;
  Track* track_;
  std::mutex mu_;
  std::map<uint64_t, Sub> subs_;
  uint64_t next_id_ = 1;
  StateHandler state_handler_;
  std::atomic<bool> connected_{true};
};

// One simulated spoke: the real ChildSync in a SyncNode, persisting into a
// Store of its own in `store_dir` (REAL) or into a MemoryReplica (LIGHT).
class BenchChild final : public SimChild {
 public:
  BenchChild(int index, Group* group, Demux* demux, Workers* workers, const std::string* store_dir)
      : name_(site_name(index)), parents_(parents_of(index)) {
    id = index;
    rng_.seed(0x5eed0000u + static_cast<uint64_t>(index));
    const std::string tkey = template_key_str();
    if (store_dir != nullptr) {
      StoreOptions so;
      so.path = *store_dir + "/" + name_;
      so.durability = Durability::kGroupCommit;
      auto s = Store::open(so);
      if (!s.ok()) die("child store " + name_ + ": " + s.status().to_string());
      store_ = std::move(s).value();
      listener_ = store_->subscribe([this, tkey](const v1::LogEntry& e) {
        // Under the child store's lock: read the entry only.
        const std::string& key = e.has_delta() ? e.delta().key() : e.doc().key();
        if (key != tkey) return;
        Observation o;
        if (e.has_delta()) {
          observe_delta(e.delta(), &o);
        } else {
          auto d = Document::from_proto(e.doc().root());
          if (d.ok()) observe_document(*d, &o);
        }
        track.note(o);
      });
    } else {
      uint64_t replica_id = 0, epoch = 0;
      while (replica_id == 0) replica_id = rng_();
      while (epoch == 0) epoch = rng_();
      replica_ = std::make_unique<sync::MemoryReplica>(replica_id, epoch);
      replica_->set_observer(
          [this, tkey](const std::string& key, const Document& doc, const v1::Delta* delta) {
            if (key != tkey) return;
            Observation o;
            if (delta == nullptr || !observe_delta(*delta, &o)) observe_document(doc, &o);
            track.note(o);
          });
    }
    link_ = std::make_unique<ChildLink>(
        group, demux, [this, workers] { workers->notify(this); }, &track);
  }
  ~BenchChild() override {
    node_.reset();
    if (store_) store_->unsubscribe(listener_);
  }

  // LIGHT: installs what a child that was in sync with the hub holds (its
  // documents and its position, as persisted before a hub restart). Call
  // before attach().
  void seed(const std::vector<v1::DocState>& docs, const v1::LogPosition& position) {
    if (!replica_) die("only a LIGHT child is seeded");
    if (Status s = replica_->install(docs); !s.ok()) die("seed: " + s.to_string());
    Status s = replica_->persist({sync::Write::put_local(
        sync::ChildSync::down_position_key(parents_.front()), position.SerializeAsString())});
    if (!s.ok()) die("seed: " + s.to_string());
    auto st = replica_->state(template_key_str());
    if (st.ok() && st->has_value()) {
      auto d = Document::from_proto((*st)->root());
      Observation o;
      if (d.ok()) observe_document(*d, &o);
      track.note(o);
    }
  }

  // Builds the engine (it reads its saved position now) and subscribes.
  Status attach() {
    sync::Env env{SystemClock::instance(), [this] { return rng_(); }};
    sync::ChildOptions co;
    co.labels = site_labels(id);
    co.software_version = "canopy-sync-bench";
    if (heartbeat_ms() != 0) co.heartbeat_ms = heartbeat_ms();
    const auto parents = sync::preferred_order(name_, parents_);
    co.fallback_parents.assign(parents.begin() + 1, parents.end());
    std::unique_ptr<sync::ChildSync> engine;
    if (store_) {
      node_ = std::make_unique<sync::SyncNode>(store_.get(), link_.get());
      engine = std::make_unique<sync::ChildSync>(name_, parents.front(), store_.get(), env, co);
    } else {
      node_ = std::make_unique<sync::SyncNode>(static_cast<sync::Persistence*>(replica_.get()),
                                               link_.get());
      engine = std::make_unique<sync::ChildSync>(
          name_, parents.front(), static_cast<sync::StoreView*>(replica_.get()), env, co);
    }
    engine_ = engine.get();
    node_->set_child_engine(std::move(engine));
    return node_->attach();
  }
  void process(bool tick) override {
    if (!node_) return;
    node_->run_once(tick);
    // Exact until the next input: the engine's timers change only in run_once.
    due_ms = node_->next_tick_ms();
    in_sync_.store(engine_->in_sync());
    parent_index_.store(static_cast<size_t>(
        std::find(parents_.begin(), parents_.end(), engine_->parent()) - parents_.begin()));
    hellos_.store(engine_->stats().hellos);
    resets_.store(engine_->stats().resets);
  }
  bool in_sync() const override { return in_sync_.load(); }
  // Which of parents_of(id) the engine syncs with now.
  size_t parent_index() const { return parent_index_.load(); }
  uint64_t hellos() const { return hellos_.load(); }
  uint64_t resets() const { return resets_.load(); }
  ChildLink& link() { return *link_; }

 private:
  std::string name_;
  std::vector<std::string> parents_;  // parents_of(id)
  std::mt19937_64 rng_;
  std::unique_ptr<Store> store_;  // REAL
  uint64_t listener_ = 0;
  std::unique_ptr<sync::MemoryReplica> replica_;  // LIGHT
  std::unique_ptr<ChildLink> link_;
  std::unique_ptr<sync::SyncNode> node_;
  sync::ChildSync* engine_ = nullptr;
  std::atomic<bool> in_sync_{false};
  std::atomic<size_t> parent_index_{0};
  std::atomic<uint64_t> hellos_{0};
  std::atomic<uint64_t> resets_{0};
};

struct Options {
  std::string which;
  size_t groups = 8;
  size_t workers = 4;
  int rounds = 5;
  int real_limit = 1000;
  size_t max_catchups = 64;
  std::vector<int> sizes;  // fanout
  int sites = 10000;       // session_memory, storm
  int regions = 100;       // hier: regional hubs
  uint64_t tick_ms = 100;
  int join_timeout_s = 240;
  int join_wave = 0;         // hier: sites start in waves of this many (0: all at once)
  bool cold_join = false;    // LIGHT children start empty (reconcile) instead of warm
  bool diagnostics = true;   // fanout: the subscription-per-child runs too
  bool tls_compare = false;  // fanout over plain TCP, then TLS (security.handshake)
};

// The hub's seed file (see the hub's "seed" command).
struct Seed {
  v1::LogPosition base;  // epoch and index; scope_version per site
  std::vector<v1::DocState> global;
  std::vector<uint64_t> versions;
  std::vector<v1::DocState> sites;
};

inline Seed read_seed(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  auto get64 = [&] {
    uint64_t v = 0;
    f.read(reinterpret_cast<char*>(&v), 8);
    return v;
  };
  auto get_state = [&] {
    uint32_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 4);
    std::string b(n, '\0');
    f.read(b.data(), n);
    v1::DocState d;
    if (!d.ParseFromString(b)) die("seed: bad state");
    return d;
  };
  Seed s;
  s.base.set_epoch(get64());
  s.base.set_index(get64());
  s.global.push_back(get_state());
  s.global.push_back(get_state());
  const uint64_t n = get64();
  for (uint64_t i = 0; i < n; ++i) {
    s.versions.push_back(get64());
    s.sites.push_back(get_state());
  }
  if (!f) die("seed: short file " + path);
  return s;
}

class Fleet {
 public:
  // With `demux`: the children receive through ONE extra connection holding
  // one wildcard subscription (canopy.v1.hub.*.down), demultiplexed by
  // subject (Demux), instead of one subscription each; they still publish
  // through the G connections.
  Fleet(const Options& opt, const std::string& nats_url, int n, bool real, bool demux = false)
      : opt_(opt),
        url_(nats_url),
        n_(n),
        real_(real),
        demux_(demux),
        workers_(opt.workers, opt.tick_ms) {
    for (size_t g = 0; g < opt.groups; ++g) {
      auto grp = std::make_unique<Group>();
      grp->name = "canopy-bench-spokes-" + std::to_string(g);
      grp->nats = connect_group(url_, grp->name);
      groups_.push_back(std::move(grp));
    }
    const size_t fds0 = open_fds();
    const int64_t rss0 = proc_status_kb("VmRSS");
    const int64_t t0 = now_ns();
    children_.resize(static_cast<size_t>(n));
    if (real) {
      store_dir_ = std::make_unique<testing::TempDir>("canopy-sync-bench-spokes-");
      const std::string dir = store_dir_->path().string();
      // Open the stores in parallel (each open fsyncs its first metadata).
      std::atomic<int> next{0};
      std::vector<std::thread> ts;
      for (int w = 0; w < 8; ++w) {
        ts.emplace_back([&] {
          for (int i = next++; i < n; i = next++) {
            children_[static_cast<size_t>(i)] = std::make_unique<BenchChild>(
                i, group_of(i), demux_ ? &demux_map_ : nullptr, &workers_, &dir);
          }
        });
      }
      for (auto& t : ts) t.join();
      store_fds_ = open_fds() - fds0;
      store_rss_kb_ = proc_status_kb("VmRSS") - rss0;
      logf(
          "opened %d child stores (ChildSync + Store) in %.1f s: +%zu fds (%.2f per store), "
          "+%lld MB RSS (%.0f KB per store); RLIMIT_NOFILE soft limit now %s",
          n, static_cast<double>(now_ns() - t0) / 1e9, store_fds_,
          static_cast<double>(store_fds_) / n, static_cast<long long>(store_rss_kb_ / 1024),
          static_cast<double>(store_rss_kb_) / n, nofile_limit().c_str());
    } else {
      for (int i = 0; i < n; ++i) {
        children_[static_cast<size_t>(i)] = std::make_unique<BenchChild>(
            i, group_of(i), demux_ ? &demux_map_ : nullptr, &workers_, nullptr);
      }
    }
    for (auto& c : children_) {
      c->track.reached = reached_.data();
      workers_.add(c.get());
    }
  }

  ~Fleet() {
    const int64_t t0 = now_ns();
    workers_.stop();
    // Connections first: their destructors wait out running handlers; the
    // children's unsubscribe then finds no connection and does nothing.
    demux_nats_.reset();
    for (auto& g : groups_) {
      std::unique_lock lock(g->mu);
      g->nats.reset();
    }
    const int64_t t1 = now_ns();
    children_.clear();
    logf("fleet torn down: connections closed in %.1f s, children (and their stores) in %.1f s",
         static_cast<double>(t1 - t0) / 1e9, static_cast<double>(now_ns() - t1) / 1e9);
    // Removing a thousand store directories takes seconds on this disk: done
    // in the background, joined before exit (cleanup_join()).
    if (store_dir_) {
      std::lock_guard lock(cleanup_mu());
      cleanup_threads().emplace_back([d = std::move(store_dir_)]() mutable { d.reset(); });
    }
  }

  static std::string nofile_limit() {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    return std::to_string(rl.rlim_cur) + " (hard " + std::to_string(rl.rlim_max) + ")";
  }

  Group* group_of(int i) { return groups_[static_cast<size_t>(i) % groups_.size()].get(); }

  // Warm LIGHT children: they hold their scope and a position at the hub's
  // log end, as spokes that were in sync before (the hub's "seed").
  void seed_from(HubProcess& hub) {
    if (real_) return;
    testing::TempDir tmp("canopy-sync-bench-seed-");
    const std::string path = tmp.file("seed.bin");
    auto r = hub.call("seed=" + path);
    if (!r.count("ok")) die("the hub could not write the seed");
    Seed seed = read_seed(path);
    if (seed.sites.size() != children_.size()) die("seed: wrong number of sites");
    for (size_t i = 0; i < children_.size(); ++i) {
      v1::LogPosition p = seed.base;
      p.set_scope_version(seed.versions[i]);
      children_[i]->seed({seed.global[0], seed.global[1], seed.sites[i]}, p);
    }
    logf(
        "seeded %zu LIGHT children warm: their scope's 3 documents and position (epoch %016llx, "
        "index %llu, their scope version)",
        children_.size(), static_cast<unsigned long long>(seed.base.epoch()),
        static_cast<unsigned long long>(seed.base.index()));
  }

  // Subscribes every child and starts the sessions.
  void connect() {
    const int64_t t0 = now_ns();
    for (auto& c : children_) {
      Status s = c->attach();
      if (!s.ok()) die("attach: " + s.to_string());
    }
    if (demux_) {
      demux_nats_ = connect_group(url_, "canopy-bench-spokes-demux");
      std::set<std::string> parents;
      for (int i = 0; i < n_; ++i) {
        for (auto& p : parents_of(i)) parents.insert(std::move(p));
      }
      for (const auto& p : parents)
        demux_map_.listen(demux_nats_.get(), sync::down_subject(p, "*"));
      logf("children receive through one wildcard subscription on one connection");
    }
    for (auto& g : groups_) {
      std::shared_lock lock(g->mu);
      if (g->nats) (void)g->nats->flush(std::chrono::seconds(10));
    }
    logf(
        "%d children subscribed (%s) in %.2f s; NATS.c runs one delivery thread per "
        "subscription: process threads now %lld",
        n_,
        demux_ ? "one wildcard subscription, demultiplexed"
               : (std::to_string(groups_.size()) + " connections, one subscription each").c_str(),
        static_cast<double>(now_ns() - t0) / 1e9,
        static_cast<long long>(proc_status_kb("Threads")));
    workers_.start();
  }

  // Starts only the children whose id is below `n` (Workers::set_admitted).
  void set_admitted(size_t n) { workers_.set_admitted(n); }

  size_t count_in_sync() const {
    size_t k = 0;
    for (const auto& c : children_) k += c->in_sync() ? 1 : 0;
    return k;
  }

  // Waits until every child is in sync and the hub has every session live.
  // Returns the time it took, in ms, or -1 on timeout.
  double wait_all_live(HubProcess& hub, const char* what) {
    const int64_t t0 = now_ns();
    const int64_t deadline = t0 + int64_t{opt_.join_timeout_s} * 1'000'000'000;
    int64_t last_log = 0;
    while (now_ns() < deadline) {
      const size_t synced = count_in_sync();
      if (synced == static_cast<size_t>(n_)) {
        auto st = hub.call("stats modes");
        if (num(st, "live") == n_) {
          const double ms = static_cast<double>(now_ns() - t0) / 1e6;
          logf("%s: all %d children in sync and live at the hub after %.1f s (%s)", what, n_,
               ms / 1000, summary(st).c_str());
          return ms;
        }
      }
      if (now_ns() - last_log > 5'000'000'000) {
        last_log = now_ns();
        auto st = hub.call("stats modes");
        logf("%s: %zu/%d children in sync; hub: %s", what, synced, n_, summary(st).c_str());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    auto st = hub.call("stats modes");
    logf("%s: TIMEOUT after %d s: %zu/%d in sync; hub: %s", what, opt_.join_timeout_s,
         count_in_sync(), n_, summary(st).c_str());
    return -1;
  }

  static std::string summary(const std::map<std::string, std::string>& st) {
    std::string s;
    for (const char* k : {"sessions", "live", "waiting", "catchup", "reconcile", "catchups",
                          "reconciliations", "refused", "publish_failures", "rss_kb", "heap"}) {
      auto it = st.find(k);
      if (it != st.end()) s += std::string(k) + "=" + it->second + " ";
    }
    return s;
  }

  // Closes every child connection (the G transports go away).
  void disconnect_all() {
    for (auto& g : groups_) {
      std::unique_lock lock(g->mu);
      g->nats.reset();
    }
    for (auto& c : children_) c->link().set_connected(false);
  }

  // New connections, every subscription again, then every child learns it is
  // connected (and acks, which is what reopens its session).
  void reconnect_all() {
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      Group* g = groups_[gi].get();
      std::unique_lock lock(g->mu);
      g->nats = connect_group(url_, g->name);
      for (size_t i = gi; i < children_.size(); i += groups_.size()) {
        Status s = children_[i]->link().resubscribe_locked();
        if (!s.ok()) die("resubscribe: " + s.to_string());
      }
    }
    for (auto& c : children_) c->link().set_connected(true);
  }

  std::vector<std::unique_ptr<BenchChild>>& children() { return children_; }
  // Children whose revision reached `rev` since the fleet was built
  // (Track::reached).
  size_t reached(int rev) const {
    return rev >= 0 && rev < Track::kTrackedRevs ? reached_[static_cast<size_t>(rev)].load() : 0;
  }
  // Waits until every child reached `rev`, for 60 s at most; returns how
  // many did.
  size_t wait_reached(int rev) const {
    const int64_t deadline = now_ns() + 60'000'000'000;
    size_t have = 0;
    while (now_ns() < deadline) {
      have = reached(rev);
      if (have == static_cast<size_t>(n_)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return have;
  }
  std::vector<std::unique_ptr<Group>>& groups() { return groups_; }
  size_t store_fds() const { return store_fds_; }
  int64_t store_rss_kb() const { return store_rss_kb_; }
  Workers& workers() { return workers_; }

 private:
  const Options& opt_;
  std::string url_;
  int n_;
  bool real_;
  bool demux_;
  Demux demux_map_;
  std::unique_ptr<sync::NatsTransport> demux_nats_;
  std::vector<std::unique_ptr<Group>> groups_;
  std::unique_ptr<testing::TempDir> store_dir_;
  std::vector<std::unique_ptr<BenchChild>> children_;
  std::array<std::atomic<size_t>, Track::kTrackedRevs> reached_{};
  size_t store_fds_ = 0;
  int64_t store_rss_kb_ = 0;
  Workers workers_;  // destroyed (stopped) first: declared last
};

}  // namespace canopy::bench_sync

#include "hub/hub.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "hub/nats_tls.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"
#include "store/hlc.h"
#include "sync/subjects.h"

namespace canopy::hub {

// Housekeeping trims the log and tombstones older than the retention window.
constexpr auto kHousekeepingInterval = std::chrono::minutes(1);
// A regional hub checks its sessions for its presence documents this often.
constexpr auto kPresenceInterval = std::chrono::seconds(1);
// Rollout steps come at most this often (a burst of status reports is one
// step), and at least this often when nothing changes (a safety net: every
// input of a step is a document whose commit already wakes it).
constexpr auto kRolloutMinGap = std::chrono::milliseconds(250);
constexpr auto kRolloutIdle = std::chrono::seconds(60);

Hub::Hub(HubConfig config, HubHooks hooks)
    : config_(std::move(config)), hooks_(std::move(hooks)), rng_(std::random_device{}()) {}

Hub::~Hub() { stop(); }

Status Hub::start() {
  CANOPY_CHECK(!started_);
  started_ = true;
  StoreOptions so;
  so.path = config_.data_dir;
  so.durability = config_.durability;
  so.disk_reserve_bytes = config_.disk_reserve_bytes;
  auto store_or = Store::open(so);
  if (!store_or.ok())
    return Status(store_or.status().code(),
                  "cannot open the store: " + store_or.status().message());
  store_ = std::move(store_or).value();
  spdlog::info("hub {} (replica {:016x}) store {} open", config_.name, store_->replica_id(),
               config_.data_dir);

  auto index_or = PlacementIndex::attach(store_.get());
  if (!index_or.ok()) {
    stop();
    return Status(index_or.status().code(),
                  "cannot load placements: " + index_or.status().message());
  }
  index_ = std::move(index_or).value();
  auto status_or = StatusAggregate::attach(store_.get(), index_.get());
  if (!status_or.ok()) {
    stop();
    return Status(status_or.status().code(),
                  "cannot load status documents: " + status_or.status().message());
  }
  status_ = std::move(status_or).value();

  // Before NATS: the hub's own NATS user must be in the authorization file.
  EnrollmentOptions eo;
  eo.hub_name = config_.name;
  eo.data_dir = config_.data_dir;
  eo.nats_auth_file = config_.nats_auth_file;
  eo.nats_pid_file = config_.nats_pid_file;
  eo.require_approval = config_.enrollment_approval;
  eo.cert_days = config_.site_cert_days;
  eo.cert_seconds = config_.site_cert_seconds;
  auto enrollment_or = Enrollment::open(store_.get(), SystemClock::instance(), eo);
  if (!enrollment_or.ok()) {
    stop();
    return Status(enrollment_or.status().code(), "enrollment: " + enrollment_or.status().message());
  }
  enrollment_ = std::move(enrollment_or).value();

  sync::NatsOptions no;
  no.urls = config_.nats_urls;
  no.name = "canopy-hub-" + config_.name;
  no.user = enrollment_->hub_nats_user();
  no.password = enrollment_->hub_nats_password();
  if (Status st = set_hub_nats_tls(config_, &no); !st.ok()) {
    stop();
    return Status(st.code(), "NATS TLS: " + st.message());
  }
  auto nats_or = sync::NatsTransport::connect(no);
  if (!nats_or.ok()) {
    stop();
    return Status(nats_or.status().code(), "cannot set up NATS: " + nats_or.status().message());
  }
  nats_ = std::move(nats_or).value();
  // Sites' telemetry forwarders wait for this hub's answer before they let
  // a batch go (hub/telemetry_barrier.h).
  auto barrier_or = TelemetryBarrier::start(nats_.get());
  if (!barrier_or.ok()) {
    stop();
    return barrier_or.status();
  }
  telemetry_barrier_ = std::move(barrier_or).value();

  sync::Env env{SystemClock::instance(), [this] { return rng_(); }};
  // The scopes this hub gives its children: the placement index, composed
  // with the regional hubs below it that the site records name.
  // A regional hub serves only the sites whose records its parent gave it.
  index_->set_serve_unknown(config_.parent.empty());
  regions_ = RegionScope::follow_records(index_.get(), config_.served_region());
  for (const auto& [region, members] : regions_->regions()) {
    spdlog::info("hub {}: regional hub {} serves {} site(s)", config_.name, region, members.size());
  }
  sync::ParentOptions po;
  po.max_concurrent_catchups = config_.max_concurrent_catchups;
  po.away_after_ms = config_.away_after_s * 1000;
  po.session_timeout_ms = config_.session_timeout_s * 1000;
  // A regional hub's parents: its own sessions go there, and the sites below
  // are told of them (where a moved site is redirected from).
  std::vector<std::string> parent_hubs;
  if (!config_.parent.empty()) parent_hubs = *sync::parse_node_list(config_.parent);
  po.ancestors = parent_hubs;
  sync::ScopeProvider* scope = regions_.get();
  if (!config_.peers.empty()) {
    peers_ = *sync::parse_node_list(config_.peers);
    std::sort(peers_.begin(), peers_.end());
    // Below a parent, the region's hubs may write to each other only what
    // their sites may write (hub/peer_scope.h).
    PeerScope::OwnSites own;
    PeerScope::OwnVersion own_version;
    if (!config_.parent.empty()) {
      RegionScope* regions = regions_.get();
      own = [regions] { return regions->own_sites(); };
      own_version = [regions] { return regions->own_sites_version(); };
    }
    peer_scope_ =
        std::make_unique<PeerScope>(regions_.get(), peers_, std::move(own), std::move(own_version));
    scope = peer_scope_.get();
  }
  auto parent = std::make_unique<sync::ParentSync>(config_.name, store_.get(), scope, env, po);
  // The hub trusts subjects, not claims: the parent engine already refuses an
  // envelope naming another site than its subject; a revoked site's
  // messages are refused here even if they still reach us.
  Enrollment* enrollment = enrollment_.get();
  parent->set_admit_hook(
      [enrollment](const std::string& child) { return enrollment->admits(child); });
  // The site describes itself in its hello; the registry keeps it, and a
  // regional hub says which region it serves (take_hello).
  Store* store = store_.get();
  const bool registers = config_.parent.empty();
  RegionScope* regions = regions_.get();
  PlacementIndex* index = index_.get();
  parent->set_hello_hook(
      [store, registers, regions, index](const std::string& child, const v1::Hello& hello) {
        take_hello(store, index, regions, registers, child, hello);
      });
  sync::Transport* transport = nats_.get();
  if (hooks_.wrap_transport) {
    wrapped_ = hooks_.wrap_transport(transport);
    transport = wrapped_.get();
  }
  node_ = std::make_unique<sync::SyncNode>(store_.get(), transport);
  node_->set_parent_engine(std::move(parent));
  if (!config_.parent.empty()) {
    sync::ChildOptions co;
    co.labels[std::string(kRoleLabel)] = std::string(kRoleHub);
    co.labels[std::string(kRegionLabel)] = config_.served_region();
    // A region's hubs compare their documents with the parent too: a key the
    // parent took out of the region's scope while a peer streamed it back
    // (both hubs then hold it) is dropped by this comparison and no other.
    if (!config_.peers.empty()) co.reconcile_every_ms = config_.peer_reconcile_s * 1000;
    auto parents = sync::preferred_order(config_.name, parent_hubs);
    co.fallback_parents.assign(parents.begin() + 1, parents.end());
    node_->set_child_engine(
        std::make_unique<sync::ChildSync>(config_.name, parents.front(), store_.get(), env, co));
    spdlog::info("hub {}: regional hub below {}", config_.name, config_.parent);
  }
  if (!peers_.empty()) {
    // Every hub follows the first live peer in name order: the sessions form
    // a connected graph whatever subset of the level is up.
    sync::ChildOptions co;
    co.labels[std::string(kRoleLabel)] = std::string(kRolePeer);
    co.reconcile_every_ms = config_.peer_reconcile_s * 1000;
    // Below a parent, what the parent gave us is its to take back.
    co.keep_unwritable = !config_.parent.empty();
    co.fallback_parents.assign(peers_.begin() + 1, peers_.end());
    peer_node_ = std::make_unique<sync::SyncNode>(store_.get(), transport);
    peer_node_->set_child_engine(
        std::make_unique<sync::ChildSync>(config_.name, peers_.front(), store_.get(), env, co));
    spdlog::info("hub {}: active-active with {}", config_.name, config_.peers);
  }
  sync::SyncNode* node = node_.get();
  regions_->on_scope_change([node](const sync::ScopeChange& c) { node->enqueue_scope_change(c); });
  if (peer_scope_ && !config_.parent.empty()) {
    PeerScope* peer_scope = peer_scope_.get();
    regions_->on_own_sites_change([node, peer_scope] {
      for (const auto& c : peer_scope->own_sites_changed()) node->enqueue_scope_change(c);
    });
  }
  if (Status s = node_->attach(); !s.ok()) {
    stop();
    return Status(s.code(), "cannot subscribe: " + s.message());
  }
  if (peer_node_) {
    if (Status s = peer_node_->attach(); !s.ok()) {
      stop();
      return Status(s.code(), "cannot subscribe: " + s.message());
    }
  }
  runtime_ = std::make_unique<sync::SyncRuntime>(node_.get());
  runtime_->start();
  if (peer_node_) {
    peer_runtime_ = std::make_unique<sync::SyncRuntime>(peer_node_.get());
    peer_runtime_->start();
  }
  housekeeping_ = std::thread([this] { housekeeping_loop(); });
  // Rollouts release revisions site by site from the top of the hierarchy,
  // which sees every site's status: a regional hub's releases would be
  // writes it may not send up.
  if (config_.parent.empty()) {
    rollouts_ = std::make_unique<RolloutController>(store_.get(), index_.get());
    rollout_listener_ = store_->subscribe([this](const v1::LogEntry& e) {
      switch (model::parse_key(e.has_delta() ? e.delta().key() : e.doc().key()).kind) {
        case model::KeyKind::kPlacement:
        case model::KeyKind::kTemplate:
        case model::KeyKind::kOverride:  // a new revision where it applies
        case model::KeyKind::kGrant:     // which sites a placement targets
        case model::KeyKind::kSite:
        case model::KeyKind::kStatus:
        case model::KeyKind::kHold:
          break;
        default:
          return;  // the controller's own releases and state documents among them
      }
      if (rollout_dirty_.exchange(true)) return;
      { std::lock_guard lock(housekeeping_mu_); }
      housekeeping_cv_.notify_all();
    });
    rollout_thread_ = std::thread([this] { rollout_loop(); });
  }
  if (!peers_.empty()) {
    presence_listener_ = store_->subscribe([this](const v1::LogEntry& e) {
      if (e.source() == 0) return;  // our own write: presence_seen_ has it
      const auto k = model::parse_key(e.has_delta() ? e.delta().key() : e.doc().key());
      if (k.kind != model::KeyKind::kPresence) return;
      std::lock_guard lock(presence_mu_);
      presence_changed_.emplace(k.site);
    });
  }
  if (!config_.parent.empty() || !peers_.empty()) {
    presence_thread_ = std::thread([this] { presence_loop(); });
  }
  return ok_status();
}

void Hub::stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(housekeeping_mu_);
    housekeeping_stop_ = true;
  }
  housekeeping_cv_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
  if (rollout_thread_.joinable()) rollout_thread_.join();
  if (rollout_listener_ != 0) store_->unsubscribe(rollout_listener_);
  if (presence_thread_.joinable()) presence_thread_.join();
  if (presence_listener_ != 0) store_->unsubscribe(presence_listener_);
  rollouts_.reset();
  if (peer_runtime_) peer_runtime_->stop();
  if (runtime_) runtime_->stop();
  // Commits after this point (none are expected) must not reach a node that
  // is gone.
  if (regions_) {
    regions_->on_scope_change(nullptr);
    regions_->on_own_sites_change(nullptr);
  }
  peer_runtime_.reset();
  peer_node_.reset();
  runtime_.reset();
  node_.reset();
  peer_scope_.reset();
  regions_.reset();
  wrapped_.reset();
  telemetry_barrier_.reset();
  nats_.reset();
  enrollment_.reset();
  status_.reset();
  index_.reset();
  store_.reset();
  spdlog::info("hub {} stopped", config_.name);
}

bool Hub::nats_connected() const { return nats_ && nats_->connected(); }

std::string Hub::nats_last_error() const { return nats_ ? nats_->last_error() : std::string(); }

size_t Hub::session_count() {
  size_t sessions = 0;
  runtime_->call([&] { sessions = node_->parent()->session_count(); });
  return sessions;
}

std::optional<UpstreamInfo> Hub::upstream() {
  if (config_.parent.empty()) return std::nullopt;
  UpstreamInfo out;
  runtime_->call([&] { out = upstream_of(node_->child()); });
  return out;
}

std::optional<UpstreamInfo> Hub::peer_link() {
  if (!peer_node_) return std::nullopt;
  UpstreamInfo out;
  peer_runtime_->call([&] { out = upstream_of(peer_node_->child()); });
  return out;
}

UpstreamInfo Hub::upstream_of(const sync::ChildSync* child) const {
  UpstreamInfo out;
  out.parent = child->parent();
  out.session_open = child->active() && nats_->connected();
  out.in_sync = out.session_open && child->in_sync();
  out.down_index = child->down_position().index();
  out.hellos = child->stats().hellos;
  out.failovers = child->stats().failovers;
  return out;
}

std::vector<sync::ChildInfo> Hub::sessions() {
  std::vector<sync::ChildInfo> children;
  runtime_->call([&] { children = node_->parent()->children(); });
  return children;
}

std::vector<sync::ChildLiveness> Hub::session_liveness() {
  std::vector<sync::ChildLiveness> out;
  runtime_->call([&] { out = node_->parent()->liveness(); });
  return out;
}

HubSyncSnapshot Hub::sync_snapshot() {
  HubSyncSnapshot snap;
  runtime_->call([&] {
    snap.sessions = node_->parent()->children();
    snap.parent = node_->parent()->stats();
  });
  snap.node = node_->stats();
  snap.now_ms = SystemClock::instance()->now_ms();
  return snap;
}

void Hub::rollout_loop() {
  using steady = std::chrono::steady_clock;
  uint64_t hold_end_ms = UINT64_MAX;  // when the first hold the last step met ends
  std::unique_lock lock(housekeeping_mu_);
  while (!housekeeping_stop_) {
    auto deadline = steady::now() + kRolloutIdle;
    if (hold_end_ms != UINT64_MAX) {
      const uint64_t now_ms = SystemClock::instance()->now_ms();
      const uint64_t wait_ms = hold_end_ms > now_ms ? hold_end_ms - now_ms : 0;
      deadline = std::min(deadline, steady::now() + std::chrono::milliseconds(wait_ms));
    }
    housekeeping_cv_.wait_until(lock, deadline,
                                [this] { return housekeeping_stop_ || rollout_dirty_.load(); });
    if (housekeeping_stop_) break;
    rollout_dirty_ = false;
    lock.unlock();
    auto step = rollouts_->step();
    if (step.ok()) {
      hold_end_ms = step->next_hold_end_ms;
    } else {
      spdlog::warn("rollouts: {}", step.status().to_string());
      rollout_dirty_ = true;  // try again after the gap
    }
    lock.lock();
    housekeeping_cv_.wait_for(lock, kRolloutMinGap, [this] { return housekeeping_stop_; });
  }
}

std::optional<model::SitePresence> Hub::read_presence(const std::string& site) {
  auto raw = store_->get(model::presence_key(site));
  if (!raw.ok()) return std::nullopt;
  auto p = model::parse_presence(nlohmann::json::parse(*raw, nullptr, false));
  return p.ok() ? std::optional<model::SitePresence>(std::move(p).value()) : std::nullopt;
}

LivenessOf Hub::liveness_lookup() {
  auto sessions = std::make_shared<const std::vector<sync::ChildLiveness>>(session_liveness());
  return [this, sessions](const std::string& site) -> std::optional<SiteLiveness> {
    auto session_of = [&](const std::string& name) -> std::optional<SiteLiveness> {
      auto it = std::lower_bound(
          sessions->begin(), sessions->end(), name,
          [](const sync::ChildLiveness& c, const std::string& n) { return c.name < n; });
      if (it == sessions->end() || it->name != name) return std::nullopt;
      return SiteLiveness{it->connected, it->last_seen_ms};
    };
    // A site below a regional hub: live when the region is and the region's
    // presence document says it has a live session with the site.
    // With several hubs serving the region, through the one whose presence
    // document it is.
    if (const std::string region = regions_->region_of(site); !region.empty()) {
      SiteLiveness l{false, 0};
      auto presence = read_presence(site);
      if (!presence || regions_->region_of_hub(presence->hub) != region) return l;
      const SiteLiveness via = session_of(presence->hub).value_or(SiteLiveness{});
      l.connected = via.connected && presence->connected;
      l.last_seen_ms =
          presence->connected ? via.last_seen_ms : std::min(via.last_seen_ms, presence->since_ms);
      if (l.last_seen_ms == 0) l.last_seen_ms = presence->since_ms;
      return l;
    }
    if (auto own = session_of(site)) return own;
    // Active-active: a site in session with a peer of this level, as the
    // peer's presence document says (it replicates here like everything).
    if (!peers_.empty()) {
      auto presence = read_presence(site);
      if (presence && peer_scope_->is_peer(presence->hub)) {
        return SiteLiveness{presence->connected, presence->since_ms};
      }
    }
    return std::nullopt;
  };
}

void Hub::presence_loop() {
  const uint64_t started = SystemClock::instance()->now_ms();
  std::unique_lock lock(housekeeping_mu_);
  while (
      !housekeeping_cv_.wait_for(lock, kPresenceInterval, [this] { return housekeeping_stop_; })) {
    lock.unlock();
    write_presence(started);
    lock.lock();
  }
}

void Hub::write_presence(uint64_t started_ms) {
  const uint64_t now = SystemClock::instance()->now_ms();
  // Every second, for every site: no copies of what the sessions hold.
  const std::vector<sync::ChildLiveness> live = session_liveness();
  auto live_of = [&live](const std::string& site) -> const sync::ChildLiveness* {
    auto it = std::lower_bound(
        live.begin(), live.end(), site,
        [](const sync::ChildLiveness& c, const std::string& s) { return c.name < s; });
    return it != live.end() && it->name == site ? &*it : nullptr;
  };
  std::unordered_set<std::string> changed;
  {
    std::lock_guard lock(presence_mu_);
    changed.swap(presence_changed_);
  }
  std::vector<std::pair<std::string, nlohmann::json>> writes;
  std::vector<std::pair<std::string, bool>> sites;  // writes[i]'s site, connected
  for (const auto& site : index_->known_sites()) {
    const sync::ChildLiveness* session = live_of(site);
    const bool connected = session != nullptr && session->connected;
    auto seen = presence_seen_.find(site);
    // What stands in the store: at the first look since start (an earlier
    // process's), and with peers after a commit from elsewhere changed it
    // (a peer's write may have beaten what this hub wrote last).
    if (seen == presence_seen_.end() || changed.contains(site)) {
      presence_seen_.erase(site);
      seen = presence_seen_.end();
      if (auto presence = read_presence(site)) {
        seen = presence_seen_
                   .emplace(site, PresenceSeen{presence->hub == config_.name, presence->connected})
                   .first;
      }
    }
    if (seen != presence_seen_.end()) {
      if (seen->second.ours && seen->second.connected == connected) continue;
      // Another hub of the level holds the site's session, or was the last
      // to: its word stands.
      if (!seen->second.ours && !peers_.empty() && !connected) continue;
    }
    // Sites reconnect after a restart: give them the away interval before
    // calling them gone.
    if (!connected && session == nullptr && now < started_ms + config_.away_after_s * 1000) {
      continue;
    }
    model::SitePresence p{config_.name, connected, now};
    if (!connected && session != nullptr && session->last_seen_ms != 0) {
      p.since_ms = session->last_seen_ms;
    }
    writes.emplace_back(model::presence_key(site), model::presence_document(p));
    sites.emplace_back(site, connected);
  }
  if (writes.empty()) return;
  // One commit (one fsync) for every site that came or went in this
  // interval: thousands of sites join a regional hub within seconds.
  auto results = store_->put_values(writes);
  for (size_t i = 0; i < results.size(); ++i) {
    if (!results[i].ok()) {
      spdlog::warn("hub {}: presence of {}: {}", config_.name, sites[i].first,
                   results[i].status().to_string());
      continue;
    }
    presence_seen_[sites[i].first] = PresenceSeen{true, sites[i].second};
  }
}

void Hub::housekeeping_loop() {
  std::unique_lock lock(housekeeping_mu_);
  while (!housekeeping_cv_.wait_for(lock, kHousekeepingInterval,
                                    [this] { return housekeeping_stop_; })) {
    lock.unlock();
    store_->expire_older_than(config_.log_retention_hours * 3600 * 1000);
    lock.lock();
  }
}

}  // namespace canopy::hub
